"""The offline TTS world: a piper corpus encoded with Codec2 700C, as codec-LM training examples.

`make_tts_data(out, n_train, n_dev, n_test)` writes, under `out`:

  tokenizer.json        the prompt/codec id table (lpo_speech.tts.text); models made from this data
                        carry the same table in their config.json
  train.jsonl           SFT examples (PreferencePair without a rejected side): prompt_tokens =
  dev.jsonl             `[BOS, style, phonemes..., SEP]`, chosen_tokens = Codec2 700C ids of the piper
  test.jsonl            audio (+ CODEC_OFFSET) rendered in the item's style, followed by EOS; plus
                        text, emotion (the style), duration_s (gold for the 'gold as chosen' pairs and
                        held-out loss)
  train_prompts.jsonl   TTS prompt manifests ({"id", "text", "emotion", "speaker_audio"}) of the same
  dev_prompts.jsonl     items: build-pairs samples the train prompts, eval synthesizes the test ones
  test_prompts.jsonl
  test_style.jsonl      the test sentences again, item i in style STYLE_CYCLE[i % 3] (balanced): the
  test_style_prompts.jsonl  held-out set of the emotion track (its gold trains nothing: it is the
                        ground truth the style classifier is checked on)
  style_prompts.jsonl   the train sentences with a balanced requested style (no gold): the prompts
                        the emotion track samples its pairs from
  dev_style_prompts.jsonl  the dev sentences the same way: where emotion-track settings are compared
  ood_dev_prompts.jsonl, ood_test_prompts.jsonl  out-of-domain held-out prompts: natural sentences of
                        the dev / test pools of lpo_speech.synthetic.natural (outside the grammar every other
                        file speaks), neutral; the phoneme prompt says any English sentence
  ood_dev_style_prompts.jsonl, ood_test_style_prompts.jsonl  the same sentences, item i in style
                        STYLE_CYCLE[i % 3], as test_style_prompts.jsonl (no gold: prompts only)
  train_rare_styles.jsonl  train.jsonl with only the first RARE_STYLE_ITEMS items of each non-neutral
                        style (all neutral items): the emotion track's SFT data, where expressive
                        speech is as scarce as in most corpora (a 10% share is learned fully)
  ref/joe.wav           the reference voice for speaker similarity (a sentence outside every split)
  wavs/test/<id>.wav    the piper originals of the test split (16 kHz), for the ceiling
  ceiling.json          judge scores of the test split: piper itself, and the gold Codec2 tokens decoded
                        (the best any codec LM on this codec can do)

`phoneme_sync=True` (`--phoneme-sync`) makes a world in the phoneme-synchronous layout
(lpo_speech.tts.text): piper also reports how long each phoneme lasts, and each gold response
writes every prompt symbol before its frames (a symbol's frames are those whose start falls in its
span, rounded to the 40 ms grid). It needs the `onnx` package (piper's alignment patch).

Styles (lpo_speech.tts.styles): a share `style_share` of the train items (drawn per item from the seed)
is rendered in a non-neutral style, split evenly; dev and test items are neutral. A small share is the
point: like most TTS corpora, the SFT model sees few expressive examples, which is what the emotion
track then aligns. Sentences come from lpo_speech.synthetic.sentences; the splits share no sentence;
`natural_share` > 0 (`--natural-share`, default 0) replaces that share of the train sentences (drawn
per item) by natural sentences of lpo_speech.synthetic.natural's train pool. Synthesis runs in
`workers` processes; each split is written through a resumable JsonlWriter, so an interrupted run
continues where it stopped (same arguments required: they are stored in make_tts_data.json).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lpo_speech.errors import UserError
from lpo_speech.records import JsonlWriter, write_jsonl_atomic
from lpo_speech.stages import check_settings
from lpo_speech.tts.text import TtsTokenizer

SYNTH_SR = 16_000
REF_TEXT = "This is the reference recording of the voice that every model in this world should speak with."
REF_PATH = "ref/joe.wav"
STYLE_CYCLE = ("neutral", "high", "low")
WORLD_CODEC = "codec2:700C"  # the codec of every world item (render_tokens' styles edit its frames)
RARE_STYLE_ITEMS = 25

_worker_state: dict[str, Any] = {}


def _worker_init(tok_dict: dict, one_thread: bool = True) -> None:
    if one_thread:  # parallelism comes from the worker processes
        import torch

        torch.set_num_threads(1)
    _worker_state["tok"] = TtsTokenizer.from_dict(tok_dict)
    _worker_state["codec"] = _worker_state["tok"].make_codec()


def _make_item(job: tuple[str, str, str, str, str | None]) -> dict[str, Any]:
    """Worker: synthesize one sentence with piper in a style, encode it with Codec2, tokenize its text."""
    item_id, split, text, style, wav_path = job
    tok, codec = _worker_state["tok"], _worker_state["codec"]
    tokens, audio, frames = render_tokens(tok, codec, text, style)
    if wav_path is not None:
        from lpo_speech.audio import save_wav

        save_wav(wav_path, audio, SYNTH_SR)
    return {"id": item_id, "prompt_id": item_id, "prompt_tokens": tok.encode_prompt(text, emotion=style, where=item_id),
            "chosen_tokens": tokens + [tok.eos_id], "text": text, "split": split,
            "emotion": style, "duration_s": round(len(audio) / SYNTH_SR, 3), "frames": frames}


def render_tokens(tok: TtsTokenizer, codec, text: str, style: str | None) -> tuple[list[int], np.ndarray, int]:
    """`text` spoken by the world's voice (piper joe) in `style`, as model ids (no EOS): what a gold
    example holds (with the prompt's symbols interleaved when `tok.phoneme_sync`). Also returns the
    piper audio (16 kHz) and the number of codec frames."""
    from lpo_speech.synthetic.synth import synth_piper, synth_piper_aligned
    from lpo_speech.tts.styles import apply_style, get_style

    style = style or "neutral"
    scale = get_style(style).length_scale
    if tok.phoneme_sync:
        audio, ends = synth_piper_aligned(text, length_scale=scale)
    else:
        audio, ends = synth_piper(text, length_scale=scale), None
    codes = apply_style(codec.encode(audio, SYNTH_SR), style)
    ids = tok.codec_to_model(codec.flatten(codes))
    if ends is not None:
        if [sym for sym, _ in ends] != tok.text_symbols(text):
            raise UserError(f"piper's alignment of {text[:40]!r} names other phonemes than the prompt",
                            where="phoneme_sync")
        frames = symbol_frames([end for _, end in ends], int(codes.shape[0]), codec.frame_rate)
        ids = tok.interleave(ids, tok.encode_prompt(text, emotion=style), frames)
    return ids, audio, int(codes.shape[0])


def symbol_frames(ends_s: list[float], n_frames: int, frame_rate: float) -> list[int]:
    """Frames each symbol lasts, from when each ends (seconds): a frame belongs to the symbol whose span
    holds its start, so boundaries round to the frame grid; the last symbol takes the remaining frames."""
    bounds = [min(n_frames, max(0, round(e * frame_rate))) for e in ends_s]
    bounds = list(itertools.accumulate(bounds, max))  # monotone despite rounding
    if bounds:
        bounds[-1] = n_frames
    return [b - a for a, b in zip([0, *bounds[:-1]], bounds)]


def item_style(seed: int, item_id: str, split: str, style_share: float) -> str:
    """The style of a world item: train items are non-neutral with probability `style_share`."""
    import random

    from lpo_speech.tts.styles import STYLES

    rng = random.Random(f"style:{seed}:{item_id}")
    others = [s for s in STYLES if s != "neutral"]
    return rng.choice(others) if split == "train" and rng.random() < style_share else "neutral"


def split_sentences(n_train: int, n_dev: int, n_test: int, seed: int) -> dict[str, list[str]]:
    from lpo_speech.synthetic.sentences import generate

    sents = generate(n_train + n_dev + n_test, seed)
    return {"train": sents[:n_train], "dev": sents[n_train:n_train + n_dev], "test": sents[n_train + n_dev:]}


def make_tts_data(out_dir: str | Path, n_train: int, n_test: int, *, n_dev: int = 0, seed: int = 0,
                  style_share: float = 0.0, limits: dict[str, int] | None = None, workers: int = 2,
                  ceiling: bool = True, progress: bool = True, phoneme_sync: bool = False,
                  natural_share: float = 0.0) -> dict[str, Any]:
    """Build (or finish building) the TTS world in `out_dir`; returns counts, seconds and the ceiling.

    `limits` ({split: k}, splits train/dev/test/test_style) synthesizes only the first k items of a
    split while the splits stay those of (n_train, n_dev, n_test, seed): a small world for the demo
    whose held-out sentences are exactly the held-out sentences of the full world a model was trained on."""
    if min(n_train, n_dev, n_test) < 0 or n_train + n_test == 0:
        raise UserError(f"item counts must be >= 0 and not all 0 (n_train={n_train}, n_dev={n_dev}, n_test={n_test})")
    if not 0.0 <= style_share <= 1.0:
        raise UserError(f"--style-share {style_share} outside [0, 1]")
    from lpo_speech.synthetic.natural import check_share, held_out, mix_natural

    check_share(natural_share)
    limits = dict(limits or {})
    for name, k in limits.items():
        if name not in ("train", "dev", "test", "test_style") or not isinstance(k, int) or k < 0:
            raise UserError(f"--limit {name}={k}: expected SPLIT=N with SPLIT in train, dev, test, test_style, N >= 0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {"n_train": n_train, "n_dev": n_dev, "n_test": n_test, "seed": seed, "voice": "piper:joe",
              "codec": WORLD_CODEC, "style_share": style_share, **({"limits": limits} if limits else {}),
              **({"phoneme_sync": True} if phoneme_sync else {}),
              **({"natural_share": natural_share} if natural_share else {})}  # only when used: old worlds match
    check_settings(out, config, path=out / "make_tts_data.json")
    tok = TtsTokenizer(phoneme_sync=phoneme_sync)
    tok.save(out / "tokenizer.json")
    if not (out / REF_PATH).exists():
        from lpo_speech.audio import save_wav
        from lpo_speech.synthetic.synth import synth_piper

        save_wav(out / REF_PATH, synth_piper(REF_TEXT), SYNTH_SR)

    start, made = time.monotonic(), {}
    splits = split_sentences(n_train, n_dev, n_test, seed)
    splits["train"] = mix_natural(splits["train"], [f"train-{i:05d}" for i in range(n_train)], natural_share, seed)
    with (ProcessPoolExecutor(max_workers=workers, initializer=_worker_init, initargs=(tok.to_dict(),))
          if workers > 1 else contextlib.nullcontext()) as pool:
        if pool is None:
            _worker_init(tok.to_dict(), one_thread=False)
        for split, texts in [*splits.items(), ("test_style", splits["test"])]:
            texts = texts[:limits.get(split, len(texts))]
            if texts:
                ids = [f"{split}-{i:05d}" for i in range(len(texts))]
                # test_style: the emotion track's held-out set, test sentences in balanced styles
                styles = ([STYLE_CYCLE[i % 3] for i in range(len(texts))] if split == "test_style"
                          else [item_style(seed, i, split, style_share) for i in ids])
                made[split] = _build_split(out, split, ids, texts, styles, pool, progress)
    if (out / "train.jsonl").exists():
        write_rare_styles(out / "train.jsonl", out / "train_rare_styles.jsonl", RARE_STYLE_ITEMS)
    for name, split, prefix in (("style_prompts.jsonl", "train", "style"), ("dev_style_prompts.jsonl", "dev", "dev_style")):
        if splits[split]:
            write_style_prompts(out / name, prefix, splits[split])
    for held in ("dev", "test"):  # prompt files only (no synthesis): cheap, so always written
        texts = held_out(held, seed)
        write_jsonl_atomic(out / f"ood_{held}_prompts.jsonl",
                           [{"id": f"ood_{held}-{i:05d}", "text": t, "emotion": "neutral", "speaker_audio": REF_PATH}
                            for i, t in enumerate(texts)])
        write_style_prompts(out / f"ood_{held}_style_prompts.jsonl", f"ood_{held}_style", texts)
    stats: dict[str, Any] = {**made, "seconds": round(time.monotonic() - start, 1)}
    if ceiling and splits["test"]:
        stats["ceiling"] = measure_ceiling(out, progress=progress)
    return stats


def write_style_prompts(path: Path, prefix: str, texts: list[str]) -> None:
    """TTS prompts (no gold) asking for the styles in turn: the emotion track's pair and tuning prompts."""
    write_jsonl_atomic(path, [{"id": f"{prefix}-{i:05d}", "text": t, "emotion": STYLE_CYCLE[i % 3],
                               "speaker_audio": REF_PATH} for i, t in enumerate(texts)])


def _build_split(out: Path, split: str, ids: list[str], texts: list[str], styles: list[str], pool,
                 progress: bool) -> int:
    final = out / f"{split}.jsonl"
    if final.exists() and (out / f"{split}_prompts.jsonl").exists():
        return 0
    keep_wav = split == "test"
    with JsonlWriter(final) as writer:
        jobs = [(i, split, t, s, str(out / "wavs" / split / f"{i}.wav") if keep_wav else None)
                for i, t, s in zip(ids, texts, styles) if i not in writer.done]
        bar = tqdm(total=len(texts), initial=len(texts) - len(jobs), desc=f"tts {split}", unit="utt",
                   disable=not progress, dynamic_ncols=True)
        results = pool.map(_make_item, jobs, chunksize=4) if pool is not None else map(_make_item, jobs)
        for rec in results:
            writer.write(rec)
            bar.update(1)
        bar.close()
    # Plan order on disk, so reruns and resumed runs give identical files.
    rows = {d["id"]: d for d in map(json.loads, final.read_text(encoding="utf-8").splitlines())}
    write_jsonl_atomic(final, [rows[i] for i in ids])
    write_jsonl_atomic(out / f"{split}_prompts.jsonl",
                       [{"id": i, "text": t, "emotion": s, "speaker_audio": REF_PATH}
                        for i, t, s in zip(ids, texts, styles)])
    return len(jobs)


def write_rare_styles(src: Path, dst: Path, per_style: int) -> dict[str, int]:
    """Copy SFT examples keeping every neutral item and the first `per_style` of each other style."""
    kept, counts = [], {}
    for line in src.read_text(encoding="utf-8").splitlines():
        style = json.loads(line).get("emotion", "neutral")
        counts[style] = counts.get(style, 0) + 1
        if style == "neutral" or counts[style] <= per_style:
            kept.append(line)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_text("".join(x + "\n" for x in kept), encoding="utf-8")
    tmp.replace(dst)  # atomic: a reader never sees half a file
    return {k: (v if k == "neutral" else min(v, per_style)) for k, v in counts.items()}


def load_ref(out: Path) -> tuple[np.ndarray, int]:
    from lpo_speech.audio import load_audio

    return load_audio(Path(out) / REF_PATH, sample_rate=SYNTH_SR), SYNTH_SR


def measure_ceiling(out: str | Path, *, scorer=None, limit: int | None = None, progress: bool = True) -> dict:
    """Judge the piper originals and the decoded gold Codec2 tokens of the test split (ceiling.json)."""
    from lpo_speech.audio import load_audio
    from lpo_speech.tts.scoring import Clip, TtsScorer, summarize

    out = Path(out)
    path = out / "ceiling.json"
    if path.exists() and limit is None:
        return json.loads(path.read_text())
    tok = TtsTokenizer.load(out / "tokenizer.json")
    codec = tok.make_codec()
    rows = [json.loads(line) for line in (out / "test.jsonl").read_text().splitlines()][:limit]
    scorer = scorer or TtsScorer(dnsmos=True, stability=False)
    ref = load_ref(out)
    texts = [r["text"] for r in rows]
    result: dict[str, Any] = {}
    for name in ("piper", "codec2-700C"):
        scored = []
        for s in tqdm(range(0, len(rows), 16), desc=f"ceiling {name}", disable=not progress, dynamic_ncols=True):
            clips = []
            for r in rows[s:s + 16]:
                if name == "piper":
                    wav, sr = load_audio(out / "wavs" / "test" / f"{r['id']}.wav", sample_rate=SYNTH_SR), SYNTH_SR
                else:
                    ids = tok.model_to_codec(r["chosen_tokens"][:-1], where=r["id"])
                    wav, sr = codec.decode(codec.unflatten(ids)), codec.sample_rate
                clips.append(Clip(r["text"], wav, sr))
            scored += scorer.score(clips, ref)
        result[name] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in summarize(scored, texts).items()}
    if limit is None:
        path.write_text(json.dumps(result, indent=2) + "\n")
    return result
