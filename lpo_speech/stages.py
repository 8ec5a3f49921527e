"""Long stages (sampling, scoring, reference log-probs): sharded across processes, resumable, atomic.

Under `torchrun`, rank r handles items r, r+world, ...; it writes its results to its own
`<out>.rank<r>of<world>` file through a resumable `JsonlWriter` (an interrupted run skips what it
already wrote). When every rank is done, rank 0 merges the parts in input order into `<out>`
atomically and removes them. A plain single process is world = 1. A finished `<out>` is reused item
by item: a rerun over the same items returns it, a rerun over more items (a larger `limit`) processes
only the new ones, a rerun over fewer returns just those (the file keeps every row it had).

Reuse is only right when the items were made the same way from the same inputs. A stage passes the
`settings` that shape its results: plain values (decoding, judge, a `schema` number for the code
that makes a row) and `Content` values for what it reads (`input_file`: a manifest, a pair file;
`model_folder`: a model). `<out>.settings.json` records them, `Content` as a fingerprint of what
the file or folder holds plus its path relative to the settings file (for messages only), so a
copied or moved folder still resumes and another file at the same path does not. A rerun whose
settings or inputs differ stops in one line naming what changed, instead of mixing two runs in one
file; `overwrite=True` (the stages' `--overwrite`) discards the earlier output and starts over.
Settings files written before fingerprints (plain values, absolute model paths) are still read: such
an output adopts the fingerprints on its first resume whose settings match.

Fingerprints (`file_fingerprint`, `model_fingerprint`) are cached per process. A file's is the sha256
of its bytes. A model folder's hashes every file but the weights in full, and each weights file by
its size and a sample: for `.safetensors`, its JSON header (every tensor's name, dtype, shape and
byte offsets) and the first and last 4 KiB of every tensor's data (any fine-tune, merged LoRA, cast
or re-initialization changes those); for other weights formats, the first and last MiB and 64
evenly spaced 64 KiB blocks. Reading all of a multi-GB checkpoint on every rerun would cost more than
many resumes save; a sample costs a few MiB of reads (measured in docs/design.md). It is a check
against mistakes, not a proof of identity: two checkpoints that differ only in unsampled bytes look
the same.

`created_outputs` is the other half of "nothing bad gets in": a stage that fails removes the files and
folders it created in that invocation when none of them holds results, and never touches what was
there before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch
from tqdm import tqdm

from lpo_speech.distributed import barrier, init_distributed, shard
from lpo_speech.errors import UserError, short
from lpo_speech.records import JsonlWriter, write_jsonl_atomic

T = TypeVar("T")
_MISSING = object()


def settings_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".settings.json")


# ------------------------------------------------------------------------------------- fingerprints

_SAMPLE = 4096  # bytes read at each end of a tensor
_BLOCK = 1 << 16  # sampled block of an opaque weights file
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5", ".gguf", ".onnx")
_WHOLE_LIMIT = 64 << 20  # non-weights files up to this size are hashed in full
_cache: dict[tuple, str] = {}


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def file_fingerprint(path: str | Path) -> str:
    """`sha256:<hex>` of the file's bytes (cached per process while its size and mtime hold)."""
    p = Path(path)
    key = ("file", str(p.resolve()), _stat_key(p))
    if key not in _cache:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _cache[key] = f"sha256:{h.hexdigest()}"
    return _cache[key]


def _sampled(f, size: int, h) -> None:
    """Opaque weights: first and last MiB, and 64 evenly spaced blocks between."""
    spots = [0, max(0, size - (1 << 20))] + [size * i // 65 for i in range(1, 65)]
    for at in spots:
        f.seek(at)
        h.update(f.read(1 << 20 if at in spots[:2] else _BLOCK))


def _safetensors_sample(f, size: int, h) -> None:
    head = f.read(8)
    n = int.from_bytes(head, "little") if len(head) == 8 else -1
    header = f.read(n) if 0 < n <= min(size - 8, 100 << 20) else b""
    try:
        tensors = json.loads(header)
        spans = sorted((int(v["data_offsets"][0]), int(v["data_offsets"][1]))
                       for k, v in tensors.items() if k != "__metadata__")
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        _sampled(f, size, h)  # not a readable header: the loader will say so; sample it like any file
        return
    h.update(header)
    base = 8 + n
    for begin, end in spans:  # in file order: the reads move forward through the file
        f.seek(base + begin)
        h.update(f.read(min(_SAMPLE, end - begin)))
        if end - begin > _SAMPLE:
            f.seek(base + max(begin + _SAMPLE, end - _SAMPLE))
            h.update(f.read(end - max(begin + _SAMPLE, end - _SAMPLE)))


def _model_files(folder: Path) -> list[Path]:
    """The files that make a model: everything but hidden entries and documentation."""
    files = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        if p.suffix.lower() == ".md" or p.name.upper().startswith(("README", "LICENSE")):
            continue
        files.append(p)
    return files


def model_fingerprint(path: str | Path) -> str:
    """`model:<hex>`: a model folder's identity (module docstring), cached per process while its files'
    names, sizes and mtimes hold. A path that is no local folder (a hub id) is its name."""
    folder = Path(path)
    if not folder.is_dir():
        return f"name:{path}"
    files = _model_files(folder)
    key = ("model", str(folder.resolve()), tuple((p.relative_to(folder).as_posix(), _stat_key(p)) for p in files))
    if key in _cache:
        return _cache[key]
    entries = []
    for p in files:
        size = p.stat().st_size
        h = hashlib.sha256()
        if p.suffix.lower() in _WEIGHTS:
            with p.open("rb") as f:
                (_safetensors_sample if p.suffix.lower() == ".safetensors" else _sampled)(f, size, h)
        elif size <= _WHOLE_LIMIT:
            h.update(p.read_bytes())
        else:
            with p.open("rb") as f:
                _sampled(f, size, h)
        entries.append([p.relative_to(folder).as_posix(), size, h.hexdigest()])
    _cache[key] = "model:" + hashlib.sha256(json.dumps(entries).encode()).hexdigest()
    return _cache[key]


@dataclass(frozen=True)
class Content:
    """A settings value that is a file (`kind` "file") or a model folder ("model"): compared by its
    fingerprint, not its path. `legacy`: how settings files written before fingerprints stored it,
    compared once when such an output is first resumed (None: it was not stored then)."""

    path: str
    kind: str
    legacy: Any = None

    def fingerprint(self) -> str:
        return file_fingerprint(self.path) if self.kind == "file" else model_fingerprint(self.path)


def input_file(path: str | Path, *, legacy: Any = None) -> Content:
    """A file a stage reads (manifest, pair file, gold file, reference audio), for its `settings`."""
    return Content(str(path), "file", legacy)


def model_folder(path: str | Path) -> Content:
    """A model a stage runs, for its `settings`; before fingerprints stages stored its absolute path."""
    return Content(str(path), "model", str(Path(path).resolve()))


# ------------------------------------------------------------------------------------------ settings

def _is_recorded_content(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"fingerprint", "path"}


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))  # tuples, paths: as stored


def _shown(path: str) -> str:
    """A path for a message: relative to the working folder when under it."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _where(path: str, fingerprint: str, base: Path) -> str:
    """A recorded path as an absolute one (a local path is recorded relative to the settings file's
    folder `base`; a hub name, fingerprinted by name, as given)."""
    return path if fingerprint.startswith("name:") else os.path.normpath(base.absolute() / path)


def _content_change(key: str, old: dict, new: Content, base: Path) -> str:
    was = _where(old["path"], old["fingerprint"], base)
    now = _where(new.path, new.fingerprint(), Path.cwd())
    what = "file" if new.kind == "file" else "model folder"
    if was == now:
        return f"{key} {_shown(now)}: other content than when it was made ({what} changed)"
    return f"{key} {_shown(was)} -> {_shown(now)} (another {what}: other content)"


def settings_changes(out: str | Path, settings: dict, *, path: str | Path | None = None) -> list[str] | None:
    """Each difference between `settings` and those recorded for `out` in `path` (default
    `<out>.settings.json`), as one phrase; [] when they match, None when none are recorded."""
    path = Path(path) if path is not None else settings_path(out)
    if not path.exists():
        return None
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        before = None
    if not isinstance(before, dict):
        raise UserError("not a settings file (remove it with the output it describes to start over)",
                        where=str(path))
    # A file written before fingerprints holds no recorded content: the keys added since (inputs
    # compared by content, the schema number) are not held against it.
    legacy = not any(_is_recorded_content(v) for v in before.values())
    changes = []
    for k in sorted(set(before) | set(settings)):
        old, new = before.get(k, _MISSING), settings.get(k, _MISSING)
        if isinstance(new, Content):
            if _is_recorded_content(old):
                if old["fingerprint"] != new.fingerprint():
                    changes.append(_content_change(k, old, new, path.parent))
            elif old is _MISSING:
                if not legacy:
                    changes.append(f"{k}: not recorded for this output")
            elif old != _plain(new.legacy) and not (isinstance(old, str) and Path(old).exists()
                                                     and Content(old, new.kind).fingerprint() == new.fingerprint()):
                changes.append(f"{k} {short(old)} -> {short(_plain(new.legacy))}")
        elif k == "schema" and old is _MISSING and legacy:
            continue
        else:
            o = None if old is _MISSING else old
            n = None if new is _MISSING else _plain(new)
            if o != n:
                changes.append(f"{k} {short(o)} -> {short(n)}")
    return changes


def record_settings(out: str | Path, settings: dict, *, path: str | Path | None = None) -> None:
    """Write `settings` for `out` (atomically; each process its own temp file: ranks may race)."""
    path = Path(path) if path is not None else settings_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {}
    for k, v in settings.items():
        if isinstance(v, Content):
            fingerprint = v.fingerprint()
            where = v.path if fingerprint.startswith("name:") else os.path.relpath(Path(v.path).absolute(),
                                                                                    path.parent.absolute())
            stored[k] = {"fingerprint": fingerprint, "path": Path(where).as_posix()}
        else:
            stored[k] = _plain(v)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(stored, indent=2, sort_keys=True))
    os.replace(tmp, path)


def check_settings(out: str | Path, settings: dict | None, *, path: str | Path | None = None, record: bool = True,
                   hint: str | None = None) -> None:
    """Stop (UserError) if `out` (a file or a folder) was made with other `settings` (settings_changes),
    kept in `path` (default `<out>.settings.json`); with `record`, record them (a new output, one
    written before settings or fingerprints were kept, or a moved one: paths are refreshed).
    `hint`: how to start over (default: remove the output and its settings file)."""
    if settings is None:
        return
    path = Path(path) if path is not None else settings_path(out)
    changes = settings_changes(out, settings, path=path)
    if changes:
        raise _other_settings(out, changes, hint or f"remove it and {path.name} to start over")
    if record:
        record_settings(out, settings, path=path)


OVERWRITE_HINT = "pass --overwrite to start over"


def _other_settings(out: str | Path, changes: list[str], hint: str) -> UserError:
    return UserError(f"was made with other settings ({'; '.join(changes)}): rerun with the same settings, use a new "
                     f"output, or {hint}", where=str(out))


# ------------------------------------------------------------------------------------------- outputs

def _holds_results(p: Path) -> bool:
    """A file worth keeping after a failure: not empty, and not only a record of how a run was set up."""
    if p.is_dir():
        return any(_holds_results(q) for q in p.iterdir())
    name = p.name
    return (p.is_file() and p.stat().st_size > 0 and name != "runtime.json"
            and not name.endswith((".settings.json", ".tmp")))


@contextlib.contextmanager
def created_outputs(*paths: str | Path) -> Iterator[None]:
    """Leave nothing behind on failure. Of `paths` (the files and folders a stage may create), those
    that do not exist on entry are removed when the block raises, unless one of them holds results
    (rows a rerun resumes from): then they all stay, with the settings that guard them, and only
    empty new folders go. What existed on entry is never touched."""
    new = [Path(p) for p in dict.fromkeys(str(p) for p in paths) if not os.path.lexists(p)]
    try:
        yield
    except BaseException:
        keep = any(_holds_results(p) for p in new if os.path.lexists(p))
        for p in sorted(new, key=lambda q: len(q.parts), reverse=True):  # inner paths first
            try:
                if p.is_dir() and not p.is_symlink():
                    if not keep:
                        shutil.rmtree(p)
                    elif not any(q.is_file() or q.is_symlink() for q in p.rglob("*")):
                        shutil.rmtree(p)  # only empty folders inside
                elif os.path.lexists(p) and not keep:
                    p.unlink()
            except OSError:
                pass  # another rank removed it first, or it filled meanwhile: leave it
        raise


@contextlib.contextmanager
def atomic_folder(out: str | Path) -> Iterator[Path]:
    """Write a whole folder at once: the block fills a temp folder beside `out`, which replaces `out`
    (removed first if it exists) only when the block completes; a failure leaves `out` as it was."""
    import tempfile

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_new_folder(out: str | Path, *, overwrite: bool = False) -> None:
    """Before a command writes the model folder `out` (with atomic_folder): one line when it exists and
    is not empty, unless `overwrite` (then atomic_folder replaces it once the new one is whole); an
    existing file is never replaced."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError("exists and is not a folder", where=str(out))
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError("exists; pass --overwrite to replace it", where=str(out))


def discard_output(out: str | Path, also: Sequence[str | Path] = ()) -> None:
    """Remove a run_sharded output: `<out>`, its settings, every rank's part and partial file, temp
    files, and `also` (files or folders the stage derives from it)."""
    out = Path(out)
    for p in [out, settings_path(out), out.with_name(out.name + ".tmp"),
              *out.parent.glob(f"{out.name}.rank*of*"), *out.parent.glob(f"{settings_path(out).name}.*.tmp")]:
        p.unlink(missing_ok=True)
    for p in map(Path, also):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def set_threads(threads: int | None) -> None:
    """`runtime.threads` / `--threads`: torch's CPU threads for this process, set at the start of a
    stage; None leaves torch's own choice (nothing is pinned unless asked)."""
    if threads:
        torch.set_num_threads(threads)


def _rows(path: Path) -> dict[str, dict]:
    return {d["id"]: d for d in map(json.loads, filter(str.strip, path.read_text(encoding="utf-8").splitlines()))}


def run_sharded(out: str | Path, items: Sequence[T], key: Callable[[T], str],
                process: Callable[[list[T]], list[dict]], *, batch_size: int, desc: str, unit: str = "item",
                device: str = "auto", quiet: bool = False, order: Callable[[T], int] | None = None,
                settings: dict | None = None, overwrite: bool = False, restart_if_changed: bool = False,
                also: Sequence[str | Path] = ()) -> list[dict]:
    """Process `items` in batches (`process` returns one dict with an "id" per item) and return all
    results in input order (on every rank). Items whose key is already in a part file are skipped.
    `order` sorts a rank's pending items (e.g. by length) so batches pad little; `settings`: what
    made the results (check_settings). An earlier output (with `also`, what the stage derives from
    it) is discarded first with `overwrite`, or when its settings differ and `restart_if_changed`
    (an intermediate the caller owns); otherwise other settings stop. Call it once every input is
    validated: this is where an earlier output may go."""
    info = init_distributed(device)
    out = Path(out)
    sp = settings_path(out)
    discard = overwrite
    if settings is not None and not overwrite:
        changes = settings_changes(out, settings)
        if changes and not restart_if_changed:
            raise _other_settings(out, changes, OVERWRITE_HINT)
        discard = bool(changes)
    barrier()  # every rank has compared before rank 0 replaces the record
    recorded_here = settings is not None and (discard or not sp.exists())
    if info.is_main:
        if discard:
            discard_output(out, also)
        if settings is not None:
            record_settings(out, settings)
    barrier()
    part = out.with_name(f"{out.name}.rank{info.rank}of{info.world}")
    try:
        previous = _rows(out) if out.exists() else {}
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
                    found.update(_rows(out.with_name(f"{out.name}.rank{r}of{info.world}")))
                wanted = {key(it) for it in items}
                # Rows of an earlier run over other items stay (after these): nothing finished is lost.
                write_jsonl_atomic(out, [found[key(it)] for it in items]
                                   + [row for k, row in previous.items() if k not in wanted])
                for r in range(info.world):
                    out.with_name(f"{out.name}.rank{r}of{info.world}").unlink(missing_ok=True)
            barrier()
            previous = _rows(out)
    except BaseException:
        # Nothing to resume from (no row written, none before): the record made here goes too.
        if recorded_here and info.is_main and not out.exists() and not any(out.parent.glob(f"{out.name}.rank*")):
            sp.unlink(missing_ok=True)
        raise
    return [previous[key(it)] for it in items]
