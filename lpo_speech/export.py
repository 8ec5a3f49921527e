"""`lpo-speech export RUN_DIR OUT`: a trained run as a folder ready for `push_to_hub`.

OUT holds the run's `model/` as `save_pretrained` wrote it (weights, config, processor or tokenizer,
generation config; a LoRA adapter saved alone is folded into its base first, lpo_speech.lora), its
`training_curves.png`, and a `README.md` model card: Hugging Face metadata (library, pipeline tag,
`base_model`, tags), what the model is, a warning when the run was a smoke run or short, how it was
trained (the loss, its settings, the steps, the last logged metrics), each evaluation given with
`--eval` (its sets, their sizes and its `table.md`) and the recipe as it ran (`config.yaml`). Upload it
with `huggingface_hub.upload_folder` or `model.push_to_hub`. OUT is written through a temp folder
beside it and appears only when complete; an existing OUT is replaced only with `overwrite`.

Nothing in OUT names this machine's files: in the card (the recipe, the eval tables) and in the copied
config files (`*.json` but the tokenizer's vocabulary files) every absolute local path is written as
`<local>/NAME`, NAME its last component (`hf:/x/y/codec` -> `hf:<local>/codec`; a TTS model's local
codec folder is said on stdout: name its hub id before uploading). Relative paths, as the recipe
wrote them, stay.

`base_model`: the hub model the run descends from, following the chain from the recipe's
`model.path`: a hub id is itself; a local folder gives its recorded origin (`lpo_speech_base_model` in
its config.json, which `import-whisper-ct2` and `import-tts-lm` write and training keeps), else the
base of a LoRA adapter, else the repository of a Hugging Face cache snapshot, else, for another run's
`model/`, that run's own `model.path`, and so on. A relative path in a recipe is tried from the
current directory, then from each folder above the run folder (the directory train ran from).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from lpo_speech.errors import UserError, short

ASR_TYPES = {"whisper": "Whisper", "qwen2_audio": "Qwen2-Audio"}
ORIGIN_KEY = "lpo_speech_base_model"  # config.json: the hub model a local model folder was made from
LOCAL = "<local>"
MIN_STEPS = 50  # a run with fewer optimizer steps gets a warning in its card
# Tokenizer vocabularies: tokens, not paths (a token may well read "/usr"); never rewritten.
VOCAB_FILES = {"tokenizer.json", "vocab.json", "added_tokens.json", "normalizer.json", "merges.txt"}
_ABS = re.compile(r"^(?P<scheme>[A-Za-z][\w+.-]*:)?(?P<path>~?/(?!/)\S*)$")  # /a/b, ~/a, hf:/a/b; not http://
_ABS_IN_TEXT = re.compile(r"(?<![\w.~/\\-])(?:~/|/(?!/))[^\s`'\"|,;()\[\]{}<>*]+")


# ---------------------------------------------------------------- local paths out


def local_name(path: str) -> str:
    """`<local>/NAME` for an absolute local path (NAME: its last component)."""
    return f"{LOCAL}/{Path(path.rstrip('/')).name or 'root'}"


def scrub_value(value: Any) -> Any:
    """`value` (a recipe, a config) with every string that is an absolute local path, alone or after a
    `scheme:` (`hf:/x/codec`), written as `<local>/NAME`."""
    if isinstance(value, dict):
        return {k: scrub_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_value(v) for v in value]
    if isinstance(value, str) and (m := _ABS.match(value)) and len(m["path"]) > 1:
        return (m["scheme"] or "") + local_name(m["path"])
    return value


def scrub_text(text: str) -> str:
    """Absolute local paths inside free text (a Markdown table) as `<local>/NAME`."""
    return _ABS_IN_TEXT.sub(lambda m: local_name(m.group(0)), text)


def _scrub_configs(folder: Path) -> list[str]:
    """Rewrite the local paths of every config file (`*.json` but vocabularies) in `folder`; returns
    `file: key = value` for what changed (said on stdout)."""
    changed = []
    for f in sorted(folder.glob("*.json")):
        if f.name in VOCAB_FILES:
            continue
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        keep = data.pop("added_tokens_decoder", None) if isinstance(data, dict) else None  # tokens
        clean = scrub_value(data)
        if clean != data:
            changed += [f"{f.name}: {k} = {v}" for k, v in _diff(data, clean)]
            if keep is not None:
                clean["added_tokens_decoder"] = keep
            f.write_text(json.dumps(clean, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return changed


def _diff(a: Any, b: Any, key: str = "") -> list[tuple[str, Any]]:
    if isinstance(a, dict):
        return [d for k in a for d in _diff(a[k], b[k], f"{key}.{k}" if key else str(k))]
    if isinstance(a, list):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{key}[{i}]")]
    return [(key, b)] if a != b else []


# ---------------------------------------------------------------- where the model came from


def locate(path: str, run_dir: Path | None = None) -> Path | None:
    """A recipe's local path as it is here: absolute, or relative to the current directory, or to a
    folder above `run_dir` (the directory the run was started from); None when none exists."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p if p.exists() else None
    bases = [Path.cwd(), *(run_dir.resolve().parents if run_dir is not None else [])]
    return next((b / p for b in bases if (b / p).exists()), None)


def _cache_repo(folder: Path) -> str | None:
    """`org/name` of a Hugging Face cache snapshot (`.../models--org--name/snapshots/<hash>`)."""
    for part in reversed(folder.parts):
        if part.startswith("models--") and part.count("--") >= 2:
            org, name = part[len("models--"):].split("--", 1)
            return f"{org}/{name}"
    return None


def folder_origin(folder: str | Path, _seen: set | None = None) -> str | None:
    """The hub model a local model folder comes from (module docstring), or None."""
    folder = Path(folder).resolve()
    seen = _seen if _seen is not None else set()
    if folder in seen or len(seen) > 32:
        return None
    seen.add(folder)
    cfg = _json(folder / "config.json")
    if isinstance(cfg.get(ORIGIN_KEY), str) and cfg[ORIGIN_KEY]:
        return cfg[ORIGIN_KEY]
    adapter_base = _json(folder / "adapter_config.json").get("base_model_name_or_path")
    if isinstance(adapter_base, str) and adapter_base:
        return model_origin(adapter_base, folder, seen)
    if (repo := _cache_repo(folder)) is not None:
        return repo
    if (folder.parent / "config.yaml").is_file():  # another run's model/ (or a rounds run's)
        try:
            recipe = yaml.safe_load((folder.parent / "config.yaml").read_text())
            path = recipe["model"]["path"]
        except (OSError, yaml.YAMLError, TypeError, KeyError):
            return None
        if isinstance(path, str):
            return model_origin(path, folder.parent, seen)
    return None


def model_origin(path: str, run_dir: Path | None = None, _seen: set | None = None) -> str | None:
    """The hub model behind a recipe's `model.path` (module docstring), or None when it is not known.
    `run_dir`: the run whose recipe names it; its `run.settings.json` says whether the path was a local
    folder then, and where it lies relative to the run."""
    recorded = _json(run_dir / "run.settings.json").get("model.path") if run_dir is not None else None
    if isinstance(recorded, dict) and isinstance(recorded.get("path"), str):
        there = run_dir / recorded["path"]
        if there.exists():
            return folder_origin(there, _seen)
    local = locate(path, run_dir)
    if local is not None:
        return folder_origin(local, _seen)
    p = path.strip()
    hub_id = p.count("/") == 1 and not p.startswith((".", "/", "~")) and all(p.split("/"))
    return p if hub_id and not isinstance(recorded, dict) else None  # a local folder then, gone now: unknown


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------- the run and its evaluations


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read the run's recipe ({short(str(e).splitlines()[0], 120)})",
                        where=str(path)) from None
    if not isinstance(data, dict):
        raise UserError("not a recipe (a YAML mapping)", where=str(path))
    return data


def _metrics_rows(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError:
                    break
                if isinstance(row, dict):
                    rows.append(row)
    return rows


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def short_run(run_dir: Path, config: dict, rows: list[dict]) -> dict:
    """What makes the run a trial rather than a model: `smoke` (runtime.json has `smoke`: true, or the
    summary `train --smoke` records), `steps` (optimizer steps, when fewer than MIN_STEPS), `epochs`
    (passes over the pairs, `data.limit` of them when set, when fewer than one; offline training only).
    Empty for a full run."""
    runtime = _json(run_dir / "runtime.json")
    found: dict = {}
    if runtime.get("smoke") is True or (isinstance(runtime.get("smoke"), dict) and runtime["smoke"]):
        found["smoke"] = True
    steps = max((r["step"] for r in rows if isinstance(r.get("step"), int)), default=None)
    if steps is not None and steps < MIN_STEPS:
        found["steps"] = steps
    train = config.get("train") or {}
    pairs = locate(str((config.get("data") or {}).get("pairs") or ""), run_dir)
    offline = not config.get("online") and not config.get("rounds")
    if steps is not None and offline and pairs is not None and pairs.is_file():
        try:
            per_step = (int(train.get("batch_size", 0)) * int(train.get("grad_accum", 1))
                        * int(runtime.get("processes", 1)))
        except (TypeError, ValueError):
            per_step = 0
        limit = (config.get("data") or {}).get("limit") or 0
        n = min(_count_lines(pairs), limit) if isinstance(limit, int) and limit > 0 else _count_lines(pairs)
        per_epoch = n // per_step if per_step > 0 else 0
        if per_epoch > 0 and steps < per_epoch:
            found["epochs"] = steps / per_epoch
    return found


def warning_text(found: dict) -> str:
    """One sentence for the card and stdout; '' for a full run."""
    if not found:
        return ""
    why = []
    if "steps" in found:
        why.append(f"trained only {found['steps']} optimizer step{'s' * (found['steps'] != 1)}")
    if "epochs" in found:
        why.append(f"{found['epochs']:.2f} of one pass over its pairs")
    head = "a smoke run (`lpo-speech train --smoke`)" if found.get("smoke") else "a short run"
    then = ("It checks the pipeline; it is not a model to use." if found.get("smoke")
            else "Treat it as a trial, not a finished model.")
    return f"this is {head}" + (f": {', '.join(why)}" if why else "") + f". {then}"


def _is_metrics(d: Any) -> bool:
    return isinstance(d, dict) and any(isinstance(d.get(k), (int, float)) for k in ("wer", "cer", "n"))


def _set_name(metrics: dict[str, dict], named: Any = None) -> str:
    """A single set's name: as the eval folder says it (a `set` key), else its data file's stem (eval's
    default name for an unnamed `--data`)."""
    for given in (named, *(m.get(k) for m in metrics.values() for k in ("set", "set_name"))):
        if isinstance(given, str) and given:
            return given
    data = next((str(m["data"]) for m in metrics.values() if m.get("data")), "")
    return Path(data.rstrip("/")).name.split(".")[0] or "held-out"


def _by_labels(folder: Path) -> dict[str, dict]:
    return {d.name: m for d in sorted(folder.iterdir()) if d.is_dir() and _is_metrics(m := _json(d / "metrics.json"))}


def eval_sets(folder: Path) -> dict[str, dict[str, dict]]:
    """{set: {label: metrics}} of an `lpo-speech eval --out` folder, whichever layout it has:
    `metrics.json` as one model's metrics, {label: metrics} or {set: {label: metrics}} (other keys
    beside them are passed over), else the `<label>/metrics.json` or `<set>/<label>/metrics.json` files."""
    top = _json(folder / "metrics.json")
    if _is_metrics(top):
        labels = _by_labels(folder)
        labels = labels if len(labels) == 1 else {"model": top}
        return {_set_name({"": top}, top.get("set")): labels}
    labels = {k: v for k, v in top.items() if _is_metrics(v)}
    if labels:
        return {_set_name(labels, top.get("set")): labels}
    sets = {k: {label: m for label, m in v.items() if _is_metrics(m)} for k, v in top.items() if isinstance(v, dict)}
    if sets := {k: v for k, v in sets.items() if v}:
        return sets
    if labels := _by_labels(folder):
        return {_set_name(labels): labels}
    return {d.name: by for d in sorted(folder.iterdir()) if d.is_dir() and (by := _by_labels(d))}


def _eval_sections(evals: list[str]) -> list[dict]:
    """Each `--eval`: its folder's name, its sets (name, data file, size) and its table."""
    sections = []
    for e in evals:
        p = Path(e)
        table = p / "table.md" if p.is_dir() else p
        if not table.is_file():
            raise UserError("no table.md here (an `lpo-speech eval --out` folder, or its table.md)", where=str(e))
        sets = []
        for name, by_label in eval_sets(table.parent).items():
            sizes = sorted({m["n"] for m in by_label.values() if isinstance(m.get("n"), int)})
            data = next((str(m["data"]) for m in by_label.values() if m.get("data")), "")
            tts = any("failure_rate" in m for m in by_label.values())
            skipped = [m["skipped"] for m in by_label.values() if isinstance(m.get("skipped"), int)]
            sets.append({"name": name, "data": Path(data).name if data else "",
                         "size": "-".join(map(str, sizes[:1] + sizes[-1:] if len(sizes) > 1 else sizes)),
                         "unit": "prompts" if tts else "utterances",
                         "skipped": max(skipped, default=0)})  # the same rows left out for every model
        sections.append({"folder": table.parent.resolve().name, "sets": sets,
                         "table": scrub_text(table.read_text().strip())})
    return sections


# ---------------------------------------------------------------- the card


def model_card(config: dict, model_cfg: dict, metrics: dict, sections: list[dict], name: str, *,
               base_model: str | None = None, warning: str = "", curves: bool = False) -> str:
    """README.md: metadata, what the model is, a warning for a trial run, training, evaluation, recipe.
    `config` is the recipe with local paths already written as `<local>/NAME` (scrub_value)."""
    model_type = str(model_cfg.get("model_type", ""))
    asr = model_type in ASR_TYPES
    loss = config.get("loss") or {}
    train = config.get("train") or {}
    meta = {"library_name": "transformers",
            "pipeline_tag": "automatic-speech-recognition" if asr else "text-to-speech",
            **({"base_model": base_model} if base_model else {}),
            "tags": ["lpo-speech", "preference-optimization", str(loss.get("type", "lpo-ste")),
                     "asr" if asr else "tts"]}
    kind = (f"{ASR_TYPES[model_type]} speech recognizer" if asr
            else f"codec-token text-to-speech model ({model_type or 'causal LM'})")
    path = str((config.get("model") or {}).get("path", ""))
    start = (f"[`{base_model}`](https://huggingface.co/{base_model})" if base_model
             else f"a local model (`{path}`)" if path else "its base model")
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "", f"# {name}", ""]
    if warning:
        lines += [f"> **Warning:** {warning}", ""]
    lines += [f"A {kind} aligned with lpo-speech (preference optimization for speech language models), starting "
              f"from {start}.", "",
              "## Training", "",
              f"- loss: `{loss.get('type')}` (beta {loss.get('beta')}, r1 {loss.get('r1')}, r2 {loss.get('r2')}, "
              f"gamma {loss.get('gamma')}, NLL weight {loss.get('sft_weight')}, length-averaged log-probs "
              f"{loss.get('average_logps')})",
              f"- optimizer: AdamW, lr {train.get('lr')} (min {train.get('min_lr')}), batch {train.get('batch_size')} "
              f"x {train.get('grad_accum')} accumulation, seed {train.get('seed', train.get('seeds'))}",
              f"- pairs: `{(config.get('data') or {}).get('pairs')}`"]
    if metrics:
        shown = {k: metrics[k] for k in ("step", "loss", "x1", "x2", "accuracy", "chosen_nll") if k in metrics}
        lines.append("- last logged step: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()))
    lines += ["", "![training curves](training_curves.png)", ""] if curves else [""]
    if sections:
        lines += ["## Evaluation", ""]
        for s in sections:
            lines += [f"`lpo-speech eval` (folder `{s['folder']}`), on {len(s['sets'])} held-out "
                      f"set{'s' * (len(s['sets']) != 1)}:", "", "| set | data | size |", "|---|---|---|"]
            for st in s["sets"]:
                skipped = f" ({st['skipped']} left out: audio checked against its text)" if st["skipped"] else ""
                lines.append(f"| {st['name']} | `{st['data']}` | {st['size'] or '?'} {st['unit']}{skipped} |")
            lines += ["", s["table"], ""]
    lines += ["## Recipe", "", "The recipe as the run saved it (`config.yaml`; local paths as `<local>/NAME`):", "",
              "```yaml", yaml.safe_dump(config, sort_keys=False).strip(), "```", ""]
    return "\n".join(lines)


def export_run(run_dir: str | Path, out: str | Path, *, evals: list[str] | None = None, overwrite: bool = False,
               name: str | None = None, say=print) -> Path:
    """Write OUT (module docstring); returns it. `say` gets the warnings, one line each."""
    import shutil

    run_dir, out = Path(run_dir), Path(out)
    model = run_dir / "model"
    if not run_dir.is_dir():
        raise UserError("no such run folder", where=str(run_dir))
    if not model.is_dir():
        raise UserError("no model/ folder (an `lpo-speech train` run folder has one once training finished)",
                        where=str(run_dir))
    config = _read_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else None
    if config is None:
        raise UserError("no config.yaml (an `lpo-speech train` run folder has one)", where=str(run_dir))
    sections = _eval_sections(evals or [])
    if out.exists() and not out.is_dir():
        raise UserError("exists and is not a folder", where=str(out))
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError("exists and is not empty (pass --overwrite to replace it)", where=str(out))
    from lpo_speech.lora import is_adapter_folder, merge_adapter
    from lpo_speech.stages import atomic_folder

    path = (config.get("model") or {}).get("path")
    base_model = model_origin(path, run_dir) if isinstance(path, str) and path else None
    if base_model is None:
        base_model = folder_origin(model)  # its config.json may name it (a run of an imported model)
    rows = _metrics_rows(run_dir / "metrics.jsonl")
    warning = warning_text(short_run(run_dir, config, rows))
    with atomic_folder(out) as tmp:
        if is_adapter_folder(model) and not (model / "config.json").is_file():
            merge_adapter(model, tmp)  # model.lora.save: adapter -> a full model users can load alone
        else:
            shutil.copytree(model, tmp, dirs_exist_ok=True)
        if not (tmp / "config.json").is_file():
            raise UserError("no config.json in model/ (not a save_pretrained folder)", where=str(model))
        changed = _scrub_configs(tmp)
        model_cfg = json.loads((tmp / "config.json").read_text())
        curves = (run_dir / "training_curves.png").is_file()
        if curves:
            shutil.copy2(run_dir / "training_curves.png", tmp / "training_curves.png")
        title = name or out.resolve().name
        (tmp / "README.md").write_text(model_card(scrub_value(config), model_cfg, rows[-1] if rows else {},
                                                  sections, title, base_model=base_model, warning=warning,
                                                  curves=curves))
    if warning:
        say(f"export: warning: {run_dir}: {warning.split('. ')[0]} (said at the top of the card)")
    if base_model is None:
        say(f"export: no base_model in the card: {path or 'the run'} records no hub model it came from")
    for c in changed:
        say(f"export: {c}: a local path, written without its folders; name a hub id there before uploading")
    for f, where in _local_paths_left(out, [run_dir.resolve().parent, Path.cwd(), Path.home()]):
        say(f"export: warning: {f.name} still names {where}: check it before uploading")
    return out


def _local_paths_left(folder: Path, roots: list[Path]) -> list[tuple[Path, str]]:
    """(file, folder) for each text file of `folder` (not a vocabulary) that still names one of `roots`
    (a safety net: a file this module does not know, with a local path in it)."""
    roots = sorted({str(r) for r in roots if len(r.parts) > 2 or (len(r.parts) == 2 and len(r.name) > 3)}, key=len)
    found = []
    for f in sorted(folder.iterdir()):
        if f.name in VOCAB_FILES or f.suffix not in (".json", ".md", ".txt", ".yaml", ".yml", ".jinja", ".py"):
            continue
        try:
            text = f.read_text(encoding="utf-8") if f.stat().st_size < 20_000_000 else ""
        except (OSError, UnicodeDecodeError):
            continue
        hit = next((r for r in roots if r in text), None)
        if hit is not None:
            found.append((f, hit))
    return found
