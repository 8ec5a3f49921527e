"""Sequence log-probabilities without a full float32 [batch, length, vocab] log-softmax.

Preference training needs, per sequence, sum_t log pi(y_t | ...) over the response tokens only.
The naive path materializes logits and log-softmax for every position (2 x B x T x V floats: at
V = 65,536 and T = 2,048 that is 1 GB per sequence pair). Here:

* only response positions are projected to the vocabulary (prompt and padding positions are skipped);
* the projection runs in row chunks; each chunk keeps only its log-sum-exp and target logit;
* backward recomputes each chunk's logits (one extra matmul) instead of storing them, so peak memory
  is one chunk of logits, in forward and in backward.

When the caller needs only per-sequence sums (a preference loss is a function of sequence log-probs),
`linear_sequence_logps` does better: the gradient of a sequence's sum with respect to its logits does
not depend on the loss, so it is formed in forward, from the one pass over each chunk's logits, and
kept as d(sum_s)/d(hidden) [N, H] plus d(sum_s)/d(weight) per sequence [S, V, H]; backward only scales
those by the incoming per-sequence gradients. Three vocabulary matmuls per chunk instead of four, one
exp pass instead of two (about 2x faster than the recompute path on CPU), at S x V x H float32 of
extra memory; over `SEQ_GRAD_STASH_BYTES` it falls back to the recompute path.

Multi-codebook codec LMs: every response token carries a codebook slot (0..K-1). Reductions:
  "flat"  one stream: sum over all tokens; averaging divides by the number of tokens
          (CosyVoice, Llasa, Orpheus);
  "sum"   sum over codebooks: same sum, averaging divides by the number of frames = tokens / K
          (NeMo, ESPnet);
  "first" first codebook only: tokens of slot 0; averaging divides by the number of frames (veRL-omni).
  "level" hierarchical frames (SNAC / Orpheus: slot levels 0,1,2,2,1,2,2): averaging takes the mean
          log-prob of each codebook level, then the mean over levels, so a frame's one coarse code
          weighs as much as its four fine ones; summing is the flat sum. Needs `slot_levels`.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor
CODEBOOK_REDUCTIONS = ("flat", "sum", "first", "level")
# Elements of fp32 logits held at once (32M floats = 128 MB); rows per chunk = this // vocab.
DEFAULT_CHUNK_ELEMS = 1 << 25
# Largest per-sequence weight-gradient stash (S x V x H float32) linear_sequence_logps keeps; beyond it
# it takes the recompute path (1 GiB: 16 sequences at V = 65,536, H = 256).
SEQ_GRAD_STASH_BYTES = 1 << 30
# linear_sequence_logps keeps one [rows, V] buffer per chunk (no recompute); larger chunks measured
# faster on CPU (V = 65,536: 1,024 rows 21 s vs 512 rows 23 s vs 256 rows 26 s per 3,840 rows).
SEQ_CHUNK_ELEMS = 1 << 26


class _LinearTokenLogps(torch.autograd.Function):
    """log softmax(hidden @ weight.T + bias)[target] for N rows, chunked, recomputing in backward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk):
        w_dtype, b_dtype = weight.dtype, (bias.dtype if bias is not None else None)
        n = hidden.shape[0]
        weight = weight.to(hidden.dtype)  # bf16 hidden under autocast: project in bf16, reduce in fp32
        bias = bias.to(hidden.dtype) if bias is not None else None
        out = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
        for s in range(0, n, chunk):
            logits = _chunk_logits(hidden[s : s + chunk], weight, bias)
            lse[s : s + chunk] = torch.logsumexp(logits, dim=-1)
            out[s : s + chunk] = logits.gather(1, targets[s : s + chunk, None]).squeeze(1) - lse[s : s + chunk]
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk = chunk
        ctx.param_dtypes = (w_dtype, b_dtype)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if (need_b and bias is not None) else None
        for s in range(0, hidden.shape[0], ctx.chunk):
            h = hidden[s : s + ctx.chunk]
            g = grad_out[s : s + ctx.chunk].float()
            # d logp_t / d logits = onehot(target) - softmax; scaled by the incoming gradient.
            grad_logits = torch.exp(_chunk_logits(h, weight, bias) - lse[s : s + ctx.chunk, None])
            grad_logits.mul_(-g[:, None])
            grad_logits.scatter_add_(1, targets[s : s + ctx.chunk, None], g[:, None])
            grad_logits = grad_logits.to(h.dtype)
            if need_h:
                grad_h[s : s + ctx.chunk] = grad_logits @ weight
            if need_w:
                grad_w.add_(grad_logits.t() @ h)
            if grad_b is not None:
                grad_b.add_(grad_logits.float().sum(0))
        grad_w = grad_w.to(ctx.param_dtypes[0]) if grad_w is not None else None
        grad_b = grad_b.to(ctx.param_dtypes[1]) if grad_b is not None else None
        return grad_h, grad_w, grad_b, None, None


def _chunk_logits(h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    logits = h @ weight.t()
    if bias is not None:
        logits = logits + bias
    return logits.float()


def linear_token_logps(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    bias: Tensor | None = None,
    *,
    chunk_elems: int = DEFAULT_CHUNK_ELEMS,
) -> Tensor:
    """Token log-probs [N] (float32) of `targets` [N] under softmax(hidden [N, H] @ weight.T [+ bias])."""
    chunk = max(1, chunk_elems // weight.shape[0])
    return _LinearTokenLogps.apply(hidden, weight, bias, targets, chunk)


class _LinearSequenceLogps(torch.autograd.Function):
    """Per-sequence sums of log softmax(hidden @ weight.T + bias)[target]; rows are grouped by sequence
    (sequence s owns rows offsets[s]:offsets[s+1]). Gradients are formed in forward (see module doc)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, seq_index, offsets, chunk, need_grad):
        w_dtype, b_dtype = weight.dtype, (bias.dtype if bias is not None else None)
        weight_c = weight.to(hidden.dtype)  # bf16 hidden under autocast: project in bf16, reduce in fp32
        bias_c = bias.to(hidden.dtype) if bias is not None else None
        n_seq = len(offsets) - 1
        sums = torch.zeros(n_seq, dtype=torch.float32, device=hidden.device)
        need_h = need_grad and hidden.requires_grad
        need_w = need_grad and weight.requires_grad
        need_b = need_grad and bias is not None and bias.requires_grad
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros((n_seq, *weight.shape), dtype=torch.float32, device=hidden.device) if need_w else None
        grad_b = torch.zeros((n_seq, bias.shape[0]), dtype=torch.float32, device=hidden.device) if need_b else None
        for s in range(n_seq):
            for a in range(offsets[s], offsets[s + 1], chunk):
                b = min(a + chunk, offsets[s + 1])
                h, tgt = hidden[a:b], targets[a:b, None]
                logits = _chunk_logits(h, weight_c, bias_c)
                target_logit = logits.gather(1, tgt)
                top = logits.amax(1, keepdim=True)
                probs = logits.sub_(top).exp_()  # in place: one [rows, V] buffer per chunk
                total = probs.sum(1, keepdim=True)
                sums[s] += (target_logit - top - total.log()).sum()
                if not (need_h or need_w or need_b):
                    continue
                # d logp_t / d logits = onehot(target) - softmax
                d = probs.mul_(-1.0 / total).scatter_add_(1, tgt, torch.ones_like(target_logit)).to(h.dtype)
                if need_h:
                    grad_h[a:b] = d @ weight_c
                if need_w:
                    grad_w[s].add_(d.t() @ h)
                if need_b:
                    grad_b[s].add_(d.float().sum(0))
        ctx.save_for_backward(seq_index, grad_h, grad_w, grad_b)
        ctx.param_dtypes = (w_dtype, b_dtype)
        return sums

    @staticmethod
    def backward(ctx, grad_sums):
        seq_index, grad_h, grad_w, grad_b = ctx.saved_tensors
        g = grad_sums.float()
        out_h = out_w = out_b = None
        if grad_h is not None:
            out_h = grad_h * g[seq_index][:, None].to(grad_h.dtype)
        if grad_w is not None:
            out_w = (g[None] @ grad_w.view(g.shape[0], -1)).view(grad_w.shape[1:]).to(ctx.param_dtypes[0])
        if grad_b is not None:
            out_b = (g @ grad_b).to(ctx.param_dtypes[1])
        return out_h, out_w, out_b, None, None, None, None, None


def linear_sequence_logps(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    seq_index: Tensor,
    offsets: list[int] | tuple[int, ...],
    bias: Tensor | None = None,
    *,
    chunk_elems: int = SEQ_CHUNK_ELEMS,
    stash_bytes: int | None = None,
) -> Tensor:
    """Per-sequence sums [S] (float32) of log softmax(hidden @ weight.T [+ bias])[targets].

    Rows [N] are grouped by sequence: `offsets` (host ints, length S + 1, non-decreasing) delimit the
    rows of each sequence and `seq_index` [N] (on the rows' device) names each row's sequence; both
    describe the same grouping (host offsets size the chunk loop without a device read). Gradients
    are formed in forward when the per-sequence weight-gradient stash fits `stash_bytes` (default
    `SEQ_GRAD_STASH_BYTES`), else the token-level recompute path is used; the values are the same."""
    offsets = tuple(int(o) for o in offsets)
    n_seq = len(offsets) - 1
    chunk = max(1, chunk_elems // weight.shape[0])
    need_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad
                                             or (bias is not None and bias.requires_grad))
    limit = SEQ_GRAD_STASH_BYTES if stash_bytes is None else stash_bytes
    if need_grad and weight.requires_grad and n_seq * weight.numel() * 4 > limit:
        rows = max(1, min(chunk_elems, DEFAULT_CHUNK_ELEMS) // weight.shape[0])  # recompute holds 2 buffers
        tok = _LinearTokenLogps.apply(hidden, weight, bias, targets, rows)
        return tok.new_zeros(n_seq).index_add(0, seq_index, tok)
    return _LinearSequenceLogps.apply(hidden, weight, bias, targets, seq_index, offsets, chunk, need_grad)


def logits_token_logps(logits: Tensor, targets: Tensor, *, chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> Tensor:
    """Token log-probs from given logits [N, V] (for models whose heads we cannot fuse), chunked so the
    float32 copy of the log-softmax is never whole."""
    chunk = max(1, chunk_elems // logits.shape[-1])
    parts = []
    for s in range(0, logits.shape[0], chunk):
        lg = logits[s : s + chunk].float()
        parts.append(lg.gather(1, targets[s : s + chunk, None]).squeeze(1) - torch.logsumexp(lg, dim=-1))
    return torch.cat(parts) if parts else logits.new_zeros(0, dtype=torch.float32)


def reduce_sequences(
    token_logps: Tensor,
    seq_index: Tensor,
    num_seqs: int,
    *,
    average: bool,
    slots: Tensor | None = None,
    num_codebooks: int = 1,
    codebook_reduction: str = "flat",
    slot_levels: tuple[int, ...] | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-sequence log-prob [num_seqs] and token count from packed token log-probs.

    `seq_index[i]` names the sequence of token i; `slots[i]` its codebook (None = single stream);
    `slot_levels[k]` the codebook level of slot k ("level" reduction only).
    Returns `(logps, n_tokens)`, with `logps` summed or averaged as described in the module docstring.
    """
    if codebook_reduction not in CODEBOOK_REDUCTIONS:
        raise ValueError(f"codebook_reduction must be one of {CODEBOOK_REDUCTIONS}, got {codebook_reduction!r}")
    if codebook_reduction == "level" and average and slots is not None:
        if slot_levels is None or len(slot_levels) != num_codebooks:
            raise ValueError(f"codebook_reduction 'level' needs slot_levels for {num_codebooks} slots")
        level = torch.as_tensor(slot_levels, device=slots.device)[slots]
        n_levels = int(max(slot_levels)) + 1
        key = seq_index * n_levels + level
        level_sums = token_logps.new_zeros(num_seqs * n_levels).index_add(0, key, token_logps)
        counts = torch.bincount(key, minlength=num_seqs * n_levels).to(token_logps.dtype)
        present = (counts > 0).to(token_logps.dtype).view(num_seqs, n_levels)
        means = (level_sums / counts.clamp(min=1)).view(num_seqs, n_levels)
        n_tokens = torch.bincount(seq_index, minlength=num_seqs).to(token_logps.dtype)
        return (means * present).sum(1) / present.sum(1).clamp(min=1), n_tokens
    if codebook_reduction == "first" and slots is not None:
        keep = slots == 0
        token_logps, seq_index = token_logps[keep], seq_index[keep]
    sums = token_logps.new_zeros(num_seqs).index_add(0, seq_index, token_logps)
    n_tokens = torch.bincount(seq_index, minlength=num_seqs).to(token_logps.dtype)
    if not average:
        return sums, n_tokens
    denom = n_tokens
    if codebook_reduction == "sum" and slots is not None:
        denom = n_tokens / num_codebooks  # frames
    return sums / denom.clamp(min=1), n_tokens


def masked_sequence_logps(
    token_logps: Tensor,
    mask: Tensor,
    *,
    average: bool,
    codebook_reduction: str = "flat",
    num_codebooks: int = 1,
) -> Tensor:
    """Dense variant: token_logps [B, L] (or [B, L, K] for parallel codebook heads) and mask [B, L]."""
    if token_logps.dim() == 3:
        b, l, k = token_logps.shape
        slots = torch.arange(k, device=token_logps.device).expand(b, l, k)[mask]
        seq_index = torch.arange(b, device=token_logps.device)[:, None, None].expand(b, l, k)[mask]
        logps, _ = reduce_sequences(
            token_logps[mask].reshape(-1), seq_index.reshape(-1), b, average=average,
            slots=slots.reshape(-1), num_codebooks=k, codebook_reduction=codebook_reduction,
        )
        return logps
    seq_index = torch.arange(token_logps.shape[0], device=token_logps.device)[:, None].expand_as(mask)[mask]
    slots = None
    if num_codebooks > 1:  # flattened stream: slot = position within the response modulo K
        pos = torch.cumsum(mask.long(), dim=1) - 1
        slots = (pos % num_codebooks)[mask]
    logps, _ = reduce_sequences(
        token_logps[mask], seq_index, token_logps.shape[0], average=average, slots=slots,
        num_codebooks=num_codebooks, codebook_reduction=codebook_reduction,
    )
    return logps
