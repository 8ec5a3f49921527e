"""Running lpo-speech commands as the steps of a longer job (`lpo-speech demo`, `lpo-speech study`).

A job is nothing but documented commands run in order and printed as they run, so every number it
reports can be reproduced by hand. A step whose `done` file exists is skipped, so a rerun after an
interruption resumes; a training step whose run folder holds checkpoints continues with `--resume`
(the trainer checks that the recipe did not change). Each step runs in this process through the CLI's
`main`, so a bad input is the same one line the command alone would print.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from lpo_speech.errors import UserError


@dataclass
class StepLog:
    """What a job ran: each command line, whether it ran or was skipped as done, and its seconds."""

    entries: list[dict] = field(default_factory=list)
    total: int | None = None  # steps planned, for the "[i/n]" progress prefix

    def progress(self) -> str:
        return f"[{len(self.entries) + 1}/{self.total}] " if self.total else ""


def shown(args: list[str]) -> str:
    return "lpo-speech " + " ".join(shlex.quote(a) for a in args)


def run_command(args: list[str], done: Path | None = None, log: StepLog | None = None) -> bool:
    """Run `lpo-speech ARGS` unless `done` exists; True when it ran. A failure is one UserError."""
    from lpo_speech.cli import main  # the CLI imports the command modules; importing it lazily keeps this module light

    line = shown(args)
    prefix = log.progress() if log else ""
    if done is not None and done.exists():
        print(f"\n== {prefix}skip (done: {done}) {line}", flush=True)
        if log:
            log.entries.append({"command": line, "ran": False, "seconds": 0.0})
        return False
    print(f"\n== {prefix}{line}", flush=True)
    t0 = time.perf_counter()
    rc = main(args)
    if rc != 0:
        raise UserError(f"step failed (exit {rc}): {line}")
    seconds = time.perf_counter() - t0
    print(f"== done in {seconds:.0f} s", flush=True)
    if log:
        log.entries.append({"command": line, "ran": True, "seconds": round(seconds, 1)})
    return True


def train_command(recipe: str | Path, overrides: list[str], run_dir: Path, log: StepLog | None = None,
                  extra: list[str] | None = None) -> bool:
    """`lpo-speech train RECIPE OVERRIDES`, resumed when `run_dir` holds checkpoints, skipped once its
    final model exists."""
    resume = ["--resume"] if (run_dir / "checkpoints").exists() else []
    return run_command(["train", str(recipe), *overrides, *(extra or []), *resume],
                       done=run_dir / "model" / "model.safetensors", log=log)
