"""Encoder-decoder ASR (transformers `WhisperForConditionalGeneration`, the speech-seq2seq family).

A pair is (audio, chosen transcript, rejected transcript). The encoder runs once per distinct audio
in a batch; its states are indexed for the chosen and the rejected decoder rows, which run as one
batch. Features come from the model's own processor (`WhisperFeatureExtractor`: 16 kHz, log-mel,
audio padded to 30 s) in training, sampling and evaluation alike. In training they are computed once
per audio into a feature store on disk (lpo_speech.asr.features) and read back per batch, so memory
does not grow with the data set; with a frozen encoder its outputs are kept in a bounded cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from lpo_speech.adapters.base import (HostInts, PairModel, SeqLogps, enable_checkpointing, pad_rows,
                                      pair_rows, response_logps)
from lpo_speech.adapters.causal_lm import load_pretrained
from lpo_speech.asr.features import Entry, StateCache, StoredFeatures
from lpo_speech.errors import UserError
from lpo_speech.records import PreferencePair

SAMPLE_RATE = 16_000


class WhisperPairModel(PairModel):
    hf_attr = "model"

    def __init__(self, model: torch.nn.Module, *, average: bool):
        super().__init__()
        self.model = model
        self.average = average
        self.shared_cross_kv = True  # project cross-attention keys/values once per audio (see forward)

    def prepare_for_sharding(self) -> None:
        """Under FSDP a decoder layer's weights exist only inside that layer's forward, so the cross-
        attention projections run per row inside the decoder instead of once per audio outside it."""
        self.shared_cross_kv = False

    def forward(self, batch: dict[str, torch.Tensor]) -> SeqLogps:
        if "encoder_states" in batch:  # frozen encoder: states cached by the adapter
            states = batch["encoder_states"]
        else:
            states = self.model.get_encoder()(batch["input_features"]).last_hidden_state  # [A, T, D]
        ids = batch["input_ids"]
        pairs = batch["num_pairs"].values[0] if "num_pairs" in batch else ids.shape[0] // 2
        rows = batch["audio_index"].repeat(ids.shape[0] // pairs)  # chosen rows, then any rejected rows
        decoder = self.model.get_decoder()
        if not self.shared_cross_kv:
            hidden = decoder(input_ids=ids, encoder_hidden_states=states[rows], use_cache=False).last_hidden_state
            return response_logps(hidden, ids, batch["response_mask"], self.model.get_output_embeddings(),
                                  average=self.average, num_pairs=pairs)
        # Cross-attention keys/values depend only on the audio: project them once per audio (with
        # gradient) and index them for every decoder row, instead of once per row (on CPU the
        # per-row projections of 1,500 encoder frames cost more than the rest of the decoder).
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        for i, layer in enumerate(decoder.layers):
            attn = layer.encoder_attn
            shape = (states.shape[0], states.shape[1], attn.num_heads, attn.head_dim)
            k = attn.k_proj(states).view(shape).transpose(1, 2)[rows]
            v = attn.v_proj(states).view(shape).transpose(1, 2)[rows]
            cache.cross_attention_cache.update(k, v, i)
            cache.is_updated[i] = True
        # Causal decoder + right padding: padded tail positions never influence real ones.
        hidden = decoder(input_ids=ids, encoder_hidden_states=states[rows], past_key_values=cache,
                         use_cache=True).last_hidden_state
        return response_logps(hidden, ids, batch["response_mask"], self.model.get_output_embeddings(),
                              average=self.average, num_pairs=pairs)


class WhisperAdapter(StoredFeatures):
    """Pairs with `audio`, `chosen_text`, `rejected_text` (and the model's processor)."""

    def __init__(self, model_cfg, *, average: bool = True):
        self.cfg = model_cfg
        self.average = average
        self.chosen_only = False  # the trainer sets it for loss.type sft

    def load(self, path: str, device: torch.device, dtype: torch.dtype = torch.float32) -> WhisperPairModel:
        from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

        model = load_pretrained(AutoModelForSpeechSeq2Seq, path, dtype=dtype)
        self.processor = load_pretrained(AutoProcessor, path)
        self.tokenizer = self.processor.tokenizer
        self.language, self.task = getattr(self.cfg, "language", None), getattr(self.cfg, "task", None)
        if not getattr(model.generation_config, "is_multilingual", True):
            # An English-only Whisper (tiny.en ... medium.en) writes no language or task token: `en` and
            # `transcribe` are what it does anyway (a recipe for a multilingual model sets them), anything
            # else it cannot do.
            if self.language not in (None, "en", "english") or self.task not in (None, "transcribe"):
                raise UserError(f"{path} is an English-only Whisper: model.language must be en or null and "
                                "model.task transcribe or null", where="model.language/model.task")
            self.language = self.task = None
        if self.language or self.task:
            self.tokenizer.set_prefix_tokens(language=self.language, task=self.task)
        self.tokenizer.set_prefix_tokens(predict_timestamps=False)
        self.prefix = list(self.tokenizer.prefix_tokens)
        self.eos = self.tokenizer.eos_token_id
        self.max_target = model.config.max_target_positions
        if self.cfg.gradient_checkpointing:
            enable_checkpointing(model)
        if self.cfg.freeze_encoder:
            model.get_encoder().requires_grad_(False)
        pair_model = WhisperPairModel(model, average=self.average).to(device)
        if not hasattr(self, "model"):  # the first load is the policy: it computes cached encoder states
            self.model, self._states = pair_model, StateCache()
        return pair_model

    def text_ids(self, text: str) -> list[int]:
        """Transcript tokens as Whisper writes them: a leading space, then EOT (scored: the model
        must learn where to stop)."""
        return self.tokenizer.encode(" " + text.strip(), add_special_tokens=False) + [self.eos]

    def features(self, audio_path: str, where: str = "") -> torch.Tensor:
        """Log-mel features [n_mels, 3000] (float16) for one file, computed once (pairs share audio)."""
        store = self.feature_store()
        return torch.from_numpy(store.read(store.ensure(audio_path, where or None)))

    def batch_features(self, entries: list[Entry]) -> torch.Tensor:
        """float32 features [A, n_mels, 3000] of stored audios."""
        return torch.stack([torch.from_numpy(self.store.read(e)) for e in entries]).float()

    def extract(self, wavs: np.ndarray | list[np.ndarray]) -> torch.Tensor:
        wavs = wavs if isinstance(wavs, list) else [wavs]
        return self.processor.feature_extractor(wavs, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features

    def encode(self, pair: PreferencePair, where: str, base_dir: Path) -> dict[str, Any]:
        if pair.audio is None or pair.chosen_text is None:
            raise UserError("whisper pairs need 'audio', 'chosen_text' and 'rejected_text'", where=where)
        audio = str(pair.audio if Path(pair.audio).is_absolute() else base_dir / pair.audio)
        entry = self.feature_store().ensure(audio, where)  # now: a bad file fails before training starts
        item = {"audio": audio, "feat": entry, "prompt": self.prefix, "chosen": self.text_ids(pair.chosen_text),
                "rejected": self.text_ids(pair.rejected_text if pair.rejected_text is not None else pair.chosen_text)}
        if self.length(item) > self.max_target:
            raise UserError(f"transcript longer than the decoder's {self.max_target} positions", where=where)
        return item

    def length(self, item: dict[str, Any]) -> int:
        return len(item["prompt"]) + max(len(item["chosen"]), len(item["rejected"]))

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        audios = list(dict.fromkeys(it["feat"] for it in items))  # distinct, in order
        batch = pad_rows(pair_rows(items, self.chosen_only), self.eos)
        batch["num_pairs"] = HostInts([len(items)])
        if self.cfg.freeze_encoder:
            batch["encoder_states"] = torch.stack(self._encoder_states(audios)).float()
        else:
            batch["input_features"] = self.batch_features(audios)
        batch["audio_index"] = torch.tensor([audios.index(it["feat"]) for it in items])
        return batch

    @torch.no_grad()
    def _encoder_states(self, audios: list[Entry]) -> list[torch.Tensor]:
        """Frozen encoder: its states for each audio (fp16, on CPU), from the bounded cache or computed
        now, one audio per encoder call: an audio's states never depend on the batch it came in, so a
        resumed run, or one whose cache dropped them, computes the same values again."""
        out = []
        for e in audios:
            states = self._states.get(e.key)
            if states is None:
                encoder = self.model.model.get_encoder()
                device = next(encoder.parameters()).device
                states = encoder(self.batch_features([e]).to(device)).last_hidden_state[0].to("cpu", torch.float16)
                self._states.put(e.key, states)
            out.append(states)
        return out

    def save(self, model: WhisperPairModel, out_dir: Path) -> None:
        # The language and task it was trained to write go with it: eval and export then decode with the
        # prompt of training, whatever they are told.
        gen = model.model.generation_config
        if self.language:
            gen.language = self.language
        if self.task:
            gen.task = self.task
        model.model.save_pretrained(out_dir)
        self.processor.save_pretrained(out_dir)
