"""Audio LLMs for ASR: an audio encoder, a projector and a decoder-only LM (transformers
`Qwen2AudioForConditionalGeneration`).

A pair is (audio, chosen transcript, rejected transcript). The prompt is the model's own chat template
with one user turn, the audio and the instruction (`model.instruction`, default "Transcribe the audio."),
and the assistant turn opened; the processor expands the audio placeholder into one `<|AUDIO|>` token per
audio frame the projector writes. The response is the transcript plus the template's end-of-turn token
(`<|im_end|>`), scored: the model must learn where to stop.

One forward for a batch of pairs:
  1. audio tower (+ its padding mask) once per distinct audio in the batch, then the projector: [A, T, H];
  2. every row's token embeddings, with the projected frames of its audio written at its placeholder
     positions (a gather index made on the host by `collate`, so no device value is read);
  3. the language model over chosen and rejected rows in one batch (right padded, causal);
  4. only response positions projected to the vocabulary, chunked (lpo_speech.adapters.base.response_logps).
Features are computed once per audio into a feature store on disk (lpo_speech.asr.features) and read
back per batch, as the Whisper adapter does. With `model.freeze_encoder` the audio tower is frozen and
its outputs are kept in a bounded cache (fp16, on the CPU); the projector and the LM train.

Features, prompts and responses are made the same way in training, sampling and evaluation
(`AudioLLMAdapter.prepare`, `prompt_ids`, `text_ids`), and match the processor's own output (tested).

Model families: what differs between audio LLMs (where the tower, projector and LM live; how the tower
masks padding; how many placeholder tokens an audio gets) is one `AudioLLMFamily` in `FAMILIES`. Qwen2-Audio
is the one implemented. Voxtral (`VoxtralForConditionalGeneration`: Whisper-style encoder on 30 s chunks,
4 frames stacked per token before the projector, a Llama/Mistral LM, prompts through
`apply_transcription_request`) and Granite Speech (a conformer encoder, a Q-Former projector with a fixed
number of query tokens per window, `<|audio|>` placeholders) would each need their own family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lpo_speech.adapters.base import (HostInts, PairModel, SeqLogps, enable_checkpointing, pad_rows,
                                      pair_rows, response_logps)
from lpo_speech.adapters.causal_lm import load_pretrained
from lpo_speech.asr.features import Entry, StateCache, StoredFeatures
from lpo_speech.errors import UserError
from lpo_speech.records import PreferencePair

SAMPLE_RATE = 16_000
DEFAULT_INSTRUCTION = "Transcribe the audio."
INSTRUCTION_KEY = "asr_instruction"  # config.json key: the instruction a model was trained with


def base_model(hf: nn.Module) -> nn.Module:
    """The transformers model inside a peft LoRA wrapper (or the model itself)."""
    return hf.get_base_model() if hasattr(hf, "get_base_model") else hf


class AudioLLMFamily:
    """What the adapter needs to know about one model family (here: Qwen2-Audio)."""

    model_type = "qwen2_audio"
    model_class = "Qwen2AudioForConditionalGeneration"

    def tower(self, hf: nn.Module) -> nn.Module:
        return hf.model.audio_tower

    def projector(self, hf: nn.Module) -> nn.Module:
        return hf.model.multi_modal_projector

    def placeholder_id(self, config) -> int:
        return config.audio_token_id

    def tower_frames(self, config) -> int:
        """Frames the tower writes for a full (padded) window: max_source_positions after 2x pooling."""
        return config.audio_config.max_source_positions // 2

    def num_tokens(self, feature_length: int) -> int:
        """Placeholder tokens (= projected frames used) for an audio of `feature_length` mel frames:
        conv stride 2, then average pooling 2 (Qwen2AudioProcessor's count)."""
        return ((feature_length - 1) // 2 + 1 - 2) // 2 + 1

    def tower_states(self, tower: nn.Module, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Tower outputs [A, T, D] for mel features [A, mels, frames] of `lengths` valid frames, with
        padded frames masked out of the attention as `Qwen2AudioModel.forward` does."""
        from transformers.masking_utils import create_bidirectional_mask

        frames = (features.shape[-1] - 2) // 2 + 1  # after the stride-2 convolution
        valid = (lengths.to(features.device) - 1) // 2 + 1
        mask2d = (torch.arange(frames, device=features.device)[None, :] < valid[:, None]).long()
        dtype = tower.conv1.weight.dtype
        dummy = torch.zeros((features.shape[0], frames, 1), dtype=dtype, device=features.device)
        mask = create_bidirectional_mask(config=tower.config, inputs_embeds=dummy, attention_mask=mask2d)
        return tower(features, attention_mask=mask).last_hidden_state


FAMILIES = {f.model_type: f for f in (AudioLLMFamily(),)}


def family_for(path: str) -> AudioLLMFamily:
    from transformers import AutoConfig

    model_type = load_pretrained(AutoConfig, path).model_type
    if model_type not in FAMILIES:
        raise UserError(f"model type {model_type!r} is not an audio LLM the audio_llm adapter knows "
                        f"(known: {', '.join(sorted(FAMILIES))})", where=str(path))
    return FAMILIES[model_type]


def splice(embeds: torch.Tensor, audio: torch.Tensor, mask: torch.Tensor, gather: torch.Tensor) -> torch.Tensor:
    """Token embeddings [R, L, H] with the projected audio frames `audio` [A, T, H] written where `mask`
    [R, L] is set; `gather` [R, L] holds each such position's flat index a * T + t into `audio`."""
    flat = audio.reshape(-1, audio.shape[-1])[gather].to(embeds.dtype)
    return torch.where(mask[..., None], flat, embeds)


class AudioLLMPairModel(PairModel):
    hf_attr = "model"

    def __init__(self, model: nn.Module, family: AudioLLMFamily, *, average: bool):
        super().__init__()
        self.model = model
        self.family = family
        self.average = average

    def audio_embeddings(self, states: torch.Tensor) -> torch.Tensor:
        """Projected audio frames [A, T, H] from tower outputs [A, T, D]."""
        return self.family.projector(base_model(self.model))(states)

    def tower_states(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.family.tower_states(self.family.tower(base_model(self.model)), features, lengths)

    def forward(self, batch: dict[str, torch.Tensor]) -> SeqLogps:
        hf = base_model(self.model)
        if "audio_states" in batch:  # frozen tower: its outputs cached by the adapter
            states = batch["audio_states"]
        else:
            states = self.tower_states(batch["input_features"], batch["feature_lengths"])
        audio = self.audio_embeddings(states)  # once per distinct audio
        ids = batch["input_ids"]
        pairs = batch["num_pairs"].values[0] if "num_pairs" in batch else ids.shape[0] // 2
        embeds = splice(hf.get_input_embeddings()(ids), audio, batch["audio_mask"], batch["audio_gather"])
        # Right padding + causal attention: padded tails never reach real positions; use_cache off (training).
        hidden = hf.get_decoder()(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                                  use_cache=False).last_hidden_state
        return response_logps(hidden, ids, batch["response_mask"], hf.get_output_embeddings(), average=self.average,
                              num_pairs=pairs)


class AudioLLMAdapter(StoredFeatures):
    """Pairs with `audio`, `chosen_text`, `rejected_text` (and the model's processor and chat template)."""

    def __init__(self, model_cfg, *, average: bool = True):
        self.cfg = model_cfg
        self.average = average
        self.chosen_only = False  # the trainer sets it for loss.type sft

    def load(self, path: str, device: torch.device, dtype: torch.dtype = torch.float32) -> AudioLLMPairModel:
        import transformers
        from transformers import AutoProcessor

        family = family_for(path)
        model = load_pretrained(getattr(transformers, family.model_class), path, dtype=dtype)
        if not hasattr(self, "processor"):
            self._setup(family, model.config, load_pretrained(AutoProcessor, path), path)
        if self.cfg.gradient_checkpointing:
            enable_checkpointing(model)
        if self.cfg.freeze_encoder:
            family.tower(model).requires_grad_(False)
        pair_model = AudioLLMPairModel(model, family, average=self.average).to(device)
        if not hasattr(self, "model"):  # the first load is the policy: it computes cached tower outputs
            self.model, self._states = pair_model, StateCache()
        return pair_model

    def _setup(self, family: AudioLLMFamily, config, processor, path: str) -> None:
        """Prompt pieces from the processor's chat template: the ids before and after the one audio
        placeholder, and the end-of-turn id that closes the assistant's answer."""
        self.family, self.processor, self.tokenizer = family, processor, processor.tokenizer
        if getattr(processor, "chat_template", None) is None:
            raise UserError("the processor has no chat template (an instruction-tuned audio LLM has one)",
                            where=str(path))
        self.instruction = (getattr(self.cfg, "instruction", None) or getattr(config, INSTRUCTION_KEY, None)
                            or DEFAULT_INSTRUCTION)
        self.audio_id = family.placeholder_id(config)
        self.tower_frames = family.tower_frames(config)
        self.max_positions = config.text_config.max_position_embeddings
        self._templates: dict[str, tuple[list[int], list[int]]] = {}
        self._path = str(path)
        self.prefix, self.suffix = self.template(self.instruction)
        # The end of the assistant's turn: the first token the template writes after an answer.
        mark = "\u2016ANSWER\u2016"
        turn = processor.apply_chat_template([self._user_turn(self.instruction),
                                              {"role": "assistant", "content": mark}], tokenize=False)
        after = self.tokenizer(turn.split(mark, 1)[1], add_special_tokens=False)["input_ids"]
        self.eos = after[0] if after else self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos

    @staticmethod
    def _user_turn(instruction: str) -> dict[str, Any]:
        return {"role": "user", "content": [{"type": "audio", "audio": "<audio>"}, {"type": "text", "text": instruction}]}

    def template(self, instruction: str) -> tuple[list[int], list[int]]:
        """The prompt's ids before and after its one audio placeholder, for `instruction` (cached)."""
        if instruction not in self._templates:
            text = self.processor.apply_chat_template([self._user_turn(instruction)], add_generation_prompt=True,
                                                      tokenize=False)
            ids = self.tokenizer(text)["input_ids"]
            if ids.count(self.audio_id) != 1:
                raise UserError(f"the chat template writes {ids.count(self.audio_id)} audio placeholders for one "
                                "audio, expected 1", where=self._path)
            at = ids.index(self.audio_id)
            self._templates[instruction] = (ids[:at], ids[at + 1:])
        return self._templates[instruction]

    # ------------------------------------------------------------------ features, prompts, responses

    def prepare(self, wav: np.ndarray) -> tuple[torch.Tensor, int]:
        """Log-mel features [mels, frames] (the whole window, as the processor pads it) and the number of
        valid frames, for one 16 kHz waveform."""
        fe = self.processor.feature_extractor
        out = fe(wav, sampling_rate=SAMPLE_RATE, padding="max_length", return_attention_mask=True, return_tensors="pt")
        return out["input_features"][0], int(out["attention_mask"][0].sum())

    def prompt_ids(self, num_tokens: int, instruction: str | None = None) -> list[int]:
        """The prompt for an audio of `num_tokens` placeholder tokens (and `instruction`, default the
        adapter's)."""
        prefix, suffix = self.template(instruction or self.instruction)
        return prefix + [self.audio_id] * num_tokens + suffix

    def text_ids(self, text: str) -> list[int]:
        """Transcript tokens as the template writes an answer, then the end-of-turn token (scored).
        Special-token text inside a transcript stays text."""
        return self.tokenizer(text.strip(), add_special_tokens=False, split_special_tokens=True)["input_ids"] + [self.eos]

    def stored(self, audio_path: str, where: str = "") -> Entry:
        """The stored features' entry for one file (computed now if need be): audio longer than the
        model's window is refused."""
        entry = self.feature_store().ensure(audio_path, where or None)
        window = self.processor.feature_extractor.n_samples
        if entry.samples > window:
            raise UserError(f"{audio_path}: {entry.samples / SAMPLE_RATE:.1f} s of audio, longer than the model's "
                            f"{window / SAMPLE_RATE:.0f} s window", where=where or None)
        return entry

    def features(self, audio_path: str, where: str = "") -> dict[str, Any]:
        """Features (float16), valid frames and placeholder count for one file, computed once (pairs
        share audio)."""
        entry = self.stored(audio_path, where)
        return {"features": torch.from_numpy(self.store.read(entry)), "length": entry.valid,
                "tokens": self.family.num_tokens(entry.valid)}

    def batch_features(self, entries: list[Entry]) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 features [A, mels, frames] and valid frame counts [A] of stored audios."""
        feats = torch.stack([torch.from_numpy(self.store.read(e)) for e in entries]).float()
        return feats, torch.tensor([e.valid for e in entries])

    def encode(self, pair: PreferencePair, where: str, base_dir: Path) -> dict[str, Any]:
        if pair.audio is None or pair.chosen_text is None:
            raise UserError("audio_llm pairs need 'audio', 'chosen_text' and 'rejected_text'", where=where)
        audio = str(pair.audio if Path(pair.audio).is_absolute() else base_dir / pair.audio)
        entry = self.stored(audio, where)  # now: a bad file fails before training starts
        instruction = pair.prompt_text or self.instruction  # a pair's own text prompt, else the recipe's
        tokens = self.family.num_tokens(entry.valid)
        item = {"audio": audio, "feat": entry, "prompt": self.prompt_ids(tokens, instruction),
                "audio_at": len(self.template(instruction)[0]), "chosen": self.text_ids(pair.chosen_text),
                "rejected": self.text_ids(pair.rejected_text if pair.rejected_text is not None else pair.chosen_text)}
        if self.length(item) > self.max_positions:
            raise UserError(f"prompt and transcript longer than the model's {self.max_positions} positions", where=where)
        return item

    def length(self, item: dict[str, Any]) -> int:
        return len(item["prompt"]) + max(len(item["chosen"]), len(item["rejected"]))

    # ------------------------------------------------------------------ batches

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        audios = list(dict.fromkeys(it["feat"] for it in items))  # distinct, in order
        batch = pad_rows(pair_rows(items, self.chosen_only), self.pad_id)
        batch["num_pairs"] = HostInts([len(items)])
        if self.cfg.freeze_encoder:
            states = self._tower_states(audios)  # [n_a, D] each
            frames = max(s.shape[0] for s in states)
            padded = torch.zeros((len(audios), frames, states[0].shape[1]), dtype=torch.float32)
            for i, s in enumerate(states):
                padded[i, :s.shape[0]] = s
            batch["audio_states"] = padded
        else:
            frames = self.tower_frames
            batch["input_features"], batch["feature_lengths"] = self.batch_features(audios)
        # Row r's placeholders take the projected frames of its audio, in order.
        rows = items * (batch["input_ids"].shape[0] // len(items))  # chosen rows, then any rejected rows
        mask = batch["input_ids"] == self.audio_id
        gather = torch.zeros_like(batch["input_ids"])
        for r, it in enumerate(rows):
            a, n, start = audios.index(it["feat"]), self.family.num_tokens(it["feat"].valid), it["audio_at"]
            gather[r, start:start + n] = a * frames + torch.arange(n)
        batch["audio_mask"], batch["audio_gather"] = mask, gather
        return batch

    @torch.no_grad()
    def _tower_states(self, audios: list[Entry]) -> list[torch.Tensor]:
        """Frozen tower: its outputs for each audio's valid frames (fp16, CPU), from the bounded cache or
        computed now, one audio per tower call (an audio's outputs never depend on its batch)."""
        out = []
        for e in audios:
            states = self._states.get(e.key)
            if states is None:
                tower = self.family.tower(base_model(self.model.model))
                device = next(tower.parameters()).device
                feats, lengths = self.batch_features([e])
                states = self.family.tower_states(tower, feats.to(device), lengths.to(device))[0]
                states = states[:self.family.num_tokens(e.valid)].to("cpu", torch.float16, copy=True)
                self._states.put(e.key, states)
            out.append(states)
        return out

    def save(self, model: AudioLLMPairModel, out_dir: Path) -> None:
        setattr(base_model(model.model).config, INSTRUCTION_KEY, self.instruction)  # eval prompts as trained
        model.model.save_pretrained(out_dir)
        self.processor.save_pretrained(out_dir)
