"""`lpo-speech import-tts-lm`: a hub codec-token TTS model (Llasa) as an lpo-speech codec LM.

A hub TTS model keeps its own token ids (lpo_speech.tts.text, "Hub layout"); importing writes them,
read off the checkpoint's tokenizer, into the `tts` table of the model's config.json and saves the
tokenizer beside it, so `eval --wer`, `build-pairs` and `train` (adapter causal_lm) run on the copy
as on any model made by `init-codec-lm`. A layout preset is data: how the model's prompt reads
(chat messages, `{text}` standing for the text), how its speech tokens are spelled, which token ends
the audio, and its default codec.

Llasa (HKUSTAudio/Llasa-1B, -3B, -8B; its README): the chat template over the user message
`Convert the text to speech:<|TEXT_UNDERSTANDING_START|>{text}<|TEXT_UNDERSTANDING_END|>` with the
assistant turn started by `<|SPEECH_GENERATION_START|>` (continue_final_message), speech tokens
`<|s_0|>`..`<|s_65535|>` (XCodec2 codes, contiguous ids), generation ending at
`<|SPEECH_GENERATION_END|>`. Llama-3's template writes today's date into the system turn; the
import renders it once with `date_string` pinned, so a prompt's ids do not change from day to day.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lpo_speech.errors import UserError

LAYOUTS: dict[str, dict[str, Any]] = {
    "llasa": {
        "messages": [
            {"role": "user",
             "content": "Convert the text to speech:<|TEXT_UNDERSTANDING_START|>{text}<|TEXT_UNDERSTANDING_END|>"},
            {"role": "assistant", "content": "<|SPEECH_GENERATION_START|>"},
        ],
        "template_kwargs": {"date_string": "26 Jul 2024"},  # Llama-3's own fallback date
        "speech_token": "<|s_{i}|>",
        "eos_token": "<|SPEECH_GENERATION_END|>",
        "emotion_template": "({emotion}) ",
        "codec": "hf:hf-audio/xcodec2",
        "max_prompt_tokens": 512,
    },
}


def check_source(src: str) -> str:
    """`src` as a local folder or a hub id whose config, weights and tokenizer can be loaded; otherwise
    one line (before any slow load: transformers retries an unreachable hub for about a minute)."""
    from lpo_speech.hub import HubModel, looks_like_hub_id, missing

    local = Path(src).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise UserError("no config.json: not a transformers model folder", where=src)
        return str(local)
    reason = missing(HubModel("", src, "lm")) if looks_like_hub_id(src) else "is not an org/name id"
    if reason is None:
        return src
    raise UserError(f"not a local folder, and as a hub model {reason}; point it at a local copy "
                    "(save_pretrained folder)", where=src)


def speech_block(text_tok, speech_token: str, where: str) -> tuple[int, int]:
    """(id of speech token 0, number of speech tokens); the tokens must be `speech_token` for 0..n-1
    at contiguous ids, because the codec LM maps codec id c to offset + c."""
    pattern = re.compile(re.escape(speech_token).replace(re.escape("{i}"), r"(\d+)") + "$")
    found = {int(m.group(1)): i for t, i in text_tok.get_vocab().items() if (m := pattern.match(t))}
    if not found:
        raise UserError(f"the tokenizer has no speech tokens {speech_token.format(i=0)!r}..", where=where)
    n, offset = len(found), found.get(0)
    if sorted(found) != list(range(n)) or offset is None:
        missing = min(set(range(max(found) + 1)) - set(found))
        raise UserError(f"speech token {speech_token.format(i=missing)!r} is missing", where=where)
    gap = next((k for k in range(n) if found[k] != offset + k), None)
    if gap is not None:
        raise UserError(f"speech tokens are not contiguous: {speech_token.format(i=gap)!r} has id {found[gap]}, "
                        f"expected {offset + gap}", where=where)
    return offset, n


def render_template(text_tok, messages: list[dict], template_kwargs: dict, where: str) -> str:
    """The chat template over `messages` with the last (assistant) turn left open: a string holding
    `{text}` once, which the tokenizer table keeps as its prompt_template."""
    if not getattr(text_tok, "chat_template", None):
        raise UserError("the tokenizer has no chat template (tokenizer_config.json / chat_template.jinja)",
                        where=where)
    rendered = text_tok.apply_chat_template(messages, tokenize=False, continue_final_message=True,
                                            **template_kwargs)
    if rendered.count("{text}") != 1:
        raise UserError("the chat template does not keep the message text as written ('{text}' lost)", where=where)
    return rendered


def token_id(text_tok, token: str, where: str) -> int:
    i = text_tok.convert_tokens_to_ids(token)
    if i is None or i == text_tok.unk_token_id or text_tok.convert_ids_to_tokens(i) != token:
        raise UserError(f"the tokenizer has no token {token!r}", where=where)
    return int(i)


def import_tts_lm(src: str, dst: str | Path, *, layout: str = "llasa", codec: str | None = None,
                  overwrite: bool = False) -> dict[str, Any]:
    """Write `src` (hub id or folder) to `dst` as a codec LM in its own token layout, whole or not at all
    (an existing non-empty `dst` is replaced only with `overwrite`); returns a summary. The hub model it
    came from (`src` itself, or what a local `src` records: lpo_speech.export.folder_origin) goes into
    config.json as `lpo_speech_base_model`."""
    from lpo_speech.export import ORIGIN_KEY, folder_origin
    from lpo_speech.stages import atomic_folder, check_new_folder

    if layout not in LAYOUTS:
        raise UserError(f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)})", where="--layout")
    preset = LAYOUTS[layout]
    dst = Path(dst)
    check_new_folder(dst, overwrite=overwrite)
    src = check_source(src)
    origin = folder_origin(src) if Path(src).exists() else src
    import torch  # noqa: F401  (before ctranslate2)
    from transformers import AutoModelForCausalLM

    from lpo_speech.adapters.causal_lm import load_pretrained
    from lpo_speech.tts.codecs import make_codec
    from lpo_speech.tts.text import HfTtsTokenizer, TtsTokenizer

    text_tok = load_text_tokenizer(src)
    offset, n = speech_block(text_tok, preset["speech_token"], src)
    spec = codec_spec(codec or preset["codec"])
    codec_model = make_codec(spec)
    if codec_model.vocab_size != n:
        raise UserError(f"codec {spec} has {codec_model.vocab_size} codes, the model {n} speech tokens",
                        where="--codec")
    eos = token_id(text_tok, preset["eos_token"], src)
    tok = HfTtsTokenizer(
        prompt_template=render_template(text_tok, preset["messages"], preset["template_kwargs"], src),
        codec=spec, codebook_sizes=list(codec_model.codebook_sizes), codec_offset=offset, eos_id=eos,
        pad_id=text_tok.pad_token_id if text_tok.pad_token_id is not None else eos,
        emotion_template=preset["emotion_template"], speech_token=preset["speech_token"],
        max_prompt_tokens=preset["max_prompt_tokens"])
    lm = load_pretrained(AutoModelForCausalLM, src, dtype="auto")
    rows = lm.get_output_embeddings().weight.shape[0]
    if rows < tok.vocab_size:
        raise UserError(f"model vocabulary {rows} is smaller than its speech tokens need ({tok.vocab_size})",
                        where=src)
    lm.config.tts = tok.to_dict()
    if origin:
        setattr(lm.config, ORIGIN_KEY, origin)
    if lm.config.pad_token_id is None:
        lm.config.pad_token_id = tok.pad_id
    with atomic_folder(dst) as tmp:
        lm.save_pretrained(tmp)
        text_tok.save_pretrained(tmp)
        again = TtsTokenizer.load(tmp)  # the copy must read back and encode a prompt
        probe = again.encode_prompt("Hello.", where=str(dst))
    return {"src": src, "dst": str(dst), "layout": layout, "codec": spec, "codec_offset": offset,
            "speech_tokens": n, "eos_id": eos, "vocab": rows, "prompt_tokens_hello": len(probe), "origin": origin}


def codec_spec(spec: str) -> str:
    """Local codec folders as absolute paths, so the model finds its codec from any working directory;
    a hub codec must be loadable (one line now rather than a minute of retries)."""
    from lpo_speech.hub import HubModel, looks_like_hub_id, missing, require_folder

    kind, _, arg = spec.partition(":")
    if kind != "hf" or not arg:
        return spec
    require_folder(arg, "--codec")
    if Path(arg).expanduser().exists():
        return f"hf:{Path(arg).expanduser().resolve()}"
    if looks_like_hub_id(arg) and (reason := missing(HubModel("--codec", arg, "codec"))):
        raise UserError(f"codec {arg!r} is not a local folder, and as a hub model {reason}", where="--codec")
    return spec


def load_text_tokenizer(src: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load its tokenizer: {str(e).splitlines()[0]}", where=src) from None
