"""Peak memory of sequence log-probs at vocab 65,536 and length 2,048: full log-softmax vs ours.

Each method runs in its own child process (forward + backward through the output projection, for a
chosen and a rejected sequence of 2,048 response tokens), which reports its peak RSS growth over the
inputs (CPU) or its CUDA max allocated. One run of this script measures both, so the ratio is side
by side.   python benchmarks/logps_memory.py [--device cuda] [--hidden 512]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch


def child(method: str, device: str, vocab: int, length: int, hidden: int) -> dict:
    from lpo_speech.logps import linear_token_logps

    torch.manual_seed(0)
    dev = torch.device(device)
    h = torch.randn(2 * length, hidden, device=dev, requires_grad=True)
    w = (torch.randn(vocab, hidden, device=dev) * 0.02).requires_grad_()
    tgt = torch.randint(0, vocab, (2 * length,), device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    if method == "full":  # what a plain loop does: logits, log_softmax over everything, gather
        logp = torch.log_softmax((h @ w.t()).float(), dim=-1).gather(1, tgt[:, None]).squeeze(1)
    else:
        logp = linear_token_logps(h, w, tgt)
    seq = logp.view(2, length).mean(1)
    (seq[0] - seq[1]).backward()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"method": method, "peak_mb": peak / 2**20, "seconds": time.perf_counter() - t0,
            "value": seq.detach().cpu().tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--vocab", type=int, default=65536)
    ap.add_argument("--length", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "logps_memory.json"))
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.device, a.vocab, a.length, a.hidden)))
        return
    results = {}
    for method in ("full", "chunked"):
        cmd = [sys.executable, __file__, "--child", method, "--device", a.device, "--vocab", str(a.vocab),
               "--length", str(a.length), "--hidden", str(a.hidden)]
        results[method] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    diff = max(abs(x - y) for x, y in zip(results["full"]["value"], results["chunked"]["value"]))
    out = {"device": a.device, "vocab": a.vocab, "length": a.length, "hidden": a.hidden,
           "sequences": 2, "full": results["full"], "chunked": results["chunked"],
           "memory_ratio_chunked_over_full": results["chunked"]["peak_mb"] / results["full"]["peak_mb"],
           "max_abs_logp_difference": diff}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print("| method | peak MB | seconds |\n|---|---|---|")
    for m in ("full", "chunked"):
        print(f"| {m} | {results[m]['peak_mb']:.0f} | {results[m]['seconds']:.2f} |")
    print(f"ratio chunked/full = {out['memory_ratio_chunked_over_full']:.3f}; max |logp diff| = {diff:.2e}")


if __name__ == "__main__":
    main()
