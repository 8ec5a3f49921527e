"""Chunked log-probs are exact against the naive full log-softmax, in value and gradient."""

import pytest
import torch

from lpo_speech.logps import (
    linear_token_logps,
    logits_token_logps,
    masked_sequence_logps,
    reduce_sequences,
)


def naive(hidden, weight, targets, bias=None):
    logits = hidden @ weight.t() + (bias if bias is not None else 0)
    return torch.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None]).squeeze(1)


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("chunk_elems", [1, 7 * 50, 1 << 25])  # 1 row, 7 rows, all rows per chunk
def test_linear_token_logps_matches_naive(with_bias, chunk_elems):
    torch.manual_seed(0)
    n, h, v = 37, 16, 50
    hidden = torch.randn(n, h, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(v, dtype=torch.float64, requires_grad=True) if with_bias else None
    targets = torch.randint(0, v, (n,))
    upstream = torch.randn(n, dtype=torch.float64)
    ours = linear_token_logps(hidden, weight, targets, bias, chunk_elems=chunk_elems)
    ref = naive(hidden, weight, targets, bias).double()
    torch.testing.assert_close(ours.double(), ref, rtol=1e-6, atol=1e-6)  # fp32 reduction inside
    inputs = (hidden, weight) + ((bias,) if with_bias else ())
    g_ours = torch.autograd.grad((ours.double() * upstream).sum(), inputs)
    g_ref = torch.autograd.grad((ref * upstream).sum(), inputs)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_linear_token_logps_gradcheck():
    torch.manual_seed(1)
    hidden = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 6, (5,))
    # float64 end to end for gradcheck: call the Function with a small chunk.
    from lpo_speech.logps import _LinearTokenLogps

    def f(h, w):
        return _LinearTokenLogps.apply(h, w, None, targets, 2).double()

    # the Function reduces in float32, so allow fp32-level error
    assert torch.autograd.gradcheck(f, (hidden, weight), eps=1e-3, atol=1e-3, rtol=1e-3)


def test_bf16_hidden_fp32_weight():
    torch.manual_seed(2)
    hidden = torch.randn(9, 8).bfloat16().requires_grad_()
    weight = torch.randn(20, 8, requires_grad=True)
    targets = torch.randint(0, 20, (9,))
    out = linear_token_logps(hidden, weight, targets)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert hidden.grad.dtype == torch.bfloat16 and weight.grad.dtype == torch.float32
    torch.testing.assert_close(out, naive(hidden.float(), weight.bfloat16().float(), targets), atol=0.05, rtol=0.05)


def test_logits_token_logps():
    torch.manual_seed(3)
    logits = torch.randn(11, 30)
    targets = torch.randint(0, 30, (11,))
    ref = torch.log_softmax(logits, -1).gather(1, targets[:, None]).squeeze(1)
    torch.testing.assert_close(logits_token_logps(logits, targets, chunk_elems=60), ref)


def test_masked_sequence_sum_and_mean():
    tok = torch.tensor([[-1.0, -2.0, -3.0, -4.0], [-0.5, -0.5, -9.0, -9.0]])
    mask = torch.tensor([[False, True, True, True], [True, True, False, False]])
    assert masked_sequence_logps(tok, mask, average=False).tolist() == [-9.0, -1.0]
    assert masked_sequence_logps(tok, mask, average=True).tolist() == [-3.0, -0.5]


def test_codebook_reductions_flattened_stream():
    # one response of 2 frames x 2 codebooks, flattened: slots 0,1,0,1
    tok = torch.tensor([[-1.0, -2.0, -3.0, -4.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    kw = dict(num_codebooks=2)
    assert masked_sequence_logps(tok, mask, average=False, codebook_reduction="flat", **kw).item() == -10.0
    assert masked_sequence_logps(tok, mask, average=True, codebook_reduction="flat", **kw).item() == -2.5
    assert masked_sequence_logps(tok, mask, average=True, codebook_reduction="sum", **kw).item() == -5.0
    assert masked_sequence_logps(tok, mask, average=False, codebook_reduction="first", **kw).item() == -4.0
    assert masked_sequence_logps(tok, mask, average=True, codebook_reduction="first", **kw).item() == -2.0


def test_codebook_reductions_parallel_heads():
    # [B=1, T=3 frames, K=2 codebooks], last frame masked out
    tok = torch.tensor([[[-1.0, -2.0], [-3.0, -4.0], [-50.0, -50.0]]])
    mask = torch.tensor([[True, True, False]])
    assert masked_sequence_logps(tok, mask, average=True, codebook_reduction="sum").item() == -5.0
    assert masked_sequence_logps(tok, mask, average=True, codebook_reduction="first").item() == -2.0
    assert masked_sequence_logps(tok, mask, average=True, codebook_reduction="flat").item() == -2.5


def test_reduce_sequences_rejects_unknown():
    with pytest.raises(ValueError, match="codebook_reduction"):
        reduce_sequences(torch.zeros(1), torch.zeros(1, dtype=torch.long), 1, average=True, codebook_reduction="x")


def test_peak_memory_is_one_chunk_not_full_logits():
    """Autograd keeps no [N, V] tensor: saved tensors are hidden, weight, targets and one lse row."""
    n, h, v = 64, 8, 4096
    hidden = torch.randn(n, h, requires_grad=True)
    weight = torch.randn(v, h, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        linear_token_logps(hidden, weight, torch.randint(0, v, (n,)), chunk_elems=16 * v)
    assert max(saved) <= max(v * h, n * h)  # the weight itself; never n * v
