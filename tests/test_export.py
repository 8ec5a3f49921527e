"""`lpo-speech export` without a model to run: the card's base_model through the chain of local folders,
no local path left in what uploads, the warning for a smoke or short run, and the eval tables with their
sets in every layout an eval folder has. (The ASR pipeline test exports a real trained Whisper.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lpo_speech.cli import main
from lpo_speech.export import eval_sets, model_origin


def card_meta(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def texts(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir() if p.suffix in (".md", ".json", ".yaml", ".txt")}


def make_run(root: Path, name: str, model_path: str, *, steps: int = 3, pairs: int = 10, runtime: dict | None = None,
             model_cfg: dict | None = None) -> Path:
    run = root / name
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text(json.dumps(model_cfg or {"model_type": "whisper"}))
    (run / "model" / "generation_config.json").write_text(json.dumps({"max_length": 448}))
    (root / "pairs.jsonl").write_text("".join(json.dumps({"id": f"p{i}"}) + "\n" for i in range(pairs)))
    recipe = {"model": {"path": model_path, "adapter": "whisper"}, "data": {"pairs": str(root / "pairs.jsonl")},
              "loss": {"type": "lpo-ste", "beta": 0.2}, "train": {"out_dir": str(run), "batch_size": 2, "grad_accum": 1,
                                                                  "lr": 2e-5}}
    (run / "config.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s + 1, "loss": 0.5}) + "\n" for s in range(steps)))
    (run / "runtime.json").write_text(json.dumps({"stage": "train", "processes": 1, "host": "box", **(runtime or {})}))
    return run


def imported_base(root: Path) -> Path:
    base = root / "base"
    base.mkdir(parents=True)
    (base / "config.json").write_text(json.dumps({"model_type": "whisper", "lpo_speech_base_model": "openai/whisper-tiny.en"}))
    return base


def test_card_names_the_imported_base_and_no_local_path(tmp_path, capsys, monkeypatch):
    run = make_run(tmp_path, "lpo", str(imported_base(tmp_path)))
    monkeypatch.chdir(tmp_path)
    assert main(["export", "lpo", "my-whisper-lpo"]) == 0
    out = capsys.readouterr().out
    card = (tmp_path / "my-whisper-lpo" / "README.md").read_text()
    meta = card_meta(card)
    assert meta["base_model"] == "openai/whisper-tiny.en" and meta["pipeline_tag"] == "automatic-speech-recognition"
    assert "\n# my-whisper-lpo\n" in card  # --name defaults to OUT's folder name
    assert "(https://huggingface.co/openai/whisper-tiny.en)" in card
    assert "path: <local>/base" in card and "pairs: <local>/pairs.jsonl" in card and "out_dir: <local>/lpo" in card
    for name, text in texts(tmp_path / "my-whisper-lpo").items():
        assert str(tmp_path) not in text, name
    # 3 steps of 5 a pass (10 pairs, 2 a step): a short run, said in the card and in one line on stdout
    assert "> **Warning:** this is a short run: trained only 3 optimizer steps, 0.60 of one pass over its pairs." in card
    assert "smoke" not in card
    assert [l for l in out.splitlines() if "warning" in l] == [
        "export: warning: lpo: this is a short run: trained only 3 optimizer steps, 0.60 of one pass over its pairs "
        "(said at the top of the card)"]
    assert run.is_dir()


@pytest.mark.parametrize("smoke", [True, {"steps": 3, "lr": 1e-4, "moved": True}])  # the flag, or train --smoke's summary
def test_smoke_run_is_said_and_a_full_run_has_no_warning(tmp_path, capsys, smoke):
    base = str(imported_base(tmp_path))
    smoke = make_run(tmp_path / "a", "smoke", base, runtime={"smoke": smoke})
    main(["export", str(smoke), str(tmp_path / "out-smoke")])
    card = (tmp_path / "out-smoke" / "README.md").read_text()
    assert "> **Warning:** this is a smoke run (`lpo-speech train --smoke`): trained only 3 optimizer steps" in card
    assert "export: warning: " in capsys.readouterr().out
    full = make_run(tmp_path / "b", "full", base, steps=60, pairs=100)
    main(["export", str(full), str(tmp_path / "out-full")])
    card = (tmp_path / "out-full" / "README.md").read_text()
    assert "Warning" not in card and "smoke" not in card and "warning" not in capsys.readouterr().out
    one_epoch = make_run(tmp_path / "c", "short", base, steps=60, pairs=200)  # 60 of 100 steps a pass
    main(["export", str(one_epoch), str(tmp_path / "out-short")])
    assert "this is a short run: 0.60 of one pass over its pairs." in (tmp_path / "out-short" / "README.md").read_text()
    recipe = yaml.safe_load((one_epoch / "config.yaml").read_text())
    recipe["data"]["limit"] = 120  # the first 120 pairs: 60 steps a pass, and the run made one
    (one_epoch / "config.yaml").write_text(yaml.safe_dump(recipe))
    main(["export", str(one_epoch), str(tmp_path / "out-short"), "--overwrite"])
    assert "Warning" not in (tmp_path / "out-short" / "README.md").read_text()


def test_base_model_follows_runs_and_folders(tmp_path, monkeypatch):
    """model.path -> another run's model/ (no recorded origin) -> that run's own model.path, a hub id;
    relative paths are found from the directory the run was started from; a LoRA adapter's base, a hub
    cache snapshot, and an unknown local folder (no base_model)."""
    first = make_run(tmp_path / "proj" / "runs", "sft", "openai/whisper-small")
    second = make_run(tmp_path / "proj" / "runs", "lpo", "runs/sft/model")  # relative to proj/, where train ran
    monkeypatch.chdir(tmp_path)
    assert model_origin("runs/sft/model", second) == "openai/whisper-small"
    assert model_origin(str(first / "model")) == "openai/whisper-small"
    snap = tmp_path / "hf" / "models--openai--whisper-base.en" / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    assert model_origin(str(snap)) == "openai/whisper-base.en"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(snap)}))
    assert model_origin(str(adapter)) == "openai/whisper-base.en"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text("{}")
    assert model_origin(str(tmp_path / "mine")) is None
    assert model_origin("missing/folder", second) == "missing/folder"  # not here: taken as a hub id
    # ...unless the run recorded it as a local folder (run.settings.json), now gone
    (second / "run.settings.json").write_text(json.dumps({"model.path": {"fingerprint": "x", "path": "../gone"}}))
    assert model_origin("missing/folder", second) is None
    out = tmp_path / "hub"
    main(["export", str(second), str(out), "--name", "my-lpo"])
    card = (out / "README.md").read_text()
    assert card_meta(card)["base_model"] == "openai/whisper-small" and "\n# my-lpo\n" in card


def test_local_codec_in_config_is_written_without_its_folders(tmp_path, capsys):
    codec = tmp_path / "codecs" / "xcodec2"
    cfg = {"model_type": "llama", "tts": {"codec": f"hf:{codec}", "eos_id": 5},
           "lpo_speech_base_model": "HKUSTAudio/Llasa-1B"}
    run = make_run(tmp_path, "tts", str(tmp_path / "llasa"), model_cfg=cfg)
    (run / "model" / "notes.txt").write_text(f"made in {run}\n")  # a file export does not know: said, not edited
    main(["export", str(run), str(tmp_path / "out")])
    exported = json.loads((tmp_path / "out" / "config.json").read_text())
    assert exported["tts"] == {"codec": "hf:<local>/xcodec2", "eos_id": 5}
    assert card_meta((tmp_path / "out" / "README.md").read_text())["base_model"] == "HKUSTAudio/Llasa-1B"
    said = capsys.readouterr().out
    assert "export: config.json: tts.codec = hf:<local>/xcodec2: a local path" in said
    assert f"export: warning: notes.txt still names {tmp_path}: check it before uploading" in said
    assert "README.md still names" not in said and "config.json still names" not in said


def metrics(n: int, data: str, wer: float = 0.2) -> dict:
    return {"wer": wer, "cer": wer / 2, "n": n, "model": "/x/model", "data": data}


@pytest.mark.parametrize("layout", ["one-model", "labels", "sets", "named-set", "folders-only"])
def test_eval_tables_name_their_sets_in_every_layout(tmp_path, layout, capsys):
    ev = tmp_path / "ev"
    ev.mkdir()
    table = f"| model | wer |\n|---|---|\n| lpo | 0.2 |\n\n`{tmp_path}/data/test.jsonl`: 3 utterances.\n"
    (ev / "table.md").write_text(table)
    test, ood = metrics(3, f"{tmp_path}/data/test.jsonl"), metrics(5, f"{tmp_path}/data/ood_test.jsonl")
    if layout == "one-model":
        (ev / "metrics.json").write_text(json.dumps(test))
        (ev / "lpo").mkdir()
        (ev / "lpo" / "metrics.json").write_text(json.dumps(test))
        want = {"test": {"lpo": test}}
    elif layout == "labels":
        (ev / "metrics.json").write_text(json.dumps({"base": test, "lpo": {**test, "vs_base": {"n": 3}}}))
        want = {"test": {"base": test, "lpo": {**test, "vs_base": {"n": 3}}}}
    elif layout == "sets":
        (ev / "metrics.json").write_text(json.dumps({"in-domain": {"lpo": test}, "out-of-domain": {"lpo": ood}}))
        want = {"in-domain": {"lpo": test}, "out-of-domain": {"lpo": ood}}
    elif layout == "named-set":
        (ev / "metrics.json").write_text(json.dumps({"held-out": {"lpo": test}}))
        want = {"held-out": {"lpo": test}}
    else:  # no top metrics.json: OUT/<set>/<label>/metrics.json
        for name, m in (("in-domain", test), ("out-of-domain", ood)):
            (ev / name / "lpo").mkdir(parents=True)
            (ev / name / "lpo" / "metrics.json").write_text(json.dumps(m))
        want = {"in-domain": {"lpo": test}, "out-of-domain": {"lpo": ood}}
    assert eval_sets(ev) == want
    run = make_run(tmp_path, "lpo", "openai/whisper-tiny.en", steps=60, pairs=20)
    assert main(["export", str(run), str(tmp_path / "out"), "--eval", str(ev)]) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    section = card.split("## Evaluation\n")[1].split("## Recipe")[0]
    for name, by_label in want.items():
        n = next(iter(by_label.values()))["n"]
        data = Path(next(iter(by_label.values()))["data"]).name
        assert f"| {name} | `{data}` | {n} utterances |" in section
    assert "| lpo | 0.2 |" in section and "`<local>/test.jsonl`: 3 utterances." in section
    assert str(tmp_path) not in card
