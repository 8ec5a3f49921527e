"""run_sharded: resumable, atomic, reusing a finished output item by item, and only with its settings and
inputs (fingerprints); created_outputs; a finished JsonlWriter file survives a failed rerun."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from conftest import make_tiny_llama
from lpo_speech.errors import UserError
from lpo_speech.records import JsonlWriter
from lpo_speech.stages import (created_outputs, file_fingerprint, input_file, model_fingerprint, model_folder,
                               run_sharded, settings_changes)


def rows(path):
    return [json.loads(x)["id"] for x in path.read_text().splitlines()]


def test_finished_output_is_reused_item_by_item(tmp_path):
    out = tmp_path / "out.jsonl"
    calls: list[list[str]] = []

    def process(chunk):
        calls.append([c for c in chunk])
        return [{"id": c, "value": f"v{c}"} for c in chunk]

    first = run_sharded(out, ["a", "b"], key=str, process=process, batch_size=8, desc="t", device="cpu", quiet=True)
    assert [r["id"] for r in first] == ["a", "b"] and calls == [["a", "b"]]
    again = run_sharded(out, ["a", "b"], key=str, process=process, batch_size=8, desc="t", device="cpu", quiet=True)
    assert again == first and len(calls) == 1  # nothing recomputed
    more = run_sharded(out, ["a", "b", "c"], key=str, process=process, batch_size=8, desc="t", device="cpu", quiet=True)
    assert [r["id"] for r in more] == ["a", "b", "c"] and calls[-1] == ["c"]  # only the new item
    fewer = run_sharded(out, ["c", "a"], key=str, process=process, batch_size=8, desc="t", device="cpu", quiet=True)
    assert [r["id"] for r in fewer] == ["c", "a"] and len(calls) == 2
    assert rows(out) == ["a", "b", "c"]
    # Other items: the new one is added, and no finished row is dropped from the file.
    other = run_sharded(out, ["d", "a"], key=str, process=process, batch_size=8, desc="t", device="cpu", quiet=True)
    assert [r["id"] for r in other] == ["d", "a"] and calls[-1] == ["d"]
    assert rows(out) == ["d", "a", "b", "c"]
    assert not list(tmp_path.glob("out.jsonl.rank*"))


def test_other_settings_stop_instead_of_mixing_two_runs(tmp_path):
    out = tmp_path / "out.jsonl"

    def process(chunk):
        return [{"id": c} for c in chunk]

    run = dict(key=str, process=process, batch_size=8, desc="t", device="cpu", quiet=True)
    run_sharded(out, ["a"], settings={"model": "m1", "temperature": 1.0, "keys": ("cer",)}, **run)
    assert json.loads((tmp_path / "out.jsonl.settings.json").read_text())["keys"] == ["cer"]
    # The same settings (a tuple stored as a list is the same) resume and extend.
    assert len(run_sharded(out, ["a", "b"], settings={"model": "m1", "temperature": 1.0, "keys": ["cer"]}, **run)) == 2
    before = out.read_bytes()
    with pytest.raises(UserError, match=r"out.jsonl: was made with other settings \(model 'm1' -> 'm2'; "
                                        r"temperature 1.0 -> 0.7\): .*pass --overwrite to start over$"):
        run_sharded(out, ["a", "b", "c"], settings={"model": "m2", "temperature": 0.7, "keys": ["cer"]}, **run)
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "out.jsonl", "out.jsonl.settings.json"]  # nothing written
    # overwrite: the earlier output (and what the stage derives from it) goes, the new run starts over.
    (tmp_path / "derived.json").write_text("{}")
    got = run_sharded(out, ["c"], settings={"model": "m2", "temperature": 0.7, "keys": ["cer"]}, overwrite=True,
                      also=[tmp_path / "derived.json"], **run)
    assert [r["id"] for r in got] == ["c"] and rows(out) == ["c"] and not (tmp_path / "derived.json").exists()
    assert json.loads((tmp_path / "out.jsonl.settings.json").read_text())["model"] == "m2"
    # restart_if_changed (an intermediate its caller owns): other settings start over without asking.
    run_sharded(out, ["a"], settings={"model": "m3"}, restart_if_changed=True, **run)
    assert rows(out) == ["a"]
    # An output written before settings were kept adopts the first settings it is resumed with.
    old = tmp_path / "old.jsonl"
    run_sharded(old, ["a"], **run)
    run_sharded(old, ["a"], settings={"model": "m1"}, **run)
    assert json.loads((tmp_path / "old.jsonl.settings.json").read_text()) == {"model": "m1"}


def test_inputs_are_compared_by_content_not_path(tmp_path, tiny_lm):
    data = tmp_path / "run" / "data.jsonl"
    data.parent.mkdir()
    data.write_text('{"id": "a"}\n')
    shutil.copytree(tiny_lm, tmp_path / "run" / "model")
    out = tmp_path / "run" / "out" / "rows.jsonl"
    calls = []

    def process(chunk):
        calls.append(chunk)
        return [{"id": c} for c in chunk]

    run = dict(key=str, process=process, batch_size=8, desc="t", device="cpu", quiet=True)

    def made_by(root):
        return {"model": model_folder(root / "model"), "data": input_file(root / "data.jsonl"), "schema": 1}

    run_sharded(out, ["a"], settings=made_by(tmp_path / "run"), **run)
    recorded = json.loads((out.parent / "rows.jsonl.settings.json").read_text())
    assert recorded["model"]["path"] == "../model" and recorded["data"]["path"] == "../data.jsonl"  # relative
    assert recorded["model"]["fingerprint"].startswith("model:") and recorded["data"]["fingerprint"].startswith("sha256:")
    # A copy of the whole folder elsewhere resumes: same content, other paths.
    shutil.copytree(tmp_path / "run", tmp_path / "moved")
    moved = tmp_path / "moved" / "out" / "rows.jsonl"
    assert settings_changes(moved, made_by(tmp_path / "moved")) == []
    run_sharded(moved, ["a"], settings=made_by(tmp_path / "moved"), **run)
    assert len(calls) == 1
    # Other content at the same path stops, naming the input.
    data.write_text('{"id": "b"}\n')
    with pytest.raises(UserError, match=r"rows.jsonl: was made with other settings \(data .*data.jsonl: other "
                                        r"content than when it was made \(file changed\)\)"):
        run_sharded(out, ["a"], settings=made_by(tmp_path / "run"), **run)
    other = make_tiny_llama(tmp_path / "other", seed=1)
    with pytest.raises(UserError, match=r"model .*moved/model -> .*other \(another model folder: other content\)"):
        run_sharded(moved, ["a"], settings={**made_by(tmp_path / "moved"), "model": model_folder(other)}, **run)
    assert len(calls) == 1


def test_settings_files_written_before_fingerprints_are_adopted(tmp_path, tiny_lm):
    out = tmp_path / "rows.jsonl"
    (tmp_path / "d.jsonl").write_text('{"id": "a"}\n')
    out.write_text('{"id": "a"}\n')
    legacy = {"model": str(tiny_lm.resolve()), "beam": 1}  # as eval wrote it: an absolute path, no data, no schema
    (tmp_path / "rows.jsonl.settings.json").write_text(json.dumps(legacy))
    run = dict(key=str, process=lambda c: [{"id": x} for x in c], batch_size=8, desc="t", device="cpu", quiet=True)
    now = {"model": model_folder(tiny_lm), "data": input_file(tmp_path / "d.jsonl"), "schema": 1, "beam": 1}
    with pytest.raises(UserError, match=r"beam 1 -> 2"):  # a plain setting still counts
        run_sharded(out, ["a"], settings={**now, "beam": 2}, **run)
    with pytest.raises(UserError, match=r"model '/.*' -> '/.*elsewhere'"):
        run_sharded(out, ["a"], settings={**now, "model": model_folder(tmp_path / "elsewhere")}, **run)
    assert run_sharded(out, ["a"], settings=now, **run) == [{"id": "a"}]
    adopted = json.loads((tmp_path / "rows.jsonl.settings.json").read_text())
    assert adopted["model"]["fingerprint"] == model_fingerprint(tiny_lm) and adopted["schema"] == 1
    assert "data" in adopted and adopted["beam"] == 1
    # From now on the schema and the data count too.
    with pytest.raises(UserError, match=r"schema 1 -> 2"):
        run_sharded(out, ["a"], settings={**now, "schema": 2}, **run)


def test_model_fingerprint_sees_weights_config_and_files_not_docs(tmp_path, tiny_lm):
    a = tmp_path / "a"
    shutil.copytree(tiny_lm, a)
    base = model_fingerprint(a)
    assert model_fingerprint(tiny_lm) == base  # a copy: same content
    (a / "README.md").write_text("notes")
    assert model_fingerprint(a) == base  # documentation is no part of the model
    weights = a / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    header = 8 + int.from_bytes(raw[:8], "little")
    offsets = sorted(v["data_offsets"] for k, v in json.loads(raw[8:header]).items() if k != "__metadata__")
    begin = header + offsets[len(offsets) // 2][0]
    raw[begin] ^= 0xFF  # one byte of one tensor, as any fine-tune changes
    weights.write_bytes(bytes(raw))
    assert model_fingerprint(a) != base
    raw[begin] ^= 0xFF
    weights.write_bytes(bytes(raw))
    assert model_fingerprint(a) == base
    cfg = json.loads((a / "config.json").read_text())
    (a / "config.json").write_text(json.dumps({**cfg, "rope_theta": 1.0}))
    assert model_fingerprint(a) != base
    (tmp_path / "f.txt").write_text("x")
    first = file_fingerprint(tmp_path / "f.txt")
    (tmp_path / "f.txt").write_text("y")
    assert file_fingerprint(tmp_path / "f.txt") != first
    assert model_fingerprint("org/hub-model") == "name:org/hub-model"  # not a local folder: its name


def test_a_finished_file_survives_a_failed_rerun(tmp_path):
    out = tmp_path / "rows.jsonl"
    with JsonlWriter(out) as w:
        for k in range(3):
            w.write({"id": f"i{k}"})
    before = out.read_bytes()
    with pytest.raises(RuntimeError):
        with JsonlWriter(out) as w:
            assert w.done == {"i0", "i1", "i2"}
            w.write({"id": "i3"})
            raise RuntimeError("crash")
    assert out.read_bytes() == before and w.partial.read_text() == '{"id": "i3"}\n'  # resumable, not mixed in
    with pytest.raises(RuntimeError):
        with JsonlWriter(out) as w:
            raise RuntimeError("crash before writing")
    assert out.read_bytes() == before
    with JsonlWriter(out) as w:  # resumed: the finished lines, then the new ones, swapped in at once
        assert w.done == {"i0", "i1", "i2", "i3"}
        w.write({"id": "i4"})
    assert rows(out) == ["i0", "i1", "i2", "i3", "i4"] and not w.partial.exists()
    with JsonlWriter(out) as w:  # nothing new: the file is not rewritten
        pass
    assert rows(out) == ["i0", "i1", "i2", "i3", "i4"] and not w.partial.exists()
    with pytest.raises(RuntimeError):
        with JsonlWriter(tmp_path / "new.jsonl"):
            raise RuntimeError("crash before the first line")
    assert not list(tmp_path.glob("new.jsonl*"))  # no empty partial left behind


def test_created_outputs_removes_only_what_it_made_and_keeps_results(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("earlier")
    new, runtime = tmp_path / "new", old / "runtime.json"
    with pytest.raises(UserError):
        with created_outputs(new, runtime, old):
            new.mkdir()
            (new / "rows.jsonl.settings.json").write_text("{}")
            (new / "sub").mkdir()
            runtime.write_text("{}")
            raise UserError("bad row")
    assert not new.exists() and not runtime.exists() and (old / "keep.txt").read_text() == "earlier"
    # Rows were written: they stay, with what guards them; only empty new folders go.
    with pytest.raises(KeyboardInterrupt):
        with created_outputs(new, runtime, tmp_path / "empty"):
            (new / "sub").mkdir(parents=True)
            (new / "rows.jsonl.rank0of1.partial").write_text('{"id": "a"}\n')
            (new / "rows.jsonl.settings.json").write_text("{}")
            (tmp_path / "empty").mkdir()
            runtime.write_text("{}")
            raise KeyboardInterrupt
    assert (new / "rows.jsonl.rank0of1.partial").exists() and (new / "rows.jsonl.settings.json").exists()
    assert runtime.exists() and not (tmp_path / "empty").exists()
    with created_outputs(tmp_path / "ok"):  # success: everything stays
        (tmp_path / "ok").mkdir()
    assert (tmp_path / "ok").is_dir()


def test_a_stage_that_fails_before_its_first_row_leaves_no_record(tmp_path):
    out = tmp_path / "o" / "rows.jsonl"

    def process(chunk):
        raise UserError("bad item")

    with pytest.raises(UserError):
        with created_outputs(out.parent):
            run_sharded(out, ["a"], key=str, process=process, batch_size=1, desc="t", device="cpu", quiet=True,
                        settings={"model": "m"})
    assert not out.parent.exists()
    out.parent.mkdir()
    with pytest.raises(UserError):
        run_sharded(out, ["a"], key=str, process=process, batch_size=1, desc="t", device="cpu", quiet=True,
                    settings={"model": "m"})
    assert os.listdir(out.parent) == []
