"""Non-intrusive quality judge: DNSMOS (Microsoft DNS challenge MOS predictor) via `speechmos`.

No reference audio is needed, which is what a TTS reward needs. speechmos ships the ONNX models
inside the wheel and keeps one loaded instance per process. It scores 9.01 s windows at 1 s hops
and returns (MOS scale 1-5):
  ovrl - overall quality, sig - speech signal quality, bak - background noise (higher = cleaner),
  p808 - ITU-T P.808 overall MOS from a separate model.
"""

from __future__ import annotations

import numpy as np

DNSMOS_SR = 16000
KEYS = ("ovrl", "sig", "bak", "p808")


def dnsmos(wav: np.ndarray, sr: int, *, personalized: bool = False,
           exact: bool = False) -> dict[str, float]:
    """DNSMOS scores of one clip: {"ovrl", "sig", "bak", "p808"}.

    Empty or all-zero audio returns NaN for every key (speechmos would loop forever on an empty
    clip, and silence has no speech quality to rate). `personalized=True` uses the pDNSMOS model,
    which also penalises interfering talkers.

    Short clips: the official DNSMOS script (and speechmos) doubles a clip until it is >= 9.01 s and
    averages every 1 s hop, e.g. 6 windows for a 4 s clip. With `exact=False` (default) a clip
    shorter than 10 s is instead tiled to exactly 10 s = one window: ~6x faster, and within ~0.05
    MOS of the official number on our test clips. Use `exact=True` for paper-comparable numbers.
    """
    from speechmos import dnsmos as _dnsmos

    a = np.asarray(wav, dtype=np.float32).reshape(-1)
    if a.size and int(sr) != DNSMOS_SR:
        import soxr

        a = soxr.resample(a, int(sr), DNSMOS_SR).astype(np.float32)
    if a.size < DNSMOS_SR // 10 or not np.any(a):
        return {k: float("nan") for k in KEYS}
    a = np.clip(a, -1.0, 1.0)  # speechmos rejects samples outside [-1, 1]
    if not exact and a.size < 10 * DNSMOS_SR:
        a = np.resize(a, 10 * DNSMOS_SR)  # periodic tiling: exactly one 9.01 s window
    res = _dnsmos.run(a, sr=DNSMOS_SR, model_type="dnsmos_personalized" if personalized else "dnsmos")
    return {k: float(res[f"{k}_mos"]) for k in KEYS}
