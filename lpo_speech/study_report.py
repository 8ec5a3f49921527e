"""The results of a study (lpo_speech.study): per-model summaries over seeds, prompt-by-prompt failure
comparisons, the provenance (commit, date, machine), the README page and the plot."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from lpo_speech.stats import sign_test_p  # prompt by prompt failures (paired_failures)

# `study` arguments below are lpo_speech.study.Study objects (not imported: that module imports this one).

REPO = Path(__file__).resolve().parents[1]


def _utterances(path: Path) -> dict[str, dict] | None:
    """An eval's utterances by id, when they carry TTS failure flags (None otherwise)."""
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {r["id"]: r for r in rows} if rows and all("failure" in r for r in rows) else None


def paired_failures(baseline: str | None, rows: list[str], eval_dirs: list[Path], manifest: Path) -> list[dict | None]:
    """Per model (in order; its table row and its eval folder on one set): its failures against the
    baseline row's, prompt by prompt."""
    utts = [_utterances(d / row / "utterances.jsonl") for row, d in zip(rows, eval_dirs)]
    at = rows.index(baseline) if baseline in rows else None
    base = utts[at] if at is not None else None
    if base is None:
        return [None] * len(rows)
    styled = "emotion_acc" in json.loads((eval_dirs[at] / "metrics.json").read_text())
    wanted = {}
    if styled and manifest.is_file():
        lines = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
        wanted = {r["id"]: r.get("emotion") or "-" for r in lines}
    out: list[dict | None] = []
    for run in utts:
        if run is None:
            out.append(None)
            continue
        ids = [i for i in run if i in base]
        new = sum(bool(run[i]["failure"] and not base[i]["failure"]) for i in ids)
        fixed = sum(bool(base[i]["failure"] and not run[i]["failure"]) for i in ids)
        got = {"vs": baseline, "failures": sum(bool(u["failure"]) for u in run.values()), "new": new,
               "fixed": fixed, "p": sign_test_p(new, fixed)}
        if wanted:
            got["by_style"] = {}
            for style in sorted(set(wanted.values())):
                mine = [i for i in run if wanted.get(i) == style]
                both = [i for i in mine if i in base and run[i].get("terminated") and base[i].get("terminated")]
                ratio = (sum(run[i]["duration_s"] / base[i]["duration_s"] for i in both) / len(both)) if both else None
                got["by_style"][style] = {"failures": sum(bool(run[i]["failure"]) for i in mine),
                                          "duration_ratio": ratio}
        out.append(got)
    return out


def provenance() -> dict:
    """Commit, date and machine, so a results file says what produced it."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"commit": git("rev-parse", "HEAD") or None, "uncommitted_changes": bool(git("status", "--porcelain")),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__,
                        "python": platform.python_version()}}


def merge_history(entries: list[dict], earlier_file: Path, name: str, made: dict) -> list[dict]:
    """Every command with the commit and date of the invocation that ran it: this one's for what ran
    now, the earlier results file's for what was skipped as done (so re-rendering a finished study keeps
    where its numbers came from)."""
    earlier: dict[str, dict] = {}
    try:
        old = json.loads(earlier_file.read_text())
    except (OSError, ValueError):
        old = None
    if isinstance(old, dict) and old.get("study") == name:
        for c in old.get("commands", []):
            if c.get("ran"):  # files written before this field: the run's own commit and date
                earlier[_key(c["command"])] = {**c, "commit": c.get("commit", old.get("commit")),
                                         "date": c.get("date", old.get("date")),
                                         "uncommitted_changes": c.get("uncommitted_changes", old.get("uncommitted_changes"))}
    out = []
    for c in entries:
        if c["ran"]:
            out.append({**c, "commit": made["commit"], "date": made["date"],
                        "uncommitted_changes": made["uncommitted_changes"], "ran_now": True})
        else:  # `ran` stays true when an earlier invocation ran it; `ran_now` says this one did not
            out.append({**earlier.get(_key(c["command"]), c), "ran_now": False})
    return out


def _key(command: str) -> str:
    return command.removesuffix(" --resume")  # a finished training step is shown with --resume when skipped


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(rows: list[dict], metrics: list[str]) -> list[dict]:
    """Per row, set and metric: mean, sample sd (None for one run) and the number of runs."""
    out: list[dict] = []
    keys = list(dict.fromkeys((r["row"], r["set"]) for r in rows))
    for row, set_name in keys:
        found = [r["metrics"] for r in rows if r["row"] == row and r["set"] == set_name]
        for metric in metrics:
            values = [float(m[metric]) for m in found if isinstance(m.get(metric), (int, float))]
            if not values:
                continue
            mean, sd = _mean_sd(values)
            out.append({"row": row, "set": set_name, "metric": metric, "mean": mean, "sd": sd, "n": len(values)})
    return out


def _cell(s: dict | None) -> str:
    if s is None:
        return "n/a"
    return f"{s['mean']:.4f}" if s["sd"] is None else f"{s['mean']:.4f} ± {s['sd']:.4f}"


def report(results: dict, study: Any, plots: list[str]) -> str:
    summary = {(s["row"], s["set"], s["metric"]): s for s in results["summary"]}
    rows = list(dict.fromkeys(s["row"] for s in results["summary"]))
    sets, metrics, base = list(study.eval.sets), study.eval.metrics, study.eval.baseline
    head = ["row", "runs"]
    for set_name in sets:
        head += [f"{set_name} {m}" for m in metrics] + ([f"{set_name} {metrics[0]} vs {base}"] if base else [])
    lines = [f"# {study.title}", "", study.about.strip(), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        n = max(s["n"] for s in results["summary"] if s["row"] == row)
        cells = [row, str(n)]
        for set_name in sets:
            cells += [_cell(summary.get((row, set_name, m))) for m in metrics]
            if base:
                a, b = summary.get((row, set_name, metrics[0])), summary.get((base, set_name, metrics[0]))
                cells.append(f"x{a['mean'] / b['mean']:.3f}" if a and b and b["mean"] > 0 else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Mean ± sample standard deviation over the runs (seeds) of each row; lower is better for error "
              "rates. The `vs` columns divide a row's mean by the baseline row's on the same set.", ""]
    if study.findings.strip():
        lines += ["## What it shows", "", study.findings.strip(), ""]
    lines += [f"![{p}]({p})" for p in plots] + [""]
    lines += paired_table(results, sets)
    m = results["machine"]
    by_commit: dict[tuple, int] = {}
    for c in results["commands"]:
        if c.get("commit"):
            key = (c["commit"], bool(c.get("uncommitted_changes")), c.get("date", ""))
            by_commit[key] = by_commit.get(key, 0) + 1
    made = "; ".join(f"{n} at commit `{commit}`" + (" with uncommitted changes" if dirty else "") + f" ({date})"
                     for (commit, dirty, date), n in by_commit.items())
    unknown = sum(not c.get("commit") for c in results["commands"])
    lines += ["## How it was made", "",
              f"    lpo-speech study {results['study_file']}", "",
              f"{m['cpu']}, {m['cores']} cores" + (f", {m['gpu']}" if m["gpu"] else ", no GPU") + f"; torch {m['torch']}. "
              f"Of its {len(results['commands'])} commands, {made or 'none ran'}"
              + (f"; {unknown} {'was' if unknown == 1 else 'were'} done before any recorded run" if unknown else "") + ". This page was written at "
              f"commit `{results['commit']}` ({results['date']}).", "",
              "Commands, in order:", ""]
    lines += [f"    {c['command']}" for c in results["commands"]]
    return "\n".join(lines) + "\n"


def paired_table(results: dict, sets: list[str]) -> list[str]:
    """The prompt-by-prompt failure comparison with the baseline, per set (TTS evals only)."""
    lines: list[str] = []
    for set_name in sets:
        rows = [r for r in results["rows"] if r["set"] == set_name and r.get("paired")]
        if not rows:
            continue
        styles, base = list(rows[0]["paired"].get("by_style", {})), rows[0]["paired"]["vs"]
        by = f" | failures {' / '.join(styles)} | duration x {base} {' / '.join(styles)}" if styles else ""
        lines += [f"Failures on {set_name}, prompt by prompt against {base} (new: the row fails where the baseline "
                  "does not; fixed: the reverse; p: exact two-sided sign test on the two):", "",
                  f"| row | seed | failures | new / fixed | p{by} |", "|---" * (5 + 2 * bool(styles)) + "|"]
        for r in rows:
            p = r["paired"]
            cells = [r["row"], "" if r["seed"] is None else str(r["seed"]), str(p["failures"]),
                     f"{p['new']} / {p['fixed']}", f"{p['p']:.3f}"]
            if styles:
                s = p["by_style"]
                cells += [" / ".join(str(s[k]["failures"]) for k in styles),
                          " / ".join("-" if s[k]["duration_ratio"] is None else f"{s[k]['duration_ratio']:.2f}"
                                     for k in styles)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def plot(results: dict, study: Any, out_dir: Path) -> list[str]:
    """One bar chart of the headline metric: a group per eval set, a bar per row, seed spread as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = study.eval.metrics[0]
    summary = [s for s in results["summary"] if s["metric"] == metric]
    rows = list(dict.fromkeys(s["row"] for s in summary))
    sets = list(study.eval.sets)
    if not summary:
        return []
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(sets) * max(1, len(rows)) / 2, 3.6))
    width = 0.8 / max(1, len(rows))
    for i, row in enumerate(rows):
        got = {s["set"]: s for s in summary if s["row"] == row}
        xs = [j + i * width for j, set_name in enumerate(sets) if set_name in got]
        ys = [got[s]["mean"] for s in sets if s in got]
        err = [got[s]["sd"] or 0.0 for s in sets if s in got]
        ax.bar(xs, ys, width, yerr=err, capsize=3, label=row)
    ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(sets))], sets)
    ax.set_ylabel(metric)
    ax.set_title(study.name)
    ax.legend(fontsize=8)
    fig.tight_layout()
    name = f"{metric}.png"
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return [name]
