"""A hub codec-LM TTS model in the Llasa layout, end to end on tiny random stand-ins built here.

The stand-ins have Llasa's classes and token names, at toy sizes: a LlamaForCausalLM, a byte-level
BPE tokenizer with Llama-3's header tokens, a Llama-3.2-style chat template (it writes today's date
unless `date_string` is given), Llasa's 8 special tokens and 64 speech tokens <|s_0|>..<|s_63|>, and a
transformers XCodec2 whose codebook is 4 x 4 x 4 = 64 codes (the real one: 4^8 = 65,536).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch  # noqa: F401  (before ctranslate2)

from lpo_speech.cli import main
from lpo_speech.errors import UserError
from lpo_speech.records import TtsPrompt

N_SPEECH = 64
LLASA_SPECIAL = ["<|TEXT_GENERATION_START|>", "<|TEXT_GENERATION_END|>", "<|TEXT_UNDERSTANDING_START|>",
                 "<|TEXT_UNDERSTANDING_END|>", "<|SPEECH_GENERATION_START|>", "<|SPEECH_GENERATION_END|>",
                 "<|SPEECH_UNDERSTANDING_START|>", "<|SPEECH_UNDERSTANDING_END|>"]
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- if strftime_now is defined %}"
    "{%- set date_string = strftime_now('%d %b %Y') %}{%- else %}{%- set date_string = '26 Jul 2024' %}"
    "{%- endif %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\nCutting Knowledge Date: December 2023\\n'"
    " + 'Today Date: ' + date_string + '\\n\\n<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")
PINNED = {"date_string": "26 Jul 2024"}


def llasa_tokenizer(speech=tuple(f"<|s_{i}|>" for i in range(N_SPEECH))):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    text = ["Convert the text to speech: the quick brown fox jumps over the lazy dog.",
            "Cutting Knowledge Date: December 2023. Today Date: 26 Jul 2024. system user assistant"]
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(text, trainer)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    bpe.add_special_tokens(specials + LLASA_SPECIAL)
    bpe.add_tokens(list(speech))  # added after the specials: contiguous ids
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   chat_template=CHAT_TEMPLATE)


def tiny_xcodec2():
    from transformers import Xcodec2Config, Xcodec2Model

    return Xcodec2Model(Xcodec2Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
        head_dim=16, encoder_hidden_size=2, quantization_dim=48, quantization_levels=[4, 4, 4],
        semantic_model_config={"model_type": "wav2vec2-bert", "hidden_size": 16, "num_hidden_layers": 1,
                               "num_attention_heads": 2, "intermediate_size": 32, "output_hidden_size": 16,
                               "feature_projection_input_dim": 160, "conv_depthwise_kernel_size": 3}))


@pytest.fixture(scope="module")
def llasa(tmp_path_factory):
    """(SRC in the Llasa layout, codec folder, DST imported by the CLI)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("llasa")
    torch.manual_seed(0)
    tiny_xcodec2().save_pretrained(root / "xcodec2")
    tok = llasa_tokenizer()
    lm = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    with torch.no_grad():  # all logits 0: samples are uniform over what the sampler allows
        lm.model.norm.weight.zero_()
    lm.save_pretrained(root / "src")
    tok.save_pretrained(root / "src")
    rc = main(["import-tts-lm", str(root / "src"), str(root / "dst"), "--layout", "llasa",
               "--codec", f"hf:{root / 'xcodec2'}"])
    assert rc == 0
    return root / "src", root / "xcodec2", root / "dst"


def test_import_writes_the_layout(llasa):
    from transformers import AutoTokenizer

    src, codec_dir, dst = llasa
    tts = json.loads((dst / "config.json").read_text())["tts"]
    hf = AutoTokenizer.from_pretrained(dst)
    assert tts["kind"] == "hf" and tts["codec"] == f"hf:{codec_dir.resolve()}" and tts["codebook_sizes"] == [64]
    assert tts["codec_offset"] == hf.convert_tokens_to_ids("<|s_0|>")
    assert tts["eos_id"] == hf.convert_tokens_to_ids("<|SPEECH_GENERATION_END|>")
    assert "Today Date: 26 Jul 2024" in tts["prompt_template"]  # pinned, not today's
    assert tts["prompt_template"].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n"
                                           "<|SPEECH_GENERATION_START|>")
    assert (dst / "model.safetensors").is_file()


@pytest.mark.parametrize("emotion", [None, "Happy"])
def test_prompt_ids_are_the_chat_templates(llasa, emotion):
    from transformers import AutoTokenizer

    from lpo_speech.tts.text import TtsTokenizer

    _, _, dst = llasa
    tok, hf = TtsTokenizer.load(dst), AutoTokenizer.from_pretrained(dst)
    text = "The quick brown fox."
    content = ("(happy) " if emotion else "") + text
    chat = [{"role": "user", "content": f"Convert the text to speech:<|TEXT_UNDERSTANDING_START|>{content}"
                                        "<|TEXT_UNDERSTANDING_END|>"},
            {"role": "assistant", "content": "<|SPEECH_GENERATION_START|>"}]
    want = hf.apply_chat_template(chat, tokenize=True, continue_final_message=True, return_dict=False, **PINNED)
    assert tok.encode_prompt(text, emotion=emotion) == list(want)
    with pytest.raises(UserError, match="no intensity control"):
        tok.encode_prompt(text, emotion="happy", intensity=0.5)


def test_synthesize_respects_the_speech_block_and_eos(llasa):
    from lpo_speech.tts.model import load_codec_lm
    from lpo_speech.tts.synthesize import synthesize

    _, _, dst = llasa
    lm, tok = load_codec_lm(dst)
    lo, hi = tok.codec_offset, tok.codec_offset + N_SPEECH
    prompts = [TtsPrompt(id="a", text="The quick brown fox."), TtsPrompt(id="b", text="Hello.", emotion="sad")]
    res = synthesize(lm, tok, prompts, n=4, temperature=1.0, max_seconds=1.6, seed=0, threads=1)
    flat = [s for r in res for s in r]
    assert all(lo <= t < hi for s in flat for t in s.tokens)
    assert any(s.terminated for s in flat) and any(not s.terminated for s in flat)  # EOS 1/65 per step
    for s in flat:
        assert s.sr == 16000 and not s.undecodable and s.wav.size == len(s.tokens) * 320
        assert s.terminated or len(s.tokens) == 80  # the guard: 1.6 s x 50 tokens/s


def test_eval_tts_runs(llasa, tmp_path):
    from lpo_speech.tts.evaluate import eval_tts

    _, _, dst = llasa
    manifest = tmp_path / "prompts.jsonl"
    manifest.write_text('{"id": "p1", "text": "The quick brown fox."}\n'
                        '{"id": "p2", "text": "Hello there.", "emotion": "happy"}\n')
    # Sampled, not greedy: with all logits equal, greedy picks the lowest allowed id, EOS, at once.
    m = eval_tts(str(dst), str(manifest), tmp_path / "out", dnsmos=False, max_seconds=1.0, temperature=1.0,
                 quiet=True, sampling_threads=1)
    rows = [json.loads(x) for x in (tmp_path / "out" / "utterances.jsonl").read_text().splitlines()]
    assert m["n"] == 2 and 0 <= m["failure_rate"] <= 1 and [r["id"] for r in rows] == ["p1", "p2"]
    assert all((tmp_path / "out" / r["wav"]).is_file() and "hyp" in r for r in rows)


def test_build_pairs_and_train_on_the_import(llasa, tmp_path):
    """The imported folder works as a recipe's model unchanged, and the trained model keeps its tokenizer."""
    from lpo_speech.records import PreferencePair, load_jsonl
    from lpo_speech.recipe import build_pairs, load_any_recipe, load_train_recipe
    from lpo_speech.trainer import train
    from lpo_speech.tts.model import load_codec_lm

    _, _, dst = llasa
    (tmp_path / "p.jsonl").write_text('{"id": "p1", "text": "The quick brown fox."}\n'
                                      '{"id": "p2", "text": "Hello there.", "emotion": "happy"}\n')
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(f"""
track: tts
model: {{path: {dst}, adapter: causal_lm, num_codebooks: 1}}
data: {{pairs: {tmp_path}/pairs/pairs_ref.jsonl, max_length: 512}}
build_pairs: {{prompts: {tmp_path}/p.jsonl, work_dir: {tmp_path}/pairs, samples: 2, max_seconds: 0.6,
  max_chosen_cer: null, chosen_stable: false, min_margins: {{cer: 0.0}}, similarity: false, keys: [failure, cer]}}
loss: {{type: lpo-ste}}
train: {{out_dir: {tmp_path}/run, lr: 1.0e-3, max_steps: 1, batch_size: 2}}
runtime: {{device: cpu, sampling_threads: 1}}
""")
    stats = build_pairs(load_any_recipe(recipe_path), quiet=True)
    pairs = load_jsonl(tmp_path / "pairs" / "pairs_ref.jsonl", PreferencePair)
    assert stats["prompts"] == 2 and len(pairs) == stats["pairs_written"] >= 1
    _, tok = load_codec_lm(dst)
    for p in pairs:
        for toks in (p.chosen_tokens, p.rejected_tokens):
            body = toks[:-1] if toks and toks[-1] == tok.eos_id else toks
            assert all(tok.codec_offset <= t < tok.codec_offset + N_SPEECH for t in body)
    run = train(load_train_recipe(recipe_path), quiet=True)
    _, trained = load_codec_lm(run / "model")
    assert trained.encode_prompt("Hello.") == tok.encode_prompt("Hello.")
    # Perturbation-based candidates are spoken by the offline world's voice and codec: refused up front.
    from lpo_speech.errors import UserError

    rendered = ["build_pairs.chosen=rendered", "build_pairs.perturbations=1", f"build_pairs.work_dir={tmp_path}/pp"]
    with pytest.raises(UserError, match="offline world's voice and codec .codec2:700C.; this model's codec is 'hf:"):
        build_pairs(load_any_recipe(recipe_path, rendered), quiet=True)
    assert not (tmp_path / "pp" / "candidates.jsonl").exists()


def test_xcodec2_round_trip(llasa):
    from lpo_speech.tts.codecs import HFCodec

    _, codec_dir, _ = llasa
    c = HFCodec(str(codec_dir))
    assert (c.sample_rate, c.frame_rate, c.codebook_sizes) == (16000, 50.0, (64,))
    wav = (0.3 * np.sin(2 * np.pi * 220 * np.arange(12000) / 16000)).astype(np.float32)  # 0.75 s
    codes = c.encode(wav, 16000)
    assert codes.shape == (38, 1) and codes.dtype == np.int64 and 0 <= codes.min() and codes.max() < 64
    assert c.decode(codes).shape == (38 * 320,)


def test_speech_tokens_must_be_contiguous():
    from lpo_speech.tts.hub_lm import speech_block

    assert speech_block(llasa_tokenizer(), "<|s_{i}|>", "src")[1] == N_SPEECH
    with pytest.raises(UserError, match=r"src: speech tokens are not contiguous: '<\|s_1\|>' has id"):
        speech_block(llasa_tokenizer(("<|s_0|>", "<|other|>", "<|s_1|>")), "<|s_{i}|>", "src")
    with pytest.raises(UserError, match=r"speech token '<\|s_1\|>' is missing"):
        speech_block(llasa_tokenizer(("<|s_0|>", "<|s_2|>")), "<|s_{i}|>", "src")


def test_import_errors_are_one_line(llasa, tmp_path, capsys):
    src, codec_dir, dst = llasa
    assert main(["import-tts-lm", "nobody/no-such-llasa", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: nobody/no-such-llasa: not a local folder") and "\n" not in err
    with pytest.raises(UserError, match="exists; pass --overwrite to replace it"):
        from lpo_speech.tts.hub_lm import import_tts_lm
        import_tts_lm(str(src), dst)


def test_import_refuses_an_existing_destination_unless_overwrite(llasa, tmp_path, capsys):
    """A second import into a folder that holds something: one line, exit 2, the folder untouched;
    --overwrite replaces it whole. A local source's recorded origin is carried into the copy."""
    import shutil

    src, codec_dir, _ = llasa
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "notes.txt").write_text("mine")
    args = ["import-tts-lm", str(src), str(dst), "--layout", "llasa", "--codec", f"hf:{codec_dir}"]
    assert main(args) == 2
    assert capsys.readouterr().err == f"error: {dst}: exists; pass --overwrite to replace it\n"
    assert [p.name for p in dst.iterdir()] == ["notes.txt"]
    imported = tmp_path / "src-imported"  # a local source that records where it came from
    shutil.copytree(src, imported)
    cfg = json.loads((imported / "config.json").read_text())
    (imported / "config.json").write_text(json.dumps({**cfg, "lpo_speech_base_model": "HKUSTAudio/Llasa-1B"}))
    args[1] = str(imported)
    assert main([*args, "--overwrite"]) == 0
    assert "from HKUSTAudio/Llasa-1B" in capsys.readouterr().out
    assert not (dst / "notes.txt").exists() and (dst / "model.safetensors").is_file()
    assert json.loads((dst / "config.json").read_text())["lpo_speech_base_model"] == "HKUSTAudio/Llasa-1B"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dst.")] == []
