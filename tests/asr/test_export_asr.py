"""`lpo-speech export` of a real run: Whisper tiny.en imported from the bundled CTranslate2 copy, trained,
evaluated on a named set. The card names openai/whisper-tiny.en as
its base_model, holds no local path, names its eval set and size, and warns for a smoke run."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "asr" / "whisper-tiny-offline.yaml"


def test_export_names_the_bundled_origin_and_no_local_path(tmp_path, tmp_path_factory, lpo, whisper_tiny):
    from lpo_speech.synthetic.synth import make_asr_data

    make_asr_data(tmp_path / "data", n_train=4, n_test=3, styles=["espeak"], workers=1, progress=False)
    common = ["build_pairs.manifest=data/train.jsonl", "build_pairs.work_dir=pairs", "data.pairs=pairs/pairs.jsonl",
              "build_pairs.perturbations=2", "train.batch_size=2", "train.warmup_steps=0", "train.log_every=1",
              "runtime.device=cpu", "--quiet"]
    lpo("build-pairs", str(RECIPE), f"model.path={whisper_tiny}", *common, cwd=tmp_path)
    lpo("train", str(RECIPE), f"model.path={whisper_tiny}", "train.out_dir=lpo", "train.max_steps=1", *common,
        cwd=tmp_path)
    # train's save_pretrained keeps the recorded origin (a run trained from this one's model finds it there)
    cfg = json.loads((tmp_path / "lpo" / "model" / "config.json").read_text())
    assert cfg["lpo_speech_base_model"] == "openai/whisper-tiny.en"
    lpo("eval", "--wer", "--model", "lpo/model", "--label", "lpo", "--data", "in-domain=data/test.jsonl",
        "--out", "ev", "--quiet", cwd=tmp_path)

    out = lpo("export", "lpo", "hub/my-whisper-lpo", "--eval", "ev", cwd=tmp_path)
    hub = tmp_path / "hub" / "my-whisper-lpo"
    card = (hub / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["base_model"] == "openai/whisper-tiny.en" and meta["pipeline_tag"] == "automatic-speech-recognition"
    assert "\n# my-whisper-lpo\n" in card
    evaluation = card.split("## Evaluation\n")[1].split("## Recipe\n")[0]
    assert "| in-domain | `test.jsonl` | 3 utterances |" in evaluation and "| lpo |" in evaluation
    root = str(tmp_path_factory.getbasetemp())  # every fixture's and this test's folders lie under it
    for f in hub.iterdir():
        if f.suffix in (".md", ".json", ".txt", ".yaml", ".jinja"):
            assert root not in f.read_text(), f.name
    assert "smoke" not in card and "this is a short run: trained only 1 optimizer step" in card
    assert "export: warning: lpo: this is a short run" in out.stdout

    runtime = json.loads((tmp_path / "lpo" / "runtime.json").read_text())
    (tmp_path / "lpo" / "runtime.json").write_text(json.dumps({**runtime, "smoke": True}))
    out = lpo("export", "lpo", "hub/my-whisper-lpo", "--eval", "ev", "--overwrite", cwd=tmp_path)
    card = (hub / "README.md").read_text()
    assert "> **Warning:** this is a smoke run (`lpo-speech train --smoke`): trained only 1 optimizer step" in card
    assert [l for l in out.stdout.splitlines() if "warning" in l] == [
        "export: warning: lpo: this is a smoke run (`lpo-speech train --smoke`): trained only 1 optimizer step, "
        "0.25 of one pass over its pairs (said at the top of the card)"]
