"""Batched candidate sampling from a causal LM over token ids (a codec-token TTS model).

`sample(model, prompts, n=8, ...)` draws `n` responses per prompt. All prompts x n sequences are
decoded together, `batch_size` sequences at a time: prompts are left-padded (attention mask, position
ids counted from each sequence's first real token), one prefill pass fills the KV cache, then one
forward per new token. The loop is written out rather than bent out of HF `generate` because codec
slots constrain every position:

* `slot_ranges=[(lo0, hi0), (lo1, hi1), ...]` (K codec slots as flattened id ranges, hi exclusive):
  response position t may only emit ids in `slot_ranges[t % K]`, and EOS only at a frame boundary
  (t % K == 0), so every finished response is a whole number of frames. Without slot ranges any id
  (EOS included) may come at any position.
* A sequence that reaches `max_new_tokens` without EOS is returned with `terminated=False` (the
  length guard); EOS is never part of `tokens`.
* temperature 0 is greedy (argmax of the allowed ids); otherwise temperature, top-k and top-p
  (nucleus) apply, in that order, to the allowed ids. Draws come from one `torch.Generator` seeded
  with `seed`, so the same call gives the same samples.
* `sync=[[s0, s1, ...], ...]` (one symbol list per prompt; phoneme-synchronous TTS,
  lpo_speech.tts.text): the response opens with the prompt's first symbol; at a frame boundary it
  may hold a frame or the next symbol (only that one; a symbol does not advance the slot), and EOS
  only once every symbol is written. Slots then follow each row's codec tokens, not its position.
  `sync_max_frames=F` (> 0) makes a row move on once a symbol has lasted F frames: a tiny model that
  overstays a phoneme is outside its training data and tends to loop there (measured: 216 frames on
  one word gap), so the cap keeps one stall from eating the whole length guard.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

Tensor = torch.Tensor


@dataclass
class Sample:
    tokens: list[int]  # the response, without EOS
    terminated: bool  # EOS was produced before max_new_tokens


def sample(
    model: nn.Module,
    prompts: list[list[int]],
    *,
    n: int,
    max_new_tokens: int,
    eos_id: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    slot_ranges: list[tuple[int, int]] | None = None,
    seed: int | None = None,
    batch_size: int = 16,
    pad_id: int = 0,
    sync: list[list[int]] | None = None,
    sync_max_frames: int = 0,
) -> list[list[Sample]]:
    """`n` samples per prompt: result[i][j] is the j-th sample of prompts[i].

    `model` is a transformers causal LM (or a `CausalLMPairModel`, whose `.lm` is used); it runs in
    eval mode under `torch.no_grad` and is returned to its previous mode."""
    if n < 1 or max_new_tokens < 1 or batch_size < 1:
        raise ValueError("n, max_new_tokens and batch_size must be >= 1")
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError("need temperature >= 0, 0 < top_p <= 1, top_k >= 0")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if sync is not None and (len(sync) != len(prompts) or not slot_ranges):
        raise ValueError("sync needs slot_ranges and one symbol list per prompt")
    lm = model.lm if hasattr(model, "lm") and not hasattr(model, "generate") else model
    device = next(lm.parameters()).device
    vocab = lm.get_output_embeddings().weight.shape[0]
    allowed = _allowed_masks(slot_ranges, eos_id, vocab, device)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else torch.seed())
    flat = [p for p in prompts for _ in range(n)]
    flat_sync = [q for q in sync for _ in range(n)] if sync is not None else None
    out: list[Sample] = []
    was_training = lm.training
    lm.eval()
    try:
        with torch.no_grad():
            for s in range(0, len(flat), batch_size):
                out.extend(_decode_batch(lm, flat[s:s + batch_size], allowed, max_new_tokens=max_new_tokens,
                                         eos_id=eos_id, temperature=temperature, top_k=top_k, top_p=top_p,
                                         gen=gen, pad_id=pad_id,
                                         sync=None if flat_sync is None else flat_sync[s:s + batch_size],
                                         sync_max_frames=sync_max_frames))
    finally:
        lm.train(was_training)
    return [out[i * n:(i + 1) * n] for i in range(len(prompts))]


def _allowed_masks(slot_ranges, eos_id: int, vocab: int, device) -> Tensor:
    """[K, V] bool: ids allowed at response positions t with t % K == k (K = 1 without slots)."""
    if not 0 <= eos_id < vocab:
        raise ValueError(f"eos_id {eos_id} outside the vocabulary [0, {vocab})")
    if not slot_ranges:
        return torch.ones(1, vocab, dtype=torch.bool, device=device)
    masks = torch.zeros(len(slot_ranges), vocab, dtype=torch.bool, device=device)
    for k, (lo, hi) in enumerate(slot_ranges):
        if not 0 <= lo < hi <= vocab:
            raise ValueError(f"slot_ranges[{k}] = ({lo}, {hi}) is empty or outside the vocabulary [0, {vocab})")
        masks[k, lo:hi] = True
    masks[:, eos_id] = False
    masks[0, eos_id] = True  # EOS only at a frame boundary
    return masks


class _Sync:
    """Per-row state of phoneme-synchronous sampling: the codec slot each row is in and the next
    symbol it owes; `mask` widens the slot masks with that symbol and holds EOS back until none is owed."""

    def __init__(self, symbols: list[list[int]], allowed: Tensor, eos_id: int, max_frames: int = 0):
        b, device = len(symbols), allowed.device
        width = max(1, max(len(q) for q in symbols))
        self.syms = torch.full((b, width + 1), -1, dtype=torch.long, device=device)
        for i, q in enumerate(symbols):
            self.syms[i, :len(q)] = torch.tensor(q, dtype=torch.long, device=device)
        self.count = torch.tensor([len(q) for q in symbols], device=device)
        self.slot = torch.zeros(b, dtype=torch.long, device=device)
        self.next = torch.zeros(b, dtype=torch.long, device=device)
        self.run = torch.zeros(b, dtype=torch.long, device=device)  # codec tokens since the last symbol
        self.max_tokens = max_frames * allowed.shape[0]
        self.frame_start = allowed[0].clone()  # the ids that start a frame (EOS aside)
        self.frame_start[eos_id] = False
        self.allowed, self.eos_id, self.rows = allowed, eos_id, torch.arange(b, device=device)

    def mask(self) -> Tensor:
        m = self.allowed[self.slot].clone()  # [B, V]
        boundary = self.slot == 0
        owed = boundary & (self.next < self.count)
        m[self.rows[owed], self.syms[owed, self.next[owed]]] = True
        m[:, self.eos_id] = boundary & ~owed
        # A response opens with its first symbol; past max_frames only moving on (the next symbol, or
        # EOS after the last) is left.
        must_move = owed & (self.next == 0)
        if self.max_tokens > 0:
            must_move |= boundary & (self.run >= self.max_tokens)
        m[must_move] &= ~self.frame_start
        return m

    def step(self, tok: Tensor) -> None:
        wrote_sym = (self.slot == 0) & (tok == self.syms[self.rows, self.next])
        self.next += wrote_sym.long()
        self.run = torch.where(wrote_sym, torch.zeros_like(self.run), self.run + 1)
        self.slot = torch.where(wrote_sym, self.slot, (self.slot + 1) % self.allowed.shape[0])


def _decode_batch(lm, prompts, allowed, *, max_new_tokens, eos_id, temperature, top_k, top_p, gen, pad_id,
                  sync=None, sync_max_frames=0):
    b, width = len(prompts), max(len(p) for p in prompts)
    device = allowed.device
    ids = torch.full((b, width), pad_id, dtype=torch.long, device=device)
    attn = torch.zeros((b, width), dtype=torch.long, device=device)
    for i, p in enumerate(prompts):  # left padding: every prompt ends at the last column
        ids[i, width - len(p):] = torch.tensor(p, device=device)
        attn[i, width - len(p):] = 1
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    out = lm(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1)
    cache, logits = out.past_key_values, out.logits[:, -1]
    next_pos = pos[:, -1:] + 1
    tokens = torch.empty((b, max_new_tokens), dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    k_slots = allowed.shape[0]
    state = _Sync(sync, allowed, eos_id, sync_max_frames) if sync is not None else None
    steps = 0
    for t in range(max_new_tokens):
        tok = _pick(logits, allowed[t % k_slots] if state is None else state.mask(), temperature, top_k, top_p, gen)
        tok = torch.where(done, torch.full_like(tok, eos_id), tok)
        tokens[:, t] = tok
        done |= tok == eos_id
        if state is not None:
            state.step(tok)
        steps = t + 1
        # One host read per frame boundary (the only positions where EOS may appear with slots;
        # synchronous rows reach their boundaries at different steps, so they check every step).
        if (state is not None or t % k_slots == 0) and bool(done.all()):
            break
        if t + 1 == max_new_tokens:
            break
        attn = torch.cat([attn, attn.new_ones(b, 1)], dim=1)
        out = lm(input_ids=tok[:, None], attention_mask=attn, position_ids=next_pos, past_key_values=cache,
                 use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1]
        next_pos = next_pos + 1
    samples = []
    for row in tokens[:, :steps].tolist():
        if eos_id in row:
            samples.append(Sample(tokens=row[:row.index(eos_id)], terminated=True))
        else:
            samples.append(Sample(tokens=row, terminated=False))
    return samples


def _pick(logits: Tensor, allowed: Tensor, temperature: float, top_k: int, top_p: float, gen) -> Tensor:
    """One token per row from logits [B, V] restricted to `allowed` [V] (or [B, V], row by row)."""
    logits = logits.float().masked_fill(~allowed, float("-inf"))
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) >= top_p  # keep the smallest set reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return _draw(torch.softmax(logits, dim=-1), gen)


def _draw(probs: Tensor, gen) -> Tensor:
    """One index per row with probability `probs` [B, V], by inverse CDF: one uniform per row and a
    binary search (torch.multinomial draws an exponential per vocabulary entry: 30 ms a step at
    16 x 65,536 on CPU, a third of a decode step). Zero-probability ids are never returned: the
    search takes the first id whose cumulative mass exceeds u * total, and float rounding at the top
    end falls back to the last id with mass."""
    cdf = probs.double().cumsum(-1)
    u = torch.rand(probs.shape[0], 1, generator=gen, device=probs.device, dtype=torch.float64)
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1)
    last = probs.shape[-1] - 1 - (probs > 0).flip(-1).to(torch.uint8).argmax(-1)
    return torch.minimum(idx, last)
