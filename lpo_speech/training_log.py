"""Per-step training metrics: JSONL (the source of truth), tensorboard, and at the end a PNG of the
curves and a Markdown summary. On resume the JSONL is cut back to the checkpoint's step, so a resumed
run's log reads exactly like an uninterrupted one."""

from __future__ import annotations

import json
import os
from pathlib import Path

PANELS = [("loss", ["loss", "loss_unreg"]), ("log-ratios (signed)", ["x1", "x2", "margin"]),
          ("accuracy", ["accuracy"]), ("chosen NLL", ["chosen_nll"]), ("grad norm", ["grad_norm"]),
          ("learning rate", ["lr"])]


class MetricsLog:
    def __init__(self, run_dir: Path, *, start_step: int, enabled: bool):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        if self.path.exists():  # drop lines past the checkpoint we resume from (or all, on a fresh start)
            keep = [l for l in self.path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= start_step]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(l + "\n" for l in keep))
            os.replace(tmp, self.path)
        self._f = self.path.open("a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=start_step + 1)
        except ImportError:  # tensorboard is a pinned dependency; keep training if a user removed it
            self.tb = None

    def write(self, step: int, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._f.write(json.dumps({"step": step, **row}) + "\n")
        self._f.flush()
        if self.tb is not None:
            for k, v in row.items():
                self.tb.add_scalar(f"train/{k}", v, step)

    def finish(self, title: str, panels: list[tuple[str, list[str]]] | None = None) -> None:
        if self.enabled:
            self._f.flush()
            plot_metrics(self.path, self.run_dir / "training_curves.png", title=title, panels=panels)

    def close(self) -> None:
        if self.enabled:
            self._f.close()
            if self.tb is not None:
                self.tb.close()


def plot_metrics(metrics_jsonl: Path, out_png: Path, *, title: str = "",
                 panels: list[tuple[str, list[str]]] | None = None) -> None:
    """Up to six panels (title, metric keys) of the logged curves; default PANELS (offline training)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(l) for l in Path(metrics_jsonl).read_text().splitlines() if l.strip()]
    if not rows:
        return
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, (name, keys) in zip(axes.flat, panels or PANELS):
        for k in keys:
            if any(k in r for r in rows):
                ax.plot([r["step"] for r in rows if k in r], [r[k] for r in rows if k in r], label=k)
        ax.set_title(name)
        ax.set_xlabel("step")
        if len(keys) > 1:
            ax.legend(fontsize=8)
        if name.startswith("log-ratios"):
            ax.axhline(0, color="grey", lw=0.5)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
