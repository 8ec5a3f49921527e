"""FunASR emotion2vec as an emotion scorer (lpo_speech.judges.emotion's `EmotionScorer`) for real recipes.

    scorer = Emotion2vecScorer("iic/emotion2vec_plus_large")      # or a local model dir
    scorer.labels          # ("angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unk")
    scorer.probabilities(wavs, sr, texts) -> [N, 9] array, rows sum to 1

The model is FunASR's `AutoModel(model=..., disable_update=True)` called as
`generate(wavs, granularity="utterance", extract_embedding=False)`, which returns one
`{"key", "labels", "scores"}` per clip. The released models name their labels bilingually
("生气/angry", ..., and a plain "<unk>"); `labels` keeps the model's order and takes the English part
(after the last "/", angle brackets dropped: "<unk>" -> "unk"). Labels the model marks "unuse..." are
left out, as FunASR itself does. emotion2vec is audio-only: `texts` is ignored.

Like the FunASR ASR judge (lpo_speech.judges.asr), the model is loaded lazily (on the first
`probabilities` or `labels`) and cached per process keyed by model + options, torch's thread count is
left as it was, and a model that cannot be loaded is a one-line UserError. `options` are extra
AutoModel keyword arguments (plain JSON values), e.g. `hub: hf`, or with `model: Emotion2vec`, an
inline `model_conf` + `tokenizer`/`tokenizer_conf` that builds a model without a checkpoint (the
offline test's tiny random model).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any

import numpy as np

from lpo_speech.errors import UserError
from lpo_speech.judges.asr import load_error, refuse_file, to_16k

SR = 16000


def english_label(label: str) -> str:
    """"生气/angry" -> "angry", "<unk>" -> "unk", "happy" -> "happy"."""
    return label.rsplit("/", 1)[-1].strip().strip("<>").strip()


def _looks_local(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or os.path.isabs(model)


@lru_cache(maxsize=2)
def _emotion2vec(model: str, options_json: str):
    import torch
    from funasr import AutoModel

    path = os.path.expanduser(model)
    if _looks_local(model) and not os.path.exists(path):
        # Without this FunASR tries the path as a hub name (network retries), then fails obscurely.
        raise UserError("cannot load emotion2vec model: no such local model directory", where=model)
    options = json.loads(options_json)
    # FunASR sets torch's global thread count to `ncpu` (default 4); keep the process's setting.
    options.setdefault("ncpu", torch.get_num_threads())
    options.setdefault("log_level", "ERROR")
    try:
        m = AutoModel(model=path, disable_update=True, disable_pbar=True, **options)
    except Exception as e:
        raise load_error("emotion2vec model", model, e) from None
    tokenizer = m.kwargs.get("tokenizer")
    raw = [str(t) for t in getattr(tokenizer, "token_list", None) or []]
    raw = [t for t in raw if not t.startswith("unuse")]
    if getattr(m.model, "proj", None) is None or not raw:
        raise UserError("cannot load emotion2vec model: it has no emotion classification head or label list "
                        "(iic/emotion2vec_base only extracts features; use an emotion2vec_plus_* model)",
                        where=model)
    labels = tuple(english_label(t) for t in raw)
    if len(set(labels)) != len(labels) or "" in labels:
        raise UserError(f"cannot load emotion2vec model: its labels {raw} do not map to distinct English names",
                        where=model)
    # The conv feature encoder needs at least one receptive field of samples (400 = 25 ms for the
    # released models); shorter clips are zero-padded to it.
    layers = getattr(m.model.modality_encoders["AUDIO"], "feature_enc_layers", [(0, 400, 1)])
    field, jump = 1, 1
    for _, kernel, stride in layers:
        field, jump = field + (kernel - 1) * jump, jump * stride
    return m, tuple(raw), labels, field


class Emotion2vecScorer:
    """emotion2vec (FunASR) utterance-level emotion probabilities. `model` is a hub name
    ("iic/emotion2vec_plus_large", default hub ModelScope; add `hub="hf"` for Hugging Face) or a local
    model dir. Empty audio gets a uniform row (the model cannot score nothing; `emotion_scores` never
    sends it empty clips anyway); clips shorter than 25 ms are zero-padded."""

    def __init__(self, model: str, device: str = "cpu", **options: Any):
        refuse_file("emotion2vec model", model)
        self.model = str(model)
        self.options = {"device": device, **options}
        try:
            self._key = json.dumps(self.options, sort_keys=True)
        except TypeError as e:
            raise UserError(f"emotion2vec options must be plain JSON values: {e}", where=self.model) from None

    def _load(self):
        return _emotion2vec(self.model, self._key)

    @property
    def labels(self) -> tuple[str, ...]:
        """English label names in the model's order (loads the model on first use)."""
        return self._load()[2]

    def probabilities(self, wavs: list[np.ndarray], sr: int, texts: list[str] | None = None) -> np.ndarray:
        m, raw, labels, min_len = self._load()
        clips = to_16k(wavs, sr, "emotion input")
        out = np.full((len(clips), len(labels)), 1.0 / len(labels))
        todo = [i for i, a in enumerate(clips) if a.size]
        if not todo:
            return out
        batch = [np.pad(clips[i], (0, max(0, min_len - clips[i].size))) for i in todo]
        # Results come back in input order (FunASR gives every clip of one call the same random key).
        res = m.generate(input=batch, granularity="utterance", extract_embedding=False, disable_pbar=True)
        if len(res) != len(todo):
            raise RuntimeError(f"emotion2vec returned {len(res)} results for {len(todo)} inputs")
        for i, r in zip(todo, res):
            if tuple(r.get("labels", ())) != raw or len(r.get("scores", ())) != len(raw):
                raise RuntimeError(f"emotion2vec returned labels {r.get('labels')} with {len(r.get('scores', ()))} "
                                   f"scores, expected {list(raw)}")
            p = np.clip(np.asarray(r["scores"], dtype=np.float64), 0.0, None)
            out[i] = p / p.sum() if p.sum() > 0 else 1.0 / len(labels)
        return out
