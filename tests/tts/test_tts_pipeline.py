"""Synthesis, eval and build-pairs on the toy world with a tiny random codec LM (real judge, real codec)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch  # noqa: F401  (before ctranslate2)

from lpo_speech.errors import UserError
from lpo_speech.records import PreferencePair, TtsPrompt, load_jsonl
from lpo_speech.tts.text import CODEC_OFFSET, EOS


def test_synthesize_respects_slots_guard_and_seed(tts_world, tts_model):
    from lpo_speech.tts.model import load_codec_lm
    from lpo_speech.tts.synthesize import decode_tokens, synthesize

    out, _ = tts_world
    lm, tok = load_codec_lm(tts_model)
    prompts = load_jsonl(out / "test_prompts.jsonl", TtsPrompt)
    before = torch.get_num_threads()
    seen: list[int] = []  # torch's thread count while sampling (progress is called mid-synthesis)
    res = synthesize(lm, tok, prompts, n=2, temperature=1.0, max_seconds=0.4, seed=3, threads=1,
                     progress=lambda _: seen.append(torch.get_num_threads()))
    assert seen == [1] and torch.get_num_threads() == before  # asked for: set while sampling, then restored
    again = synthesize(lm, tok, prompts, n=2, temperature=1.0, max_seconds=0.4, seed=3, threads=1)
    seen.clear()
    synthesize(lm, tok, prompts[:1], n=1, temperature=1.0, max_seconds=0.08, progress=lambda _: seen.append(
        torch.get_num_threads()))
    assert seen == [before]  # not asked: the process's setting stays (nothing pins threads by default)
    assert [[s.tokens for s in r] for r in res] == [[s.tokens for s in r] for r in again]
    assert res[0][0].tokens != res[0][1].tokens  # two different draws
    for r in res:
        for s in r:
            assert not s.undecodable and len(s.tokens) % 4 == 0 and len(s.tokens) <= 40  # 10 frames = 0.4 s
            assert all(lo <= t < hi for t, (lo, hi) in zip(s.tokens, tok.slot_ranges * len(s.tokens)))
            if not s.terminated:
                assert len(s.tokens) == 40 and s.wav.size == 10 * 320 and s.sr == 8000
    bad = decode_tokens(tok, tok.make_codec(), [CODEC_OFFSET, CODEC_OFFSET, 1280, 1296])
    assert bad.undecodable and bad.wav is None and "unknown codec token 256 at position 1" in bad.error


def test_eval_tts_metrics_resume_and_table(tts_world, tts_model, tmp_path):
    from lpo_speech.evaluate import evaluate

    out, _ = tts_world
    kw = dict(batch_size=8, beam=1, lang="en", device="cpu", quiet=True,
              tts={"dnsmos": False, "max_seconds": 1.0, "temperature": 0.0, "sampling_threads": 1})
    res = evaluate([str(tts_model), str(tts_model)], ["a", "b"], str(out / "test_prompts.jsonl"), str(tmp_path), **kw)
    m = res["a"]
    for key in ("wer", "wer_utt_mean", "cer", "failure_rate", "sim", "n"):
        assert key in m
    assert m["n"] == 2 and m["failure_rate"] == 1.0 and m["not_terminated_rate"] == 1.0  # random model never stops
    assert res["b"]["wer"] == m["wer"]  # greedy: same model, same result
    rows = [json.loads(x) for x in (tmp_path / "a" / "utterances.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["test-00000", "test-00001"]
    assert all((tmp_path / "a" / r["wav"]).is_file() and r["terminated"] is False for r in rows)
    runtime = json.loads((tmp_path / "runtime.json").read_text())  # where it ran, by the placement rule
    assert runtime["stage"] == "eval" and runtime["devices"][0].startswith("cpu") and runtime["judge_device"] == "cpu"
    assert runtime["weights"] == "float32" and runtime["processes"] == 1
    table = (tmp_path / "table.md").read_text()
    assert table.splitlines()[0].startswith("| model | wer | cer | wer_utt_mean | failure_rate | not_terminated_rate | sim |")
    assert "| a |" in table and "| b |" in table
    # b against a prompt by prompt (the same model, greedy): no change in WER nor in failures
    vs = res["b"]["vs_a"]
    assert "vs_a" not in m and vs["delta_wer"] == 0 and vs["ci95"] == [0, 0] and vs["p_sign"] == 1 and vs["n"] == 2
    assert vs["failure"] == {"delta": 0, "ci95": [0, 0], "p_sign": 1, "verdict": "within noise", "new": 0, "fixed": 0}
    assert json.loads((tmp_path / "metrics.json").read_text())["b"]["vs_a"] == vs
    assert table.splitlines()[0].endswith("| n | vs a | failure vs a |")
    assert table.splitlines()[2].endswith("| baseline | baseline |")
    assert table.splitlines()[3].endswith(
        "| 0 errors, +0.0000 [+0.0000, +0.0000]: within noise (2 prompts) | +0.000 [+0.000, +0.000] |")
    assert f"`{out / 'test_prompts.jsonl'}`: 2 prompts, {m['words']} words. `vs a`: " in table
    # Resume: a finished run scores nothing again and gives the same metrics.
    (tmp_path / "a" / "wavs" / "test-00000.wav").unlink()
    again = evaluate([str(tts_model)], ["a"], str(out / "test_prompts.jsonl"), str(tmp_path), **kw)
    assert again["a"]["wer"] == m["wer"] and not (tmp_path / "a" / "wavs" / "test-00000.wav").exists()
    # Resuming with another decoding would mix two runs in one folder: it stops and says what changed.
    sampled = {**kw, "tts": {**kw["tts"], "temperature": 1.0}}
    with pytest.raises(UserError, match=r"a/utterances.jsonl: was made with other settings \(decoding 'greedy' -> 'sample t=1.0"):
        evaluate([str(tts_model)], ["a"], str(out / "test_prompts.jsonl"), str(tmp_path), **sampled)


def test_eval_tts_one_line_errors(tts_world, tts_model, tmp_path, lpo):
    from lpo_speech.tts.evaluate import eval_tts

    out, _ = tts_world
    (tmp_path / "empty.jsonl").write_text(json.dumps({"id": "x", "text": "  "}) + "\n")
    with pytest.raises(UserError, match=r"empty.jsonl:1: field 'text': empty"):
        eval_tts(str(tts_model), str(tmp_path / "empty.jsonl"), tmp_path / "o1", quiet=True)
    (tmp_path / "long.jsonl").write_text(json.dumps({"id": "x", "text": "the red lamp " * 40}) + "\n")
    with pytest.raises(UserError, match=r"long.jsonl:1: prompt is \d+ tokens, longer than"):
        eval_tts(str(tts_model), str(tmp_path / "long.jsonl"), tmp_path / "o2", quiet=True)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....not a wav")
    (tmp_path / "badref.jsonl").write_text(json.dumps({"id": "x", "text": "Hello.", "speaker_audio": "bad.wav"}) + "\n")
    r = lpo("eval", "--wer", "--model", str(tts_model), "--data", str(tmp_path / "badref.jsonl"),
            "--out", str(tmp_path / "o3"), cwd=tmp_path, check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "id x: speaker_audio" in r.stderr and "cannot read audio" in r.stderr
    # Resuming an eval folder with another decoding: one line naming the change, the rows kept.
    (tmp_path / "one.jsonl").write_text(json.dumps({"id": "x", "text": "Hello there."}) + "\n")
    ev = ["eval", "--wer", "--model", str(tts_model), "--data", str(tmp_path / "one.jsonl"), "--out",
          str(tmp_path / "o4"), "--no-dnsmos", "--max-seconds", "0.5", "--quiet", "--threads", "1"]
    lpo(*ev, cwd=tmp_path)
    runtime = json.loads((tmp_path / "o4" / "runtime.json").read_text())  # --threads is honoured
    assert runtime["threads"] == 1 and "1 torch threads" in runtime["devices"][0]
    r = lpo(*ev, "--temperature", "1", cwd=tmp_path, check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "made with other settings (decoding 'greedy' -> 'sample t=1.0 top_p=1.0 seed=0')" in r.stderr
    (rows,) = (tmp_path / "o4").glob("*/utterances.jsonl")
    assert len(rows.read_text().splitlines()) == 1


def _cand(cid, source, cer, sim=0.8, failure=None, terminated=True, tokens=None):
    failure = cer > 0.5 if failure is None else failure
    return {"id": cid, "prompt_id": "p", "source": source, "tokens": tokens or [CODEC_OFFSET + len(cid) + int(cer * 100)] * 4,
            "terminated": terminated, "scores": {"cer": cer, "wer": cer, "sim": sim, "failure": failure,
                                                  "duration_s": 1.0, "hyp": ""}}


def _bp(**kw):
    from lpo_speech.tts.recipe import TtsBuildPairs

    bp = TtsBuildPairs(prompts="p.jsonl", work_dir="w", **kw)
    bp.validate()
    return bp


def test_select_pairs_rules_and_summary():
    from lpo_speech.tts.pairs import select_pairs

    row = {"id": "p", "text": "t", "prompt_tokens": [1, 40, 3], "candidates": [
        _cand("p/sample0", "sample", 0.05, sim=0.70),
        _cand("p/sample1", "sample", 0.10, sim=0.90),   # within the 0.1 CER margin of the best
        _cand("p/sample2", "sample", 0.60, sim=0.60),
        _cand("p/sample3", "sample", 0.90, sim=0.75),   # worse CER, better sim than the chosen
        _cand("p/sample4", "sample", 0.90, sim=0.75, tokens=None)]}
    row["candidates"][4]["tokens"] = row["candidates"][3]["tokens"]  # a duplicate
    pairs, st = select_pairs(_bp(pairs_per_prompt=5), [row])
    assert [p.rejected_tokens[:1] for p in pairs] and [p.id for p in pairs] == ["p/sample3", "p/sample2"]
    assert st["duplicates"] == 1 and st["within_margin"] == 1 and st["pairs"] == 2 and st["candidates"] == 5
    assert pairs[0].chosen_tokens[-1] == EOS and pairs[0].chosen_scores["cer"] == 0.05
    # Pareto (NeMo): drop a pair whose rejected is as good on any key (sample3 has the better sim).
    pairs, st = select_pairs(_bp(pairs_per_prompt=5, selection="pareto", keys=["cer", "sim"]), [row])
    assert [p.id for p in pairs] == ["p/sample2"] and st["not_dominated"] == 1
    # Margins on two scores: `all` needs both cleared, `any` one; pareto still drops sample3 (better sim).
    two = dict(pairs_per_prompt=5, keys=["cer", "sim"], min_margins={"cer": 0.3, "sim": 0.05})
    pairs, st = select_pairs(_bp(**two), [row])
    assert [p.id for p in pairs] == ["p/sample2"] and st["within_margin"] == 2
    pairs, st = select_pairs(_bp(**two, margin_rule="any"), [row])
    assert [p.id for p in pairs] == ["p/sample3", "p/sample2"] and st["within_margin"] == 1
    pairs, st = select_pairs(_bp(**two, margin_rule="any", selection="pareto"), [row])
    assert [p.id for p in pairs] == ["p/sample2"] and st["not_dominated"] == 1
    with pytest.raises(ValueError, match="build_pairs.margin_rule: all or any"):
        _bp(margin_rule="some")
    # Length ratio: a rejected lasting more than R times the chosen (or less than 1/R) is not paired.
    timed = {**row, "candidates": [dict(c, scores={**c["scores"], "duration_s": d})
                                   for c, d in zip(row["candidates"], [2.0, 2.0, 2.9, 3.1, 3.1])]}
    pairs, st = select_pairs(_bp(pairs_per_prompt=5, max_length_ratio=1.5), [timed])
    assert [p.id for p in pairs] == ["p/sample2"] and st["length_ratio"] == 1
    pairs, st = select_pairs(_bp(pairs_per_prompt=5, max_length_ratio=1.6), [timed])
    assert [p.id for p in pairs] == ["p/sample3", "p/sample2"] and st["length_ratio"] == 0
    shorter = {**timed, "candidates": [dict(c, scores={**c["scores"], "duration_s": 1.3}) if c["id"] == "p/sample2" else c
                                       for c in timed["candidates"]]}
    _, st = select_pairs(_bp(pairs_per_prompt=5, max_length_ratio=1.5), [shorter])
    assert st["length_ratio"] == 2 and st["pairs"] == 0
    with pytest.raises(ValueError, match="build_pairs.max_length_ratio: null or >= 1"):
        _bp(max_length_ratio=0.5)
    # Cap, threshold, unstable chosen.
    pairs, st = select_pairs(_bp(pairs_per_prompt=1), [row])
    assert [p.id for p in pairs] == ["p/sample3"] and st["over_cap"] == 1
    _, st = select_pairs(_bp(max_chosen_cer=0.01), [row])
    assert st["chosen_threshold"] == 1 and st["pairs"] == 0 and st["prompts_without_pair"] == 1
    # An unstable best candidate is passed over: the next one that passes becomes the chosen.
    unstable = {**row, "candidates": [dict(c, terminated=False) if c["id"] == "p/sample0" else c
                                      for c in row["candidates"]]}
    pairs, st = select_pairs(_bp(pairs_per_prompt=5), [unstable])
    assert pairs and all(p.chosen_scores["cer"] == 0.10 for p in pairs) and st["chosen_unstable"] == 0
    none_stable = {**row, "candidates": [dict(c, terminated=False) for c in row["candidates"]]}
    _, st = select_pairs(_bp(), [none_stable])
    assert st["chosen_unstable"] == 1 and st["pairs"] == 0
    # Gold as chosen: every sample may be rejected; a non-terminated rejected has no EOS.
    gold = {**row, "candidates": [dict(_cand("p/gold5", "gold", 0.0, sim=0.95), tokens=[300, 800, 1285, 1300, EOS]),
                                  dict(row["candidates"][2], terminated=False), row["candidates"][0]]}
    pairs, st = select_pairs(_bp(chosen="gold", gold="g.jsonl", pairs_per_prompt=3, min_margins={"cer": 0.2}), [gold])
    assert [p.id for p in pairs] == ["p/sample2"] and pairs[0].chosen_tokens == [300, 800, 1285, 1300, EOS]
    assert pairs[0].rejected_tokens[-1] != EOS and st["within_margin"] == 1
    assert pairs[0].extra == {"chosen_source": "gold", "rejected_source": "sample", "text": "t"}


def test_build_pairs_gold_then_lpo_train(tts_world, tts_model, tmp_path):
    """The recipe path end to end: candidates -> pairs -> reference log-probs -> one LPO step."""
    from lpo_speech.recipe import build_pairs, load_any_recipe, load_train_recipe
    from lpo_speech.trainer import read_metrics, train

    out, _ = tts_world
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(f"""
track: tts
model: {{path: {tts_model}, adapter: causal_lm, num_codebooks: 4}}
data: {{pairs: {tmp_path}/pairs/pairs_ref.jsonl, max_length: 512}}
build_pairs: {{prompts: {out}/train_prompts.jsonl, gold: {out}/train.jsonl, work_dir: {tmp_path}/pairs,
  limit: 2, samples: 2, max_seconds: 0.8, chosen: gold, max_chosen_cer: 1.0, min_margins: {{cer: 0.0}},
  pairs_per_prompt: 2, similarity: false, keys: [failure, cer], chosen_stable: false}}
loss: {{type: lpo-ste}}
train: {{out_dir: {tmp_path}/run, lr: 1.0e-3, max_steps: 1, batch_size: 2}}
runtime: {{device: cpu, sampling_threads: 1}}
""")
    recipe = load_any_recipe(recipe_path)
    stats = build_pairs(recipe, quiet=True)
    assert stats["prompts"] == 2 and stats["candidates"] == 6 and stats["candidates_by_source"] == {"sample": 4, "gold": 2}
    rows = [json.loads(x) for x in (tmp_path / "pairs" / "candidates.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["train-00000", "train-00001"]
    pairs = load_jsonl(tmp_path / "pairs" / "pairs_ref.jsonl", PreferencePair)
    # The gold is chosen even when the judge mishears it (chosen_stable: false): piper renders each
    # world with fresh noise, and a decoded 700C gold can land above WER 0.5. Random samples never
    # terminate, so they are failures and always rejected.
    assert len(pairs) == stats["pairs_written"] >= 1
    assert all(p.ref_chosen_logp is not None and p.extra["chosen_source"] == "gold" for p in pairs)
    assert json.loads((tmp_path / "pairs" / "summary.json").read_text())["pairs"] == stats["pairs"]
    # runtime.device: cpu is where it ran (the placement rule), said in the work dir
    runtime = json.loads((tmp_path / "pairs" / "runtime.json").read_text())
    assert runtime["stage"] == "build-pairs" and runtime["devices"][0].startswith("cpu")
    assert runtime["judge_device"] == "cpu" and runtime["weights"] == "float32" and runtime["sampling_threads"] == 1
    run = train(load_train_recipe(recipe_path), quiet=True)
    m = read_metrics(run)
    assert len(m) == 1 and np.isfinite(m[0]["loss"])
    # A checkpoint exported as a model folder is the trained model (and keeps the token table).
    from lpo_speech.tts.model import export_checkpoint, heldout_nll

    exported = export_checkpoint(run / "checkpoints" / "step-000001", tts_model, tmp_path / "exported")
    a, b = heldout_nll(exported, out / "dev.jsonl"), heldout_nll(run / "model", out / "dev.jsonl")
    assert a == b and a["n"] == 1 and len(a["nll_slots"]) == 4
    assert heldout_nll(tts_model, out / "dev.jsonl")["nll"] != a["nll"]


@pytest.mark.slow
def test_eval_shards_across_processes_with_the_same_result(tts_world, tts_model, tmp_path, lpo):
    """`torchrun --nproc_per_node 2 ... eval` splits the prompts and writes what one process writes."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    out, _ = tts_world
    args = ["eval", "--wer", "--model", str(tts_model), "--data", str(out / "test_prompts.jsonl"), "--no-dnsmos",
            "--max-seconds", "0.6", "--temperature", "1.0", "--seed", "5", "--sampling-threads", "1"]
    lpo(*args, "--out", str(tmp_path / "one"), cwd=tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "lpo_speech.cli",
                          *args, "--out", str(tmp_path / "two")], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    label = Path(tts_model).name
    one = (tmp_path / "one" / label / "utterances.jsonl").read_text().splitlines()
    two = (tmp_path / "two" / label / "utterances.jsonl").read_text().splitlines()
    assert len(one) == 2 and [json.loads(x)["tokens"] for x in one] == [json.loads(x)["tokens"] for x in two]
    assert json.loads((tmp_path / "one" / "metrics.json").read_text())["wer"] == \
        json.loads((tmp_path / "two" / "metrics.json").read_text())["wer"]
    assert not list((tmp_path / "two" / label).glob("utterances.jsonl.rank*"))  # parts merged and removed


def test_unscored_gold_pairs_reject_every_candidate():
    """judge: null, the LPO authors' pipeline: gold chosen, every distinct candidate rejected, no judge."""
    from lpo_speech.tts.pairs import select_pairs

    def cand(cid, source, tokens):
        return {"id": cid, "prompt_id": "p", "source": source, "tokens": tokens, "terminated": True,
                "scores": {"duration_s": 0.1, "terminated": True, "undecodable": False}}

    row = {"id": "p", "text": "t", "prompt_tokens": [1, 40, 3], "candidates": [
        cand("p/sample0", "sample", [300] * 4), cand("p/sample1", "sample", [301] * 4),
        cand("p/greedy2", "greedy", [300] * 4), cand("p/gold3", "gold", [302] * 4 + [EOS])]}
    bp = _bp(chosen="gold", gold="g.jsonl", judge=None, keys=[], min_margins={}, max_chosen_cer=None,
             chosen_stable=False, similarity=False, pairs_per_prompt=5)
    pairs, st = select_pairs(bp, [row])
    assert sorted(p.id for p in pairs) == ["p/sample0", "p/sample1"] and st["duplicates"] == 1  # greedy = sample0
    assert all(p.chosen_tokens == [302] * 4 + [EOS] for p in pairs)
    with pytest.raises(ValueError, match="build_pairs.judge: null .unscored candidates. needs chosen: gold"):
        _bp(judge=None)


@pytest.mark.parametrize("chosen", ["gold", "rendered"])
def test_perturbation_candidates_are_the_wrong_words_rendered_like_the_gold(tts_world, tts_model, tmp_path, chosen):
    """`perturbations`: the text corrupted (as the ASR track's) and spoken like the gold: a real piper
    + Codec2 rendering of other words, rejected without any judge against the gold (`chosen: gold`) or
    against the prompt's own text rendered the same way now (`chosen: rendered`, no gold file)."""
    from lpo_speech.wer import normalize
    from lpo_speech.recipe import build_pairs, load_any_recipe
    from lpo_speech.tts.text import TtsTokenizer
    from lpo_speech.tts.world import render_tokens

    out, _ = tts_world
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(f"""
track: tts
model: {{path: {tts_model}, adapter: causal_lm, num_codebooks: 4}}
data: {{pairs: {tmp_path}/pairs/pairs_ref.jsonl, max_length: 1024}}
build_pairs: {{prompts: {out}/train_prompts.jsonl, gold: {out / "train.jsonl" if chosen == "gold" else "null"},
  work_dir: {tmp_path}/pairs, samples: 0, greedy: false, perturbations: 2, perturb_rate: 0.2, chosen: {chosen},
  judge: null, keys: [],
  min_margins: {{}}, max_chosen_cer: null, chosen_stable: false, similarity: false, pairs_per_prompt: 2}}
loss: {{type: lpo-ste}}
train: {{out_dir: {tmp_path}/run, max_steps: 1, batch_size: 2}}
runtime: {{device: cpu, sampling_threads: 1}}
""")
    stats = build_pairs(load_any_recipe(recipe_path), quiet=True)
    assert stats["candidates_by_source"] == {chosen: 3, "perturb": 6} and stats["pairs"] == 6
    gold = {p.id: p for p in load_jsonl(out / "train.jsonl", PreferencePair)}
    tok = TtsTokenizer.load(out / "tokenizer.json")
    codec = tok.make_codec()
    pairs = load_jsonl(tmp_path / "pairs" / "pairs_ref.jsonl", PreferencePair)
    wavs, said, meant = [], [], []
    for p in pairs:
        said.append(p.extra["perturbed_text"])
        meant.append(p.extra["text"])
        assert normalize(said[-1]) != normalize(meant[-1]) and p.extra["chosen_source"] == chosen
        g = gold[p.prompt_id].chosen_tokens
        assert (p.chosen_tokens == g) == (chosen == "gold") and abs(len(p.chosen_tokens) - len(g)) <= 0.25 * len(g)
        assert p.chosen_tokens[-1] == p.rejected_tokens[-1] == EOS and p.ref_rejected_logp is not None
        # A gold-like rendering of the perturbed words (piper samples its noise, so not bit-identical).
        again = render_tokens(tok, codec, said[-1], "neutral")[0]
        assert abs(len(p.rejected_tokens) - 1 - len(again)) <= 0.25 * len(again)
        wavs.append(codec.decode(codec.unflatten(tok.model_to_codec(p.rejected_tokens[:-1]))))
    # The judge hears the perturbed words, not the prompt's.
    from lpo_speech.judges.asr import FasterWhisperJudge
    from lpo_speech.wer import corpus_scores

    heard = FasterWhisperJudge().transcribe(wavs, codec.sample_rate)
    assert corpus_scores(said, heard)["wer"] < corpus_scores(meant, heard)["wer"]
    with pytest.raises(ValueError, match="build_pairs.perturbations: .* need chosen: gold"):
        _bp(perturbations=1)
    with pytest.raises(ValueError, match="build_pairs.perturb_rate"):
        _bp(perturb_rate=0.0)
