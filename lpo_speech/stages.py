"""Long stages (sampling, scoring, reference log-probs): sharded across processes, resumable, atomic.

Under `torchrun`, rank r handles items r, r+world, ...; it writes its results to its own
`<out>.rank<r>of<world>` file through a resumable `JsonlWriter` (an interrupted run skips what it
already wrote). When every rank is done, rank 0 merges the parts in input order into `<out>`
atomically and removes them. A plain single process is world = 1. A finished `<out>` is reused item
by item: a rerun over the same items returns it, a rerun over more items (a larger `limit`) processes
only the new ones, a rerun over fewer returns just those.

Reuse is only right when the items were made the same way. A stage passes the `settings` that shape
its results (model, decoding, judge, ...); `<out>.settings.json` remembers them, and a rerun whose
settings differ stops in one line naming what changed, instead of mixing two runs in one file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import torch
from tqdm import tqdm

from lpo_speech.distributed import barrier, init_distributed, shard
from lpo_speech.errors import UserError
from lpo_speech.records import JsonlWriter, write_jsonl_atomic

T = TypeVar("T")


def settings_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".settings.json")


def check_settings(out: str | Path, settings: dict | None, *, path: str | Path | None = None) -> None:
    """Stop (UserError) if `out` (a file or a folder) was made with other `settings`, kept in `path`
    (default `<out>.settings.json`); record them when none are recorded yet (a new output, or one
    written before settings were kept)."""
    if settings is None:
        return
    path = Path(path) if path is not None else settings_path(out)
    now = json.loads(json.dumps(settings, sort_keys=True, default=str))  # tuples, paths: as stored
    if path.exists():
        before = json.loads(path.read_text())
        changed = [f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(before) | set(now))
                   if before.get(k) != now.get(k)]
        if changed:
            raise UserError(f"was made with other settings ({'; '.join(changed)}): rerun with the same settings, "
                            f"use a new output, or remove it and {path.name} to start over", where=str(out))
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # each process its own temp file: ranks may race
    tmp.write_text(json.dumps(now, indent=2, sort_keys=True))
    os.replace(tmp, path)


def set_threads(threads: int | None) -> None:
    """`runtime.threads` / `--threads`: torch's CPU threads for this process, set at the start of a
    stage; None leaves torch's own choice (nothing is pinned unless asked)."""
    if threads:
        torch.set_num_threads(threads)


def run_sharded(out: str | Path, items: Sequence[T], key: Callable[[T], str],
                process: Callable[[list[T]], list[dict]], *, batch_size: int, desc: str, unit: str = "item",
                device: str = "auto", quiet: bool = False, order: Callable[[T], int] | None = None,
                settings: dict | None = None) -> list[dict]:
    """Process `items` in batches (`process` returns one dict with an "id" per item) and return all
    results in input order (on every rank). Items whose key is already in a part file are skipped.
    `order` sorts a rank's pending items (e.g. by length) so batches pad little; `settings`: what
    made the results (check_settings)."""
    info = init_distributed(device)
    out = Path(out)
    check_settings(out, settings)
    part = out.with_name(f"{out.name}.rank{info.rank}of{info.world}")
    previous = {d["id"]: d for d in map(json.loads, out.read_text().splitlines())} if out.exists() else {}
    if not all(key(it) in previous for it in items):
        mine = shard(items, info.rank, info.world)
        with JsonlWriter(part) as writer:
            todo = [it for it in mine if key(it) not in writer.done and key(it) not in previous]
            if order is not None:
                todo.sort(key=order)
            bar = tqdm(total=len(mine), initial=len(mine) - len(todo), unit=unit, dynamic_ncols=True,
                       desc=desc if info.world == 1 else f"{desc}[{info.rank}]", disable=quiet)
            for s in range(0, len(todo), batch_size):
                for result in process(todo[s:s + batch_size]):
                    writer.write(result)
                bar.update(min(batch_size, len(todo) - s))
            bar.close()
        barrier()
        if info.is_main:
            found: dict[str, dict] = dict(previous)
            for r in range(info.world):
                p = out.with_name(f"{out.name}.rank{r}of{info.world}")
                found.update((d["id"], d) for d in map(json.loads, p.read_text().splitlines()))
            write_jsonl_atomic(out, [found[key(it)] for it in items])
            for r in range(info.world):
                out.with_name(f"{out.name}.rank{r}of{info.world}").unlink(missing_ok=True)
        barrier()
        previous = {d["id"]: d for d in map(json.loads, out.read_text().splitlines())}
    return [previous[key(it)] for it in items]
