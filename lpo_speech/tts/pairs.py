"""`lpo-speech build-pairs` for TTS: sample, decode, judge, select chosen/rejected, reference log-probs.

Stages, each resumable and written atomically under `build_pairs.work_dir`:

1. candidates.jsonl  one line per prompt: its candidates (token ids without EOS, `terminated`) with
                     scores (`judge: null`: none, only duration and termination; the LPO authors'
                     pipeline, gold chosen and every candidate rejected, which needs no judge)
                     (lpo_speech.tts.scoring, in `build_pairs.lang`: judge `hyp`, `wer`, `cer`,
                     `sim`, optional `dnsmos`, stability flags, `failure`). Sources: `sample` (n per
                     prompt), `greedy`, `gold` (the prompt's gold codec tokens, decoded and scored like any
                     candidate) when chosen is gold, `rendered` (the prompt's text rendered now like
                     the gold: `chosen: rendered`, needs no gold file) and `perturb` (`perturbations` per prompt: the
                     text corrupted by word edits, as the ASR track's perturbation-based candidates,
                     spoken by the world's voice in the prompt's style and encoded like the gold:
                     audio of the wrong words, so gold-vs-perturb pairs teach the model to follow its
                     text; lpo_speech.tts.world.render_tokens). Sharded across processes under torchrun
                     (lpo_speech.stages.run_sharded), with a progress bar.
2. pairs.jsonl       selection, per prompt, rule by rule (each rule's count goes to summary.json):
                     * duplicates      identical token sequences count once
                     * too_long        candidates longer than `max_duration_s` are dropped
                     * ranking         candidates sorted by `keys` lexicographically (direction per
                                       score: failure, wer, cer lower is better; sim, dnsmos higher)
                     * chosen          `best`: the best-ranked candidate that passes the two rules
                                       below (so with keys [emotion, cer] it is the most emotional
                                       one under the CER ceiling); `gold`: the gold tokens;
                                       `rendered`: a fresh rendering of the prompt's text (with
                                       perturbations: chosen and rejected made the same way, so
                                       only the words differ, never "the example the SFT model
                                       memorized" versus "a new one")
                     * chosen_unstable `chosen_stable`: the chosen must be terminated, decodable, in
                                       the duration range, without long silence, with speech
                     * chosen_threshold the chosen's CER must be at most `max_chosen_cer`
                                       (a prompt with no eligible chosen counts under the rule its
                                       best-ranked candidate failed)
                     * rejected        the others, worst-ranked first
                     * within_margin   a rejected must be worse than the chosen by `min_margins[s]`
                                       on each listed score s (`margin_rule: any`: on at least one;
                                       with pareto, the others need only be worse at all, so one
                                       recipe pairs style errors and word errors without trading)
                     * trades_off      the chosen may be worse than the rejected by at most
                                       `max_chosen_deficit[s]` on each listed score s (so an
                                       emotion pair cannot trade intelligibility for emotion)
                     * length_ratio    `max_length_ratio`: drop the pair when the longer of chosen
                                       and rejected lasts more than this many times the shorter
                                       (duration, or tokens when unscored), so pairs differ in what
                                       the keys score more than in speaking rate (on the offline
                                       emotion recipe this raised failures: the long, stalled
                                       rejected are what teach "do not stall"; results/emotion-sync-settings/README.md)
                     * not_dominated   `selection: pareto` (as NeMo's TTS preference data): drop the
                                       pair when the rejected is as good as the chosen on ANY of
                                       `keys`; lexicographic only needs it ranked below
                     * over_cap        at most `pairs_per_prompt` pairs per prompt
                     chosen/rejected tokens end with EOS when the response terminated.
3. data.pairs        the pairs with reference log-probs (lpo_speech.reflogps), or as they are when the
                     trainer runs the reference model itself (`reference.source: model`).

Where it runs is the placement rule's (lpo_speech.distributed): the codec LM on `runtime.device` in
`model.dtype`, judges, scorers and a neural codec on `runtime.judge_device` (a judge's own `device`
key wins), sampling with `runtime.sampling_threads` torch threads; `runtime.json` in work_dir says so
(printed at the start, written with the results). Every input is checked, and what an earlier run left in work_dir compared
(model, prompts and gold by content, lpo_speech.stages), before anything is written: a rerun from
other inputs stops in one line unless `overwrite` (--overwrite).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import torch

from lpo_speech.distributed import DistInfo, init_distributed, resolve_device
from lpo_speech.errors import UserError
from lpo_speech.precision import dtype_name, resolve_dtype
from lpo_speech.records import Candidate, PreferencePair, TtsPrompt, load_jsonl
from lpo_speech.tts.recipe import SCORE_DIRECTIONS, TtsBuildPairs, TtsRecipe
from lpo_speech.tts.text import EOS as LPO_EOS
from lpo_speech.tts.world import WORLD_CODEC

# What makes a candidate (with the model and the gold file): a rerun into the same work_dir must keep
# these (lpo_speech.stages.check_settings); the selection rules may change freely.
CANDIDATE_SETTINGS = ("samples", "greedy", "perturbations", "perturb_rate", "temperature", "top_k", "top_p",
                      "max_seconds", "seconds_per_char", "chosen", "judge", "similarity", "dnsmos", "emotion", "seed")
UNSTABLE_FLAGS = ("failure", "undecodable", "duration_out_of_range", "long_silence", "no_speech")
# The layout of a candidates row and how it is made: raise it when either changes, so candidates made
# by older code are not resumed as if this code had made them.
SCHEMA = 1


def _value(scores: dict, key: str) -> float:
    v = scores.get(key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return -math.inf if SCORE_DIRECTIONS[key] > 0 else math.inf  # missing = worst
    return float(v)


def rank_key(scores: dict, keys: list[str]) -> tuple:
    """Sort key: smaller is better, score by score."""
    return tuple(-SCORE_DIRECTIONS[k] * _value(scores, k) for k in keys)


def better_by(chosen: dict, rejected: dict, key: str) -> float:
    """How much better the chosen is than the rejected on `key` (> 0: chosen better)."""
    return SCORE_DIRECTIONS[key] * (_value(chosen, key) - _value(rejected, key))


def is_stable(c: dict) -> bool:
    s = c["scores"]
    return bool(c.get("terminated", True)) and not any(bool(s.get(f)) for f in UNSTABLE_FLAGS)


def _length_ratio(a: dict, b: dict) -> float:
    """The longer of two candidates over the shorter, in seconds (tokens when a duration is missing)."""
    da, db = a["scores"].get("duration_s"), b["scores"].get("duration_s")
    if not da or not db:
        da, db = len(a["tokens"]), len(b["tokens"])
    return max(da, db) / max(min(da, db), 1e-9)


def _chosen_fails(bp: TtsBuildPairs, c: dict) -> str | None:
    """The chosen rule candidate `c` fails (chosen_unstable, chosen_threshold), or None."""
    if bp.chosen_stable and not is_stable(c):
        return "chosen_unstable"
    if bp.max_chosen_cer is not None and _value(c["scores"], "cer") > bp.max_chosen_cer:
        return "chosen_threshold"
    return None


def select_pairs(bp: TtsBuildPairs, rows: list[dict], eos_id: int = LPO_EOS) -> tuple[list[PreferencePair], dict]:
    """Apply the selection rules (module docstring) to candidate rows; returns pairs and counts.
    `eos_id` is the model's (tok.eos_id): candidate tokens are stored without it."""
    stats = {"prompts": len(rows), "candidates": 0, "duplicates": 0, "too_long": 0, "chosen_unstable": 0,
             "chosen_threshold": 0, "within_margin": 0, "trades_off": 0, "length_ratio": 0, "not_dominated": 0,
             "over_cap": 0,
             "prompts_without_pair": 0, "pairs": 0}
    by_source: dict[str, int] = {}
    pairs: list[PreferencePair] = []
    for row in rows:
        cands = []
        seen: set[tuple] = set()
        for c in row["candidates"]:
            stats["candidates"] += 1
            by_source[c["source"]] = by_source.get(c["source"], 0) + 1
            key = (tuple(c["tokens"]), c.get("terminated", True))
            if key in seen:
                stats["duplicates"] += 1
                continue
            seen.add(key)
            if bp.max_duration_s is not None and c["scores"].get("duration_s", 0.0) > bp.max_duration_s:
                stats["too_long"] += 1
                continue
            cands.append(c)
        given = [c for c in cands if c["source"] == bp.chosen]  # chosen: gold (or rendered) tokens
        model_cands = [c for c in cands if c["source"] not in ("gold", "rendered")]
        model_cands.sort(key=lambda c: (rank_key(c["scores"], bp.keys), c["id"]))
        if bp.chosen in ("gold", "rendered"):
            if not given:
                raise UserError(f"prompt {row['id']}: no gold tokens for chosen: gold", where="build_pairs.gold")
            pool = given[:1]
        else:
            pool = model_cands
        if not pool:
            stats["prompts_without_pair"] += 1
            continue
        # The chosen is the best-ranked candidate that passes the chosen rules; when none does, the
        # prompt counts under the rule its best-ranked candidate failed.
        chosen = next((c for c in pool if _chosen_fails(bp, c) is None), None)
        if chosen is None:
            stats[_chosen_fails(bp, pool[0])] += 1
            stats["prompts_without_pair"] += 1
            continue
        rest = [c for c in model_cands if c is not chosen]
        kept = []
        for rej in reversed(rest):  # worst first
            clears = [better_by(chosen["scores"], rej["scores"], k) >= m for k, m in bp.min_margins.items()]
            if clears and not (all(clears) if bp.margin_rule == "all" else any(clears)):
                stats["within_margin"] += 1
                continue
            if any(better_by(chosen["scores"], rej["scores"], k) < -d for k, d in bp.max_chosen_deficit.items()):
                stats["trades_off"] += 1
                continue
            if bp.max_length_ratio is not None and _length_ratio(chosen, rej) > bp.max_length_ratio:
                stats["length_ratio"] += 1
                continue
            if bp.selection == "pareto" and any(better_by(chosen["scores"], rej["scores"], k) <= 0 for k in bp.keys):
                stats["not_dominated"] += 1
                continue
            kept.append(rej)
        stats["over_cap"] += max(0, len(kept) - bp.pairs_per_prompt)
        if not kept:
            stats["prompts_without_pair"] += 1
        for rej in kept[:bp.pairs_per_prompt]:
            pairs.append(PreferencePair(
                id=f"{rej['id']}", prompt_id=row["id"], prompt_tokens=row["prompt_tokens"],
                chosen_tokens=_with_eos(chosen, eos_id), rejected_tokens=_with_eos(rej, eos_id),
                chosen_scores=_brief(chosen), rejected_scores=_brief(rej),
                extra={"chosen_source": chosen["source"], "rejected_source": rej["source"], "text": row["text"],
                       **({"perturbed_text": rej["text"]} if rej.get("text") else {}),  # what the rejected says
                       **({"emotion": row["emotion"]} if row.get("emotion") else {})}))
    stats["pairs"] = len(pairs)
    stats["candidates_by_source"] = by_source
    return pairs, stats


def _with_eos(c: dict, eos_id: int) -> list[int]:
    toks = list(c["tokens"])
    if c["source"] == "gold":
        return toks  # gold examples already end with EOS
    return toks + [eos_id] if c.get("terminated", True) else toks if toks else [eos_id]


def _brief(c: dict) -> dict:
    keep = ("wer", "cer", "sim", "dnsmos", "emotion", "emotion_top", "failure", "duration_s", "hyp")
    return {k: c["scores"][k] for k in keep if k in c["scores"]} | {"terminated": bool(c.get("terminated", True))}


def placement(recipe: TtsRecipe) -> tuple[DistInfo, torch.dtype, torch.device]:
    """(this process's DistInfo, the codec LM's dtype, the judge device), all by the placement rule
    (lpo_speech.distributed): the LM on `runtime.device`, judges, scorers and a neural codec on
    `runtime.judge_device` (null: the same device)."""
    info = init_distributed(recipe.runtime.device)
    judge = resolve_device(recipe.runtime.judge_device or recipe.runtime.device,
                           where="runtime.judge_device" if recipe.runtime.judge_device else "runtime.device")
    return info, resolve_dtype(recipe.model.dtype, info.device), judge


def candidate_settings(recipe: TtsRecipe, dtype: torch.dtype) -> dict:
    """What made candidates.jsonl (lpo_speech.stages): the model, the prompts and the gold file by
    content, the candidate settings, the schema and a non-float32 sampling dtype."""
    from lpo_speech.stages import input_file, model_folder

    bp = recipe.build_pairs
    return {"model": model_folder(recipe.model.path), "prompts": input_file(bp.prompts), "schema": SCHEMA,
            "gold": input_file(bp.gold, legacy=str(Path(bp.gold).resolve())) if bp.gold else bp.gold,
            **{f: getattr(bp, f) for f in CANDIDATE_SETTINGS},
            # lang changes the scores and the perturbations; en (every run before it was kept) adds no key
            **({"lang": bp.lang} if bp.lang != "en" else {}),
            # bfloat16 samples other tokens; float32 (every run before dtypes were kept) adds no key
            **({"dtype": dtype_name(dtype)} if dtype != torch.float32 else {})}


def candidate_scorer(bp: TtsBuildPairs, device: str = "cpu"):
    """The TtsScorer of build-pairs (judge, similarity, DNSMOS, emotion, in `bp.lang`); None for
    `judge: null`, unscored candidates (the LPO authors' pipeline: gold chosen, every candidate rejected)."""
    from lpo_speech.tts.scoring import TtsScorer

    if bp.judge is None:
        return None
    return TtsScorer(judge=bp.judge, similarity=bp.similarity, dnsmos=bp.dnsmos, emotion=bp.emotion, lang=bp.lang,
                     device=str(device))


def generate_candidates(recipe: TtsRecipe, prompts: list[TtsPrompt], gold: dict[str, dict],
                        quiet: bool = False, overwrite: bool = False) -> list[dict]:
    """Stage 1: candidates.jsonl (sharded, resumable)."""
    from lpo_speech.perturb import build_vocabulary, perturbations
    from lpo_speech.stages import run_sharded
    from lpo_speech.tts.model import load_codec_lm
    from lpo_speech.tts.scoring import Clip
    from lpo_speech.tts.synthesize import decode_tokens, prompt_ids, synthesize
    from lpo_speech.tts.world import render_tokens

    bp = recipe.build_pairs
    info, dtype, judge_device = placement(recipe)
    lm, tok = load_codec_lm(recipe.model.path, info.device, dtype)
    codec = tok.make_codec(judge_device)
    threads = recipe.runtime.sampling_threads  # None: the process's (runtime.threads or torch's default)
    vocabulary = build_vocabulary([p.text for p in prompts], bp.lang) if bp.perturbations else []
    scorer = candidate_scorer(bp, judge_device)
    refs: dict[str, Any] = {}
    from lpo_speech.tts.evaluate import load_reference

    def process(chunk: list[TtsPrompt]) -> list[dict]:
        seed = random.Random(f"{bp.seed}:{chunk[0].id}").randrange(2**31)
        per: dict[str, list[tuple[str, Any, str | None]]] = {p.id: [] for p in chunk}  # (source, synth, text said)
        if bp.samples:
            for p, synths in zip(chunk, synthesize(lm, tok, chunk, n=bp.samples, temperature=bp.temperature,
                                                   top_k=bp.top_k, top_p=bp.top_p, max_seconds=bp.max_seconds,
                                                   seconds_per_char=bp.seconds_per_char, seed=seed,
                                                   batch_size=bp.batch_size, codec=codec, threads=threads)):
                per[p.id] += [("sample", s, None) for s in synths]
        if bp.greedy:
            for p, (s,) in zip(chunk, synthesize(lm, tok, chunk, n=1, temperature=0.0, max_seconds=bp.max_seconds,
                                                 seconds_per_char=bp.seconds_per_char, batch_size=bp.batch_size,
                                                 codec=codec, threads=threads)):
                per[p.id].append(("greedy", s, None))
        if bp.chosen == "gold":
            for p in chunk:
                toks = gold[p.id]["chosen_tokens"]
                per[p.id].append(("gold", decode_tokens(tok, codec, toks[:-1] if toks[-1] == tok.eos_id else toks), None))
        for p in chunk:  # the prompt's own text (chosen: rendered) and its perturbations, rendered alike
            if bp.chosen == "rendered":
                per[p.id].append(("rendered", decode_tokens(tok, codec, render_tokens(tok, codec, p.text, p.emotion)[0]), None))
            for text in perturbations(p.text, vocabulary, n=bp.perturbations, rate=bp.perturb_rate,
                                      seed=f"{bp.seed}:{p.id}", lang=bp.lang):
                toks = render_tokens(tok, codec, text, p.emotion)[0]
                per[p.id].append(("perturb", decode_tokens(tok, codec, toks), text))  # scored as the codec renders it
        out = []
        for p in chunk:
            ref = load_reference(bp.prompts, p, None, refs) if bp.similarity else None
            clips = [Clip(p.text, s.wav, s.sr, terminated=s.terminated, undecodable=s.undecodable, emotion=p.emotion)
                     for _, s, _ in per[p.id]]
            scored = (scorer.score(clips, ref) if scorer is not None else
                      [{"duration_s": round(c.wav.size / c.sr, 3) if c.wav is not None else 0.0,
                        "terminated": c.terminated, "undecodable": c.undecodable} for c in clips])
            cands = []
            for k, ((source, s, said), scores) in enumerate(zip(per[p.id], scored)):
                tokens = gold[p.id]["chosen_tokens"] if source == "gold" else s.tokens
                cands.append(Candidate(id=f"{p.id}/{source}{k}", prompt_id=p.id, source=source, tokens=tokens,
                                       text=said, scores=scores, extra={"terminated": s.terminated}).to_dict())
            out.append({"id": p.id, "text": p.text, "emotion": p.emotion, "prompt_tokens": prompt_ids(tok, p),
                        "candidates": cands})
        return out

    # After the model loaded (a broken one leaves no record behind): settings recorded, earlier output
    # discarded with overwrite.
    return run_sharded(Path(bp.work_dir) / "candidates.jsonl", prompts, key=lambda p: p.id, process=process,
                       batch_size=bp.prompts_per_shard_step, desc="tts candidates", unit="prompt",
                       device=recipe.runtime.device, quiet=quiet, settings=candidate_settings(recipe, dtype),
                       overwrite=overwrite)


def build_tts_pairs(recipe: TtsRecipe, *, quiet: bool = False, overwrite: bool = False) -> dict:
    """`overwrite`: discard candidates (and reference log-probs) made from another model, prompt file,
    gold file or settings instead of stopping, once the new inputs are checked. Every input (prompts,
    gold, reference voices, what an earlier run left in work_dir) is checked before anything is written."""
    from lpo_speech.distributed import record_runtime
    from lpo_speech.stages import OVERWRITE_HINT, check_settings, created_outputs, set_threads
    from lpo_speech.tts.evaluate import load_reference
    from lpo_speech.tts.synthesize import prompt_ids
    from lpo_speech.tts.text import TtsTokenizer
    from lpo_speech.reflogps import store_pairs

    bp = recipe.build_pairs
    work = Path(bp.work_dir)
    set_threads(recipe.runtime.threads)
    info, dtype, judge_device = placement(recipe)
    prompts = load_jsonl(bp.prompts, TtsPrompt)
    if bp.limit:
        prompts = prompts[:bp.limit]
    tok = TtsTokenizer.load(recipe.model.path)  # the checks below need no weights
    if (bp.perturbations or bp.chosen == "rendered") and getattr(tok, "codec", None) != WORLD_CODEC:
        raise UserError(f"perturbations and chosen: rendered speak with the offline world's voice and codec "
                        f"({WORLD_CODEC}); this model's codec is {getattr(tok, 'codec', None)!r}",
                        where="build_pairs.perturbations")
    if bp.perturbations and getattr(tok, "phoneme_sync", False):
        raise UserError("a phoneme-synchronous model's response writes its prompt's phonemes, so the speech "
                        "of other words is no response to the prompt: perturbations need a plain model",
                        where="build_pairs.perturbations")
    ids = {p.id: prompt_ids(tok, p, where=f"{bp.prompts}:{i}")  # every prompt problem before the long stage
           for i, p in enumerate(prompts, 1)}
    gold: dict[str, dict] = {}
    if bp.gold is not None:
        gold = {p.id: p.to_dict() for p in load_jsonl(bp.gold, PreferencePair)}
        missing = [p.id for p in prompts if p.id not in gold]
        if bp.chosen == "gold" and missing:
            raise UserError(f"no gold example for prompt {missing[0]!r} ({len(missing)} missing)", where=bp.gold)
        for p in prompts:  # gold of another layout (plain vs phoneme-synchronous) fails here, not mid-run
            if p.id in gold:
                tok.check_response(gold[p.id]["chosen_tokens"], ids[p.id], where=f"{bp.gold}: {p.id}")
    if bp.similarity:  # every reference voice readable (finite, mono) before the long stage
        refs: dict[str, Any] = {}
        for p in prompts:
            load_reference(bp.prompts, p, None, refs)
    if not overwrite:
        check_settings(work / "candidates.jsonl", candidate_settings(recipe, dtype), record=False, hint=OVERWRITE_HINT)
    where = dict(weights=dtype_name(dtype), judge_device=str(judge_device), threads=torch.get_num_threads(),
                 sampling_threads=recipe.runtime.sampling_threads)
    record_runtime("build-pairs", info, quiet=quiet, **where)  # said now, written with the results
    with created_outputs(work, Path(recipe.data.pairs).parent):
        rows = generate_candidates(recipe, prompts, gold, quiet=quiet, overwrite=overwrite)
        pairs, stats = select_pairs(bp, rows, tok.eos_id)
        stats.update(store_pairs(recipe.train_recipe(), pairs, work, batch_size=bp.batch_size,
                                 max_margin=bp.max_ref_margin, quiet=quiet, overwrite=overwrite))
        if info.is_main:
            (work / "summary.json").write_text(json.dumps(stats, indent=2) + "\n")
        # runtime.json describes the run that made summary.json: a failed rerun leaves the earlier one.
        record_runtime("build-pairs", info, work, quiet=True, **where)
    return stats
