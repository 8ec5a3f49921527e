"""Speaker similarity judge: does the synthesized voice match the prompt/reference speaker?

Uses resemblyzer's bundled GE2E d-vector encoder (256-dim, L2-normalised, 16 kHz, CPU-friendly).
The score is the cosine of the two utterance embeddings; for resemblyzer same-speaker pairs are
typically > 0.75 and different speakers 0.4-0.7, so use it to rank candidates, not as a probability.
A TTS run scores many candidates against the same few references, so reference embeddings are
cached by content hash.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from functools import lru_cache

import numpy as np

from lpo_speech.errors import UserError

SPK_SR = 16000


@lru_cache(maxsize=2)
def _encoder(device: str):
    from resemblyzer import VoiceEncoder  # weights ship inside the wheel

    return VoiceEncoder(device=device, verbose=False)


def _prepare(wav: np.ndarray, sr: int) -> np.ndarray:
    """16 kHz float32, volume-normalised and with long silences trimmed (resemblyzer's own recipe)."""
    from resemblyzer import preprocess_wav

    a = np.asarray(wav, dtype=np.float32).reshape(-1)
    if a.size and int(sr) != SPK_SR:
        import soxr

        a = soxr.resample(a, int(sr), SPK_SR).astype(np.float32)
    if a.size == 0 or not np.any(a):
        return np.zeros(0, dtype=np.float32)
    return preprocess_wav(a).astype(np.float32)


class SpeakerSimilarity:
    """`similarity(wav, sr, ref_wav, ref_sr)` -> cosine in [-1, 1].

    A candidate with no voiced audio left after silence trimming scores 0.0 (worse than any real
    voice) so a broken generation never wins a preference pair; a silent reference is a UserError.
    """

    def __init__(self, device: str = "cpu", max_cached_refs: int = 1024):
        self.device = device
        self.max_cached_refs = int(max_cached_refs)
        self._refs: OrderedDict[str, np.ndarray] = OrderedDict()

    def embed(self, wav: np.ndarray, sr: int) -> np.ndarray | None:
        """Unit-norm 256-dim embedding, or None when the audio holds no voiced speech."""
        a = _prepare(wav, sr)
        if a.size < SPK_SR // 10:  # < 100 ms of speech: nothing to embed
            return None
        return _encoder(self.device).embed_utterance(a).astype(np.float32)

    def reference_embedding(self, ref_wav: np.ndarray, ref_sr: int) -> np.ndarray:
        ref = np.ascontiguousarray(np.asarray(ref_wav, dtype=np.float32).reshape(-1))
        key = hashlib.sha1(ref.tobytes() + str(int(ref_sr)).encode()).hexdigest()
        if key in self._refs:
            self._refs.move_to_end(key)
            return self._refs[key]
        emb = self.embed(ref, ref_sr)
        if emb is None:
            raise UserError("reference audio has no detectable speech", where="speaker reference")
        self._refs[key] = emb
        if len(self._refs) > self.max_cached_refs:
            self._refs.popitem(last=False)
        return emb

    def similarity(self, wav: np.ndarray, sr: int, ref_wav: np.ndarray, ref_sr: int) -> float:
        ref = self.reference_embedding(ref_wav, ref_sr)
        emb = self.embed(wav, sr)
        if emb is None:
            return 0.0
        return float(np.dot(emb, ref) / (np.linalg.norm(emb) * np.linalg.norm(ref) + 1e-9))
