"""run_sharded: resumable, atomic, and reusing a finished output item by item."""

from __future__ import annotations

import json

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
