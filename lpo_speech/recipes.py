"""Which recipe schema a YAML file follows. Track recipes carry extra sections (pair building,
evaluation); `train` reads the shared training sections from any of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lpo_speech.config import TrainRecipe, load_recipe
from lpo_speech.errors import UserError

# `track:` key -> recipe dataclass "module:Class". The base schema has no `track` key. A track recipe
# has `train_recipe()` (its training sections) and `make_pairs(quiet=...)` (its build-pairs stage).
TRACKS: dict[str, str] = {
    "asr": "lpo_speech.asr.recipe:AsrRecipe",
    "tts": "lpo_speech.tts.recipe:TtsRecipe",
}


def recipe_class(path: str | Path) -> Any:
    try:
        raw = yaml.safe_load(Path(path).read_text()) if Path(path).is_file() else None
    except yaml.YAMLError:
        raw = None  # load_recipe reports the YAML error with its line
    track = raw.get("track") if isinstance(raw, dict) else None
    if track is None:
        return TrainRecipe
    if track not in TRACKS:
        raise UserError(f"{path}: unknown track {track!r} (known: {', '.join(sorted(TRACKS)) or 'none'})")
    import importlib

    module, _, name = TRACKS[track].partition(":")
    return getattr(importlib.import_module(module), name)


def load_any_recipe(path: str | Path, overrides: list[str] | None = None) -> Any:
    return load_recipe(path, overrides, cls=recipe_class(path))


def load_train_recipe(path: str | Path, overrides: list[str] | None = None) -> TrainRecipe:
    """Any recipe, narrowed to what training needs (its model, data, train, loss, reference)."""
    recipe = load_any_recipe(path, overrides)
    if not isinstance(recipe, TrainRecipe):
        recipe = recipe.train_recipe()
    return recipe
