"""What the GPU check's training children share: peak memory over the timed steps, step times from the
run's metrics, and the memory lpo_speech.plan estimates for the same recipe (`lpo-speech train --plan`)."""

from __future__ import annotations

import resource

GiB = 2**30


class PeakMeter:
    """Peak memory of the steps after `warmup` optimizer steps: CUDA max allocated, reset when the
    warm-up ends (weights, optimizer states and the timed steps' activations), read after step `total`;
    on a CPU the process's RSS high-water mark (the whole process). Hooks every optimizer step
    (torch's global post-step hook), whatever the trainer wraps the optimizer in."""

    def __init__(self, device: str, warmup: int, total: int):
        import torch
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.cuda, self.warmup, self.total = device.startswith("cuda"), warmup, total
        self.steps, self.peak = 0, None
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        register_optimizer_step_post_hook(self._after_step)

    def _now(self) -> int:
        import torch

        return torch.cuda.max_memory_allocated() if self.cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _after_step(self, _opt, _args, _kwargs) -> None:
        import torch

        self.steps += 1
        if self.cuda and self.steps == self.warmup:
            torch.cuda.reset_peak_memory_stats()
        if self.steps == self.total:
            self.peak = self._now()

    def result(self) -> dict:
        timed = self.peak is not None
        kind = ("CUDA max allocated over the timed steps" if self.cuda and timed and self.warmup else
                "CUDA max allocated over the run" if self.cuda else "process RSS high-water mark")
        return {"peak_gib": (self.peak if timed else self._now()) / GiB, "peak_kind": kind,
                "optimizer_steps_seen": self.steps}


def step_seconds(rows: list[dict]) -> list[float]:
    """Each logged step's wall time, from the metrics rows' cumulative elapsed_s."""
    ends = [r["elapsed_s"] for r in rows if "elapsed_s" in r]
    return [e - b for b, e in zip([0.0] + ends[:-1], ends)]


def planned(recipe, config: dict, *, chosen_only: bool | None = None) -> dict:
    """lpo_speech.plan's estimate for `recipe` on one GPU, with the settings `train --plan` takes from it
    (plan.recipe_settings; `chosen_only` overrides, for online GRPO's single rows), or
    {"plan": "n/a", ...} for a model it cannot estimate (its reason kept). `config`: config.json's dict."""
    try:
        from lpo_speech.plan import plan, recipe_settings

        settings = recipe_settings(recipe)
        if chosen_only is not None:
            settings["chosen_only"] = chosen_only
        p = plan(dict(config), world=1, **settings)
    except Exception as e:  # a model family the plan does not model yet
        return {"plan": "n/a", "plan_why": " ".join(f"{type(e).__name__}: {e}".split())[:200]}
    return {"plan_gib": p["total"] / GiB, "plan_activations_gib": p["activations"] / GiB,
            "plan_notes": list(p.get("notes") or [])}
