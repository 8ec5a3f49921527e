"""Every recipe shipped in recipes/ loads and validates (airtight: no unknown or out-of-range key)."""

from pathlib import Path

import pytest

from lpo_speech.recipe import load_any_recipe, load_train_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").rglob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_validates(path):
    load_any_recipe(path)  # its own schema (a track recipe, or a train-only one) accepts it
    assert load_train_recipe(path).train.out_dir


def test_asr_recipes_present():
    names = {f"{p.parent.name}/{p.name}" for p in RECIPES}
    assert {"asr/whisper-tiny-offline.yaml", "asr/whisper.yaml"} <= names


def test_tts_and_emotion_recipes_present():
    names = {f"{p.parent.name}/{p.name}" for p in RECIPES}
    assert {"tts/tiny.yaml", "tts/tiny-sft.yaml", "tts/emotion.yaml", "tts/emotion-offline.yaml",
            "tts/emotion-zh.yaml"} <= names


def test_chinese_emotion_recipe_scores_in_chinese():
    tts = Path(__file__).resolve().parents[1] / "recipes" / "tts"
    bp = load_any_recipe(tts / "emotion-zh.yaml").build_pairs
    assert bp.lang == "zh" and load_any_recipe(tts / "emotion.yaml").build_pairs.lang == "en"
    assert bp.judge["type"] == "funasr" and "paraformer" in bp.judge["model"] and "zh-cn" in bp.judge["model"]
    assert bp.emotion == {"type": "emotion2vec", "model": "iic/emotion2vec_plus_large"}
    assert "cer" in bp.keys and bp.max_chosen_cer is not None


@pytest.mark.parametrize("override, message", [
    ("build_pairs.lang=fr", "build_pairs.lang: en or zh, got 'fr'"),
    ("build_pairs.lang=[zh]", "build_pairs.lang: expected str"),
    ("build_pairs.judge={type: transformers-whisper, path: w, language: en}",
     r"build_pairs.judge.language: must be build_pairs.lang \(zh\) or left out"),
    ("build_pairs.judge={type: faster-whisper, model: bundled}", "build_pairs.judge: the bundled Whisper tiny.en"),
])
def test_tts_lang_is_strict(override, message):
    from lpo_speech.errors import UserError

    path = Path(__file__).resolve().parents[1] / "recipes" / "tts" / "emotion-zh.yaml"
    with pytest.raises(UserError, match=message):
        load_any_recipe(path, [override])
    # A Whisper judge told the recipe's own language is fine.
    judge = "build_pairs.judge={type: transformers-whisper, path: w, language: zh}"
    assert load_any_recipe(path, [judge]).build_pairs.judge["language"] == "zh"


@pytest.mark.parametrize("command", ["train", "build-pairs"])
def test_hub_recipe_without_hub_names_its_offline_twin(command, lpo, tmp_path):
    """No network here: the hub emotion recipe stops before any data or model work, in one line."""
    repo = Path(__file__).resolve().parents[1]
    res = lpo(command, str(repo / "recipes" / "tts" / "emotion.yaml"), cwd=tmp_path, check=False,
              env={"HF_HUB_OFFLINE": "1"})
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "model.path: 'runs/llasa-1b' is not a local folder" in res.stderr
    assert f"lpo-speech {command} recipes/tts/emotion-offline.yaml" in res.stderr


def test_preflight_accepts_local_folders(tmp_path):
    from lpo_speech.hub import hub_models, looks_like_hub_id

    (tmp_path / "org").mkdir()
    assert looks_like_hub_id("openai/whisper-small") and not looks_like_hub_id("./a/b")
    recipe = load_any_recipe(Path(__file__).resolve().parents[1] / "recipes" / "asr" / "whisper.yaml",
                             [f"model.path={tmp_path / 'org'}"])
    assert hub_models(recipe) == []
