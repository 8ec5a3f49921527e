"""Records (prompts, candidates, preference pairs) and their JSONL files.

Every record is a dataclass with `to_dict` / `from_dict`. `from_dict` validates types and raises
`UserError` naming the file, line and field, so one bad line in a 100k-line manifest is one clear line
of output. Keys a record does not know are kept in `extra` and written back unchanged.

Long stages write through `JsonlWriter`: lines go to `<file>.partial`, flushed one by one; `close()`
renames it to `<file>` only when the stage is complete (or, when `<file>` was already finished, merges
the new lines into it atomically). A rerun skips the ids already in `<file>` and `.partial` (a torn
last line from a crash is dropped), so an interrupted stage resumes with no duplicated and no missing
item, and a finished file is never renamed or truncated by a rerun. Formats are documented in docs/formats.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator, Type, TypeVar, Union, get_args, get_origin, get_type_hints

from lpo_speech.errors import UserError, clip, short

Tokens = list[int]
T = TypeVar("T", bound="Record")


class Record:
    """Mixin: dict round trip with validation. Subclasses are dataclasses with an `extra` dict."""

    REQUIRED_NONEMPTY: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        d = {k: v for k, v in d.items() if v is not None}
        return {**d, **self.extra}

    @classmethod
    def from_dict(cls: Type[T], d: Any, where: str = "") -> T:
        if not isinstance(d, dict):
            raise UserError(f"expected a JSON object, got {type(d).__name__}", where=where or None)
        hints = get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            if f.name not in d:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise UserError(f"missing field '{f.name}'", where=where or None)
                continue
            value = d[f.name]
            if not _type_ok(value, hints[f.name]):
                raise UserError(
                    f"field '{f.name}': expected {_type_name(hints[f.name])}, got {json.dumps(value)[:60]}",
                    where=where or None,
                )
            if isinstance(value, float) and not math.isfinite(value):  # JSON's NaN / Infinity
                raise UserError(f"field '{f.name}': must be a finite number, got {value}", where=where or None)
            if f.name in cls.REQUIRED_NONEMPTY and not (value.strip() if isinstance(value, str) else value):
                raise UserError(f"field '{f.name}': empty", where=where or None)
            kwargs[f.name] = value
        kwargs["extra"] = {k: v for k, v in d.items() if k not in known}
        return cls(**kwargs)


def _type_ok(value: Any, tp: Any) -> bool:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, a) for a in get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        (item,) = get_args(tp)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    args = get_args(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    if get_origin(tp) is list:
        return f"list of {_type_name(args[0])}"
    return getattr(tp, "__name__", str(tp))


@dataclass
class AsrUtterance(Record):
    """ASR manifest line: {"id", "audio", "text"}; audio relative to the manifest's folder."""

    REQUIRED_NONEMPTY: ClassVar[tuple[str, ...]] = ("id", "audio", "text")
    id: str
    audio: str
    text: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TtsPrompt(Record):
    """TTS prompt manifest line: {"id", "text"}, optional "emotion", "intensity", "speaker_audio"."""

    REQUIRED_NONEMPTY: ClassVar[tuple[str, ...]] = ("id", "text")
    id: str
    text: str
    emotion: str | None = None
    intensity: float | None = None
    speaker_audio: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Candidate(Record):
    """One sampled, beam or perturbed response for a prompt, with its scores once judged."""

    REQUIRED_NONEMPTY: ClassVar[tuple[str, ...]] = ("id", "prompt_id")
    id: str
    prompt_id: str
    source: str  # "sample" | "beam" | "perturb" | "gold" | "greedy"
    text: str | None = None
    tokens: Tokens | None = None
    scores: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreferencePair(Record):
    """A chosen/rejected pair. Token-level tracks fill `prompt_tokens`/`chosen_tokens`/
    `rejected_tokens`; text tracks (ASR) fill `audio` and `chosen_text`/`rejected_text`. Without a
    rejected side it is an SFT example (only `loss.type: sft` trains on those).
    `ref_chosen_logp`/`ref_rejected_logp` are precomputed reference log-probs (see `ref-logps`)."""

    REQUIRED_NONEMPTY: ClassVar[tuple[str, ...]] = ("id",)
    id: str
    prompt_id: str | None = None
    prompt_tokens: Tokens | None = None
    chosen_tokens: Tokens | None = None
    rejected_tokens: Tokens | None = None
    audio: str | None = None
    prompt_text: str | None = None
    chosen_text: str | None = None
    rejected_text: str | None = None
    chosen_scores: dict[str, Any] = field(default_factory=dict)
    rejected_scores: dict[str, Any] = field(default_factory=dict)
    ref_chosen_logp: float | None = None
    ref_rejected_logp: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_rejected(self) -> bool:
        return self.rejected_tokens is not None or self.rejected_text is not None

    @classmethod
    def from_dict(cls, d: Any, where: str = "") -> "PreferencePair":
        pair = super().from_dict(d, where)
        # A rejected side may be absent: such chosen-only examples serve SFT (loss.type sft).
        if pair.chosen_tokens is None and pair.chosen_text is None:
            raise UserError("needs 'chosen_tokens' and 'rejected_tokens', or 'chosen_text' and 'rejected_text'",
                            where=where or None)
        for name in ("chosen_tokens", "rejected_tokens", "chosen_text", "rejected_text"):
            v = getattr(pair, name)
            if v is not None and len(v) == 0:
                raise UserError(f"field '{name}': empty", where=where or None)
        return pair


# ---------------------------------------------------------------------------------------------- IO

def _numbered(path: str | Path, cls: Type[T]) -> Iterator[tuple[int, T]]:
    """(line number, validated record) for each non-blank line; errors name `file:line`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:  # a UTF-8 byte-order mark is tolerated at the start of the file
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"not UTF-8 text (byte {e.start + 1} of the line: {e.reason})", where=where) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as e:  # msg: "Expecting value", "Unterminated string starting at", ...
                at = "" if e.msg.endswith(" at") else " at"
                raise UserError(f"malformed JSON ({e.msg}{at} column {e.colno})", where=where) from None
            except RecursionError:
                raise UserError("malformed JSON (nested too deeply)", where=where) from None
            except ValueError as e:  # e.g. an integer longer than Python converts (4300 digits)
                raise UserError(f"malformed JSON ({clip(str(e).split(':')[0])})", where=where) from None
            yield lineno, cls.from_dict(obj, where)


def read_jsonl(path: str | Path, cls: Type[T]) -> Iterator[T]:
    """Lazily yield validated records; errors name `file:line`. An empty file yields nothing."""
    for _, record in _numbered(path, cls):
        yield record


def load_jsonl(path: str | Path, cls: Type[T], *, unique_ids: bool = True, allow_empty: bool = False) -> list[T]:
    """Every record of a JSONL file, validated. An empty file (no record) is a `UserError` unless
    `allow_empty` (a stage output that may legitimately hold nothing); a repeated id names the line of
    its second occurrence."""
    return [r for _, r in load_numbered(path, cls, unique_ids=unique_ids, allow_empty=allow_empty)]


def load_numbered(path: str | Path, cls: Type[T], *, unique_ids: bool = True,
                  allow_empty: bool = False) -> list[tuple[int, T]]:
    """`load_jsonl` with each record's line number, for checks that name `file:line` later."""
    records, first = [], {}
    for lineno, r in _numbered(path, cls):
        if unique_ids:
            if r.id in first:
                raise UserError(f"duplicate id {short(r.id)} (first on line {first[r.id]})", where=f"{path}:{lineno}")
            first[r.id] = lineno
        records.append((lineno, r))
    if not records and not allow_empty:
        raise UserError(f"{path}: no records")
    return records


def write_jsonl_atomic(path: str | Path, records: list[Record] | list[dict]) -> None:
    """Write a whole file at once: tmp file then rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r.to_dict() if isinstance(r, Record) else r, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:  # a failed write leaves neither half a file nor its temp file
        tmp.unlink(missing_ok=True)
        raise


class JsonlWriter:
    """Resumable line writer for long stages (lhotse-manifest style).

    with JsonlWriter(out) as w:
        for item in items:
            if item.id in w.done: continue
            w.write(record)
    # out exists only once the loop finished; a crash leaves out.partial to resume from.

    A finished `out` is never renamed, truncated or rewritten in place: its ids count as done, new
    lines go to `out.partial`, and a complete close merges the two into `out` atomically (temp file,
    then rename). So a rerun that fails leaves the finished file byte for byte as it was.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: set[str] = set()
        self._finished = self.path.exists()
        if self._finished:  # only read: the file stays as it is unless a complete close extends it
            with self.path.open("rb") as f:
                self.done.update(json.loads(raw)["id"] for raw in f if raw.strip())
        if self.partial.exists():
            self._recover()
        self._f = self.partial.open("a", encoding="utf-8")

    def _recover(self) -> None:
        good = 0
        with self.partial.open("rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # torn last line: drop it
                try:
                    self.done.add(json.loads(raw)["id"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    break
                good += len(raw)
        with self.partial.open("r+b") as f:
            f.truncate(good)

    def write(self, record: Record | dict) -> None:
        d = record.to_dict() if isinstance(record, Record) else record
        if d["id"] in self.done:
            return
        self._f.write(json.dumps(d, ensure_ascii=False) + "\n")
        self._f.flush()
        self.done.add(d["id"])

    def close(self, complete: bool = True) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        empty = self.partial.stat().st_size == 0
        if not complete:
            if empty:  # nothing to resume from: leave no empty file behind
                self.partial.unlink(missing_ok=True)
            return
        if not self._finished:
            os.replace(self.partial, self.path)
        elif empty:
            self.partial.unlink()
        else:  # finished lines first, then the new ones, swapped in at once
            tmp = self.path.with_name(self.path.name + ".tmp")
            with tmp.open("wb") as f:
                with self.path.open("rb") as part:
                    shutil.copyfileobj(part, f)
                    if part.tell() and (part.seek(-1, os.SEEK_END), part.read(1))[1] != b"\n":
                        f.write(b"\n")  # a hand-edited last line without its newline stays a line
                with self.partial.open("rb") as part:
                    shutil.copyfileobj(part, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self.partial.unlink()

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(complete=exc_type is None)


def resolve_audio(manifest: str | Path, audio: str) -> Path:
    """Audio paths in manifests are relative to the manifest's folder (absolute paths pass through)."""
    p = Path(audio)
    return p if p.is_absolute() else Path(manifest).parent / p


def rebase_audio(pair: "PreferencePair", from_dir: Path, to_dir: Path) -> "PreferencePair":
    """Keep a relative audio path valid when a pair moves from a file in `from_dir` to one in `to_dir`."""
    if pair.audio and not Path(pair.audio).is_absolute():
        pair.audio = os.path.relpath(Path(from_dir) / pair.audio, to_dir)
    return pair


def write_sft_examples(manifest: str | Path, out: str | Path) -> int:
    """An ASR manifest ({id, audio, text}) as chosen-only SFT examples ({id, prompt_id, audio, chosen_text},
    audio relative to `out`'s folder) for `loss.type: sft`, the first stage of SFT-then-preference
    pipelines; written atomically. Returns the count."""
    import os

    out = Path(out)
    utts = load_jsonl(str(manifest), AsrUtterance)
    out.parent.mkdir(parents=True, exist_ok=True)
    pairs = [PreferencePair(id=u.id, prompt_id=u.id, audio=os.path.relpath(resolve_audio(str(manifest), u.audio), out.parent),
                            chosen_text=u.text) for u in utts]
    write_jsonl_atomic(out, pairs)
    return len(pairs)
