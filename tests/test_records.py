"""Records validate on load with one-line errors, keep extra keys, and resumable writers lose nothing."""

import json

import pytest

from lpo_speech.errors import UserError
from lpo_speech.records import (
    AsrUtterance,
    Candidate,
    JsonlWriter,
    PreferencePair,
    TtsPrompt,
    load_jsonl,
    read_jsonl,
    resolve_audio,
)


def write(path, lines):
    path.write_text("".join(l + "\n" for l in lines))
    return path


def test_round_trip_keeps_extra_keys(tmp_path):
    line = {"id": "a", "audio": "wavs/a.wav", "text": "hello", "speaker": "joe", "lang": "en"}
    (u,) = load_jsonl(write(tmp_path / "m.jsonl", [json.dumps(line)]), AsrUtterance)
    assert u.text == "hello" and u.extra == {"speaker": "joe", "lang": "en"}
    assert u.to_dict() == line
    p = TtsPrompt.from_dict({"id": "x", "text": "hi", "emotion": "happy", "intensity": 1})
    assert p.emotion == "happy" and p.intensity == 1 and p.to_dict()["emotion"] == "happy"
    c = Candidate.from_dict({"id": "c1", "prompt_id": "x", "source": "sample", "tokens": [1, 2], "scores": {"wer": 0.5}})
    assert Candidate.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("line, message", [
    ('{"id": "a", "audio": "a.wav"}', "m.jsonl:2: missing field 'text'"),
    ('{"id": "a", "audio": "a.wav", "text": "  "}', "m.jsonl:2: field 'text': empty"),
    ('{"id": "a", "audio": 3, "text": "x"}', "m.jsonl:2: field 'audio': expected str"),
    ('{"id": "a", "audio": "a.wav", "text": "x"', "m.jsonl:2: malformed JSON"),
    ('["not", "an", "object"]', "m.jsonl:2: expected a JSON object"),
    ('{"id": "a", "audio": "a.wav", "text": "x', "m.jsonl:2: malformed JSON (Unterminated string starting at column"),
])
def test_errors_name_file_line_field(tmp_path, line, message):
    path = write(tmp_path / "m.jsonl", ['{"id": "ok", "audio": "o.wav", "text": "fine"}', line])
    with pytest.raises(UserError) as e:
        load_jsonl(path, AsrUtterance)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_pair_validation(tmp_path):
    ok = {"id": "p", "prompt_tokens": [1], "chosen_tokens": [2], "rejected_tokens": [3]}
    assert PreferencePair.from_dict(ok).chosen_tokens == [2]
    assert PreferencePair.from_dict({"id": "q", "audio": "a.wav", "chosen_text": "a", "rejected_text": "b"}).audio
    with pytest.raises(UserError, match="needs 'chosen_tokens'"):
        PreferencePair.from_dict({"id": "p", "rejected_tokens": [1]})
    sft = PreferencePair.from_dict({"id": "p", "prompt_tokens": [1], "chosen_tokens": [1]})  # SFT example
    assert not sft.has_rejected and PreferencePair.from_dict(ok).has_rejected
    with pytest.raises(UserError, match="'rejected_tokens': empty"):
        PreferencePair.from_dict({**ok, "rejected_tokens": []})
    with pytest.raises(UserError, match="'chosen_tokens': expected list of int"):
        PreferencePair.from_dict({**ok, "chosen_tokens": [1, "2"]})


def test_duplicate_ids_and_missing_file(tmp_path):
    path = write(tmp_path / "m.jsonl", ['{"id": "a", "text": "x"}', "", '{"id": "a", "text": "y"}'])
    with pytest.raises(UserError, match=r"m\.jsonl:3: duplicate id 'a' \(first on line 1\)"):
        load_jsonl(path, TtsPrompt)
    with pytest.raises(UserError, match="no such file"):
        list(read_jsonl(tmp_path / "nope.jsonl", TtsPrompt))


def test_empty_file_is_an_error_unless_allowed(tmp_path):
    path = write(tmp_path / "m.jsonl", ["", "  "])
    with pytest.raises(UserError) as e:
        load_jsonl(path, TtsPrompt)
    assert str(e.value) == f"{path}: no records"
    assert load_jsonl(path, TtsPrompt, allow_empty=True) == [] and list(read_jsonl(path, TtsPrompt)) == []


def test_non_utf8_and_bom(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"id": "a", "text": "x"}\n{"id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(UserError, match=r"m\.jsonl:2: not UTF-8 text \(byte 25 of the line"):
        load_jsonl(path, TtsPrompt)
    path.write_bytes(b'\xef\xbb\xbf{"id": "a", "text": "x"}\n')  # a byte-order mark, as some editors write
    assert load_jsonl(path, TtsPrompt)[0].id == "a"


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(tmp_path, value):
    pair = f'{{"id": "p", "prompt_tokens": [1], "chosen_tokens": [2], "rejected_tokens": [3], "ref_chosen_logp": {value}}}'
    with pytest.raises(UserError, match=r"m\.jsonl:1: field 'ref_chosen_logp': must be a finite number"):
        load_jsonl(write(tmp_path / "m.jsonl", [pair]), PreferencePair)
    with pytest.raises(UserError, match=r"field 'intensity': must be a finite number"):
        TtsPrompt.from_dict({"id": "x", "text": "hi", "intensity": float(value.lower().replace("infinity", "inf"))})


def test_writer_resumes_without_duplicates_or_losses(tmp_path):
    out = tmp_path / "cands.jsonl"
    items = [{"id": f"i{k}", "v": k} for k in range(10)]
    with pytest.raises(RuntimeError):
        with JsonlWriter(out) as w:
            for it in items[:6]:
                w.write(it)
            raise RuntimeError("crash")
    assert not out.exists() and w.partial.exists()
    with w.partial.open("a") as f:  # a torn line, as a kill mid-write leaves
        f.write('{"id": "i6", "v"')
    with JsonlWriter(out) as w2:
        assert w2.done == {f"i{k}" for k in range(6)}
        for it in items:
            if it["id"] not in w2.done:
                w2.write(it)
    ids = [json.loads(l)["id"] for l in out.read_text().splitlines()]
    assert ids == [f"i{k}" for k in range(10)]
    assert not w2.partial.exists()


def test_audio_paths_relative_to_manifest(tmp_path):
    assert resolve_audio(tmp_path / "data/m.jsonl", "wavs/a.wav") == tmp_path / "data/wavs/a.wav"
    assert resolve_audio(tmp_path / "m.jsonl", "/abs/a.wav").as_posix() == "/abs/a.wav"
