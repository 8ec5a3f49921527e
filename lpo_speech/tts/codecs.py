"""Audio codecs behind one small interface, so the codec LM never cares which codec it runs on.

Token layout (the contract the codec LM relies on)
--------------------------------------------------
`encode` turns audio into codes of shape [frames, num_codebooks]; column k ("slot k") holds integers
in [0, codebook_sizes[k]). The LM sees ONE flat stream, frame by frame and slot by slot, where slot
k's code c becomes id `offset_k + c` with `offset_k = sum(codebook_sizes[:k])`. The ranges
`slot_ranges[k] = (offset_k, offset_k + codebook_sizes[k])` (half-open) are therefore disjoint and
`vocab_size` is the FLATTENED vocabulary, `sum(codebook_sizes)`. Constrained decoding masks the logits
of position t to `slot_ranges[t % num_codebooks]`. Any id outside its slot's range is a UserError.

Codec2 (`Codec2Codec`, 8 kHz, via pycodec2)
-------------------------------------------
Each codec2 frame is a fixed number of bits, packed MSB first into bytes. Slots are bit fields:

* 700C (28 bits / 40 ms): the field layout of `codec2_encode_700c` in codec2.c, which packs, in this
  order, spectral VQ stage 1 (9 bits), VQ stage 2 (9), energy (4), log Wo + voicing (6; index 0 =
  unvoiced), then 4 zero padding bits. Slots keep that bit order: sizes (512, 512, 16, 64), 25 frames/s
  x 4 = 100 tokens/s, vocab_size 1104. A figure of 1152 is NOT the codec's: as fields it would need
  512+512+64+64 (a 6-bit energy, 30 bits); it is 1104 rounded up to a multiple of 64 (18 x 64), i.e.
  a padded LM vocabulary. Verified against libcodec2 itself in tests/tts/test_codecs.py.
* other modes: one slot per byte of the packed frame (the last slot is narrower when the frame is not a
  whole number of bytes, e.g. 1300 = 52 bits -> 6 x 256 + 1 x 16). The fields of these modes cross
  byte boundaries, so byte slots are a plain, lossless re-packing rather than parameters.

Neural codecs (`HFCodec`, transformers EnCodec / DAC / Mimi / X-codec / XCodec2)
--------------------------------------------------------------------------------
Residual VQ codecs: one slot per quantizer, all of size `codebook_size`. XCodec2 (Llasa's codec,
16 kHz, 50 frames/s) has one finite-scalar-quantized codebook of prod(quantization_levels) codes
(65,536), so one slot. Its encoder also takes a log-mel input (80 Kaldi fbank bins, two frames
stacked) for its semantic branch; we compute it with SeamlessM4TFeatureExtractor (numpy), as the
original XCodec2 code does, because transformers' Xcodec2FeatureExtractor needs torchaudio.

Hierarchical codecs (`SnacCodec`, SNAC through the `snac` package: Orpheus's codec)
-----------------------------------------------------------------------------------
SNAC's codebooks run at different rates: with `vq_strides` [4, 2, 1] (snac_24khz) one coarse frame
holds 1 code of level 0, 2 of level 1 and 4 of level 2. A frame is written as 7 slots in Orpheus's
order, depth first through that hierarchy: (level 0, code 0), (1, 0), (2, 0), (2, 1), (1, 1), (2, 2),
(2, 3); slot p's code c becomes `p * codebook_size + c`, as Orpheus's `<custom_token_...>` ids do.
`codebook_levels` names each slot's level, so a log-prob can weigh the levels equally
(`model.codebook_reduction: level`, lpo_speech.logps) rather than letting the 4 fine codes of a
frame outweigh its one coarse code.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lpo_speech.errors import UserError
from lpo_speech.optional import require
from lpo_speech.tts.codec2_rng import reseed


@runtime_checkable
class Codec(Protocol):
    """What the TTS track needs from a codec (see the module docstring for the token layout)."""

    name: str
    sample_rate: int  # decode() output rate
    frame_rate: float  # code frames per second
    codebook_sizes: tuple[int, ...]  # per-slot vocabulary

    @property
    def num_codebooks(self) -> int: ...
    @property
    def vocab_size(self) -> int: ...  # flattened: sum(codebook_sizes)
    @property
    def slot_ranges(self) -> list[tuple[int, int]]: ...
    def encode(self, wav: np.ndarray, sr: int) -> np.ndarray: ...  # int64 [frames, num_codebooks]
    def decode(self, codes: np.ndarray) -> np.ndarray: ...  # float32 [samples] at sample_rate
    def flatten(self, codes: np.ndarray) -> list[int]: ...
    def unflatten(self, ids: list[int] | np.ndarray) -> np.ndarray: ...


class SlotCodec:
    """Shared slot bookkeeping: ranges, flatten/unflatten and validation of user-supplied codes."""

    name: str = "codec"
    sample_rate: int
    frame_rate: float
    codebook_sizes: tuple[int, ...]

    @property
    def num_codebooks(self) -> int:
        return len(self.codebook_sizes)

    @property
    def vocab_size(self) -> int:
        return int(sum(self.codebook_sizes))

    @property
    def slot_ranges(self) -> list[tuple[int, int]]:
        offsets = np.concatenate([[0], np.cumsum(self.codebook_sizes)]).astype(int)
        return [(int(offsets[k]), int(offsets[k + 1])) for k in range(self.num_codebooks)]

    def check_codes(self, codes: np.ndarray | list) -> np.ndarray:
        """Return codes as int64 [frames, K]; a wrong shape or an out-of-range code is a UserError."""
        arr = np.asarray(codes)
        if arr.ndim != 2 or arr.shape[1] != self.num_codebooks:
            raise UserError(f"codes must have shape [frames, {self.num_codebooks}], got {list(arr.shape)}",
                            where=self.name)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise UserError(f"codes must be integers, got dtype {arr.dtype}", where=self.name)
        arr = arr.astype(np.int64, copy=False)
        sizes = np.asarray(self.codebook_sizes)
        bad = np.argwhere((arr < 0) | (arr >= sizes[None, :]))
        if len(bad):
            f, k = (int(x) for x in bad[0])
            raise UserError(f"code {int(arr[f, k])} at frame {f} is outside slot {k}'s range "
                            f"[0, {self.codebook_sizes[k]})", where=self.name)
        return arr

    def flatten(self, codes: np.ndarray | list) -> list[int]:
        """[frames, K] codes -> one id stream; slot k's ids lie in slot_ranges[k]."""
        arr = self.check_codes(codes)
        offsets = np.asarray([lo for lo, _ in self.slot_ranges], dtype=np.int64)
        return (arr + offsets[None, :]).reshape(-1).tolist()

    def unflatten(self, ids: list[int] | np.ndarray) -> np.ndarray:
        """Inverse of flatten; ids must be whole frames, each id inside its position's slot range."""
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        k_count = self.num_codebooks
        if arr.size % k_count:
            raise UserError(f"{arr.size} token ids is not a whole number of {k_count}-slot frames",
                            where=self.name)
        ranges = np.asarray(self.slot_ranges, dtype=np.int64)
        slots = np.arange(arr.size) % k_count
        lo, hi = ranges[slots, 0], ranges[slots, 1]
        bad = np.flatnonzero((arr < lo) | (arr >= hi))
        if bad.size:
            i = int(bad[0])
            raise UserError(f"token id {int(arr[i])} at position {i} is not valid for slot {slots[i]} "
                            f"(expected [{lo[i]}, {hi[i]}))", where=self.name)
        return (arr - lo).reshape(-1, k_count)


def _mono_float(wav: Any, where: str) -> np.ndarray:
    """Mono float32 1-D array from what callers hand us; [1, T]/[T, 1] are accepted as mono."""
    arr = np.asarray(wav, dtype=np.float32)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise UserError(f"expected mono audio (1-D samples), got shape {list(arr.shape)}", where=where)
    return arr


def _resample(wav: np.ndarray, sr: int, target: int) -> np.ndarray:
    if int(sr) == int(target) or wav.size == 0:
        return wav
    soxr = require("soxr", needed_for=f"resampling audio from {int(sr)} Hz to the codec's {int(target)} Hz")
    return soxr.resample(wav, int(sr), int(target)).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------- codec2

_C2_BITRATE = {"700C": 700, "1200": 1200, "1300": 1300, "1400": 1400, "1600": 1600, "2400": 2400,
               "3200": 3200}
# (samples, bits) per frame of each mode, as libcodec2 reports them (tests/tts/test_codecs.py checks the
# table against pycodec2): the codec's layout and frame rate are known without the library, which only
# encoding and decoding need (a machine without pycodec2 can still sample a Codec2 model's tokens).
_C2_FRAME = {"700C": (320, 28), "1200": (320, 48), "1300": (320, 52), "1400": (320, 56), "1600": (320, 64),
             "2400": (160, 48), "3200": (160, 64)}
# Source order of codec2_encode_700c's pack_natural_or_gray calls (natural binary, not Gray).
_C2_700C_FIELDS = (("vq1", 9), ("vq2", 9), ("energy", 4), ("wo_voicing", 6))


class Codec2Codec(SlotCodec):
    """Codec2 through pycodec2. Low-rate, CPU-only and weight-free: the codec for small TTS runs.

    pycodec2's `Codec2.encode/decode` process exactly ONE frame per call (even when handed more:
    the rest of its output buffer is left zero/uninitialised), so we loop over frames ourselves.
    Each encode/decode call uses a fresh codec2 state, and decode first reseeds libcodec2's
    process-wide phase RNG (lpo_speech.tts.codec2_rng), so results do not depend on earlier calls.
    """

    sample_rate = 8000

    def __init__(self, mode: str | int = "700C"):
        key = str(mode).upper()
        key = "700C" if key in ("700", "700C") else key
        if key not in _C2_BITRATE:
            raise UserError(f"unknown codec2 mode {mode!r}; expected one of {sorted(_C2_BITRATE)}",
                            where="codec2")
        self.mode, self.name = key, f"codec2-{key}"
        self.samples_per_frame, self.bits_per_frame = _C2_FRAME[key]
        self.bytes_per_frame = -(-self.bits_per_frame // 8)
        self.frame_rate = self.sample_rate / self.samples_per_frame
        if key == "700C":
            self.field_names = tuple(n for n, _ in _C2_700C_FIELDS)
            widths = [w for _, w in _C2_700C_FIELDS]
        else:
            full, rest = divmod(self.bits_per_frame, 8)
            widths = [8] * full + ([rest] if rest else [])
            self.field_names = tuple(f"byte{i}" for i in range(len(widths)))
        assert sum(widths) == self.bits_per_frame, (widths, self.bits_per_frame)
        self.field_widths = tuple(widths)
        self.codebook_sizes = tuple(1 << w for w in widths)

    def _library(self):
        return require("pycodec2", needed_for=f"encoding and decoding Codec2 ({self.name})")

    def _state(self):
        return self._library().Codec2(_C2_BITRATE[self.mode])

    def encode(self, wav: np.ndarray, sr: int) -> np.ndarray:
        """Audio at any rate -> int64 codes [ceil(seconds * frame_rate), K] (end zero-padded)."""
        x = _resample(_mono_float(wav, self.name), sr, self.sample_rate)
        n = -(-x.size // self.samples_per_frame)
        pcm = np.zeros(n * self.samples_per_frame, dtype=np.int16)
        pcm[: x.size] = np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)
        c2 = self._state()
        packed = np.zeros((n, self.bytes_per_frame), dtype=np.uint8)
        for i, frame in enumerate(pcm.reshape(n, self.samples_per_frame)):
            packed[i] = np.frombuffer(c2.encode(np.ascontiguousarray(frame)), dtype=np.uint8)
        bits = np.unpackbits(packed, axis=1)[:, : self.bits_per_frame].astype(np.int64)
        codes, start = np.zeros((n, self.num_codebooks), dtype=np.int64), 0
        for k, w in enumerate(self.field_widths):
            codes[:, k] = bits[:, start : start + w] @ (1 << np.arange(w - 1, -1, -1))
            start += w
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes [frames, K] -> float32 audio at 8 kHz, frames * samples_per_frame samples."""
        arr = self.check_codes(codes)
        self._library()  # a missing pycodec2 is one line, before reseed() loads it
        bits = np.zeros((arr.shape[0], self.bytes_per_frame * 8), dtype=np.uint8)
        start = 0
        for k, w in enumerate(self.field_widths):
            bits[:, start : start + w] = (arr[:, k : k + 1] >> np.arange(w - 1, -1, -1)) & 1
            start += w
        packed = np.packbits(bits, axis=1)
        reseed()  # the same codes give the same audio, whatever this process decoded before
        c2 = self._state()
        out = [c2.decode(row.tobytes())[: self.samples_per_frame] for row in packed]
        pcm = np.concatenate(out) if out else np.zeros(0, dtype=np.int16)
        return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


# ------------------------------------------------------------------------------ transformers codecs

_HF_TYPES = ("encodec", "dac", "mimi", "xcodec", "xcodec2")


@lru_cache(maxsize=4)
def _load_hf_model(path: str, device: str):
    """One loaded model per (path, device) per process: codec weights are large and reused."""
    from transformers import AutoConfig, AutoModel

    local = Path(path).expanduser()
    if not local.exists() and path.startswith(("/", ".", "~")):
        raise UserError("no such codec directory", where=str(path))
    if local.exists() and not (local / "config.json").is_file():
        raise UserError("no config.json: not a transformers codec checkpoint", where=str(path))
    try:
        config = AutoConfig.from_pretrained(str(local) if local.exists() else path)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load codec config: {str(e).splitlines()[0]}", where=str(path)) from None
    if config.model_type not in _HF_TYPES:
        raise UserError(f"model_type {config.model_type!r} is not a supported codec {_HF_TYPES}",
                        where=str(path))
    model = AutoModel.from_pretrained(str(local) if local.exists() else path)
    return model.to(device).eval()


class HFCodec(SlotCodec):
    """EnCodec / DAC / Mimi / X-codec / XCodec2 from transformers (a local directory or, with hub access,
    a hub id).

    `num_codebooks` picks how many residual quantizers to keep (default: all the checkpoint has); for
    EnCodec and X-codec it is mapped to the matching `target_bandwidths` entry, or pass `bandwidth`.
    Input audio is resampled to the codec rate and zero-padded to whole frames.
    """

    def __init__(self, path: str, *, num_codebooks: int | None = None, bandwidth: float | None = None,
                 device: str = "cpu"):
        self.model = _load_hf_model(str(path), device)
        cfg = self.model.config
        self.kind, self.name, self.device = cfg.model_type, f"{cfg.model_type}:{path}", device
        self.sample_rate = int(getattr(cfg, "sampling_rate", None) or cfg.sample_rate)
        if self.kind == "xcodec2":  # its config names the hop, not the frame rate
            self.frame_rate = self.sample_rate / int(cfg.hop_length)
        else:
            self.frame_rate = float(cfg.frame_rate)
        self.hop_length = int(round(self.sample_rate / self.frame_rate))
        self.bandwidth: float | None = None
        if self.kind == "encodec" and (cfg.chunk_length_s is not None or cfg.normalize):
            raise UserError("chunked/normalised EnCodec (48 kHz) needs per-chunk scales that a code "
                            "matrix cannot carry; use a 24 kHz EnCodec", where=str(path))
        if self.kind in ("encodec", "xcodec"):
            nq_for = {float(b): self.model.quantizer.get_num_quantizers_for_bandwidth(b)
                      for b in cfg.target_bandwidths}
            if bandwidth is None and num_codebooks is not None:
                bandwidth = next((b for b, q in nq_for.items() if q == num_codebooks), None)
                if bandwidth is None:
                    raise UserError(f"num_codebooks={num_codebooks} matches no bandwidth; available "
                                    f"{sorted(set(nq_for.values()))}", where=str(path))
            bandwidth = float(max(nq_for) if bandwidth is None else bandwidth)
            if bandwidth not in nq_for:
                raise UserError(f"bandwidth {bandwidth} not in {sorted(nq_for)}", where=str(path))
            self.bandwidth, k = bandwidth, nq_for[bandwidth]
        elif self.kind == "xcodec2":
            if num_codebooks not in (None, 1) or bandwidth is not None:
                raise UserError("XCodec2 has one codebook: no num_codebooks (other than 1) or bandwidth",
                                where=str(path))
            self.codebook_sizes = (int(np.prod(cfg.quantization_levels)),)
            self._features = _xcodec2_features()
            return
        else:
            total = int(cfg.n_codebooks if self.kind == "dac" else cfg.num_quantizers)
            lowest = int(getattr(cfg, "num_semantic_quantizers", 0) or 1)
            k = total if num_codebooks is None else int(num_codebooks)
            if not lowest <= k <= total:
                raise UserError(f"num_codebooks={k} outside [{lowest}, {total}]", where=str(path))
        self.codebook_sizes = (int(cfg.codebook_size),) * int(k)

    def encode(self, wav: np.ndarray, sr: int) -> np.ndarray:
        """Audio at any rate -> int64 codes [frames, K]."""
        import torch

        x = _resample(_mono_float(wav, self.name), sr, self.sample_rate)
        if self.kind == "xcodec2":
            return self._encode_xcodec2(x)
        n = max(1, -(-x.size // self.hop_length)) * self.hop_length
        x = np.pad(x, (0, n - x.size))
        t = torch.from_numpy(x).to(self.device)[None, None, :]
        m = self.model
        with torch.inference_mode():
            if self.kind == "encodec":
                codes = m.encode(t, bandwidth=self.bandwidth, return_dict=True).audio_codes[0]
            elif self.kind == "xcodec":
                codes = m.encode(t, bandwidth=self.bandwidth, return_dict=True).audio_codes
            elif self.kind == "dac":
                codes = m.encode(t, n_quantizers=self.num_codebooks, return_dict=True).audio_codes
            else:
                codes = m.encode(t, num_quantizers=self.num_codebooks, return_dict=True).audio_codes
        return codes[0, : self.num_codebooks].T.cpu().numpy().astype(np.int64)

    def _encode_xcodec2(self, x: np.ndarray) -> np.ndarray:
        """XCodec2's own padding: up to the next whole frame, always by at least one sample (so
        len // hop + 1 frames), and the fbank input padded by half a hop on each side."""
        import torch

        hop = self.hop_length
        x = np.pad(x, (0, hop - x.size % hop))
        feats = self._features(np.pad(x, (hop // 2, hop // 2)), sampling_rate=self.sample_rate,
                               return_tensors="pt", return_attention_mask=False)["input_features"]
        t = torch.from_numpy(x).to(self.device)[None, None, :]
        with torch.inference_mode():
            codes = self.model.encode(t, input_features=feats.to(self.device), return_dict=True).audio_codes
        return codes[0].T.cpu().numpy().astype(np.int64)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes [frames, K] -> float32 audio at sample_rate."""
        import torch

        arr = self.check_codes(codes)
        if arr.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        t = torch.from_numpy(np.ascontiguousarray(arr.T)).to(self.device)[None]
        with torch.inference_mode():
            if self.kind == "encodec":
                out = self.model.decode(t[None], [None], return_dict=True).audio_values
            elif self.kind in ("dac", "xcodec2"):
                out = self.model.decode(audio_codes=t, return_dict=True).audio_values
            else:
                out = self.model.decode(t, return_dict=True).audio_values
        return out.reshape(-1).float().cpu().numpy().astype(np.float32)


# ------------------------------------------------------------------------------------------- SNAC

def frame_order(vq_strides: list[int] | tuple[int, ...]) -> list[tuple[int, int]]:
    """(level, index within the frame) of each slot of one coarse frame, depth first (Orpheus's order).
    Strides must fall by a whole factor per level, ending at 1 (e.g. [4, 2, 1])."""
    strides = [int(s) for s in vq_strides]
    if strides[-1] != 1 or any(a % b or a <= b for a, b in zip(strides, strides[1:])):
        raise UserError(f"vq_strides {strides}: each must divide the one before it, ending at 1", where="snac")
    per = [strides[0] // s for s in strides]  # codes of each level in one coarse frame
    order: list[tuple[int, int]] = []

    def visit(level: int, j: int) -> None:
        order.append((level, j))
        if level + 1 < len(per):
            r = per[level + 1] // per[level]
            for c in range(r):
                visit(level + 1, j * r + c)

    visit(0, 0)
    return order


@lru_cache(maxsize=4)
def _load_snac(path: str, device: str):
    try:
        from snac import SNAC
    except ImportError:
        raise UserError("the SNAC codec needs the `snac` package (pip install snac)", where=path) from None
    local = Path(path).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise UserError("no config.json: not a SNAC checkpoint", where=path)
    try:
        model = SNAC.from_pretrained(str(local) if local.exists() else path)
    except Exception as e:  # a missing file, a bad state dict, no hub access
        raise UserError(f"cannot load SNAC codec: {str(e).splitlines()[0] if str(e) else e!r}", where=path) from None
    return model.to(device).eval()


class SnacCodec(SlotCodec):
    """SNAC (`snac:PATH_OR_HUB_ID`, e.g. hubertsiuzdak/snac_24khz): hierarchical frames as 7 slots."""

    def __init__(self, path: str, device: str = "cpu"):
        self.path, self.device = str(path), str(device)
        self.model = _load_snac(self.path, self.device)
        self.name = f"snac:{Path(self.path).name}"
        self.sample_rate = int(self.model.sampling_rate)
        self.order = frame_order(self.model.vq_strides)
        self.per_frame = [sum(1 for lv, _ in self.order if lv == level) for level in range(len(self.model.vq_strides))]
        self.codebook_sizes = (int(self.model.codebook_size),) * len(self.order)
        self.codebook_levels = tuple(level for level, _ in self.order)
        self.frame_rate = self.sample_rate / (int(self.model.hop_length) * int(self.model.vq_strides[0]))

    def encode(self, wav: np.ndarray, sr: int) -> np.ndarray:
        """Audio at any rate -> int64 codes [coarse frames, 7] (SNAC pads the end to whole frames)."""
        import torch

        x = _resample(_mono_float(wav, self.name), sr, self.sample_rate)
        with torch.no_grad():
            codes = [c[0].cpu().numpy() for c in self.model.encode(torch.from_numpy(x)[None, None].to(self.device))]
        n = codes[0].shape[0]
        out = np.zeros((n, len(self.order)), dtype=np.int64)
        for p, (level, j) in enumerate(self.order):
            out[:, p] = codes[level].reshape(n, self.per_frame[level])[:, j]
        return out

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes [frames, 7] -> float32 audio at the codec's rate."""
        import torch

        arr = self.check_codes(codes)
        n = arr.shape[0]
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        levels = [np.zeros((n, k), dtype=np.int64) for k in self.per_frame]
        for p, (level, j) in enumerate(self.order):
            levels[level][:, j] = arr[:, p]
        with torch.no_grad():
            wav = self.model.decode([torch.from_numpy(lv.reshape(1, -1)).to(self.device) for lv in levels])
        return wav.reshape(-1).float().cpu().numpy()


def _xcodec2_features():
    """XCodec2's semantic-branch input: 80 Kaldi log-mel bins, normalised per bin, two frames stacked."""
    from transformers import SeamlessM4TFeatureExtractor

    return SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, sampling_rate=16000, padding_value=1.0,
                                       stride=2)


def make_codec(spec: str | dict, device: str | None = None) -> Codec:
    """`"codec2:700C"`, `{"type": "codec2", "mode": "3200"}`, `{"type": "hf", "path": ...}` or `"snac:PATH"`.
    `device`: where a neural codec runs unless its spec names one (stages pass the judge device);
    Codec2 is a C library and always runs on the CPU."""
    if isinstance(spec, str):
        kind, _, arg = spec.partition(":")
        spec = {"type": kind, ("mode" if kind == "codec2" else "path"): arg} if arg else {"type": kind}
    spec = dict(spec)
    kind = spec.pop("type", None)
    cls = {"codec2": Codec2Codec, "hf": HFCodec, "snac": SnacCodec}.get(kind)
    if cls is None:
        raise UserError(f"unknown codec type {kind!r}; expected 'codec2', 'hf' or 'snac'", where="codec.type")
    if cls in (HFCodec, SnacCodec) and device is not None:
        spec.setdefault("device", str(device))
    try:
        return cls(**spec)
    except TypeError as e:
        raise UserError(f"bad options for {kind} codec: {e}", where="codec") from None
