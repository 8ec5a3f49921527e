"""ASR inputs as users have them: a JSONL manifest, a Hugging Face `datasets` dataset, or a lhotse CutSet.

Every stage reads a JSONL manifest (`{"id", "audio", "text"}`, lpo_speech.records.AsrUtterance). Any
other input is converted to one once, into a folder beside the stage's output (build-pairs:
`<work_dir>/input/`, eval: `<out>/input/`): `manifest.jsonl` and one 16 kHz mono WAV per row, channels
averaged and other rates resampled with soxr (lpo_speech.audio announces each kind of conversion once).
`source.json` records what the folder was made from: the source, its columns and split, and a
fingerprint of its content. A rerun from the same source reuses the folder; one from another source
stops in one line unless `overwrite` (the stages' --overwrite). A row whose audio cannot be decoded
stops the conversion with one line naming the source, row and id, and a failed invocation removes
what it created (`converted_manifest`).

What a source is (`source_kind`):
  * a file ending `.jsonl.gz`, or a JSONL file whose first record is a lhotse cut (`"type": "MonoCut"`,
    or `recording`/`supervisions` keys): a lhotse CutSet (`CutSet.from_file`); a cut's text is its
    supervisions' texts joined, its audio what `cut.load_audio()` returns;
  * any other `.jsonl`/`.json` file: the manifest itself, read as it is;
  * a folder written by `save_to_disk` (it holds `state.json` or `dataset_dict.json`):
    `datasets.load_from_disk`; another folder (parquet, arrow, csv or json files, an audiofolder):
    `datasets.load_dataset(folder)`;
  * `hf:NAME`, or a `NAME`/`ORG/NAME` that is no local path: `datasets.load_dataset(NAME)` (the hub, or
    its local cache with HF_HUB_OFFLINE=1).
A dataset's audio column may be an `Audio` feature (its encoded bytes are read without the datasets
decoder, which needs torchcodec) or a string column of file paths (relative to the dataset's folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from lpo_speech.asr.features import decode_file
from lpo_speech.audio import convert, decode_audio, save_wav
from lpo_speech.distributed import barrier, init_distributed
from lpo_speech.errors import UserError, short
from lpo_speech.stages import atomic_folder, file_fingerprint, model_fingerprint

SAMPLE_RATE = 16_000  # both ASR adapters (Whisper, audio LLMs) hear 16 kHz
SCHEMA = 1  # raise when a converted folder's layout or conversion changes
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class InputColumns:
    """Where a dataset keeps each field: `build_pairs.{text,audio,id}_column` and `split`, or eval's
    --text-column, --audio-column, --id-column, --split. Without an id column, ids are `<split>-<row>`."""

    text: str = "text"
    audio: str = "audio"
    id: str | None = None
    split: str | None = None


def source_kind(source: str) -> str:
    """`jsonl`, `lhotse`, `datasets-disk`, `datasets-folder` or `datasets-hub` (module docstring)."""
    p = Path(source)
    if source.startswith("hf:"):
        return "datasets-hub"
    if p.is_dir():
        if (p / "state.json").is_file() or (p / "dataset_dict.json").is_file():
            return "datasets-disk"
        return "datasets-folder"
    if p.is_file():
        if p.name.endswith(".jsonl.gz"):
            return "lhotse"
        return "lhotse" if _first_record_is_cut(p) else "jsonl"
    if not p.suffix and _HUB_NAME.match(source):
        return "datasets-hub"
    raise UserError(f"{source}: no such file or folder (a JSONL manifest, a datasets folder, a lhotse manifest, "
                    "or hf:NAME for a hub dataset)")


def _first_record_is_cut(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            for raw in f:
                if raw.strip():
                    first = json.loads(raw)
                    break
            else:
                return False
    except (OSError, ValueError):
        return False  # the JSONL reader says what is wrong with it
    return isinstance(first, dict) and (str(first.get("type", "")).endswith("Cut")
                                        or {"recording", "supervisions"} <= set(first))


# ------------------------------------------------------------------------------------------ datasets

def _need(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"reading this input needs the '{module}' package (pip install {module}; "
                        "it is in requirements.lock)") from None


def _load_dataset(source: str, kind: str, split: str | None):
    datasets = _need("datasets")
    name = source[3:] if source.startswith("hf:") else source
    try:
        if kind == "datasets-disk":
            ds = datasets.load_from_disk(name)
        else:
            ds = datasets.load_dataset(name, split=split) if split else datasets.load_dataset(name)
    except UserError:
        raise
    except Exception as e:  # hub unreachable, unknown name, unreadable files: one line, the library's reason
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"dataset {source}: cannot load ({type(e).__name__}: {short(reason, 200)})") from None
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        if split is None and len(splits) == 1:
            split = splits[0]
        if split not in ds:
            raise UserError(f"dataset {source}: " + (f"no split {split!r}" if split else "several splits")
                            + f" (splits: {', '.join(splits)}); name one with " + "split / --split")
        ds = ds[split]
    elif split is not None and str(ds.split or "") != split:  # one Dataset (save_to_disk of a Dataset)
        held = f"its rows are split {str(ds.split)!r}" if ds.split else "one set of rows, no named splits"
        raise UserError(f"dataset {source}: no split {split!r} ({held}); leave split / --split out to read "
                        "all of it")
    return ds, split or "train"


def _dataset_rows(source: str, kind: str, cols: InputColumns) -> tuple[Iterator[dict], int, str]:
    """(rows {index, id, text, bytes | path}, count, fingerprint) of a datasets source."""
    datasets = _need("datasets")
    ds, split = _load_dataset(source, kind, cols.split)
    names = list(ds.column_names)
    for field, col in (("text", cols.text), ("audio", cols.audio), ("id", cols.id)):
        if col is not None and col not in names:
            raise UserError(f"dataset {source}: no {field} column {col!r} (columns: {', '.join(names)}); "
                            f"name it with {field}_column / --{field}-column")
    feature = ds.features[cols.audio]
    if isinstance(feature, datasets.Audio):
        ds = ds.cast_column(cols.audio, datasets.Audio(decode=False))  # encoded bytes; decoded here by soundfile
    files = sorted({f["filename"] for f in ds.cache_files})
    base = Path(source) if kind != "datasets-hub" else None
    content = hashlib.sha256(json.dumps([split, len(ds), names]).encode())
    for f in files:  # the Arrow files that hold the rows (for a hub dataset, its local cache)
        content.update(model_fingerprint(Path(f).parent).encode())
    if not files:
        content.update(model_fingerprint(source).encode())

    def rows() -> Iterator[dict]:
        for i, row in enumerate(ds):
            where = f"dataset {source}: row {i}"
            uid = f"{split}-{i:07d}" if cols.id is None else str(row[cols.id])
            text, audio = row[cols.text], row[cols.audio]
            item = {"index": i, "id": uid, "text": text, "where": where}
            if isinstance(audio, dict) and audio.get("bytes"):
                item["bytes"] = audio["bytes"]
            elif isinstance(audio, dict) and audio.get("path"):
                item["path"] = audio["path"]
            elif isinstance(audio, str) and audio:
                item["path"] = audio
            else:
                raise UserError(f"field '{cols.audio}': no audio (expected an Audio feature or a file path)",
                                where=where)
            if "path" in item and base is not None and not Path(item["path"]).is_absolute():
                item["path"] = str(base / item["path"])
            yield item

    return rows(), len(ds), f"datasets:{content.hexdigest()}"


# --------------------------------------------------------------------------------------------- lhotse

def _lhotse_rows(source: str) -> tuple[Iterator[dict], int, str]:
    lhotse = _need("lhotse")
    try:
        cuts = lhotse.CutSet.from_file(source).to_eager()
    except Exception as e:  # malformed manifest: the library's reason, one line
        raise UserError(f"{source}: not a lhotse CutSet manifest ({type(e).__name__}: {short(str(e), 160)})") from None

    def rows() -> Iterator[dict]:
        for i, cut in enumerate(cuts):
            where = f"{source}: cut {i} (id {short(cut.id)})"
            text = " ".join(s.text.strip() for s in cut.supervisions if s.text and s.text.strip())
            try:
                audio = cut.load_audio()  # [channels, samples] at cut.sampling_rate (offsets, trims applied)
            except Exception as e:
                raise UserError(f"cannot read audio ({type(e).__name__}: {short(str(e), 160)})", where=where) from None
            yield {"index": i, "id": cut.id, "text": text, "where": where, "array": audio.T,
                   "rate": int(cut.sampling_rate)}

    return rows(), len(cuts), file_fingerprint(source)


# ------------------------------------------------------------------------------------------ conversion

def _row_audio(item: dict) -> Any:
    if "bytes" in item:
        return decode_audio(item["bytes"], sample_rate=SAMPLE_RATE, where=f"{item['where']}: audio")
    if "path" in item:  # decoded once, here: not kept in memory (load_audio's cache would grow with the set)
        return decode_file(item["path"], item["where"])
    return convert(item["array"], item["rate"], SAMPLE_RATE, origin=item["where"])


def _convert(source: str, kind: str, cols: InputColumns, dest: Path, record: dict, rows: Iterator[dict],
             count: int, quiet: bool) -> None:
    """Write dest (through a temp folder beside it, swapped in when every row converted)."""
    from tqdm import tqdm

    seen: dict[str, int] = {}
    with atomic_folder(dest) as tmp:
        with (tmp / "manifest.jsonl").open("w", encoding="utf-8") as f:
            for item in tqdm(rows, total=count, desc=f"converting {Path(source).name or source}", unit="utt",
                             disable=quiet, mininterval=2.0):
                uid, text = str(item["id"]).strip(), item["text"]
                if not uid:
                    raise UserError("empty id", where=item["where"])
                if uid in seen:
                    raise UserError(f"duplicate id {short(uid)} (first at row {seen[uid]})", where=item["where"])
                seen[uid] = item["index"]
                if not isinstance(text, str) or not text.strip():
                    raise UserError(f"field '{cols.text}': empty or not text", where=item["where"])
                wav = f"wavs/{item['index']:07d}.wav"
                save_wav(tmp / wav, _row_audio(item), SAMPLE_RATE)
                f.write(json.dumps({"id": uid, "audio": wav, "text": text.strip()}, ensure_ascii=False) + "\n")
        if not seen:
            raise UserError(f"{source}: no rows")
        (tmp / "source.json").write_text(json.dumps(record, indent=2))


def prepare_manifest(source: str, dest: str | Path, cols: InputColumns = InputColumns(), *,
                     overwrite: bool = False, quiet: bool = False) -> Path:
    """The JSONL manifest to read for `source`: the file itself, or `dest/manifest.jsonl`, converted
    now or reused from an earlier run from the same source (module docstring). Under torchrun rank 0
    converts while the others wait."""
    kind = source_kind(str(source))
    if kind == "jsonl":
        return Path(source)
    if kind == "lhotse" and cols.split is not None:  # not ignored: every cut would be read
        raise UserError(f"{source}: a lhotse CutSet has no splits (one manifest per split), so there is no "
                        f"split {cols.split!r}; leave split / --split out")
    dest = Path(dest)
    info = init_distributed("auto")
    if info.is_main:
        if kind == "lhotse":
            rows, count, fingerprint = _lhotse_rows(str(source))
        else:
            rows, count, fingerprint = _dataset_rows(str(source), kind, cols)
        record = {"schema": SCHEMA, "kind": kind, "source": str(source), "columns": asdict(cols),
                  "sample_rate": SAMPLE_RATE, "fingerprint": fingerprint}
        earlier = _read_record(dest)
        if earlier is not None and _same(earlier, record):
            pass
        elif earlier is not None and not overwrite:
            changed = [k for k in ("kind", "columns", "fingerprint", "schema") if earlier.get(k) != record.get(k)]
            raise UserError(f"{dest}: converted from another input (changed: {', '.join(changed)}; was "
                            f"{short(str(earlier.get('source')))}); pass --overwrite to convert again, or use another "
                            "output folder")
        else:
            _convert(str(source), kind, cols, dest, record, rows, count, quiet)
    barrier()
    return dest / "manifest.jsonl"


def row_namer(source: str, cols: InputColumns = InputColumns()) -> Callable[[int, str], str] | None:
    """How a check of the manifest `prepare_manifest` gave for `source` names a line's audio, as the
    conversion names its rows (row i is line i + 1 of a converted manifest, which a failed stage removes):
    `dataset SOURCE: row I: field 'COLUMN'` or `SOURCE: cut I (id ID): field 'audio'`; None for a JSONL
    source, whose own `file:line` names it."""
    kind = source_kind(str(source))
    if kind == "jsonl":
        return None
    if kind == "lhotse":
        return lambda line, uid: f"{source}: cut {line - 1} (id {short(uid)}): field 'audio'"
    return lambda line, uid: f"dataset {source}: row {line - 1}: field '{cols.audio}'"


def _read_record(dest: Path) -> dict | None:
    try:
        return json.loads((dest / "source.json").read_text())
    except (OSError, ValueError):
        return None


def _same(a: dict, b: dict) -> bool:
    # The source's path may differ (a moved folder): the content decides, with columns and schema.
    keys = ("schema", "kind", "columns", "sample_rate", "fingerprint")
    return all(a.get(k) == b.get(k) for k in keys)


@contextlib.contextmanager
def converted_manifest(source: str, dest: str | Path, cols: InputColumns = InputColumns(), *,
                       overwrite: bool = False, quiet: bool = False) -> Iterator[Path]:
    """`prepare_manifest` for a stage's body: when the body fails, a folder this call converted is
    removed again with the parent folders it created (reconverting is deterministic, so a resumed
    stage loses nothing), and a folder that was already there stays."""
    dest = Path(dest)
    created = [p for p in (dest, *dest.parents) if not p.exists()]
    had = dest.exists()
    try:
        yield prepare_manifest(source, dest, cols, overwrite=overwrite, quiet=quiet)
    except BaseException:
        if not had and (dest / "source.json").is_file():
            shutil.rmtree(dest, ignore_errors=True)
        for p in created[1:]:  # parents, innermost first, only while empty
            with contextlib.suppress(OSError):
                p.rmdir()
        raise
