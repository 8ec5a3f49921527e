"""A training run's folder: one run at a time in it, resumed only as the run it is, nothing left by a
run that failed before it made progress.

Every training front door (lpo_speech.trainer, .online, .rounds) enters a `RunFolder` before it loads
the model, and calls `begin` once its inputs are checked:

- **One writer.** Rank 0 holds an exclusive `flock` on `<run>/.lock` while the run lives; a second run
  started on the folder stops in one line naming the holder. The kernel drops the lock when the process
  ends, however it ends, so a killed run never holds it. (On a shared filesystem the lock is as good as
  its `flock`: NFSv4 and Lustre honour it.)
- **Resume is for the same run.** `run.settings.json` records what shapes the run's data and loss:
  every recipe setting but those in RESUMABLE, with the files and models it reads compared by content
  (lpo_speech.stages fingerprints), not by path. `--resume` with any of them changed stops in one line
  naming the first difference. The RESUMABLE settings (how long, how often to log and save, where and
  how fast it runs) may change; each resume that changes them, or the number of processes, appends
  what changed to `resumes.jsonl`. `config.yaml` stays the recipe the run started with.
- **Nothing left behind.** When the run fails before it has a checkpoint or a logged step, what this
  invocation created in the folder is removed (also when another process's failure stops this one);
  a folder that holds progress is kept whole.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from lpo_speech.distributed import DistInfo, on_abort
from lpo_speech.errors import UserError, short
from lpo_speech.recipe import save_recipe, to_dict
from lpo_speech.stages import input_file, model_folder, record_settings, settings_changes

# Settings a resume may change: they do not shape the data or the loss of the steps already taken.
# A prefix ending in "." covers a whole section.
RESUMABLE = ("train.max_steps", "train.epochs", "train.log_every", "train.save_every", "train.keep_checkpoints",
             "train.save_optimizer",
             "train.fsdp_cpu_offload", "train.fsdp_reshard_after_forward", "model.gradient_checkpointing",
             "online.judge_workers", "runtime.", "train.out_dir")
MODELS = ("model.path", "reference.path")  # compared by the model folder's content
SETTINGS, RESUMES, LOCK = "run.settings.json", "resumes.jsonl", ".lock"


def flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-6}} -> {"train.lr": 1e-6}; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for k, v in mapping.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resumable(key: str) -> bool:
    return any(key == r or (r.endswith(".") and key.startswith(r)) for r in RESUMABLE)


def run_settings(recipe: Any) -> dict[str, Any]:
    """What a resume must keep: every setting but RESUMABLE; a setting naming an existing file or (for
    MODELS) a model folder stands for that file's or folder's content."""
    settings: dict[str, Any] = {}
    for key, value in flatten(to_dict(recipe)).items():
        if resumable(key):
            continue
        if isinstance(value, str) and value:
            if key in MODELS and Path(value).is_dir():
                value = model_folder(value)
            elif Path(value).is_file():
                value = input_file(value)
        settings[key] = value
    return settings


class RunFolder:
    """Enter before loading the model (every process), `begin` when the inputs are checked (module
    docstring). `marker`: the glob of what makes the folder an earlier run's (its checkpoints)."""

    def __init__(self, path: str | Path, recipe: Any, info: DistInfo, *, resume: bool,
                 marker: str = "checkpoints/step-??????"):
        self.path, self.recipe, self.info, self.resume, self.marker = Path(path), recipe, info, resume, marker
        self._lock_fd: int | None = None
        self._before: set[str] | None = None  # entries present on entry (None: the folder is new)

    # ---------------------------------------------------------------------------------- entering
    def __enter__(self) -> "RunFolder":
        if self.info.is_main:
            self._before = set(os.listdir(self.path)) if self.path.is_dir() else None
            self.path.mkdir(parents=True, exist_ok=True)
            self._take_lock()  # refused: nothing here is ours to clean
            on_abort(self._discard)
            try:
                self.check()
            except BaseException:
                self._discard()
                self._release()
                raise
        else:
            self.check()  # the same line on every process: rank 0 shows it
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if kind is not None and self.info.is_main:
            self._discard()
        self._release()
        return False

    def started(self) -> bool:
        """Does the folder hold an earlier run's progress (its `marker`) or its trained model?"""
        return any(self.path.glob(self.marker)) or (self.path / "model" / "config.json").is_file()

    def check(self) -> None:
        """Refuse a fresh start over an earlier run, and a resume with other settings."""
        if not self.started():
            return
        if not self.resume:
            what = "rounds" if self.marker.startswith("round-") else "checkpoints or a model"
            raise UserError(f"holds {what} of an earlier run; pass --resume to continue it or set "
                            "train.out_dir to a new folder", where=str(self.path))
        if not any(self.path.glob(self.marker)):  # a finished run that kept no checkpoint
            raise UserError("finished, and kept no checkpoint to continue from (train.save_optimizer: false): "
                            "train on from its model/ in a new train.out_dir", where=str(self.path))
        changes = self._changes()
        if changes:
            more = f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""
            allowed = ", ".join(r + ("*" if r.endswith(".") else "") for r in RESUMABLE if r != "train.out_dir")
            raise UserError(f"--resume with other settings than this run was started with: {changes[0]}{more}; "
                            f"a resume may change only {allowed}: rerun with the run's settings (its config.yaml) "
                            "or set train.out_dir to a new folder", where=str(self.path))

    def _changes(self) -> list[str]:
        recorded = settings_changes(self.path, run_settings(self.recipe), path=self.path / SETTINGS)
        if recorded is not None:
            return recorded
        config = self.path / "config.yaml"  # a run made before settings were recorded: its plain recipe
        if not config.is_file():
            return []
        old = {k: v for k, v in flatten(yaml.safe_load(config.read_text()) or {}).items() if not resumable(k)}
        new = {k: v for k, v in flatten(to_dict(self.recipe)).items() if not resumable(k)}
        return [f"{k} {short(old.get(k))} -> {short(new.get(k))}" for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k)]

    # ------------------------------------------------------------------------------------- begin
    def begin(self, *, step: int, fresh: bool | None = None, at: str | None = None) -> None:
        """The inputs are good and training starts at `step` (0: a fresh run). A fresh run records its
        recipe and settings; a resume records what it changed (rank 0 only). Call before the run's
        `runtime.json` is rewritten: it tells the process count the run had. `fresh` (default: step
        0) says whether the run starts over; `at` names where it resumes (default: the step)."""
        if not self.info.is_main:
            return
        now = {k: v for k, v in flatten(to_dict(self.recipe)).items() if resumable(k) and k != "train.out_dir"}
        fresh = step == 0 if fresh is None else fresh
        if fresh or not (self.path / "config.yaml").is_file():
            save_recipe(self.recipe, self.path / "config.yaml")
            record_settings(self.path, run_settings(self.recipe), path=self.path / SETTINGS)
            (self.path / RESUMES).unlink(missing_ok=True)
            return
        if not (self.path / SETTINGS).is_file():  # adopt fingerprints on the first resume of an older run
            record_settings(self.path, run_settings(self.recipe), path=self.path / SETTINGS)
        before, processes = self._effective()
        changed = {k: [before.get(k), v] for k, v in now.items() if before.get(k) != v}
        if processes is not None and processes != self.info.world:
            changed["processes"] = [processes, self.info.world]
        if not changed:
            return
        with (self.path / RESUMES).open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "changed": changed,
                                "settings": now, "processes": self.info.world}) + "\n")
        shown = "; ".join(f"{k} {short(a)} -> {short(b)}" for k, (a, b) in changed.items())
        print(f"resume: from {at or f'step {step}'} with {shown} (recorded in {self.path / RESUMES})", flush=True)

    def _effective(self) -> tuple[dict[str, Any], int | None]:
        """The RESUMABLE settings and process count in force before this resume."""
        resumes = self.path / RESUMES
        lines = resumes.read_text(encoding="utf-8").splitlines() if resumes.is_file() else []
        if lines:
            last = json.loads(lines[-1])
            return last["settings"], last["processes"]
        config = yaml.safe_load((self.path / "config.yaml").read_text()) or {}
        runtime = self.path / "runtime.json"  # written at the start (lpo_speech.distributed.record_runtime)
        processes = json.loads(runtime.read_text()).get("processes") if runtime.is_file() else None
        return {k: v for k, v in flatten(config).items() if resumable(k) and k != "train.out_dir"}, processes

    # ------------------------------------------------------------------------------ lock, cleanup
    def _take_lock(self) -> None:
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(f"in use by a run that is still going ({holder}); wait for it to end or set "
                            "train.out_dir to another folder", where=str(self.path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {platform.node()}, since {time.strftime('%H:%M:%S')}".encode())
        self._lock_fd = fd

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    def _progress(self) -> bool:
        metrics = self.path / "metrics.jsonl"
        return self.started() or (metrics.is_file() and metrics.stat().st_size > 0)

    def _discard(self) -> None:
        """A failed run without progress: remove what this invocation created (never what was there)."""
        if not self.path.is_dir() or self._progress():
            return
        if self._before is None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for name in set(os.listdir(self.path)) - self._before:
            p = self.path / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
