"""Online TTS scoring: the judges in the training process vs in worker processes, side by side.

    .venv/bin/python benchmarks/judge_workers.py            # -> benchmarks/results/judge_workers-cpu.json

One online step's candidates are synthesized once (`--prompts` natural test sentences x `--samples`
candidates at temperature 0.7 from assets/tts-tiny-sft-sync-natural, the batched KV-cache sampler on
one thread, as the online recipes sample), then the same candidate groups are scored by the Whisper
tiny.en judge (the online recipes' cer + failure reward) two ways, alternating, `--repeats` times each
after one warm-up round each: in this process with one torch thread (online.judge_workers: 0, what the
recipes ran with) and by lpo_speech.tts.judge_pool.JudgePool with `--workers` processes (each built
once, outside the timing). Reported: clips per second of each (median round), their ratio, the
sampling time for comparison, and whether both ways gave identical scores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / "assets" / "tts-tiny-sft-sync-natural"))
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "judge_workers-cpu.json"))
    a = ap.parse_args()

    import torch

    from lpo_speech.records import TtsPrompt
    from lpo_speech.synthetic.natural import pool
    from lpo_speech.tts.judge_pool import JudgePool
    from lpo_speech.tts.model import load_codec_lm
    from lpo_speech.tts.scoring import Clip, TtsScorer
    from lpo_speech.tts.synthesize import synthesize

    torch.set_num_threads(1)
    lm, tok = load_codec_lm(a.model)
    prompts = [TtsPrompt(id=f"p{i}", text=t) for i, t in enumerate(pool("test")[:a.prompts])]
    t0 = time.perf_counter()
    synths = synthesize(lm, tok, prompts, n=a.samples, temperature=0.7, seed=0, batch_size=32, threads=1)
    sample_s = time.perf_counter() - t0
    groups = [([Clip(p.text, s.wav, s.sr, terminated=s.terminated, undecodable=s.undecodable) for s in g], None)
              for p, g in zip(prompts, synths)]
    n_clips = sum(len(c) for c, _ in groups)
    settings = dict(judge={"type": "faster-whisper", "model": "bundled"}, similarity=False, dnsmos=False,
                    emotion=None, lang="en", device="cpu")
    scorer = TtsScorer(**settings)
    pool_ = JudgePool(settings, a.workers)
    ways = {"in-process": lambda: [scorer.score(c, r) for c, r in groups], f"{a.workers} workers": lambda: pool_.score(groups)}
    seconds: dict[str, list[float]] = {k: [] for k in ways}
    scores: dict[str, list] = {}
    try:
        for rnd in range(a.repeats + 1):  # round 0 warms up (judge loading, first CTranslate2 calls)
            for name, run in ways.items():
                t0 = time.perf_counter()
                scores[name] = run()
                if rnd:
                    seconds[name].append(time.perf_counter() - t0)
    finally:
        pool_.close()
    med = {k: statistics.median(v) for k, v in seconds.items()}
    names = list(ways)
    out = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU",
           "torch": torch.__version__, "model": Path(a.model).name, "prompts": a.prompts, "samples": a.samples,
           "clips": n_clips, "sampling_s": round(sample_s, 3), "repeats": a.repeats,
           "seconds": {k: [round(x, 3) for x in v] for k, v in seconds.items()},
           "clips_per_s": {k: round(n_clips / v, 2) for k, v in med.items()},
           "speedup_workers_over_in_process": round(med[names[0]] / med[names[1]], 3),
           "identical_scores": scores[names[0]] == scores[names[1]]}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print("| scoring | median s | clips/s |\n|---|---|---|")
    for k in names:
        print(f"| {k} | {med[k]:.2f} | {n_clips / med[k]:.1f} |")
    print(f"{n_clips} clips; sampling them took {sample_s:.1f} s; speedup {out['speedup_workers_over_in_process']:.2f}x; "
          f"identical scores: {out['identical_scores']}")


if __name__ == "__main__":
    main()
