"""Per-style view of `eval --wer` runs: failures, style accuracy and speaking rate against the SFT model.

    .venv/bin/python benchmarks/style_breakdown.py --eval runs/emotion-sync_sweep/eval \\
        --prompts runs/sync/data/dev_style_prompts.jsonl sft recipe seed-1 seed-2

Each label is a folder of `--eval` holding `utterances.jsonl` (only the manifest's prompts count); the
first label is the baseline. "new / fixed" counts the prompts a run fails and the baseline does not, and
the reverse; p is the exact two-sided McNemar (sign) test on those two counts: below 0.05, the failure
rates differ by more than the prompts' luck of the draw. It counts prompts as independent: with
`--all-styles` manifests, three prompts share each sentence, so read p as a lower bound. The duration
ratio is the mean, over prompts every run terminated, of the run's duration over the baseline's, per
requested style: below 1 the model speaks faster. `--pairs pairs.jsonl` prints instead how much longer
each rejected is than its chosen, per requested style (response tokens).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        _fail(f"{path}: missing")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                _fail(f"{path}:{n}: not JSON ({e.msg})")
    return rows


def mcnemar_p(new: int, fixed: int) -> float:
    """Exact two-sided sign test (scipy's binomial test at 1/2): the chance of a split at least this
    uneven if each discordant prompt were a fair coin."""
    from scipy.stats import binomtest

    return binomtest(new, new + fixed).pvalue if new + fixed else 1.0


def breakdown(eval_dir: Path, want: dict[str, str], labels: list[str]) -> str:
    runs = {r: {u["id"]: u for u in _jsonl(eval_dir / r / "utterances.jsonl") if u["id"] in want} for r in labels}
    base = runs[labels[0]]
    styles = sorted(set(want.values()))
    both = [i for i in base if all(i in runs[r] and runs[r][i]["terminated"] for r in labels)]
    rows = [f"| run | prompts | style acc | {' / '.join(styles)} style acc | failures | new / fixed vs {labels[0]} | p | "
            f"{' / '.join(styles)} failures | mean s | {' / '.join(styles)} duration x {labels[0]} |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in labels:
        utts = list(runs[r].values())
        fails = Counter(want[u["id"]] for u in utts if u["failure"])
        new = sum(u["failure"] and not base[u["id"]]["failure"] for u in utts if u["id"] in base)
        fixed = sum(base[u["id"]]["failure"] and not u["failure"] for u in utts if u["id"] in base)
        ratio = defaultdict(list)
        for i in both:
            ratio[want[i]].append(runs[r][i]["duration_s"] / base[i]["duration_s"])
        hit = defaultdict(list)
        for u in utts:
            hit[want[u["id"]]].append(u.get("emotion_top") == want[u["id"]])
        acc = statistics.mean(x for v in hit.values() for x in v)
        per_style = " / ".join(f"{statistics.mean(hit[s]):.2f}" if hit[s] else "-" for s in styles)
        rows.append(f"| {r} | {len(utts)} | {acc:.3f} | {per_style} | {sum(fails.values())} | {new} / {fixed} | "
                    f"{mcnemar_p(new, fixed):.3f} | {' / '.join(str(fails[s]) for s in styles)} | "
                    f"{statistics.mean(u['duration_s'] for u in utts):.2f} | "
                    f"{' / '.join(f'{statistics.mean(ratio[s]):.2f}' if ratio[s] else '-' for s in styles)} |")
    return "\n".join(rows)


def pair_lengths(pairs: Path, want: dict[str, str]) -> str:
    by = defaultdict(list)
    for p in _jsonl(pairs):
        by[want.get(p["prompt_id"], "-")].append(len(p["rejected_tokens"]) / len(p["chosen_tokens"]))
    by["all"] = [x for v in list(by.values()) for x in v]
    rows = ["| requested style | pairs | median rejected / chosen length | share longer | share above 1.5 |",
            "|---|---|---|---|---|"]
    rows += [f"| {s} | {len(v)} | {statistics.median(v):.2f} | {sum(x > 1 for x in v) / len(v):.2f} | "
             f"{sum(x > 1.5 for x in v) / len(v):.2f} |" for s, v in sorted(by.items())]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", required=True, type=Path, help="the styled prompt manifest (id -> emotion)")
    ap.add_argument("--eval", type=Path, help="eval --wer output folder, one subfolder per label")
    ap.add_argument("--pairs", type=Path, help="a pairs.jsonl: rejected/chosen lengths instead")
    ap.add_argument("labels", nargs="*", help="runs to show, the baseline first")
    a = ap.parse_args()
    want = {p["id"]: p.get("emotion") or "-" for p in _jsonl(a.prompts)}
    if a.pairs:
        print(pair_lengths(a.pairs, want))
    elif a.eval and a.labels:
        print(breakdown(a.eval, want, a.labels))
    else:
        ap.error("give --pairs, or --eval with labels")


if __name__ == "__main__":
    main()
