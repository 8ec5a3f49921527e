"""Which recipe schema a YAML file follows. Track recipes carry extra sections (pair building,
evaluation); `train` reads the shared training sections from any of them.

A recipe file is parsed once per load (`config.read_recipe`: safe YAML without aliases); the track is
read from that mapping, after the `key=value` overrides, and the same mapping is validated.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from lpo_speech.config import TrainRecipe, apply_overrides, build_recipe, read_recipe
from lpo_speech.errors import UserError, short

# `track:` key -> recipe dataclass "module:Class". The base schema has no `track` key. A track recipe
# has `train_recipe()` (its training sections).
TRACKS: dict[str, str] = {
    "asr": "lpo_speech.asr.recipe:AsrRecipe",
    "tts": "lpo_speech.tts.recipe:TtsRecipe",
}
# `track:` key -> its build-pairs stage "module:function(recipe, quiet=, overwrite=) -> stats". Kept apart
# from the recipe classes so a track's pair builder may import its recipe without a cycle.
PAIR_BUILDERS: dict[str, str] = {
    "asr": "lpo_speech.asr.pairs:build_asr_pairs",
    "tts": "lpo_speech.tts.pairs:build_tts_pairs",
}


def _named(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def track_class(raw: dict, path: str | Path) -> Any:
    """The recipe dataclass for a raw recipe mapping (its `track:` key)."""
    track = raw.get("track") if isinstance(raw, dict) else None
    if track is None:
        return TrainRecipe
    if not isinstance(track, str) or track not in TRACKS:
        raise UserError(f"unknown track {short(track)} (known: {', '.join(sorted(TRACKS)) or 'none'})",
                        where=str(path))
    return _named(TRACKS[track])


def recipe_class(path: str | Path) -> Any:
    """The recipe dataclass of a recipe file (reads it; `load_any_recipe` reads it once for both)."""
    return track_class(read_recipe(path), path)


def load_any_recipe(path: str | Path, overrides: list[str] | None = None) -> Any:
    raw = apply_overrides(read_recipe(path), overrides or [])
    return build_recipe(track_class(raw, path), raw, path)


def train_view(recipe: Any) -> TrainRecipe:
    """A loaded recipe, narrowed to what training needs (its model, data, train, loss, reference)."""
    return recipe if isinstance(recipe, TrainRecipe) else recipe.train_recipe()


def load_train_recipe(path: str | Path, overrides: list[str] | None = None) -> TrainRecipe:
    """Any recipe, narrowed to what training needs (its model, data, train, loss, reference)."""
    return train_view(load_any_recipe(path, overrides))


def build_pairs(recipe: Any, *, quiet: bool = False, overwrite: bool = False) -> dict:
    """Run a track recipe's build-pairs stage (sample, score, pair, reference log-probs); returns its stats."""
    track = getattr(recipe, "track", None)
    if track not in PAIR_BUILDERS:
        raise UserError("build-pairs needs a track recipe (track: asr or tts); this one has no `track:` key")
    return _named(PAIR_BUILDERS[track])(recipe, quiet=quiet, overwrite=overwrite)
