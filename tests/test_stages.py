"""run_sharded: resumable, atomic, reusing a finished output item by item, and only with its settings."""

from __future__ import annotations

import json

import pytest

from lpo_speech.errors import UserError
from lpo_speech.stages import run_sharded


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
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["a", "b", "c"]
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
    with pytest.raises(UserError, match=r"out.jsonl: was made with other settings \(model 'm1' -> 'm2'; "
                                        r"temperature 1.0 -> 0.7\).*remove it and out.jsonl.settings.json"):
        run_sharded(out, ["a", "b", "c"], settings={"model": "m2", "temperature": 0.7, "keys": ["cer"]}, **run)
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["a", "b"]  # nothing written
    # An output written before settings were kept adopts the first settings it is resumed with.
    old = tmp_path / "old.jsonl"
    run_sharded(old, ["a"], **run)
    run_sharded(old, ["a"], settings={"model": "m1"}, **run)
    assert json.loads((tmp_path / "old.jsonl.settings.json").read_text()) == {"model": "m1"}
