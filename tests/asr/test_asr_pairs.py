"""Pair selection rules for ASR (no model needed)."""

from lpo_speech.asr.pairs import select_pairs
from lpo_speech.asr.recipe import AsrBuildPairs, AsrRecipe
from lpo_speech.recipe import DataConfig, ModelConfig, TrainConfig


def recipe(tmp_path, **bp):
    return AsrRecipe(track="asr", model=ModelConfig(path="m", adapter="whisper"),
                     data=DataConfig(pairs=str(tmp_path / "pairs" / "p.jsonl")), train=TrainConfig(out_dir="r"),
                     build_pairs=AsrBuildPairs(manifest=str(tmp_path / "data" / "m.jsonl"), work_dir=str(tmp_path / "w"), **bp))


def row(*cands):
    return {"id": "u1", "audio": "wavs/u1.wav", "reference": "turn the lights off",
            "candidates": [{"id": f"u1/{s}{i}", "prompt_id": "u1", "source": s, "text": t, "scores": {"wer": w}}
                           for i, (s, t, w) in enumerate(cands)]}


def test_reference_chosen_worst_first_dedup_and_margin(tmp_path):
    r = row(("greedy", "Turn the lights off.", 0.0),  # correct: never a rejected
            ("perturb", "turn the light off", 0.25), ("sample", "turn the light off!", 0.25),  # duplicate
            ("perturb", "burn the nights of", 0.75), ("perturb", "turn lights off", 0.25))
    pairs, stats = select_pairs(recipe(tmp_path, max_pairs_per_utterance=2), [r])
    assert [p.rejected_text for p in pairs] == ["burn the nights of", "turn the light off"]
    assert all(p.chosen_text == "turn the lights off" for p in pairs)
    assert stats["duplicates"] == 1 and stats["over_per_utterance_cap"] == 1 and stats["pairs"] == 2
    assert pairs[0].audio == "../data/wavs/u1.wav"  # relative to the folder of work_dir/pairs.jsonl
    assert stats["candidates_by_source"] == {"greedy": 1, "perturb": 3, "sample": 1}


def test_best_candidate_chosen_with_margin(tmp_path):
    r = row(("sample", "turn the light off", 0.25), ("sample", "turn light of", 0.5), ("sample", "turn the lights", 0.27))
    pairs, stats = select_pairs(recipe(tmp_path, chosen="best", min_margin=0.1), [r])
    assert [(p.chosen_text, p.rejected_text) for p in pairs] == [("turn the light off", "turn light of")]
    assert stats["within_margin"] == 1


def test_utterance_without_a_worse_candidate_counts(tmp_path):
    pairs, stats = select_pairs(recipe(tmp_path), [row(("greedy", "turn the lights off", 0.0))])
    assert pairs == [] and stats["utterances_without_pair"] == 1
