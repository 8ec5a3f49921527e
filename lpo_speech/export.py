"""`lpo-speech export RUN_DIR OUT`: a trained run as a folder ready for `push_to_hub`.

OUT holds the run's `model/` as `save_pretrained` wrote it (weights, config, processor or tokenizer,
generation config; a LoRA adapter saved alone is folded into its base first, lpo_speech.lora), its
`training_curves.png`, and a `README.md` model card: Hugging Face metadata (library, pipeline tag,
base model when it is a hub id, tags), what the model is, how it was trained (the loss, its settings,
the steps, the last logged metrics) and the recipe as it ran (`config.yaml`), and each evaluation
given with `--eval` (its `table.md`). Upload it with `huggingface_hub.upload_folder` or
`model.push_to_hub`. OUT is written through a temp folder beside it and appears only when complete;
an existing OUT is replaced only with `overwrite`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import yaml

from lpo_speech.errors import UserError, short

ASR_TYPES = {"whisper": "Whisper", "qwen2_audio": "Qwen2-Audio"}


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read the run's recipe ({short(str(e).splitlines()[0], 120)})", where=str(path)) from None
    if not isinstance(data, dict):
        raise UserError("not a recipe (a YAML mapping)", where=str(path))
    return data


def _last_metrics(path: Path) -> dict:
    last: dict = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                try:
                    last = json.loads(line)
                except ValueError:
                    break
    return last


def _eval_tables(evals: list[str]) -> list[tuple[str, str]]:
    tables = []
    for e in evals:
        p = Path(e)
        table = p / "table.md" if p.is_dir() else p
        if not table.is_file():
            raise UserError("no table.md here (an `lpo-speech eval --out` folder, or its table.md)", where=str(e))
        data = ""
        metrics = table.parent / "metrics.json"
        if metrics.is_file():
            try:
                m = json.loads(metrics.read_text())
                first = next(iter(m.values())) if m and all(isinstance(v, dict) for v in m.values()) else m
                data = str(first.get("data", ""))
            except (ValueError, AttributeError, StopIteration):
                data = ""
        tables.append((data or str(table.parent), table.read_text().strip()))
    return tables


def model_card(config: dict, model_cfg: dict, metrics: dict, tables: list[tuple[str, str]], name: str, *,
               curves: bool = False) -> str:
    model_type = str(model_cfg.get("model_type", ""))
    asr = model_type in ASR_TYPES
    track = "asr" if asr else "tts"
    base = str(config.get("model", {}).get("path", ""))
    hub_base = base if base and not os.path.isabs(base) and not Path(base).exists() and base.count("/") == 1 else None
    loss = config.get("loss", {})
    train = config.get("train", {})
    meta = ["---", "library_name: transformers",
            f"pipeline_tag: {'automatic-speech-recognition' if asr else 'text-to-speech'}",
            *([f"base_model: {hub_base}"] if hub_base else []),
            "tags:", "- lpo-speech", "- preference-optimization", f"- {loss.get('type', 'lpo-ste')}", f"- {track}", "---"]
    kind = (f"{ASR_TYPES[model_type]} speech recognizer" if asr
            else f"codec-token text-to-speech model ({model_type or 'causal LM'})")
    lines = [*meta, "", f"# {name}", "",
             f"A {kind} aligned with lpo-speech (preference optimization for speech language models), starting from "
             f"`{hub_base or Path(base).name or base}`.", "",
             "## Training", "",
             f"- loss: `{loss.get('type')}` (beta {loss.get('beta')}, r1 {loss.get('r1')}, r2 {loss.get('r2')}, "
             f"gamma {loss.get('gamma')}, NLL weight {loss.get('sft_weight')}, length-averaged log-probs "
             f"{loss.get('average_logps')})",
             f"- optimizer: AdamW, lr {train.get('lr')} (min {train.get('min_lr')}), batch {train.get('batch_size')} "
             f"x {train.get('grad_accum')} accumulation, seed {train.get('seed', train.get('seeds'))}",
             f"- pairs: `{config.get('data', {}).get('pairs')}`"]
    if metrics:
        shown = {k: metrics[k] for k in ("step", "loss", "x1", "x2", "accuracy", "chosen_nll") if k in metrics}
        lines.append("- last logged step: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items()))
    lines += ["", "![training curves](training_curves.png)", ""] if curves else [""]
    if tables:
        lines += ["## Evaluation", ""]
        for data, table in tables:
            lines += [f"On `{data}`:", "", table, ""]
    lines += ["## Recipe", "", "The recipe as the run saved it (`config.yaml`):", "", "```yaml",
              yaml.safe_dump(config, sort_keys=False).strip(), "```", ""]
    return "\n".join(lines)


def export_run(run_dir: str | Path, out: str | Path, *, evals: list[str] | None = None, overwrite: bool = False,
               name: str | None = None) -> Path:
    """Write OUT (module docstring); returns it."""
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
    tables = _eval_tables(evals or [])
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError("exists and is not empty (pass --overwrite to replace it)", where=str(out))
    from lpo_speech.lora import is_adapter_folder, merge_adapter
    from lpo_speech.stages import atomic_folder

    with atomic_folder(out) as tmp:

        if is_adapter_folder(model) and not (model / "config.json").is_file():
            merge_adapter(model, tmp)  # model.lora.save: adapter -> a full model users can load alone
        else:
            shutil.copytree(model, tmp, dirs_exist_ok=True)
        if not (tmp / "config.json").is_file():
            raise UserError("no config.json in model/ (not a save_pretrained folder)", where=str(model))
        model_cfg = json.loads((tmp / "config.json").read_text())
        metrics = _last_metrics(run_dir / "metrics.jsonl")
        curves = (run_dir / "training_curves.png").is_file()
        if curves:
            shutil.copy2(run_dir / "training_curves.png", tmp / "training_curves.png")
        title = name or f"{run_dir.resolve().parent.name}-{run_dir.resolve().name}"  # e.g. my-whisper-lpo
        (tmp / "README.md").write_text(model_card(config, model_cfg, metrics, tables, title, curves=curves))
    return out
