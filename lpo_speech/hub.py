"""Hub models: checked before any stage starts, and fetched for `eval --model HUB_ID`.

Real recipes name hub models (`openai/whisper-small`, a hub codec, a hub judge, FunASR's
emotion2vec and Paraformer-zh). Without network access those loads fail deep inside a stage, after
data has been read, often after a minute of retries. `preflight` checks every hub id of a recipe
first, by the files its loader needs (`NEEDS`):

* a local folder always wins (nothing is checked on the hub);
* online, one `huggingface_hub` metadata request lists the repository's files, so a missing
  repository or a repository without (say) `preprocessor_config.json` is one line now;
* offline (no network, or ``HF_HUB_OFFLINE=1``), the Hugging Face cache must hold those files;
  a FunASR model may also sit in the ModelScope cache, where FunASR downloads it by default.

A recipe with an `offline_twin` names it in the error, so a user without hub access learns which
recipe runs here. `local_model` turns a hub id into a folder in the Hugging Face cache
(`snapshot_download`, offline-safe), which is how `eval` accepts `--model openai/whisper-small`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from lpo_speech.errors import UserError

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# What each kind of loader reads: every entry is a set of alternatives, one of which must exist.
NEEDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "config": (("config.json",),),                                         # lpo-speech train --plan
    "model": (("config.json",), WEIGHTS),                                  # weights + config only
    "lm": (("config.json",), WEIGHTS, ("tokenizer.json", "tokenizer.model", "vocab.json")),
    "processor": (("config.json",), WEIGHTS, ("preprocessor_config.json", "processor_config.json"),
                  ("tokenizer.json", "vocab.json", "tokenizer.model")),  # Whisper, Qwen2-Audio
    "codec": (("config.json",), WEIGHTS, ("preprocessor_config.json",)),  # EnCodec, DAC, Mimi, XCodec2
    "snac": (("config.json",), ("pytorch_model.bin",)),                   # SNAC.from_pretrained
    "funasr": (("config.yaml",), ("model.pt",)),                          # FunASR AutoModel folders
}


@dataclass(frozen=True)
class HubModel:
    field: str  # where the recipe names it, e.g. build_pairs.judge.path
    name: str   # as written
    kind: str   # a key of NEEDS


def file_not_folder(name: str) -> bool:
    """Whether `name` is an existing local path that is not a folder. Every model lpo-speech loads is a
    folder (save_pretrained, a CTranslate2 or FunASR model folder); a path that exists is never looked up
    on the hub (transformers would take a relative `dir/file` for a hub id and retry for ~30 s)."""
    try:
        p = Path(str(name)).expanduser()
        return p.exists() and not p.is_dir()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte: not a local file
        return False


def require_folder(name: str, where: str) -> None:
    """One line, now, when the model path `name` (named by `where`: a flag, a recipe field) is a file."""
    if file_not_folder(name):
        raise UserError(f"{name!r} is a file; expected a model folder (save_pretrained)", where=where)


def looks_like_hub_id(name: str) -> bool:
    """`org/name` that is not an existing local path (local paths are always preferred)."""
    return (isinstance(name, str) and not Path(name).exists() and name.count("/") == 1
            and not name.startswith((".", "/", "~")))


def _funasr_names():
    """FunASR's own name tables (Hugging Face, ModelScope). Importing funasr prints an ffmpeg notice
    on stdout; a preflight's output is one line, so that notice is kept out of it."""
    with contextlib.redirect_stdout(io.StringIO()):
        from funasr.download.name_maps_from_hub import name_maps_hf, name_maps_ms
    return name_maps_hf, name_maps_ms


def funasr_repo(name: str) -> str:
    """The Hugging Face repository FunASR itself maps a model name to (`paraformer-zh` ->
    `funasr/paraformer-zh`, `iic/emotion2vec_plus_large` -> `emotion2vec/emotion2vec_plus_large`)."""
    return _funasr_names()[0].get(name, name)


def _modelscope_cached(name: str) -> bool:
    repo = _funasr_names()[1].get(name, name)
    root = Path(os.environ.get("MODELSCOPE_CACHE", Path.home() / ".cache" / "modelscope" / "hub"))
    return any((root / sub / repo / "config.yaml").is_file() for sub in ("models", "."))


def _listed(need, names) -> list[str]:
    return [" or ".join(alts) for alts in need if not any(a in names for a in alts)]


def missing(model: HubModel, timeout: float = 10.0) -> str | None:
    """None when `model` can be loaded here; otherwise what is missing, as a phrase for one line."""
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.errors import RepositoryNotFoundError

    repo = funasr_repo(model.name) if model.kind == "funasr" else model.name
    need = NEEDS[model.kind]
    cached = _listed(need, {a for alts in need for a in alts
                            if isinstance(try_to_load_from_cache(repo, a), str)})
    if not cached or (model.kind == "funasr" and _modelscope_cached(model.name)):
        return None  # loadable offline
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("1", "true", "yes", "on"):
        try:
            info = HfApi().model_info(repo, timeout=timeout)
        except RepositoryNotFoundError:
            return f"the hub has no repository {repo!r}"
        except Exception:  # no network, a proxy, a timeout: say what the cache lacks below
            pass
        else:
            lacks = _listed(need, {s.rfilename for s in info.siblings or []})
            return f"hub repository {repo!r} has no {', '.join(lacks)}" if lacks else None
    where = "Hugging Face or ModelScope cache" if model.kind == "funasr" else "Hugging Face cache"
    return f"the hub cannot be reached and the {where} lacks {', '.join(cached)}"


def hub_reachable(repo_id: str, kind: str = "model", timeout: float = 10.0) -> bool:
    """Whether `repo_id` can be loaded (config and weights, plus what `kind` needs) from cache or hub."""
    return missing(HubModel("", repo_id, kind), timeout) is None


def _codec_of(model_dir: str) -> tuple[str, str] | None:
    """(kind, hub id) of the codec a local codec LM names in its config (`tts.codec: hf:ORG/NAME` or
    `snac:ORG/NAME`), if any."""
    try:
        spec = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")).get("tts", {}).get("codec")
    except (OSError, ValueError, AttributeError):
        return None
    kind, _, arg = str(spec or "").partition(":")
    return ({"hf": "codec", "snac": "snac"}[kind], arg) if kind in ("hf", "snac") else None


def recipe_models(recipe) -> list[HubModel]:
    """Every model a recipe names (a local folder or a hub id): its model and reference, a hub codec its
    codec LM names, and the judges of build-pairs (Whisper by transformers or faster-whisper, FunASR
    ASR, emotion2vec)."""
    track = getattr(recipe, "track", "")
    found = [HubModel("model.path", recipe.model.path, "processor" if track == "asr" else "lm")]
    ref = getattr(getattr(recipe, "reference", None), "path", None)
    if ref:
        found.append(HubModel("reference.path", ref, found[0].kind))
    if Path(recipe.model.path).is_dir() and (codec := _codec_of(recipe.model.path)):
        found.append(HubModel("model.path codec (config.json tts.codec)", codec[1], codec[0]))
    bp = getattr(recipe, "build_pairs", None)
    judge = getattr(bp, "judge", None) or {}
    if judge.get("type") == "transformers-whisper" and judge.get("path"):
        found.append(HubModel("build_pairs.judge.path", judge["path"], "processor"))
    if judge.get("type") == "funasr" and judge.get("model"):
        found.append(HubModel("build_pairs.judge.model", judge["model"], "funasr"))
    emotion = getattr(bp, "emotion", None) or {}
    if isinstance(emotion, dict) and emotion.get("type") == "emotion2vec" and emotion.get("model"):
        found.append(HubModel("build_pairs.emotion.model", emotion["model"], "funasr"))
    return found


def hub_models(recipe) -> list[HubModel]:
    """The models of `recipe_models` that are hub ids (no local path of that name exists)."""
    return [m for m in recipe_models(recipe) if (looks_like_hub_id(m.name) if m.kind != "funasr"
                                                 else not Path(m.name).expanduser().exists())]


def preflight(recipe, command: str, recipe_path: str) -> None:
    """Raise one UserError for the first model of `recipe` that is a file rather than a folder, else for
    the first hub model that cannot be loaded here."""
    judge = getattr(getattr(recipe, "build_pairs", None), "judge", None) or {}
    named = [(m.field, m.name) for m in recipe_models(recipe)]
    if (judge.get("type", "faster-whisper") == "faster-whisper" and isinstance(judge.get("model"), str)
            and judge["model"] != "bundled"):
        named.append(("build_pairs.judge.model", judge["model"]))  # a CTranslate2 folder or a size (tiny.en)
    for field, name in named:
        if file_not_folder(name):
            raise UserError(f"{field}: {name!r} is a file; expected a model folder (save_pretrained)",
                            where=recipe_path)
    for m in hub_models(recipe):
        reason = missing(m)
        if reason is None:
            continue
        twin = getattr(recipe, "offline_twin", None)
        hint = (f"; without hub access run its offline twin: lpo-speech {command} {twin}" if twin
                else "; point it at a local copy (save_pretrained folder)")
        raise UserError(f"{m.field}: {m.name!r} is not a local folder, and as a hub model {reason}{hint}",
                        where=recipe_path)


def local_model(name: str, kind: str = "model", where: str = "--model") -> str:
    """A local folder for `name`: itself when it exists, else the hub model's snapshot in the Hugging
    Face cache (downloaded when online; offline, the cached copy). One line when neither works, or
    when `name` is a file."""
    require_folder(name, where)
    if Path(name).expanduser().exists() or not looks_like_hub_id(name):
        return name
    reason = missing(HubModel(where, name, kind))
    if reason is not None:
        raise UserError(f"{name!r} is not a local folder, and as a hub model {reason}", where=where)
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name)
    except Exception as e:  # network dropped between the check and the download, disk full, ...
        raise UserError(f"cannot fetch hub model {name!r}: {str(e).splitlines()[0] if str(e) else e!r}",
                        where=where) from None
