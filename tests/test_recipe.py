"""Recipes: strict validation (one line, exit 2), overrides, YAML float quirks."""

import pytest

from lpo_speech.recipe import TrainRecipe, load_recipe
from lpo_speech.errors import UserError

BASE = "model: {path: m}\ndata: {pairs: p.jsonl}\ntrain: {out_dir: run}\n"


def recipe(tmp_path, text=BASE):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_defaults_are_the_lpo_authors(tmp_path):
    r = load_recipe(recipe(tmp_path))
    assert isinstance(r, TrainRecipe)
    assert (r.loss.type, r.loss.beta, r.loss.gamma, r.loss.r1, r.loss.r2) == ("lpo-ste", 0.2, 5.0, 1.0, 0.8)
    assert r.loss.average_logps and r.loss.label_smoothing == 0.0


def test_overrides_and_yaml_float_strings(tmp_path):
    r = load_recipe(recipe(tmp_path), ["train.lr=1e-6", "loss.type=sigmoid", "train.adam_betas=[0.9, 0.99]"])
    assert r.train.lr == 1e-6 and r.loss.type == "sigmoid" and r.train.adam_betas == [0.9, 0.99]


@pytest.mark.parametrize("text, overrides, message", [
    (BASE + "trian: {}\n", [], "unknown key 'trian'"),
    (BASE, ["train.lrr=1"], "unknown key 'train.lrr'"),
    (BASE, ["train.batch_size=two"], "train.batch_size: expected int"),
    (BASE, ["train.batch_size=1.5"], "train.batch_size: expected int"),
    (BASE, ["loss.type=dpo"], "loss.type: one of"),
    (BASE, ["loss.beta=0"], "loss.beta: must be > 0"),
    (BASE, ["train.lr=-1"], "train.lr: must be > 0"),
    ("model: {path: m}\ntrain: {out_dir: run}\n", [], "missing required key 'data'"),
    ("model: [1, 2\n", [], "invalid YAML"),
    (BASE, ["nonsense"], "expected key=value"),
    (BASE, ["loss.beta=.inf"], "loss.beta: must be a finite number, got inf"),
    (BASE, ["train.lr=NaN"], "train.lr: must be a finite number"),
    (BASE, ["loss.beta=101"], "loss.beta: must be > 0 and <= 100"),
    (BASE, ["train.adam_eps=0"], "train.adam_eps: must be > 0 and <= 0.01"),
    ("- model\n", ["train.lr=1"], "expected a mapping of sections"),
    ("a: &x [1]\nb: *x\n", [], "r.yaml:2: YAML aliases (*name) are not supported in recipes"),
    (BASE, ["model.path=*x"], "override 'model.path=*x': YAML aliases (*name) are not supported"),
    (BASE, ["train.lr=[1,"], "override 'train.lr=[1,': invalid YAML"),
])
def test_bad_recipes_are_one_line(tmp_path, text, overrides, message):
    with pytest.raises(UserError) as e:
        load_recipe(recipe(tmp_path, text), overrides)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cli_bad_recipe_exits_2_without_traceback(tmp_path, lpo):
    recipe(tmp_path, BASE + "loss: {type: lpo-ste, betta: 0.1}\n")
    proc = lpo("train", "r.yaml", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: r.yaml: unknown key 'loss.betta' (known: average_logps, beta, gamma, label_smoothing, r1, r2, "
        "sft_weight, type)"]


def test_cli_missing_pairs_file(tmp_path, lpo, tiny_lm):
    recipe(tmp_path, f"model: {{path: {tiny_lm}}}\ndata: {{pairs: nope.jsonl}}\ntrain: {{out_dir: run}}\n")
    proc = lpo("train", "r.yaml", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: nope.jsonl: no such file"


def test_cli_pairs_without_reference_logps(tmp_path, lpo, tiny_lm):
    (tmp_path / "p.jsonl").write_text('{"id": "a", "prompt_tokens": [1], "chosen_tokens": [2], "rejected_tokens": [3]}\n')
    recipe(tmp_path, f"model: {{path: {tiny_lm}}}\ndata: {{pairs: p.jsonl}}\ntrain: {{out_dir: run}}\n")
    proc = lpo("train", "r.yaml", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "p.jsonl:1: no precomputed reference log-probs" in proc.stderr
    (tmp_path / "p.jsonl").write_text('{"id": "a", "prompt_tokens": [1], "chosen_tokens": [999], "rejected_tokens": [3]}\n')
    proc = lpo("train", "r.yaml", "reference.source=model", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "p.jsonl:1: field 'chosen_tokens': token id 999 outside" in proc.stderr


def test_cli_unloadable_model(tmp_path, lpo):
    (tmp_path / "p.jsonl").write_text('{"id": "a", "prompt_tokens": [1], "chosen_tokens": [2], "rejected_tokens": [3]}\n')
    recipe(tmp_path, "model: {path: no/such-model}\ndata: {pairs: p.jsonl}\ntrain: {out_dir: run}\n")
    proc = lpo("train", "r.yaml", cwd=tmp_path, check=False, env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1  # stopped before reading data or loading
    assert "model.path: 'no/such-model' is not a local folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ranges_accept_their_bounds(tmp_path):
    r = load_recipe(recipe(tmp_path), ["loss.beta=100", "loss.r1=100", "loss.r2=1e-3", "loss.gamma=1000",
                                       "loss.sft_weight=0", "train.lr=1", "train.min_lr=1", "train.adam_eps=1e-2",
                                       "train.weight_decay=10", "train.max_grad_norm=0"])
    assert (r.loss.beta, r.train.lr, r.train.min_lr, r.train.adam_eps) == (100.0, 1.0, 1.0, 0.01)


def test_float_strings_and_mapping_values_are_coerced(tmp_path):
    from lpo_speech.recipe import load_any_recipe

    tts = ("track: tts\nmodel: {path: m}\ndata: {pairs: p.jsonl}\ntrain: {out_dir: run}\n"
           "build_pairs: {prompts: p.jsonl, work_dir: w, min_margins: {cer: '0.2'}}\n")
    r = load_any_recipe(recipe(tmp_path, tts))
    assert r.build_pairs.min_margins == {"cer": 0.2}
    with pytest.raises(UserError, match=r"build_pairs.min_margins.cer: must be a finite number"):
        load_any_recipe(tmp_path / "r.yaml", ["build_pairs.min_margins={cer: .nan}"])


def test_error_values_are_truncated(tmp_path):
    with pytest.raises(UserError) as e:
        load_recipe(recipe(tmp_path), ["model.path=" + "[" + ",".join(["1"] * 10_000) + "]"])
    assert "model.path: expected str, got [1, 1" in str(e.value) and len(str(e.value)) < 150


def test_sft_refuses_the_regularizer(tmp_path):
    """loss.type sft has no reference: gamma x relu(-x1) would silently add gamma x NLL."""
    recipe(tmp_path, "model: {path: m}\ndata: {pairs: p.jsonl}\ntrain: {out_dir: run}\n"
                     "loss: {type: sft, sft_weight: 1.0, gamma: 5.0}\n")
    with pytest.raises(UserError, match="loss.gamma: must be 0 for loss.type sft"):
        load_recipe(tmp_path / "r.yaml")
