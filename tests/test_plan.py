"""lpo_speech.plan against real tensors: exact parameter counts, the static bytes of a real AdamW step,
and the activation + log-prob peak of a real causal-LM pair step measured by the CPU allocator."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from conftest import REPO, make_tiny_llama
from lpo_speech.plan import GiB, PRESETS, cluster_table, count_params, format_plan, plan

# peft (in two tests) uses a transformers name that is deprecated; not this project's warning to fix
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
SMALL = dict(model_type="llama", vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0)
LORA = {"r": 8, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def _llama(cfg: dict, dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**{k: v for k, v in cfg.items() if k != "model_type"})).to(dtype)


@pytest.mark.parametrize("tie", [False, True])
def test_counts_match_a_real_model(tie):
    cfg = {**SMALL, "tie_word_embeddings": tie}
    model = _llama(cfg)
    n = count_params(cfg)
    assert n["total"] == sum(p.numel() for p in model.parameters())  # parameters() counts a tied weight once
    assert n["blocks"] == len(model.model.layers)
    assert n["block"] == sum(p.numel() for p in model.model.layers[0].parameters())
    assert n["root"] == n["total"] - n["blocks"] * n["block"]
    linears = {id(p): p.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) for p in m.parameters()}
    assert n["matmul"] == sum(linears.values())


def test_lora_counts_match_peft_and_the_formula(monkeypatch):
    peft = pytest.importorskip("peft")
    real = peft.get_peft_model(_llama(SMALL), peft.LoraConfig(r=8, target_modules=LORA["target_modules"]))
    trainable = sum(p.numel() for p in real.parameters() if p.requires_grad)
    assert count_params(SMALL, LORA)["adapter"] == trainable
    monkeypatch.setitem(sys.modules, "peft", None)  # no peft: counted by formula
    assert count_params({**SMALL, "rms_norm_eps": 1e-5}, LORA)["adapter"] == trainable


def _state_bytes(model, opt) -> int:
    """Bytes of every parameter, gradient and optimizer state tensor (each storage once)."""
    seen = {}
    for p in model.parameters():
        for t in [p, p.grad, *[v for v in opt.state.get(p, {}).values() if torch.is_tensor(v)]]:
            if t is not None:
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


@pytest.mark.parametrize("case", ["ddp-fp32", "pure-bf16", "lora"])
def test_static_bytes_match_one_adamw_step(case):
    dtype = torch.float32 if case == "ddp-fp32" else torch.bfloat16
    model = _llama(SMALL, dtype)
    kw = dict(dtype="float32") if case == "ddp-fp32" else dict(dtype="bfloat16")
    if case == "pure-bf16":
        kw["master_dtype"] = "bfloat16"
    if case == "lora":
        peft = pytest.importorskip("peft")
        model = peft.get_peft_model(model, peft.LoraConfig(r=8, target_modules=LORA["target_modules"]))
        for p in model.parameters():
            if p.requires_grad:  # adapters train in fp32 over the bf16 base
                p.data = p.data.float()
        kw["lora"] = LORA
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(1, SMALL["vocab_size"], (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        loss = model(input_ids=ids).logits.float().logsumexp(-1).mean()
    loss.backward()
    opt.step()
    p = plan(SMALL, world=1, **kw)
    static = p["weights"] + p["master"] + p["grads"] + p["optimizer"]
    assert static == pytest.approx(_state_bytes(model, opt), rel=0.05)


def _measured_peak(path, *, checkpointing: bool, tmp) -> int:
    """Peak bytes the CPU allocator holds during one forward + backward of the causal-LM pair model, above
    what existed before (weights, and gradients kept from a first step): torch.profiler with
    profile_memory records every allocation with the running total it leaves ("Total Allocated")."""
    from torch.profiler import ProfilerActivity, profile

    from lpo_speech.adapters.causal_lm import CausalLMAdapter
    from lpo_speech.recipe import ModelConfig

    adapter = CausalLMAdapter(ModelConfig(path=str(path), gradient_checkpointing=checkpointing))
    model = adapter.load(str(path), torch.device("cpu"))
    model.train()
    g = torch.Generator().manual_seed(0)
    toks = lambda n: torch.randint(1, 8192, (n,), generator=g).tolist()  # noqa: E731
    # 2 pairs x 512 tokens; responses of different lengths, so the batch is padded as in training
    batch = adapter.collate([{"prompt": toks(4), "chosen": toks(508), "rejected": toks(500 - 8 * i)} for i in range(2)])

    def step():
        out = model(batch)
        (out.chosen.sum() - out.rejected.sum()).backward()

    for w in model.parameters():  # gradients exist, as in training: the measured step accumulates into them
        w.grad = torch.zeros_like(w)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    trace = tmp / f"trace-{checkpointing}.json"
    prof.export_chrome_trace(str(trace))
    events = json.loads(trace.read_text())["traceEvents"]
    return max(e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]")


@pytest.mark.parametrize("checkpointing", [False, True])
def test_activation_and_logp_peak_matches_a_measured_step(tmp_path, checkpointing):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(model_type="llama", vocab_size=8192, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=0)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**{k: v for k, v in cfg.items() if k != "model_type"})).save_pretrained(tmp_path / "m")
    measured = _measured_peak(tmp_path / "m", checkpointing=checkpointing, tmp=tmp_path)
    p = plan(cfg, dtype="float32", gradient_checkpointing=checkpointing, batch_size=2, max_length=512)
    print(f"checkpointing={checkpointing}: estimated {p['dynamic'] / 2**20:.1f} MiB, measured {measured / 2**20:.1f} MiB")
    # measured 298.1 / 83.0 MiB against 300.0 / 84.0 estimated (torch 2.13, transformers 5.23)
    assert p["dynamic"] == pytest.approx(measured, rel=0.10)
    assert p["dynamic"] <= p["activations"] + p["logps"]  # the peak is the larger moment, not the sum


def test_plan_rules():
    p1 = plan(PRESETS["llasa-1b"], world=1, gradient_checkpointing=True)
    p8 = plan(PRESETS["llasa-1b"], world=8, strategy="fsdp", gradient_checkpointing=True)
    n = p1["params"]
    assert p1["master"] + p1["grads"] + p1["optimizer"] == 16 * n and p1["copies"] == 2 * p1["counts"]["matmul"]
    assert p8["master"] + p8["grads"] + p8["optimizer"] == pytest.approx(16 * n / 8)
    off = plan(PRESETS["llasa-1b"], world=8, strategy="fsdp", cpu_offload=True, gradient_checkpointing=True)
    assert off["master"] == 0 and off["host"] == pytest.approx(16 * n / 8)
    ref = plan(PRESETS["llasa-1b"], reference_on_gpu=True)
    assert ref["reference"] == 2 * n and plan(PRESETS["llasa-1b"], reference_on_gpu=True, lora=LORA)["reference"] == 0
    table = format_plan([("1 x 80 GB", plan(PRESETS["llasa-8b"]))], 80, PRESETS["llasa-8b"])
    assert "does not fit" in table and "fits with" in table and "model.lora={r: 16}" in table
    assert p1["total"] < 80 * GiB


def test_cli_plan_prints_the_table_and_writes_nothing(tmp_path, lpo):
    model = make_tiny_llama(tmp_path / "lm")
    (tmp_path / "r.yaml").write_text(f"model: {{path: {model}}}\ndata: {{pairs: missing.jsonl}}\n"
                                     "train: {out_dir: run, batch_size: 2}\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    out = lpo("train", "r.yaml", "--plan", "data.max_length=512", cwd=tmp_path).stdout
    assert "| **total per GPU** |" in out and "1 x 80 GB" in out and "8 x 80 GB" in out and "fits" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run folder, nothing written


def test_cli_plan_missing_model_needs_a_preset(tmp_path, monkeypatch, capsys):
    from lpo_speech.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "r.yaml").write_text("model: {path: runs/nowhere}\ndata: {pairs: p.jsonl}\ntrain: {out_dir: run}\n")
    assert main(["train", "r.yaml", "--plan"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "runs/nowhere" in err[0] and "--plan-model" in err[0]
    bad = [("--plan-gpus", "0", "an integer > 0"), ("--plan-gpus", "1.5", "an integer > 0"),
           ("--plan-gpus", "inf", "an integer > 0"), ("--plan-gpus", "9" * 30, "at most 1048576"),
           ("--plan-gpu-gb", "x", "a number > 0"), ("--plan-gpu-gb", "-80", "a number > 0"),
           ("--plan-gpu-gb", "0", "a number > 0"), ("--plan-gpu-gb", "nan", "a number > 0"),
           ("--plan-gpu-gb", "inf", "a finite number"), ("--plan-gpu-gb", "1e999", "a finite number")]
    for flag, value, expected in bad:  # bad values (inf GB would fit anything): one line, exit 2, no output
        assert main(["train", "r.yaml", "--plan", "--plan-model", "spark-0.5b", flag, value]) == 2
        out, err = capsys.readouterr()
        assert err.splitlines() == [f"error: {flag}: expected {expected}, got {value!r}"] and not out, (out, err)
    assert main(["train", "r.yaml", "--plan", "--plan-model", "spark-0.5b", "--plan-gpus", "2"]) == 0
    out = capsys.readouterr().out
    assert "preset spark-0.5b, standing in for model.path runs/nowhere" in out and "2 x 80 GB" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


# ------------------------------------------------------------------------------------------ ASR models
TINY_WHISPER = dict(model_type="whisper", vocab_size=512, num_mel_bins=80, d_model=64, encoder_layers=2,
                    decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=256,
                    decoder_ffn_dim=256, max_source_positions=1500, max_target_positions=448, pad_token_id=0,
                    bos_token_id=1, eos_token_id=2, decoder_start_token_id=3)


def _profiled_peak(step, tmp, name: str) -> int:
    """Peak bytes the CPU allocator holds while `step()` runs, above what existed before (as
    _measured_peak)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    trace = tmp / f"trace-{name}.json"
    prof.export_chrome_trace(str(trace))
    events = json.loads(trace.read_text())["traceEvents"]
    return max(e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]")


def _backward(model, batch):
    def step():
        out = model(batch)
        (out.chosen.sum() - out.rejected.sum()).backward()
    for w in model.parameters():  # gradients exist, as in training
        if w.requires_grad:
            w.grad = torch.zeros_like(w)
    return step


@pytest.fixture(scope="module")
def small_audio_llm(tmp_path_factory):
    """A Qwen2-Audio with wider layers than init-audio-llm's test size (so activations, not constant
    overheads, dominate), its processor, and two 30 s recordings (750 audio tokens each)."""
    import shutil

    import numpy as np
    import soundfile as sf
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    from lpo_speech.asr.audio_llm_init import init_audio_llm

    tiny = init_audio_llm(tmp_path_factory.mktemp("tiny") / "m", size="test", seed=0)
    root = tmp_path_factory.mktemp("small")
    cfg = json.loads((tiny / "config.json").read_text())
    cfg["audio_config"].update(d_model=64, encoder_ffn_dim=256, encoder_layers=2, encoder_attention_heads=4)
    cfg["text_config"].update(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=32)
    torch.manual_seed(0)
    Qwen2AudioForConditionalGeneration(Qwen2AudioConfig.from_dict(cfg)).save_pretrained(root)
    for f in tiny.iterdir():
        if f.name != "config.json" and not f.name.endswith(".safetensors"):
            shutil.copy(f, root / f.name)
    rng = np.random.default_rng(0)
    for i in range(2):
        t = np.arange(480_000) / 16_000
        sf.write(root / f"a{i}.wav", (0.3 * np.sin(2 * np.pi * 300 * t) + 0.05 * rng.standard_normal(len(t))
                                      ).astype(np.float32), 16_000)
    return root


def test_asr_counts_match_the_loaded_models(small_audio_llm):
    from transformers import AutoConfig

    from lpo_speech.adapters.audio_llm import AudioLLMAdapter
    from lpo_speech.parallel import fsdp_blocks
    from lpo_speech.policy import load_policy
    from lpo_speech.recipe import DataConfig, LoraSettings, ModelConfig, TrainConfig, TrainRecipe

    config = AutoConfig.from_pretrained(small_audio_llm)
    for lora in (None, LoraSettings(r=4, alpha=8)):
        recipe = TrainRecipe(model=ModelConfig(path=str(small_audio_llm), adapter="audio_llm", freeze_encoder=True,
                                               lora=lora), data=DataConfig(pairs="-"), train=TrainConfig(out_dir="-"))
        policy, _ = load_policy(recipe, AudioLLMAdapter(recipe.model), torch.device("cpu"))
        n = count_params(config, lora, freeze_encoder=True)
        hf = policy.hf_model.get_base_model() if lora else policy.hf_model
        assert n["total"] == sum(p.numel() for n_, p in hf.named_parameters() if "lora_" not in n_)
        assert n["frozen"] == sum(p.numel() for p in hf.model.audio_tower.parameters())
        assert n["blocks"] == len(fsdp_blocks(policy)) == config.text_config.num_hidden_layers
        trained = sum(p.numel() for p in policy.parameters() if p.requires_grad)
        assert (n["adapter"] if lora else n["total"] - n["frozen"]) == trained  # no adapter in the frozen tower


@pytest.mark.parametrize("case", ["full", "frozen-ckpt", "full-ckpt-fsdp"])
def test_whisper_peak_matches_a_measured_step(tmp_path, case):
    """Whisper's pair step (encoder, decoder with cross-attention, log-probs) on the CPU allocator, fp32;
    FSDP's layout runs the cross-attention per row inside the decoder (prepare_for_sharding)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from lpo_speech.adapters.base import HostInts, pad_rows
    from lpo_speech.adapters.whisper import WhisperPairModel

    frozen, ckpt, fsdp = case.startswith("frozen"), "ckpt" in case, case.endswith("fsdp")
    torch.manual_seed(0)
    hf = WhisperForConditionalGeneration(WhisperConfig(**{k: v for k, v in TINY_WHISPER.items() if k != "model_type"}))
    if ckpt:
        hf.activation_checkpointing_enable()
    if frozen:
        hf.get_encoder().requires_grad_(False)
    model = WhisperPairModel(hf, average=True).train()
    if fsdp:
        model.prepare_for_sharding()
    g = torch.Generator().manual_seed(0)
    rows = [([1, 2, 3], torch.randint(5, 512, (197 - 8 * (i // 2),), generator=g).tolist()) for i in range(4)]
    batch = {**pad_rows(rows, 0), "num_pairs": HostInts([2]), "audio_index": torch.arange(2)}
    features = torch.randn(2, 80, 3000, generator=g)
    if frozen:
        with torch.no_grad():
            batch["encoder_states"] = hf.get_encoder()(features).last_hidden_state
    else:
        batch["input_features"] = features
    measured = _profiled_peak(_backward(model, batch), tmp_path, case)
    p = plan(TINY_WHISPER, dtype="float32", gradient_checkpointing=ckpt, batch_size=2, max_length=200,
             freeze_encoder=frozen, strategy="fsdp" if fsdp else "ddp")
    print(f"whisper {case}: estimated {p['dynamic'] / 2**20:.1f} MiB, measured {measured / 2**20:.1f} MiB")
    # measured 51.4 / 16.1 / 20.7 MiB against 52.2 / 15.7 / 24.5 estimated (torch 2.13, transformers 5.23)
    assert p["dynamic"] == pytest.approx(measured, rel=0.2)


@pytest.mark.parametrize("case", ["lora-frozen", "full-ckpt"])
def test_audio_llm_peak_matches_a_measured_step(tmp_path, small_audio_llm, case):
    """The audio LLM's pair step (tower, projector, 750 audio tokens per row in the language model, the
    response's log-probs) on the CPU allocator, fp32: LoRA with the tower frozen (its states computed
    before the step, as the adapter caches them), and a full fine-tune with checkpointing."""
    from transformers import AutoConfig

    from lpo_speech.adapters.audio_llm import AudioLLMAdapter
    from lpo_speech.lora import apply_lora
    from lpo_speech.recipe import LoraSettings, ModelConfig
    from lpo_speech.records import PreferencePair

    lora, ckpt = case == "lora-frozen", case.endswith("ckpt")
    mc = ModelConfig(path=str(small_audio_llm), adapter="audio_llm", freeze_encoder=lora, gradient_checkpointing=ckpt,
                     lora=LoraSettings(r=4, alpha=8) if lora else None)
    adapter = AudioLLMAdapter(mc)
    model = adapter.load(str(small_audio_llm), torch.device("cpu"))
    if lora:
        apply_lora(model, mc.lora, str(small_audio_llm))
    model.train()
    words = "turn the kitchen lights off please the farmer sings twice a week".split()
    pairs = [PreferencePair(id=f"p{i}", audio=str(small_audio_llm / f"a{i}.wav"), chosen_text=" ".join(words * 4),
                            rejected_text=" ".join(words[::-1] * 4)) for i in range(2)]
    batch = adapter.collate([adapter.encode(p, "t", small_audio_llm) for p in pairs])
    measured = _profiled_peak(_backward(model, batch), tmp_path, case)
    p = plan(AutoConfig.from_pretrained(small_audio_llm), dtype="float32", gradient_checkpointing=ckpt, batch_size=2,
             max_length=batch["input_ids"].shape[1], freeze_encoder=lora, lora={"r": 4} if lora else None)
    print(f"audio LLM {case}: estimated {p['dynamic'] / 2**20:.1f} MiB, measured {measured / 2**20:.1f} MiB")
    # measured 79.3 / 62.7 MiB against 84.9 / 72.9 estimated (rows of 877 tokens, 750 of them audio)
    assert p["dynamic"] == pytest.approx(measured, rel=0.2)


def test_asr_plan_rules_and_the_cluster_table(lpo, tmp_path):
    qwen, whisper = PRESETS["qwen2-audio-7b"], PRESETS["whisper-large-v3"]
    lora = {"r": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    p1 = plan(qwen, lora=lora, freeze_encoder=True, gradient_checkpointing=True, batch_size=4, max_length=1024)
    p8 = plan(qwen, lora=lora, freeze_encoder=True, gradient_checkpointing=True, batch_size=4, max_length=1024,
              strategy="fsdp", world=8)
    n = p1["counts"]
    assert round(p1["params"] / 1e8) == 84 and n["blocks"] == 32  # 8.4B: the published size; units: LM layers
    assert p1["trainable"] == 32 * 4 * 16 * (4096 + 4096)  # adapters in the LM's q/k/v/o only, none in the tower
    assert p8["weights"] == pytest.approx((n["total"] - n["frozen"]) * 2 / 8 + n["frozen"] * 2)  # tower whole
    assert round(plan(whisper)["params"] / 1e7) == 154
    full, frozen = plan(whisper, batch_size=8, max_length=448), plan(whisper, batch_size=8, max_length=448,
                                                                    freeze_encoder=True)
    assert frozen["trainable"] < full["trainable"] and frozen["weights"] > 0 and frozen["dynamic"] < full["dynamic"]
    out = lpo("train", str(REPO / "recipes/asr/qwen2-audio.yaml"), "--plan", "--plan-model", "qwen2-audio-7b",
              cwd=tmp_path).stdout
    assert "encoder frozen" in out and "4 audios" in out and "| **total per GPU** |" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written
    table = cluster_table()
    assert table.count("\n") == 2 + 9 - 1 and table.count("✓") + table.count("✗") == 9
