"""The codec LM: a small transformers Llama over the flat vocabulary of lpo_speech.tts.text (or an
imported hub model, lpo_speech.tts.hub_lm, in its own layout).

`init_codec_lm` writes a randomly initialised model (safetensors + config.json) whose config
carries the tokenizer table as `tts`; training (`lpo-speech train`, adapter causal_lm) saves the
config back unchanged, so every trained model knows its own prompt symbols and codec.

Sizes (parameters with the 1,360-id Codec2 700C vocabulary, tied embeddings):
  tiny   d=256, 4 layers, 4 heads (2 KV), MLP 704   ~3.6M  (the offline world's default)
  small  d=384, 6 layers, 6 heads (2 KV), MLP 1024  ~10M
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lpo_speech.errors import UserError
from lpo_speech.tts.text import TtsTokenizer

SIZES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 704},
    "small": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 6, "num_key_value_heads": 2,
              "intermediate_size": 1024},
    "test": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 64},
}


def codec_lm_config(tok: TtsTokenizer, size: str = "tiny", *, max_positions: int = 1024, **overrides: Any):
    from transformers import LlamaConfig

    if not isinstance(tok, TtsTokenizer):
        raise UserError("init-codec-lm makes models in lpo-speech's own layout; bring a hub model in with "
                        "`lpo-speech import-tts-lm`", where="init-codec-lm")
    if size not in SIZES:
        raise UserError(f"unknown model size {size!r} (known: {', '.join(SIZES)})", where="init-codec-lm")
    if max_positions <= tok.max_prompt_tokens + tok.num_codebooks:
        raise UserError(f"max_positions={max_positions} leaves no room for audio after a "
                        f"{tok.max_prompt_tokens}-token prompt", where="init-codec-lm")
    kw = {**SIZES[size], **{k: v for k, v in overrides.items() if v is not None}}
    return LlamaConfig(vocab_size=tok.vocab_size, max_position_embeddings=max_positions, pad_token_id=tok.pad_id,
                       bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, tie_word_embeddings=True, rope_theta=10000.0,
                       attention_dropout=0.0, tts=tok.to_dict(), **kw)


def init_codec_lm(out: str | Path, tok: TtsTokenizer | None = None, *, size: str = "tiny", seed: int = 0,
                  max_positions: int = 1024, overwrite: bool = False, **overrides: Any) -> Path:
    """Write a random codec LM to `out` (save_pretrained, safetensors), whole or not at all; an existing
    non-empty `out` is replaced only with `overwrite`. Returns the folder."""
    from lpo_speech.stages import atomic_folder, check_new_folder

    out = Path(out)
    check_new_folder(out, overwrite=overwrite)
    from transformers import LlamaForCausalLM

    tok = tok or TtsTokenizer()
    cfg = codec_lm_config(tok, size, max_positions=max_positions, **overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    with atomic_folder(out) as tmp:
        model.save_pretrained(tmp)
    return out


def load_codec_lm(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """(model in eval mode, its tokenizer) from a model folder made by init_codec_lm, import-tts-lm or
    training: a TtsTokenizer, or an HfTtsTokenizer for an imported hub model (same interface). Stages
    pass the device of the placement rule and the recipe's `model.dtype` (lpo_speech.precision)."""
    from lpo_speech.adapters.causal_lm import load_pretrained

    tok = TtsTokenizer.load(path)  # either layout (lpo_speech.tts.text)
    from transformers import AutoModelForCausalLM

    lm = load_pretrained(AutoModelForCausalLM, str(path), dtype=dtype).to(device).eval()
    if lm.get_output_embeddings().weight.shape[0] < tok.vocab_size:
        raise UserError(f"model vocabulary {lm.get_output_embeddings().weight.shape[0]} is smaller than its "
                        f"token table's {tok.vocab_size}", where=str(path))
    return lm, tok


def num_parameters(path_or_model: Any) -> int:
    model = path_or_model
    if isinstance(path_or_model, (str, Path)):
        model, _ = load_codec_lm(path_or_model)
    # Tied embeddings count once.
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def heldout_nll(model_dir: str | Path, pairs: str | Path, *, batch_size: int = 16, limit: int | None = None) -> dict:
    """Mean per-token NLL of the chosen responses of a pair/example file (e.g. dev.jsonl) under a model,
    overall, per codec slot, for EOS and (phoneme-synchronous models) for the interleaved symbols:
    the held-out loss that tells when SFT starts to overfit."""
    from lpo_speech.adapters.base import pad_rows
    from lpo_speech.logps import linear_token_logps
    from lpo_speech.records import PreferencePair, load_jsonl

    lm, tok = load_codec_lm(model_dir)
    rows = load_jsonl(pairs, PreferencePair)[:limit]
    k = tok.num_codebooks
    # Bucket of each id as a target: its codec slot, k = EOS, k + 1 = anything else (symbols).
    bucket = torch.full((lm.get_output_embeddings().weight.shape[0],), k + 1, dtype=torch.long)
    for slot, (lo, hi) in enumerate(tok.slot_ranges):
        bucket[lo:hi] = slot
    bucket[tok.eos_id] = k
    tot, cnt = torch.zeros(k + 2, dtype=torch.float64), torch.zeros(k + 2, dtype=torch.float64)
    with torch.no_grad():
        for s in range(0, len(rows), batch_size):
            chunk = rows[s:s + batch_size]
            b = pad_rows([(r.prompt_tokens, r.chosen_tokens) for r in chunk], tok.pad_id)
            hidden = lm.get_decoder()(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
            sel = b["response_mask"][:, 1:]
            logp = linear_token_logps(hidden[:, :-1][sel], lm.get_output_embeddings().weight, b["input_ids"][:, 1:][sel])
            slot = bucket[b["input_ids"][:, 1:][sel]]
            tot.index_add_(0, slot, -logp.double())
            cnt.index_add_(0, slot, torch.ones_like(logp, dtype=torch.float64))
    per = (tot / cnt.clamp(min=1)).tolist()
    out = {"nll": float(tot.sum() / cnt.sum()), "nll_slots": [round(x, 4) for x in per[:k]],
           "nll_eos": round(per[k], 4), "n": len(rows)}
    if cnt[k + 1] > 0:
        out["nll_symbols"] = round(per[k + 1], 4)
    return out


def export_checkpoint(checkpoint_dir: str | Path, like: str | Path, out: str | Path) -> Path:
    """A training checkpoint (`<run>/checkpoints/step-N`) as a model folder, with the config of `like`
    (the model the run started from), so intermediate steps can be evaluated or shipped."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    from lpo_speech.adapters.causal_lm import copy_tokenizer

    src = Path(checkpoint_dir) / "model.safetensors"
    if not src.is_file():
        raise UserError("no model.safetensors: not a training checkpoint", where=str(checkpoint_dir))
    state = {k.removeprefix("lm."): v for k, v in load_file(str(src)).items()}
    cfg = AutoConfig.from_pretrained(str(like))
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"model.embed_tokens.weight", "lm_head.weight"}
    if unexpected or set(missing) - tied:
        raise UserError(f"checkpoint does not match {like}: missing {sorted(set(missing) - tied)[:3]}, "
                        f"unexpected {unexpected[:3]}", where=str(checkpoint_dir))
    model.tie_weights()
    model.save_pretrained(out)
    copy_tokenizer(like, out)
    return Path(out)
