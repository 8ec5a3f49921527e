"""Every recipe shipped in recipes/ loads and validates (airtight: no unknown or out-of-range key)."""

from pathlib import Path

import pytest

from lpo_speech.recipes import load_any_recipe, load_train_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").rglob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_validates(path):
    recipe = load_any_recipe(path)
    assert load_train_recipe(path).train.out_dir


def test_asr_recipes_present():
    names = {f"{p.parent.name}/{p.name}" for p in RECIPES}
    assert {"asr/whisper-tiny-offline.yaml", "asr/whisper.yaml"} <= names
