"""The feature store (lpo_speech.asr.features): features exactly as the model's extractor makes them,
computed once per utterance and shared by the stages of a pair file, recomputed for a changed file,
nothing left behind by a bad input; the adapters hold no per-utterance features in memory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import REPO, espeak_wav
from lpo_speech.adapters.whisper import WhisperAdapter
from lpo_speech.asr.features import FeatureStore, StateCache, decode_file, pair_features
from lpo_speech.cli import main
from lpo_speech.errors import UserError
from lpo_speech.recipe import ModelConfig
from lpo_speech.records import PreferencePair

KITCHEN, FARMER = "Please turn the kitchen lights off.", "The farmer sings twice a week."


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("wav")
    return [espeak_wav(d / "a.wav", KITCHEN), espeak_wav(d / "b.wav", FARMER, pitch=70)]


@pytest.fixture(scope="module")
def extractor(whisper_tiny):
    from transformers import AutoFeatureExtractor

    return AutoFeatureExtractor.from_pretrained(str(whisper_tiny))


def expected(extractor, wav: np.ndarray) -> np.ndarray:
    """The extractor's own output for one clip, as the adapters call it, in float16."""
    return extractor([wav], sampling_rate=16_000, return_tensors="np")["input_features"][0].astype(np.float16)


def test_stored_features_are_the_extractors_exactly_in_a_fraction_of_the_bytes(tmp_path, extractor, audio):
    rng = np.random.default_rng(0)
    sf.write(tmp_path / "full.wav", (0.1 * rng.standard_normal(30 * 16_000)).astype(np.float32), 16_000)
    sf.write(tmp_path / "silence.wav", np.zeros(8_000, dtype=np.float32), 16_000)
    clips = [*audio, tmp_path / "full.wav", tmp_path / "silence.wav"]
    store = FeatureStore(tmp_path / "features", extractor)
    entries = [store.ensure(p, "t") for p in clips]
    for p, e in zip(clips, entries):
        assert np.array_equal(store.read(e), expected(extractor, decode_file(p))), p
    speech, full, silence = entries[0], entries[2], entries[3]
    assert speech.stored < speech.valid < 400 and speech.nbytes < 80 * 3000 * 2 / 6  # a 2 s clip: a few hundred frames
    assert full.stored == full.frames == 3000  # noise to the window's end: every frame kept
    assert silence.stored == 0 and silence.width == 1  # one column says it all
    data = sum(f.stat().st_size for f in store.folder.glob("*.f16"))
    assert data == sum(e.nbytes for e in entries)
    # Another store on the folder (a later stage, another process) reads them without computing.
    again = FeatureStore(tmp_path / "features", extractor)
    assert [again.lookup(p) for p in clips] == entries and again.computed == 0
    assert np.array_equal(again.read(again.lookup(audio[1])), store.read(entries[1]))
    assert json.loads((store.folder / "extractor.json").read_text())["extractor"]["feature_size"] == 80


def test_a_changed_file_is_computed_again_and_a_torn_line_is_ignored(tmp_path, extractor, audio):
    clip = tmp_path / "c.wav"
    clip.write_bytes(audio[0].read_bytes())
    store = FeatureStore(tmp_path / "features", extractor)
    first = store.ensure(clip)
    assert store.ensure(clip) == first and store.computed == 1
    clip.write_bytes(audio[1].read_bytes())
    os.utime(clip, ns=(first.key[2] + 10**9, first.key[2] + 10**9))  # a later mtime, as any rewrite has
    second = store.ensure(clip)
    assert store.computed == 2 and second != first
    assert np.array_equal(store.read(second), expected(extractor, decode_file(audio[1])))
    (index,) = store.folder.glob("*.jsonl")
    with index.open("a") as f:
        f.write('{"audio": "/x.wav", "size": 1')  # what a kill mid-write leaves
    reader = FeatureStore(tmp_path / "features", extractor)
    assert reader.lookup(clip) == second and len(reader) == 2


def test_a_bad_audio_stops_in_one_line_and_leaves_nothing(tmp_path, extractor, audio):
    bad = np.full(16_000, 0.1, dtype=np.float32)
    bad[800] = np.nan
    sf.write(tmp_path / "nan.wav", bad, 16_000, subtype="FLOAT")
    root = tmp_path / "work" / "features"
    store = FeatureStore(root, extractor)
    with pytest.raises(UserError) as e:
        with store.discard_on_error():
            store.fill([(audio[0], "m.jsonl: id a"), (tmp_path / "nan.wav", "m.jsonl: id b"),
                        (tmp_path / "missing.wav", "m.jsonl: id c")])
    assert str(e.value).startswith("m.jsonl: id b: ") and "1 non-finite samples" in str(e.value)
    assert not (tmp_path / "work").exists()  # the features of the good file went too, and the folders made for them
    with pytest.raises(UserError, match=r"^m.jsonl: id c: .*missing.wav: audio file not found$"):
        store.fill([(tmp_path / "missing.wav", "m.jsonl: id c")])


def test_state_cache_is_bounded_by_bytes_least_recently_used_out():
    cache = StateCache(budget_mb=2 * 4096 / (1 << 20))  # room for two [1024] float32 tensors
    a, b, c = (torch.full((1024,), float(i)) for i in range(3))
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") is a  # a is now the most recently used
    cache.put("c", c)
    assert cache.get("b") is None and cache.get("a") is a and cache.get("c") is c
    assert cache.bytes == 2 * 4096
    cache.put("big", torch.zeros(4096))  # larger than the budget: not kept, nothing dropped for it
    assert cache.get("big") is None and cache.bytes == 2 * 4096


def pairs_for(audio: list[Path]) -> list[PreferencePair]:
    return [PreferencePair(id="p0", audio=audio[0].name, chosen_text=KITCHEN, rejected_text="Please turn the kitten off."),
            PreferencePair(id="p1", audio=audio[0].name, chosen_text=KITCHEN, rejected_text="Turn it off."),
            PreferencePair(id="p2", audio=audio[1].name, chosen_text=FARMER, rejected_text="The former sinks.")]


def held_tensors(obj) -> list[str]:
    """Attributes of `obj` that are, or hold in a dict or list, arrays or tensors."""
    found = []
    for name, value in vars(obj).items():
        inner = list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else [value]
        if any(isinstance(v, (torch.Tensor, np.ndarray)) for v in inner):
            found.append(name)
    return found


def test_adapter_computes_each_audio_once_and_holds_no_features(whisper_tiny, audio, monkeypatch):
    # Room for one frozen-encoder output of Whisper tiny (1,500 x 384 float16 = 1.1 MiB), not two.
    monkeypatch.setenv("LPO_SPEECH_ENCODER_CACHE_MB", "1.5")
    base = audio[0].parent
    outs = {}
    for frozen in (False, True):
        ad = WhisperAdapter(ModelConfig(path=str(whisper_tiny), adapter="whisper", freeze_encoder=frozen))
        pm = ad.load(str(whisper_tiny), torch.device("cpu")).eval()
        with pair_features(ad, base / "pairs.jsonl", pairs_for(audio)):
            items = [ad.encode(p, f"pairs.jsonl:{i}", base) for i, p in enumerate(pairs_for(audio), 1)]
        with torch.no_grad():
            outs[frozen] = [pm(ad.collate(items)).chosen for _ in range(2)]  # twice: read back, not recomputed
        assert ad.store.folder.parent == base / "features" and len(ad.store) == 2
        assert ad.store.computed == (0 if frozen else 2)  # the second adapter found the first one's features
        assert held_tensors(ad) == []
        assert not any(isinstance(v, (torch.Tensor, np.ndarray)) for it in items for v in it.values())
        if frozen:
            assert len(ad._states.items) == 1 and ad._states.bytes <= 1.5 * (1 << 20)
    assert torch.equal(outs[False][0], outs[False][1]) and torch.equal(outs[True][0], outs[True][1])
    assert outs[True][0].tolist() == pytest.approx(outs[False][0].tolist(), abs=2e-3)  # states kept in float16


def test_build_pairs_then_train_compute_features_once_per_utterance(tmp_path, whisper_tiny, audio, monkeypatch):
    """build-pairs stores every utterance's features beside its pairs; training on them computes none."""
    monkeypatch.chdir(tmp_path)
    for i, p in enumerate(audio):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    texts = [KITCHEN, FARMER]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"id": f"u{i}", "audio": p.name, "text": t}) + "\n"
                                              for i, (p, t) in enumerate(zip(audio, texts))))
    args = [str(REPO / "recipes" / "asr" / "whisper-tiny-offline.yaml"), f"model.path={whisper_tiny}",
            "build_pairs.manifest=m.jsonl", "build_pairs.work_dir=work", "data.pairs=work/pairs.jsonl",
            "train.out_dir=run", "build_pairs.perturbations=2", "train.batch_size=2", "train.max_steps=1",
            "train.warmup_steps=0", "runtime.device=cpu", "--quiet"]
    assert main(["build-pairs", *args]) == 0
    (folder,) = (tmp_path / "work" / "features").iterdir()
    parts = sorted(p.name for p in folder.glob("*.jsonl"))
    assert sum(len(p.read_text().splitlines()) for p in folder.glob("*.jsonl")) == 2
    assert main(["train", *args]) == 0
    assert sorted(p.name for p in folder.glob("*.jsonl")) == parts  # training computed nothing


FILL = '''
import json, sys
from pathlib import Path
from transformers import AutoFeatureExtractor
from lpo_speech.asr.features import FeatureStore
from lpo_speech.distributed import cleanup, init_distributed
from lpo_speech.errors import UserError

info = init_distributed("cpu")
root, model, files = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
store = FeatureStore(root / "features", AutoFeatureExtractor.from_pretrained(model))
out = {"computed": 0, "error": None}
try:
    with store.discard_on_error():
        store.fill([(root / f, f"m.jsonl:{i}") for i, f in enumerate(files, 1)])
except UserError as e:
    out["error"] = str(e)
out.update(computed=store.computed, stored=len(store))
(root / f"rank{info.rank}.json").write_text(json.dumps(out))
cleanup()  # the process group ends before the interpreter does (gloo aborts otherwise)
'''


def test_two_processes_share_the_work_and_stop_on_the_same_line(tmp_path, whisper_tiny, audio):
    """Under torchrun each process computes every other distinct audio and then reads all; a bad file
    stops both with the line of the first bad one in manifest order, and neither leaves files."""
    import subprocess
    import sys

    for i in range(5):
        (tmp_path / f"u{i}.wav").write_bytes(audio[i % 2].read_bytes())
    bad = np.full(16_000, 0.1, dtype=np.float32)
    bad[5] = np.inf
    sf.write(tmp_path / "inf.wav", bad, 16_000, subtype="FLOAT")
    (tmp_path / "fill.py").write_text(FILL)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def fill(*files: str) -> list[dict]:
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_port", "29547", str(tmp_path / "fill.py"), str(tmp_path), str(whisper_tiny),
                               *files], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    ok = fill("u0.wav", "u1.wav", "u0.wav", "u2.wav", "u3.wav")  # 4 distinct files, one named twice
    assert [r["computed"] for r in ok] == [2, 2] and [r["stored"] for r in ok] == [4, 4]
    assert all(r["error"] is None for r in ok)
    before = sorted(p.name for p in (tmp_path / "features").rglob("*"))
    failed = fill("u0.wav", "missing.wav", "u4.wav", "inf.wav")  # the first process stores u4, then both stop
    assert failed[0]["error"] == failed[1]["error"]
    assert failed[0]["error"].startswith("m.jsonl:2: ") and failed[0]["error"].endswith("missing.wav: audio file not found")
    assert sorted(p.name for p in (tmp_path / "features").rglob("*")) == before
