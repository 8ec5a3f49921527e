"""The audio-LLM ASR adapter on a tiny random `Qwen2AudioForConditionalGeneration` saved with its processor
(built offline: lpo_speech.asr.audio_llm_init): exact log-probs against the model's own forward, the
audio tower once per distinct audio, the frozen-tower cache, decoding against the model's own
generate, LoRA, full fine-tuning through the trainer, and build-pairs -> train -> eval through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import REPO, espeak_wav
from lpo_speech.adapters.audio_llm import AudioLLMAdapter
from lpo_speech.audio import load_audio
from lpo_speech.recipe import ModelConfig
from lpo_speech.errors import UserError
from lpo_speech.records import PreferencePair

HUB_RECIPE = REPO / "recipes" / "asr" / "qwen2-audio.yaml"
KITCHEN, FARMER = "Please turn the kitchen lights off.", "The farmer sings twice a week."


@pytest.fixture(scope="module")
def tiny_audio_llm(tmp_path_factory) -> Path:
    from lpo_speech.asr.audio_llm_init import init_audio_llm

    return init_audio_llm(tmp_path_factory.mktemp("audiollm") / "tiny", size="test", seed=0)


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("wav")
    return [espeak_wav(d / "a.wav", KITCHEN), espeak_wav(d / "b.wav", FARMER, pitch=70)]


@pytest.fixture(scope="module")
def asr_data(tmp_path_factory) -> Path:
    from lpo_speech.synthetic.synth import make_asr_data

    out = tmp_path_factory.mktemp("asr") / "data"
    make_asr_data(out, n_train=5, n_test=3, styles=["espeak"], workers=1, progress=False)
    return out


def pairs_for(audio: list[Path]) -> list[PreferencePair]:
    return [PreferencePair(id="p0", audio=str(audio[0]), chosen_text=KITCHEN, rejected_text="Please turn the kitten lights of."),
            PreferencePair(id="p1", audio=str(audio[0]), chosen_text=KITCHEN, rejected_text="Turn it <|im_end|> off."),
            PreferencePair(id="p2", audio=str(audio[1]), chosen_text=FARMER, rejected_text="The former sinks twice a week.")]


def processor_inputs(ad: AudioLLMAdapter, path: str, instruction: str | None = None) -> dict:
    """What the model's own processor makes of the chat-template prompt and the audio."""
    user = [{"type": "audio", "audio": path}, {"type": "text", "text": instruction or ad.instruction}]
    text = ad.processor.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False)
    return ad.processor(text=text, audio=load_audio(path, sample_rate=16_000), sampling_rate=16_000, return_tensors="pt")


def naive_logps(model, enc: dict, response: list[int]) -> float:
    """The plain transformers way: the model's own forward (its audio merge), full logits, log_softmax,
    averaged over the response tokens."""
    prompt = enc["input_ids"][0].tolist()
    ids = torch.tensor([prompt + response])
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), input_features=enc["input_features"],
                   feature_attention_mask=enc["feature_attention_mask"]).logits
    logp = torch.log_softmax(logits.float(), -1)[0, len(prompt) - 1:-1].gather(1, ids[0, len(prompt):, None])
    return logp.mean().item()


def test_logps_match_naive_and_tower_runs_once_per_audio(tiny_audio_llm, audio):
    ad = AudioLLMAdapter(ModelConfig(path=str(tiny_audio_llm), adapter="audio_llm"))
    pm = ad.load(str(tiny_audio_llm), torch.device("cpu")).eval()
    assert ad.tokenizer.convert_ids_to_tokens([ad.eos]) == ["<|im_end|>"]  # the template's end of turn
    pairs = pairs_for(audio) + [PreferencePair(id="p3", audio=str(audio[1]), chosen_text=FARMER, rejected_text="Farmer.",
                                               prompt_text="Write down what you hear.")]  # a pair's own instruction
    instructions = [p.prompt_text for p in pairs]
    items = [ad.encode(p, "t", Path("/")) for p in pairs]
    assert items[1]["rejected"].count(ad.eos) == 1  # '<|im_end|>' inside a transcript stays text
    for it, instruction in zip(items, instructions):  # prompt ids and features are the processor's own
        enc = processor_inputs(ad, it["audio"], instruction)
        assert it["prompt"] == enc["input_ids"][0].tolist()
        assert torch.allclose(ad.features(it["audio"])["features"].float(), enc["input_features"][0], atol=1e-2)
    batch = ad.collate(items)
    assert batch["input_features"].shape[0] == 2 and batch["input_ids"].shape[0] == 8
    calls = []
    tower = pm.model.model.audio_tower
    hook = tower.register_forward_hook(lambda m, args, out: calls.append(out.last_hidden_state.shape[0]))
    with torch.no_grad():
        out = pm(batch)
    hook.remove()
    assert calls == [2]  # one tower call, one row per distinct audio, for 4 pairs (8 LM rows)
    with torch.no_grad():
        for i, (it, instruction) in enumerate(zip(items, instructions)):
            enc = processor_inputs(ad, it["audio"], instruction)
            assert out.chosen[i].item() == pytest.approx(naive_logps(pm.model, enc, it["chosen"]), abs=1e-4)
            assert out.rejected[i].item() == pytest.approx(naive_logps(pm.model, enc, it["rejected"]), abs=1e-4)
    assert out.chosen_nll.tolist() == pytest.approx((-out.chosen).tolist(), abs=1e-5)  # averaged: NLL = -logp


def test_frozen_tower_cache_gives_the_same_logps_and_no_tower_grads(tiny_audio_llm, audio):
    outs = []
    for frozen in (False, True):
        ad = AudioLLMAdapter(ModelConfig(path=str(tiny_audio_llm), adapter="audio_llm", freeze_encoder=frozen))
        pm = ad.load(str(tiny_audio_llm), torch.device("cpu"))
        batch = ad.collate([ad.encode(p, "t", Path("/")) for p in pairs_for(audio)])
        assert ("audio_states" in batch) == frozen
        out = pm(batch)
        (out.chosen - out.rejected).sum().backward()
        tower_grad = pm.model.model.audio_tower.layers[0].fc1.weight.grad
        assert (tower_grad is None) == frozen
        assert pm.model.model.multi_modal_projector.linear.weight.grad is not None  # the projector trains
        outs.append(torch.cat([out.chosen, out.rejected]).detach())
    assert outs[0].tolist() == pytest.approx(outs[1].tolist(), abs=2e-3)  # the cache is fp16


def test_decoding_matches_the_models_generate(tiny_audio_llm, audio):
    from lpo_speech.asr.decode import AudioLLMDecoder, make_asr_decoder

    dec = make_asr_decoder(str(tiny_audio_llm), "cpu")
    assert isinstance(dec, AudioLLMDecoder)
    dec.max_new_tokens = 12
    wavs = [load_audio(str(a), sample_rate=16_000) for a in audio]
    states = dec.encode(wavs)  # once; every decoding below starts from it
    greedy = dec.transcribe(states=states)
    for path, (hyp,) in zip(audio, greedy):  # batched, left padded = the model's own generate, one at a time
        enc = processor_inputs(dec.adapter, str(path))
        out = dec.model.generate(**enc, max_new_tokens=12, do_sample=False, eos_token_id=dec.eos_ids)
        assert hyp == dec.adapter.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert dec.transcribe(states=states.half().float()) == greedy  # states cached in fp16 (evaluate.py)
    beams = dec.transcribe(states=states, n=3, num_beams=3)
    torch.manual_seed(0)
    samples = dec.transcribe(states=states, n=2, do_sample=True, top_k=0)
    assert [len(b) for b in beams] == [3, 3] and [len(s) for s in samples] == [2, 2]
    assert len(set(beams[0])) == 3


def test_lora_adapts_only_adapters_and_disabled_is_the_base(tiny_audio_llm, audio):
    from lpo_speech.recipe import DataConfig, LoraSettings, TrainConfig, TrainRecipe
    from lpo_speech.lora import adapter_disabled
    from lpo_speech.policy import load_policy

    recipe = TrainRecipe(model=ModelConfig(path=str(tiny_audio_llm), adapter="audio_llm", gradient_checkpointing=True,
                                           lora=LoraSettings(r=4, alpha=8)),
                         data=DataConfig(pairs="unused"), train=TrainConfig(out_dir="unused"))
    ad = AudioLLMAdapter(recipe.model)
    policy, _ = load_policy(recipe, ad, torch.device("cpu"))
    batch = ad.collate([ad.encode(p, "t", Path("/")) for p in pairs_for(audio)])
    base = AudioLLMAdapter(ModelConfig(path=str(tiny_audio_llm), adapter="audio_llm")).load(str(tiny_audio_llm),
                                                                                            torch.device("cpu"))
    with torch.no_grad():
        want = base(batch)
    for p in policy.parameters():  # a trained adapter (B != 0) must change the outputs
        if p.requires_grad:
            p.data.normal_(0, 0.5)
    policy.train()
    out = policy(batch)
    (out.chosen - out.rejected).sum().backward()
    named = dict(policy.named_parameters())
    lora = {n for n in named if "lora_" in n}
    assert any("language_model" in n and "o_proj" in n for n in lora) and any("audio_tower" in n for n in lora)
    assert all(named[n].grad is not None for n in lora)
    assert all(not p.requires_grad for n, p in named.items() if n not in lora)
    assert not torch.allclose(out.chosen, want.chosen, atol=1e-4)
    with torch.no_grad(), adapter_disabled(policy):
        ref = policy.eval()(batch)
    assert ref.chosen.tolist() == pytest.approx(want.chosen.tolist(), abs=1e-5)  # the live reference is the base


def test_full_finetune_through_the_trainer_saves_the_instruction(tiny_audio_llm, asr_data, tmp_path):
    """Tower, projector and LM train (reference: a frozen copy); the saved model carries its processor and
    the instruction it was trained with, which its decoder then uses."""
    from safetensors.torch import load_file

    from lpo_speech.asr.decode import make_asr_decoder
    from lpo_speech.recipe import DataConfig, LossConfig, ReferenceConfig, RuntimeConfig, TrainConfig, TrainRecipe
    from lpo_speech.trainer import read_metrics, train

    utts = [json.loads(l) for l in (asr_data / "train.jsonl").read_text().splitlines()]
    with (tmp_path / "pairs.jsonl").open("w") as f:
        for u in utts:
            f.write(json.dumps({"id": u["id"], "audio": str(asr_data / u["audio"]), "chosen_text": u["text"],
                                "rejected_text": " ".join(u["text"].split()[:-2])}) + "\n")
    instruction = "Write down every word you hear."
    recipe = TrainRecipe(model=ModelConfig(path=str(tiny_audio_llm), adapter="audio_llm", instruction=instruction),
                         data=DataConfig(pairs=str(tmp_path / "pairs.jsonl")),
                         train=TrainConfig(out_dir=str(tmp_path / "run"), lr=1e-2, max_steps=3, batch_size=2),
                         loss=LossConfig(), reference=ReferenceConfig(source="model"), runtime=RuntimeConfig(device="cpu"))
    run = train(recipe, quiet=True)
    rows = read_metrics(run)
    assert len(rows) == 3 and rows[0]["x1"] == pytest.approx(0.0, abs=1e-4) and rows[-1]["margin"] > rows[0]["margin"]
    before, after = load_file(tiny_audio_llm / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    for name in ("audio_tower.layers.0.fc1.weight", "multi_modal_projector.linear.weight",
                 "language_model.model.layers.0.self_attn.q_proj.weight"):  # saved in the hub checkpoint's names
        assert not torch.equal(before[name], after[name]), name
    assert json.loads((run / "model" / "config.json").read_text())["asr_instruction"] == instruction
    assert (run / "model" / "tokenizer.json").is_file() and (run / "model" / "processor_config.json").is_file()
    assert make_asr_decoder(str(run / "model"), "cpu").adapter.instruction == instruction


def test_build_pairs_train_eval_through_the_cli(tmp_path, lpo, tiny_audio_llm, asr_data):
    """recipes/asr/qwen2-audio.yaml (LoRA, gradient checkpointing, frozen tower, precomputed reference) on
    the tiny model: sampled + perturbation candidates, a few LPO steps, eval --wer base vs trained."""
    ov = [f"model.path={tiny_audio_llm}", "model.dtype=float32", f"build_pairs.manifest={asr_data / 'train.jsonl'}",
          f"build_pairs.work_dir={tmp_path / 'pairs'}", f"data.pairs={tmp_path / 'pairs' / 'pairs_ref.jsonl'}",
          f"train.out_dir={tmp_path / 'lpo'}", "build_pairs.batch_size=5", "build_pairs.greedy=false",
          "build_pairs.samples=2", "build_pairs.perturbations=2", "build_pairs.max_ref_margin=null",
          "train.batch_size=4", "train.grad_accum=1", "train.max_steps=2", "train.warmup_steps=0", "train.lr=1e-2",
          "train.log_every=1", "runtime.device=cpu"]
    lpo("build-pairs", str(HUB_RECIPE), *ov, "--quiet", cwd=tmp_path)
    summary = json.loads((tmp_path / "pairs" / "summary.json").read_text())
    assert summary["candidates_by_source"] == {"sample": 10, "perturb": 10} and summary["pairs_written"] >= 10
    pairs = [json.loads(l) for l in (tmp_path / "pairs" / "pairs_ref.jsonl").read_text().splitlines()]
    assert {p["rejected_source"] for p in pairs} == {"sample", "perturb"}
    assert all(p["ref_logp_mode"] == "mean/flat" and p["ref_chosen_logp"] < 0 for p in pairs)

    lpo("train", str(HUB_RECIPE), *ov, "--quiet", cwd=tmp_path)
    rows = [json.loads(l) for l in (tmp_path / "lpo" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["x1"] == pytest.approx(0.0, abs=1e-4)  # the policy starts at the reference
    runtime = json.loads((tmp_path / "lpo" / "runtime.json").read_text())
    assert runtime["lora"] == "r=16"
    from safetensors.torch import load_file

    before, after = load_file(tiny_audio_llm / "model.safetensors"), load_file(tmp_path / "lpo" / "model" / "model.safetensors")
    o_proj = "language_model.model.layers.0.self_attn.o_proj.weight"
    assert not torch.equal(before[o_proj], after[o_proj])  # LoRA, merged
    assert torch.equal(before["audio_tower.layers.0.fc1.weight"], after["audio_tower.layers.0.fc1.weight"])

    out = lpo("eval", "--wer", "--model", str(tiny_audio_llm), "--model", str(tmp_path / "lpo" / "model"),
              "--label", "base", "--label", "lpo", "--data", str(asr_data / "test.jsonl"), "--out", "ev", "--quiet",
              cwd=tmp_path)
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert set(metrics) == {"base", "lpo"} and all(m["n"] == 3 and m["wer"] >= 0 for m in metrics.values())
    assert "| base |" in out.stdout and "| lpo |" in out.stdout


def test_config_and_bad_models_are_one_line(tiny_lm, tmp_path):
    from lpo_speech.asr.recipe import AsrRecipe
    from lpo_speech.recipe import load_recipe

    for bad, match in (([ "model.instruction=Transcribe."], "model.instruction: a non-empty text, only for the audio_llm"),
                       (["model.adapter=audio_llm", "model.instruction=' '"], "model.instruction: a non-empty text"),
                       (["model.freeze_encoder=true"], "model.freeze_encoder: only for the whisper and audio_llm"),
                       (["model.adapter=audio_llm", "model.language=en"], "model.language/task: only for the whisper")):
        with pytest.raises(UserError, match=match):
            load_recipe(HUB_RECIPE, ["model.adapter=causal_lm", "model.freeze_encoder=false", "model.instruction=null",
                                     *bad], cls=AsrRecipe)
    with pytest.raises(UserError, match="model.adapter: whisper or audio_llm for the ASR track"):
        load_recipe(HUB_RECIPE, ["model.adapter=causal_lm", "model.freeze_encoder=false", "model.instruction=null"],
                    cls=AsrRecipe)
    ad = AudioLLMAdapter(ModelConfig(path=str(tiny_lm), adapter="audio_llm"))
    with pytest.raises(UserError, match="model type 'llama' is not an audio LLM the audio_llm adapter knows"):
        ad.load(str(tiny_lm), torch.device("cpu"))


def test_init_audio_llm_command_whisper_tower_and_sft(tmp_path, whisper_tiny, asr_data, capsys):
    """`lpo-speech init-audio-llm` (in process): SFT examples from a manifest, a tiny model that trains with
    loss.type sft (chosen rows only, frozen tower); and a model whose tower carries Whisper tiny.en's encoder."""
    from safetensors.torch import load_file

    from lpo_speech.asr.audio_llm_init import build_processor, init_audio_llm
    from lpo_speech.cli import main
    from lpo_speech.recipe import DataConfig, LossConfig, RuntimeConfig, TrainConfig, TrainRecipe
    from lpo_speech.trainer import read_metrics, train

    sft = tmp_path / "sft" / "train_sft.jsonl"
    assert main(["init-audio-llm", str(tmp_path / "init"), "--size", "test", "--encoder", "none", "--window-s", "10",
                 "--vocab-size", "400", "--sft-examples", str(asr_data / "train.jsonl"), str(sft)]) == 0
    examples = [json.loads(l) for l in sft.read_text().splitlines()]
    assert len(examples) == 5 and "rejected_text" not in examples[0] and (sft.parent / examples[0]["audio"]).is_file()
    weights = (tmp_path / "init" / "model.safetensors").read_bytes()
    again = ["init-audio-llm", str(tmp_path / "init"), "--size", "test", "--encoder", "none", "--seed", "1"]
    capsys.readouterr()
    assert main(again) == 2  # an existing model folder: one line, nothing written
    assert capsys.readouterr().err == f"error: {tmp_path / 'init'}: exists; pass --overwrite to replace it\n"
    assert (tmp_path / "init" / "model.safetensors").read_bytes() == weights
    assert main([*again, "--window-s", "10", "--vocab-size", "400", "--seed", "0", "--overwrite"]) == 0
    assert (tmp_path / "init" / "model.safetensors").read_bytes() == weights  # the same model, written anew
    recipe = TrainRecipe(model=ModelConfig(path=str(tmp_path / "init"), adapter="audio_llm", freeze_encoder=True),
                         data=DataConfig(pairs=str(sft)), loss=LossConfig(type="sft", sft_weight=1.0, gamma=0.0),
                         train=TrainConfig(out_dir=str(tmp_path / "run"), lr=1e-2, max_steps=2, batch_size=4),
                         runtime=RuntimeConfig(device="cpu"))
    rows = read_metrics(train(recipe, quiet=True))
    assert len(rows) == 2 and rows[1]["chosen_nll"] < rows[0]["chosen_nll"]

    model = init_audio_llm(tmp_path / "whisper-tower", size="small", encoder=whisper_tiny,
                           processor=build_processor(["hello there"] * 10, vocab_size=300, window_s=10))
    tower, whisper = load_file(model / "model.safetensors"), load_file(whisper_tiny / "model.safetensors")
    for name in ("conv1.weight", "layers.3.fc2.weight", "layers.0.self_attn.k_proj.weight", "layer_norm.bias"):
        assert torch.equal(tower[f"audio_tower.{name}"], whisper[f"model.encoder.{name}"]), name
    assert torch.equal(tower["audio_tower.embed_positions.weight"], whisper["model.encoder.embed_positions.weight"][:500])
