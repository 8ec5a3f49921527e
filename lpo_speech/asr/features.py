"""Audio features on disk: each utterance decoded once and turned into the model's features once.

The ASR adapters (Whisper, audio LLMs) feed their models the log-mel features of the model's own
feature extractor (`WhisperFeatureExtractor`: 16 kHz audio padded to a 30 s window). A `FeatureStore`
keeps those features in files instead of in memory, so a stage's host memory does not grow with its
data set, and the stages of one pair file share them: build-pairs computes them while it checks the
manifest's audio, and ref-logps, training and the candidates' decoding read them back.

Layout (docs/formats.md, "Feature store"): `<root>/<extractor id>/` holds `extractor.json` (the
extractor's settings; the id is a hash of them, so another extractor or other settings get another
folder) and, per writing process, `<part>.f16` (float16 blocks, appended) and `<part>.jsonl` (one line
per block: the audio's resolved path, size and mtime, the block's offset and shape, the frames that
cover the audio, its length in samples and, when a stage asked for it, the seconds of speech Silero VAD
found in it: lpo_speech.asr.audio_check, measured while the audio is decoded anyway). A changed audio file has another size or mtime, so it is
computed again; an older block of it stays unused in the files. Writers never share a file (each
process, and each store opened by it, appends to its own part), so processes on several hosts may
fill one store on a shared filesystem.

A Whisper-style window is mostly padding, and every padded frame past the audio is the same column.
A block holds the frames up to the last one that differs from the final column, then that column
once: the full window is rebuilt exactly (same float16 values; tests/asr/test_features.py), at about
a sixth of the bytes for utterances of a few seconds. Blocks are read with `os.pread` (page cache, not
this process's resident memory: a memory map would count every page read as resident).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import socket
import tempfile
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from lpo_speech.errors import UserError

SAMPLE_RATE = 16_000  # what every ASR adapter hears
SCHEMA = 1  # raise when a block's layout or how features are computed changes: a new folder then
FOLDER = "features"  # beside the pair file a stage reads (build-pairs: in its work_dir)


def features_folder(pair_file: str | Path) -> Path:
    """The store a stage uses for the audio of `pair_file` (or of a build-pairs work_dir's pairs.jsonl):
    `features/` beside it."""
    return Path(pair_file).parent / FOLDER


def decode_file(path: str | Path, where: str | None = None) -> np.ndarray:
    """Mono float32 samples at 16 kHz of one audio file, checked as `lpo_speech.audio.load_audio` checks
    them (readable, non-empty, finite) and with its messages, but without its cache of decoded files:
    the store is what keeps the result, so holding decoded audio as well would only grow memory."""
    from lpo_speech.audio import decode_audio

    p = Path(path)
    loc = f"{where}: {p}" if where else str(p)
    if not p.exists():
        raise UserError("audio file not found", where=loc)
    if not p.is_file():
        raise UserError("not a regular file", where=loc)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read audio ({e.strerror or type(e).__name__})", where=loc) from None
    return decode_audio(data, sample_rate=SAMPLE_RATE, where=loc)


def window_samples(extractor) -> int | None:
    """How many 16 kHz samples a fixed-window feature extractor hears (Whisper's and Qwen2-Audio's:
    `n_samples`, 30 s), or None for one without a fixed window."""
    n = getattr(extractor, "n_samples", None)
    if n is None and getattr(extractor, "chunk_length", None):
        n = int(extractor.chunk_length) * int(getattr(extractor, "sampling_rate", SAMPLE_RATE))
    return int(n) if n else None


def audio_key(path: str | Path) -> tuple[str, int, int] | None:
    """(resolved path, size, mtime in ns) of an audio file, or None when it is not a file."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return None
    return (str(p.resolve()), st.st_size, st.st_mtime_ns) if p.is_file() else None


@dataclass(frozen=True)
class Entry:
    """Where one utterance's features are: a block of `part`'s data file at `offset`, [mels, stored]
    frames followed by one fill column when `stored < frames`."""

    key: tuple[str, int, int]
    part: str
    offset: int
    mels: int
    frames: int  # the extractor's window, in frames
    stored: int  # frames kept before the fill column
    valid: int  # frames that cover the audio (the extractor's attention mask)
    samples: int  # the decoded audio's length at 16 kHz
    speech_s: float | None = None  # seconds of speech Silero VAD found (ensure(speech=...)); None: not measured

    @property
    def width(self) -> int:
        return self.stored + (self.stored < self.frames)

    @property
    def nbytes(self) -> int:
        return self.mels * self.width * 2


def _trim(feats: np.ndarray) -> np.ndarray:
    """The block for float16 features [mels, frames]: the frames up to the last one that differs from
    the final column, then that column once (all frames when the last one differs from its neighbour)."""
    differs = np.any(feats != feats[:, -1:], axis=0)
    stored = int(np.flatnonzero(differs)[-1]) + 1 if differs.any() else 0
    if stored >= feats.shape[1] - 1:
        return feats
    return np.ascontiguousarray(feats[:, :stored + 1])  # the frame at `stored` is the fill column


def _rebuild(block: np.ndarray, frames: int) -> np.ndarray:
    """The full [mels, frames] window from a block (`_trim`)."""
    if block.shape[1] == frames:
        return block.copy()
    out = np.empty((block.shape[0], frames), dtype=block.dtype)
    out[:, :block.shape[1]] = block
    out[:, block.shape[1]:] = block[:, -1:]
    return out


def extractor_settings(extractor) -> dict:
    """What makes an extractor's features: its class and settings, the rate it is fed and SCHEMA."""
    plain = json.loads(json.dumps(extractor.to_dict(), sort_keys=True,
                                  default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    return {"schema": SCHEMA, "sample_rate": SAMPLE_RATE, "dtype": "float16", "class": type(extractor).__name__,
            "extractor": plain}


class FeatureStore:
    """The features of `extractor` (a transformers feature extractor with a fixed window, such as
    `WhisperFeatureExtractor`) for audio files, kept under `root` (module docstring)."""

    def __init__(self, root: str | Path, extractor):
        self.extractor = extractor
        self.settings = extractor_settings(extractor)
        digest = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:16]
        self.root = Path(root)
        self.folder = self.root / digest
        self.window = window_samples(extractor)  # samples the model hears (None: no fixed window)
        self.computed = 0  # utterances this store computed (the rest were read)
        self._entries: dict[tuple, Entry] = {}
        self._parsed: dict[str, int] = {}  # index file -> bytes read so far
        self._fds: dict[str, int] = {}
        self._part: str | None = None  # this store's own part, created on its first write
        self._created: list[Path] = []  # files and folders this store created, for discard_new
        weakref.finalize(self, _close_all, self._fds)
        self.refresh()

    @classmethod
    def temporary(cls, extractor) -> "FeatureStore":
        """A store in a temporary folder, removed when the store is collected or the process ends: for
        callers that name no folder (online training, scripts calling an adapter directly)."""
        root = Path(tempfile.mkdtemp(prefix="lpo-speech-features-"))
        store = cls(root, extractor)
        weakref.finalize(store, shutil.rmtree, root, ignore_errors=True)
        return store

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------------------------------- reading

    def refresh(self) -> None:
        """Read what other writers appended to the folder's index files since the last look."""
        if not self.folder.is_dir():
            return
        for index in sorted(self.folder.glob("*.jsonl")):
            done = self._parsed.get(index.name, 0)
            try:
                with index.open("rb") as f:
                    f.seek(done)
                    data = f.read()
            except OSError:
                continue
            end = data.rfind(b"\n") + 1  # a line still being written (or torn by a kill) is left for later
            for line in data[:end].splitlines():
                try:
                    d = json.loads(line)
                    entry = Entry(key=(d["audio"], d["size"], d["mtime_ns"]), part=index.stem, offset=d["offset"],
                                  mels=d["mels"], frames=d["frames"], stored=d["stored"], valid=d["valid"],
                                  samples=d["samples"], speech_s=_seconds(d.get("speech_s")))
                except (ValueError, KeyError, TypeError):
                    continue  # not a line this code wrote: ignored, the audio is computed again
                old = self._entries.get(entry.key)
                if old is None or (old.speech_s is None and entry.speech_s is not None):  # a measured one wins
                    self._entries[entry.key] = entry
            self._parsed[index.name] = done + end

    def lookup(self, path: str | Path) -> Entry | None:
        """The stored entry of the file now at `path`, if any (after reading new index lines once)."""
        key = audio_key(path)
        if key is None:
            return None
        if key not in self._entries:
            self.refresh()
        return self._entries.get(key)

    def read(self, entry: Entry) -> np.ndarray:
        """The full float16 features [mels, frames] of an entry."""
        fd = self._fds.get(entry.part)
        if fd is None:
            fd = self._fds[entry.part] = os.open(self.folder / f"{entry.part}.f16", os.O_RDONLY)
        data = os.pread(fd, entry.nbytes, entry.offset)
        if len(data) != entry.nbytes:
            raise UserError(f"feature store damaged (a block of {entry.part}.f16 is cut short): remove the folder "
                            "to compute the features again", where=str(self.folder))
        return _rebuild(np.frombuffer(data, dtype=np.float16).reshape(entry.mels, entry.width), entry.frames)

    # ------------------------------------------------------------------------------------- writing

    def ensure(self, path: str | Path, where: str | None = None, *,
               speech: Callable[[np.ndarray], float] | None = None) -> Entry:
        """The entry of the audio at `path`, computed now (decoded, checked, extracted, appended) if the
        store has none for its current content; errors are one line naming `where` and the file.
        `speech(wav)`: the seconds of speech in the decoded 16 kHz audio (lpo_speech.asr.audio_check's
        Silero VAD), kept in the entry; not for audio longer than the window, which is refused unheard.
        An entry stored without it is computed again, once."""
        found = self.lookup(path)
        if found is not None and not (speech is not None and self.unmeasured(found)):
            return found
        wav = decode_file(path, where)  # the file's own errors (missing, unreadable, non-finite)
        key = audio_key(path)
        out = self.extractor(wav, sampling_rate=SAMPLE_RATE, padding="max_length", return_attention_mask=True,
                             return_tensors="np")
        feats = np.asarray(out["input_features"][0], dtype=np.float16)
        valid = int(np.asarray(out["attention_mask"][0]).sum()) if "attention_mask" in out else feats.shape[1]
        speech_s = None
        if speech is not None and (self.window is None or len(wav) <= self.window):
            speech_s = speech(wav)
        entry = self._append(key, _trim(feats), frames=feats.shape[1], valid=valid, samples=len(wav),
                             speech_s=speech_s)
        self.computed += 1
        return entry

    def unmeasured(self, entry: Entry) -> bool:
        """Whether `ensure(speech=...)` still has to measure the speech of this entry's audio."""
        return entry.speech_s is None and (self.window is None or entry.samples <= self.window)

    def _append(self, key: tuple, block: np.ndarray, *, frames: int, valid: int, samples: int,
                speech_s: float | None = None) -> Entry:
        if self._part is None:
            self._start_part()
        data, index = self.folder / f"{self._part}.f16", self.folder / f"{self._part}.jsonl"
        with data.open("ab") as f:
            offset = f.tell()
            f.write(block.tobytes())
        stored = frames if block.shape[1] == frames else block.shape[1] - 1
        entry = Entry(key=key, part=self._part, offset=offset, mels=block.shape[0], frames=frames, stored=stored,
                      valid=valid, samples=samples, speech_s=speech_s)
        line = {"audio": key[0], "size": key[1], "mtime_ns": key[2], "offset": offset, "mels": entry.mels,
                "frames": frames, "stored": stored, "valid": valid, "samples": samples,
                **({"speech_s": speech_s} if speech_s is not None else {})}
        with index.open("a", encoding="utf-8") as f:  # after the data: a listed block is always complete
            f.write(json.dumps(line) + "\n")
        self._entries[key] = entry
        self._parsed[index.name] = index.stat().st_size
        return entry

    def _start_part(self) -> None:
        created = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._created += reversed(created)  # outermost first; discard_new removes innermost first
            settings = self.folder / "extractor.json"
            if not settings.exists():
                tmp = self.folder / f".extractor.json.{os.getpid()}.{secrets.token_hex(4)}.tmp"
                tmp.write_text(json.dumps(self.settings, indent=2, sort_keys=True) + "\n")
                os.replace(tmp, settings)
                self._created.append(settings)
        except OSError as e:
            raise UserError(f"cannot write the feature store ({e.strerror or type(e).__name__})",
                            where=str(self.folder)) from None
        self._part = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._created += [self.folder / f"{self._part}.f16", self.folder / f"{self._part}.jsonl"]

    def fill(self, audios: Sequence[tuple[str | Path, str | None]], *, quiet: bool = True,
             desc: str = "features", speech: Callable[[np.ndarray], float] | None = None) -> None:
        """Features for every distinct audio of `audios` ((path, where) pairs, checked in order): under
        torchrun each process computes its share (every world-th distinct audio), then all wait and read
        what the others wrote. A bad audio stops every process with the same one line, the first bad one
        in `audios` order. `speech`: measure each audio's speech too (`ensure`). Call on every process."""
        distinct = list(dict.fromkeys(str(p) for p, _ in audios))
        where = {}
        for p, w in audios:
            where.setdefault(str(p), w)
        each_share([(p, where[p]) for p in distinct], lambda item: self.ensure(*item, speech=speech), quiet=quiet,
                   desc=desc)
        self.refresh()

    @contextlib.contextmanager
    def discard_on_error(self) -> Iterator["FeatureStore"]:
        """The block's failure removes what this store wrote (its part, and the folders and settings
        file it created, when empty), so a stage stopped by a bad input leaves nothing behind."""
        try:
            yield self
        except BaseException:
            self.discard_new()
            raise

    def discard_new(self) -> None:
        for part in [self._part] if self._part else []:
            fd = self._fds.pop(part, None)
            if fd is not None:
                os.close(fd)
            self._entries = {k: e for k, e in self._entries.items() if e.part != part}
        for p in reversed(self._created):  # innermost first
            with contextlib.suppress(OSError):
                p.rmdir() if p.is_dir() else p.unlink()
        self._created, self._part = [], None


def _seconds(value) -> float | None:
    """An index line's `speech_s`: a finite number >= 0, else not measured."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        return None
    return float(value)


def _close_all(fds: dict[str, int]) -> None:
    for fd in fds.values():
        with contextlib.suppress(OSError):
            os.close(fd)


def stored_keys(root: str | Path) -> set[tuple[str, int, int]]:
    """Every audio (resolved path, size, mtime) that has features under `root`, by any extractor: each
    was decoded and checked when it was stored."""
    keys = set()
    for index in Path(root).glob("*/*.jsonl"):
        try:
            lines = index.read_bytes().splitlines()
        except OSError:
            continue
        for line in lines:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                d = json.loads(line)
                keys.add((d["audio"], d["size"], d["mtime_ns"]))
    return keys


def each_share(items: Sequence, work: Callable, *, quiet: bool = True, desc: str = "") -> None:
    """`work(item)` for this process's share of `items` (every world-th one under torchrun). A
    UserError stops the share; then every process raises the one of the earliest item (the same line
    on every rank, as if one process had gone through them in order). Call on every process."""
    import torch.distributed as dist
    from tqdm import tqdm

    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    failed: tuple[int, str] | None = None
    for i in tqdm(range(rank, len(items), world), desc=desc, unit="utt", disable=quiet or rank != 0,
                  dynamic_ncols=True, mininterval=2.0):
        try:
            work(items[i])
        except UserError as e:
            failed = (i, str(e))
            break
    if world > 1:
        every: list = [None] * world
        dist.all_gather_object(every, failed)
        failed = min((f for f in every if f is not None), default=None)
    if failed is not None:
        raise UserError(failed[1])


class StoredFeatures:
    """What an ASR adapter (one with a `processor`) needs to keep its features in a store: the stages
    of one pair file share `use_features(folder)`; anything else (online training, scripts) gets a
    temporary store on first use, deleted when no longer used."""

    store: FeatureStore | None = None

    def use_features(self, folder: str | Path) -> FeatureStore:
        """Keep and read features in the store at `folder`, shared by the stages of one pair file."""
        self.store = FeatureStore(folder, self.processor.feature_extractor)
        return self.store

    def feature_store(self) -> FeatureStore:
        if self.store is None:
            self.store = FeatureStore.temporary(self.processor.feature_extractor)
        return self.store


class StateCache:
    """Frozen-encoder outputs per audio, dropped least recently used first past a byte budget
    (LPO_SPEECH_ENCODER_CACHE_MB, default 1024 per process; 0 keeps none): memory stays bounded at any
    data set size, and a data set within the budget has its encoder run once per audio."""

    def __init__(self, budget_mb: float | None = None):
        mb = float(os.environ.get("LPO_SPEECH_ENCODER_CACHE_MB", "1024")) if budget_mb is None else budget_mb
        self.budget = int(mb * (1 << 20))
        self.items: OrderedDict = OrderedDict()
        self.bytes = 0

    def get(self, key):
        hit = self.items.get(key)
        if hit is not None:
            self.items.move_to_end(key)
        return hit

    def put(self, key, value) -> None:
        size = value.numel() * value.element_size()
        if size > self.budget or key in self.items:
            return
        self.items[key] = value
        self.bytes += size
        while self.bytes > self.budget:
            _, old = self.items.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()


@contextlib.contextmanager
def pair_features(adapter, pair_file: str | Path, pairs: Sequence, *, quiet: bool = True) -> Iterator[None]:
    """For an adapter that keeps features on disk (the ASR adapters' `use_features`): the features of
    every pair's audio in the store beside `pair_file`, each process computing its share, before the
    block encodes the pairs; the block's failure removes what was stored here. Other adapters: nothing.
    Call on every process."""
    if not hasattr(adapter, "use_features"):
        yield
        return
    store = adapter.use_features(features_folder(pair_file))
    base = Path(pair_file).parent
    audios = [(p.audio if Path(p.audio).is_absolute() else base / p.audio, f"{pair_file}:{i}")
              for i, p in enumerate(pairs, 1) if p.audio is not None]
    with store.discard_on_error():
        store.fill(audios, quiet=quiet)
        yield
