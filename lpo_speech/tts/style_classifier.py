"""Train the offline world's style classifier (lpo_speech.judges.emotion.ProsodyStyleClassifier).

Training audio: the world's styled train items and as many neutral ones as the largest style has
(balanced), each the gold Codec2 tokens decoded, i.e. exactly the kind of audio the codec LM makes.
Held-out audio: `test_style.jsonl`, the test sentences (never trained on) in balanced styles. The
classifier is refused (one-line error, nothing written) below `min_accuracy` held-out: a scorer that
cannot tell the styles apart on ground truth cannot rank candidates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lpo_speech.errors import UserError


def _features(rows, tok, codec, desc: str, progress: bool) -> tuple[np.ndarray, list[str]]:
    from lpo_speech.judges.emotion import prosody_features

    feats, labels = [], []
    for r in tqdm(rows, desc=desc, unit="utt", disable=not progress, dynamic_ncols=True):
        ids = r.chosen_tokens[:-1] if r.chosen_tokens and r.chosen_tokens[-1] == tok.eos_id else r.chosen_tokens
        wav = codec.decode(codec.unflatten(tok.model_to_codec(ids, where=r.id)))
        feats.append(prosody_features(wav, codec.sample_rate, r.extra["text"]))
        labels.append(r.extra["emotion"])
    return np.stack(feats), labels


def train_style_classifier(data_dir: str | Path, out: str | Path, *, min_accuracy: float = 0.9, c: float = 1.0,
                           progress: bool = True) -> dict[str, Any]:
    from lpo_speech.judges.emotion import ProsodyStyleClassifier
    from lpo_speech.records import PreferencePair, load_jsonl
    from lpo_speech.tts.text import TtsTokenizer

    data = Path(data_dir)
    for name in ("tokenizer.json", "train.jsonl", "test_style.jsonl"):
        if not (data / name).is_file():
            raise UserError(f"no {name}: make the world first (lpo-speech make-tts-data --style-share ...)",
                            where=str(data))
    tok = TtsTokenizer.load(data / "tokenizer.json")
    codec = tok.make_codec()
    train = load_jsonl(data / "train.jsonl", PreferencePair)
    for i, r in enumerate(train, 1):
        if "emotion" not in r.extra or "text" not in r.extra:
            raise UserError("field 'emotion': missing (a world made before styles; make it again)",
                            where=f"{data / 'train.jsonl'}:{i}")
    by: dict[str, list] = {}
    for r in train:
        by.setdefault(r.extra["emotion"], []).append(r)
    styled = {k: v for k, v in by.items() if k != "neutral"}
    if not styled:
        raise UserError("no styled train items (make the world with --style-share > 0)", where=str(data))
    per = max(len(v) for v in styled.values())
    chosen = [r for v in styled.values() for r in v] + by.get("neutral", [])[:per]
    x, y = _features(chosen, tok, codec, "style features (train)", progress)
    clf = ProsodyStyleClassifier.fit(x, y, c=c)
    held = load_jsonl(data / "test_style.jsonl", PreferencePair)
    hx, hy = _features(held, tok, codec, "style features (held-out)", progress)
    pred = [clf.labels[i] for i in clf.predict_features(hx).argmax(1)]
    acc = float(np.mean([p == t for p, t in zip(pred, hy)]))
    train_acc = float(np.mean([clf.labels[i] == t for i, t in zip(clf.predict_features(x).argmax(1), y)]))
    confusion = {t: {p: sum(1 for a, b in zip(hy, pred) if a == t and b == p) for p in clf.labels} for t in clf.labels}
    clf.info = {"data": str(data), "train_counts": {k: sum(1 for v in y if v == k) for k in clf.labels},
                "train_accuracy": round(train_acc, 4), "heldout_accuracy": round(acc, 4), "heldout_n": len(hy),
                "heldout_confusion": confusion, "C": c}
    if acc < min_accuracy:
        raise UserError(f"held-out accuracy {acc:.3f} is below {min_accuracy} (confusion {confusion}): "
                        "the styles are not told apart; nothing written", where=str(out))
    clf.save(out)
    return clf.info
