"""The GPU check's online children: online GRPO and online pairs (LPO) steps of a codec LM through
lpo_speech.online.train_online, as `lpo-speech train` runs a recipe with an `online:` section, in one
process or under FSDP with one process (torchrun --nproc_per_node 1, train.strategy=fsdp).

Nothing outside the GPU image is needed. The codec LM reads characters (`tts.kind: chars`, no
phonemizer) and writes the tokens of a random EnCodec built from its config (16 kHz, 50 frames/s, 2
codebooks of 1,024: a transformers codec, no Codec2); the reward is the judge-free `duration` term.
Every step samples the candidates with the model being trained (lpo_speech.tts.synthesize, KV cache),
decodes them with the codec on the device, scores them and takes one optimizer step.

A random model almost never ends a clip (EOS is 1 of 1,025 ids at a frame boundary), so every clip
would hit the length guard, every reward would tie, GRPO's advantages would be zero and no pair would
form. The EOS row of the (tied) embedding is therefore set to a random direction of norm 2.5: the EOS
logit then varies from position to position (about 2% of frame boundaries end the clip), lengths
differ, and the steps train on real advantages and pairs.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path

from gpu_check_common import PeakMeter, planned, step_seconds

SIZES = {  # codec-LM bodies (lpo_speech.tts.model.init_codec_lm overrides)
    "gpu": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                intermediate_size=4864),  # run_all's gpu-0.5b body, a 2,304-token vocabulary
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=64),
}
SETTINGS = {  # prompts per step x samples, length guard (s), micro-batch, positions
    "gpu": dict(prompts_per_step=8, samples=4, max_seconds=2.0, batch_size=8, max_positions=1024),
    "tiny": dict(prompts_per_step=2, samples=3, max_seconds=0.6, batch_size=2, max_positions=512),
}
EOS_NORM = 2.5


def child_online_prepare(spec: dict) -> dict:
    """A random EnCodec, a random chars codec LM over its tokens, the prompts and the two recipes."""
    import torch
    from transformers import EncodecConfig, EncodecModel

    from lpo_speech.tts.model import init_codec_lm
    from lpo_speech.tts.text import EOS, TtsTokenizer

    work = Path(spec["work"])
    t0 = time.perf_counter()
    torch.manual_seed(0)
    codec_cfg = EncodecConfig(target_bandwidths=[1.0], sampling_rate=16000, audio_channels=1, normalize=False,
                              chunk_length_s=None, overlap=None, hidden_size=32, num_filters=8, num_residual_layers=1,
                              upsampling_ratios=[8, 5, 4, 2], codebook_size=1024, codebook_dim=32, num_lstm_layers=1)
    EncodecModel(codec_cfg).save_pretrained(work / "codec")
    tok = TtsTokenizer(kind="chars", codec={"type": "hf", "path": str(work / "codec")}, codebook_sizes=[1024, 1024])
    init_codec_lm(work / "init", tok, size="test", max_positions=spec["settings"]["max_positions"],
                  **SIZES[spec["preset"]])
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(work / "init")
    with torch.no_grad():  # see the module docstring: varied lengths, so rewards differ
        row = torch.randn(lm.config.hidden_size, generator=torch.Generator().manual_seed(1))
        lm.get_input_embeddings().weight[EOS] = EOS_NORM * row / row.norm()
    lm.save_pretrained(work / "model")
    shutil.rmtree(work / "init")
    with (work / "prompts.jsonl").open("w") as f:
        for i, text in enumerate(spec["texts"]):
            f.write(json.dumps({"id": f"p{i}", "text": text}) + "\n")
    s = spec["settings"]
    for algorithm in ("grpo", "pairs"):
        (work / f"{algorithm}.yaml").write_text(f"""\
track: tts
model: {{path: {work / 'model'}, adapter: causal_lm, num_codebooks: 2, dtype: {spec['dtype_name']}}}
data: {{pairs: {work / 'unused.jsonl'}, max_length: {s['max_positions']}}}
build_pairs: {{prompts: {work / 'prompts.jsonl'}, work_dir: {work / 'unused'}, judge: null, keys: [], min_margins: {{}},
  max_chosen_cer: null, chosen_stable: false, similarity: false, chosen: rendered, max_seconds: {s['max_seconds']},
  batch_size: {s['prompts_per_step'] * s['samples']}}}
online: {{algorithm: {algorithm}, prompts_per_step: {s['prompts_per_step']}, samples: {s['samples']},
  rewards: {{duration: 1.0}}, temperature: 1.0}}
loss: {{type: lpo-ste}}
reference: {{source: model}}
train: {{out_dir: {work / 'unused'}, lr: 1.0e-5, max_steps: {spec['steps']}, batch_size: {s['batch_size']},
  save_every: 0, log_every: 1, warmup_steps: 0}}
runtime: {{device: {spec['device']}, sampling_threads: 1}}
""")
    (work / "ready").write_text(spec["key"])
    return {"seconds": time.perf_counter() - t0, "vocab": tok.vocab_size}


def child_online(spec: dict) -> dict:
    """`spec['steps']` online steps of one algorithm and strategy: step times, sampling share, rewards, peak."""
    import torch

    from lpo_speech.online import train_online
    from lpo_speech.recipe import load_any_recipe

    work = Path(spec["work"])
    out_dir = work / f"run-{spec['algorithm']}-{spec['strategy']}"
    shutil.rmtree(out_dir, ignore_errors=True)
    recipe = load_any_recipe(work / f"{spec['algorithm']}.yaml",
                             [f"train.out_dir={out_dir}", f"train.strategy={spec['strategy']}"])
    meter = PeakMeter(spec["device"], 1, spec["steps"])  # the first step also warms up kernels and the allocator
    t0 = time.perf_counter()
    train_online(recipe, quiet=True)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    runtime = json.loads((out_dir / "runtime.json").read_text()) if (out_dir / "runtime.json").is_file() else {}
    config = json.loads((work / "model" / "config.json").read_text())
    steps = step_seconds(rows) or [r.get("sample_s", 0) + r.get("score_s", 0) + r.get("train_s", 0) for r in rows]
    timed = steps[1:] or steps
    out = {"steps": len(rows), "step_seconds": steps, "median_step_s": statistics.median(timed),
           "sample_s": [r.get("sample_s") for r in rows], "train_s": [r.get("train_s") for r in rows],
           "reward": [r["reward"] for r in rows], "reward_best": [r["reward_best"] for r in rows],
           "reward_worst": [r["reward_worst"] for r in rows], "loss": [r["loss"] for r in rows],
           "pairs": [r.get("pairs") for r in rows], "grad_norm": [r.get("grad_norm") for r in rows],
           "wall_s": wall, "strategy": runtime.get("strategy"), "trainable": runtime.get("trainable"),
           **meter.result(), **planned(recipe.train_recipe(), config, chosen_only=spec["algorithm"] == "grpo")}
    shutil.rmtree(out_dir, ignore_errors=True)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return out


CHILDREN = {"online-prepare": child_online_prepare, "online": child_online}
