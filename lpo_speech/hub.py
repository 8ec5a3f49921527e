"""Fail fast, in one line, when a recipe names hub models that cannot be reached.

Real recipes name hub models (`openai/whisper-small`, a hub codec LM, a hub judge). Without network
access those loads fail deep inside a stage, after data has been read; `preflight` checks the
recipe's hub ids first: a local directory or a copy in the Hugging Face cache is fine, otherwise one
metadata request must succeed. A recipe with an `offline_twin` names it in the error, so a user
without hub access learns which recipe runs here.
"""

from __future__ import annotations

from pathlib import Path

from lpo_speech.errors import UserError


def looks_like_hub_id(name: str) -> bool:
    """`org/name` that is not an existing local path (local paths are always preferred)."""
    return (isinstance(name, str) and not Path(name).exists() and name.count("/") == 1
            and not name.startswith((".", "/", "~")))


def hub_reachable(repo_id: str, timeout: float = 10.0) -> bool:
    from huggingface_hub import HfApi, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return True  # cached earlier: transformers can load it offline
    try:
        HfApi().model_info(repo_id, timeout=timeout)
        return True
    except Exception:  # no network, offline mode, unknown repo: not loadable here either way
        return False


def hub_models(recipe) -> list[tuple[str, str]]:
    """(field, hub id) for the Hugging Face models a recipe loads (FunASR names live elsewhere)."""
    found = [("model.path", recipe.model.path)]
    ref = getattr(getattr(recipe, "reference", None), "path", None)
    if ref:
        found.append(("reference.path", ref))
    bp = getattr(recipe, "build_pairs", None)
    judge = getattr(bp, "judge", None) or {}
    if judge.get("type") == "transformers-whisper" and judge.get("path"):
        found.append(("build_pairs.judge.path", judge["path"]))
    return [(f, n) for f, n in found if looks_like_hub_id(n)]


def preflight(recipe, command: str, recipe_path: str) -> None:
    """Raise one UserError if a hub model of `recipe` cannot be reached (naming the offline twin)."""
    for field, name in hub_models(recipe):
        if not hub_reachable(name):
            twin = getattr(recipe, "offline_twin", None)
            hint = (f"; without hub access run its offline twin: lpo-speech {command} {twin}" if twin
                    else "; point it at a local copy (save_pretrained folder)")
            raise UserError(f"{field}: {name!r} is not a local folder, and as a hub model it cannot be reached "
                            f"(no network, or no such repository) and is not cached{hint}", where=recipe_path)
