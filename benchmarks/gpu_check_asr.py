"""The GPU check's ASR children: random Whisper-large-v3-shaped and Qwen2-Audio-shaped models built from
configs on the device (no download: their processors are made here, as lpo_speech.asr.audio_llm_init
and the tests make them), then LPO training steps through lpo_speech.trainer.train with gradient
checkpointing off and on, peak memory beside lpo_speech.plan's estimate for the same recipe.

  whisper-large-v3   d_model 1,280, 20 heads, FFN 5,120, 128 mel bins, vocabulary 51,866, 2 encoder + 2
                     decoder layers (large-v3 has 32 + 32); full fine-tune, reference model on the GPU
  qwen2-audio        audio tower d_model 1,280, 20 heads, FFN 5,120, 128 mel bins, 2 layers (32 in
                     Qwen2-Audio-7B); LM hidden 4,096, 32 heads, 32 KV heads, MLP 11,008, vocabulary
                     156,032, 2 layers (32); LoRA r 16 on q/k/v/o_proj, the tower frozen

The weights are random: these rows measure time and memory, not transcripts. Tokenizers are byte-level
(Whisper: 256 bytes + its special tokens; Qwen2: a BPE learned from the offline world's sentences), so
token ids stay far below the vocabulary; the embedding and output layers still have every row.
Audio: 16 kHz PCM WAV files of noise (lpo_speech.audio writes and reads them without soundfile).
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from gpu_check_common import PeakMeter, planned, step_seconds

SHAPES = {
    "gpu": {"whisper-large-v3": dict(d_model=1280, heads=20, ffn=5120, mels=128, vocab=51866, enc_layers=2,
                                     dec_layers=2),
            "qwen2-audio": dict(d_model=1280, heads=20, ffn=5120, mels=128, audio_layers=2, hidden=4096,
                                lm_heads=32, kv_heads=32, intermediate=11008, vocab=156032, layers=2)},
    "tiny": {"whisper-large-v3": dict(d_model=64, heads=2, ffn=128, mels=128, vocab=None, enc_layers=2, dec_layers=2),
             "qwen2-audio": dict(d_model=64, heads=2, ffn=128, mels=128, audio_layers=2, hidden=64, lm_heads=4,
                                 kv_heads=4, intermediate=128, vocab=None, layers=2)},
}  # vocab None: the tokenizer's own size (a CPU smoke run need not carry 156k rows)
WHISPER_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|translate|>",
                    "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]


def _whisper(s: dict, out: Path, device: str, dtype) -> int:
    """A random Whisper of shape `s` and a byte-level processor (no merges) saved in `out`; its parameters."""
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizer)
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    for tok in WHISPER_SPECIALS:
        vocab[tok] = len(vocab)
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[], additional_special_tokens=WHISPER_SPECIALS[1:])
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=s["mels"]),
                     tokenizer=tokenizer).save_pretrained(out)
    eot, sot = vocab["<|endoftext|>"], vocab["<|startoftranscript|>"]
    cfg = WhisperConfig(vocab_size=s["vocab"] or len(vocab), num_mel_bins=s["mels"], d_model=s["d_model"],
                        encoder_layers=s["enc_layers"], decoder_layers=s["dec_layers"],
                        encoder_attention_heads=s["heads"], decoder_attention_heads=s["heads"],
                        encoder_ffn_dim=s["ffn"], decoder_ffn_dim=s["ffn"], max_source_positions=1500,
                        max_target_positions=448, pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
                        decoder_start_token_id=sot)
    with torch.device(device):
        model = WhisperForConditionalGeneration(cfg)
    # English-only prompt (<|startoftranscript|><|notimestamps|>): the shape is what is measured.
    model.generation_config = GenerationConfig(decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot,
                                               bos_token_id=eot, no_timestamps_token_id=vocab["<|notimestamps|>"],
                                               is_multilingual=False, max_length=448)
    model.to(dtype).save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def _qwen2_audio(s: dict, out: Path, device: str, dtype, texts: list[str]) -> int:
    """A random Qwen2-Audio of shape `s` with an offline processor (lpo_speech.asr.audio_llm_init)."""
    import torch
    from transformers import GenerationConfig, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    from lpo_speech.asr.audio_llm_init import SPECIAL_TOKENS, build_processor

    processor = build_processor(texts, vocab_size=600, num_mel_bins=s["mels"])
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    frames = processor.feature_extractor.nb_max_frames
    cfg = Qwen2AudioConfig(
        audio_config={"d_model": s["d_model"], "encoder_layers": s["audio_layers"],
                      "encoder_attention_heads": s["heads"], "encoder_ffn_dim": s["ffn"],
                      "num_mel_bins": s["mels"], "max_source_positions": frames // 2},
        text_config={"model_type": "qwen2", "hidden_size": s["hidden"], "intermediate_size": s["intermediate"],
                     "num_hidden_layers": s["layers"], "num_attention_heads": s["lm_heads"],
                     "num_key_value_heads": s["kv_heads"], "vocab_size": s["vocab"] or len(tok),
                     "max_position_embeddings": 8192, "tie_word_embeddings": False,
                     "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                     "pad_token_id": ids["<|endoftext|>"]},
        audio_token_index=ids["<|AUDIO|>"])
    with torch.device(device):
        model = Qwen2AudioForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
                                               pad_token_id=ids["<|endoftext|>"], do_sample=False)
    model.to(dtype).save_pretrained(out)
    processor.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def child_asr_prepare(spec: dict) -> dict:
    """The model folder, `pairs` WAV files of noise and their pairs (a sentence vs another)."""
    import numpy as np
    import torch

    from lpo_speech.audio import save_wav

    work, s = Path(spec["work"]), SHAPES[spec["preset"]][spec["model"]]
    dtype = torch.bfloat16 if spec["dtype"] == "bf16" else torch.float32
    device = "cuda" if spec["device"].startswith("cuda") else "cpu"
    torch.manual_seed(0)
    t0 = time.perf_counter()
    texts = spec["texts"]
    if spec["model"] == "whisper-large-v3":
        params = _whisper(s, work / "model", device, dtype)
    else:
        params = _qwen2_audio(s, work / "model", device, dtype, texts * 20)
    rng, noise = random.Random(0), np.random.default_rng(0)
    (work / "wavs").mkdir(exist_ok=True)
    with (work / "pairs.jsonl").open("w") as f:
        for i in range(spec["pairs"]):
            save_wav(work / "wavs" / f"a{i}.wav", (0.1 * noise.standard_normal(int(16000 * spec["seconds"])))
                     .astype(np.float32), 16000)
            chosen, rejected = rng.sample(texts, 2)
            f.write(json.dumps({"id": f"p{i}", "audio": f"wavs/a{i}.wav", "chosen_text": chosen,
                                "rejected_text": rejected}) + "\n")
    (work / "ready").write_text(spec["key"])
    return {"seconds": time.perf_counter() - t0, "params": params}


def asr_recipe(spec: dict, out_dir: Path):
    from lpo_speech.recipe import (DataConfig, LoraSettings, LossConfig, ModelConfig, ReferenceConfig, RuntimeConfig,
                                   TrainConfig, TrainRecipe)

    work, whisper = Path(spec["work"]), spec["model"] == "whisper-large-v3"
    model = ModelConfig(path=str(work / "model"), adapter="whisper" if whisper else "audio_llm",
                        dtype="bfloat16" if spec["dtype"] == "bf16" else "float32",
                        gradient_checkpointing=spec["checkpointing"],
                        lora=None if whisper else LoraSettings(r=16, save="adapter"), freeze_encoder=not whisper)
    # max_length bounds every row: Whisper's decoder positions; the audio LLM's prompt (its audio's
    # placeholder tokens and the template) plus a sentence
    return TrainRecipe(model=model, data=DataConfig(pairs=str(work / "pairs.jsonl"), max_length=448 if whisper else 512),
                       loss=LossConfig(type="lpo-ste"), reference=ReferenceConfig(source="model"),
                       train=TrainConfig(out_dir=str(out_dir), lr=1e-5, max_steps=spec["warmup"] + spec["steps"],
                                         batch_size=spec["batch"], log_every=1, save_every=0, seed=0),
                       runtime=RuntimeConfig(device=spec["device"]))


def child_asr(spec: dict) -> dict:
    """LPO steps of a prepared ASR model; peak memory over the steps after the warm-up; the plan."""
    from lpo_speech import trainer

    work = Path(spec["work"])
    out_dir = Path(tempfile.mkdtemp(prefix=f"gpu-check-{spec['model']}-", dir=work))
    recipe = asr_recipe(spec, out_dir)
    meter = PeakMeter(spec["device"], spec["warmup"], spec["warmup"] + spec["steps"])
    t0 = time.perf_counter()
    trainer.train(recipe, quiet=True)
    wall = time.perf_counter() - t0
    rows = trainer.read_metrics(out_dir)
    runtime = json.loads((out_dir / "runtime.json").read_text()) if (out_dir / "runtime.json").is_file() else {}
    shutil.rmtree(out_dir, ignore_errors=True)
    steps = step_seconds(rows)
    measured = steps[spec["warmup"]:]
    if not measured:
        raise RuntimeError(f"{len(rows)} logged steps, none after the {spec['warmup']} warm-up steps")
    config = json.loads((work / "model" / "config.json").read_text())
    med = statistics.median(measured)
    return {"step_seconds": steps, "median_step_s": med, "pairs_per_s": spec["batch"] / med,
            "losses": [r["loss"] for r in rows], "wall_s": wall, "trainable": runtime.get("trainable"),
            **meter.result(), **planned(recipe, config)}


CHILDREN = {"asr-prepare": child_asr_prepare, "asr": child_asr}
