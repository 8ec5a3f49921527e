"""Per-sequence log-probs with gradients formed in forward: exact against the naive full log-softmax
(values and gradients), both paths (stash and recompute), and the causal-LM adapter's fast path equal
to its token-level path."""

from __future__ import annotations

import pytest
import torch

from lpo_speech.adapters.base import response_logps
from lpo_speech.adapters.causal_lm import CausalLMPairModel, HostInts, logp_rows
from lpo_speech.adapters.base import pad_rows
from lpo_speech.logps import linear_sequence_logps


def naive_sums(hidden, weight, targets, seq_index, n_seq, bias=None):
    logits = hidden @ weight.t() + (bias if bias is not None else 0)
    tok = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)
    return tok.new_zeros(n_seq).index_add(0, seq_index, tok)


def grouped(lengths):
    seq_index = torch.arange(len(lengths)).repeat_interleave(torch.tensor(lengths))
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    return seq_index, offsets


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("chunk_elems", [1, 7 * 50, 1 << 25])
@pytest.mark.parametrize("stash", [None, 0])  # 0: no stash allowed -> recompute path
def test_linear_sequence_logps_matches_naive(with_bias, chunk_elems, stash):
    torch.manual_seed(0)
    lengths = [5, 0, 13, 1, 18]  # an empty sequence too
    seq_index, offsets = grouped(lengths)
    n, h, v = sum(lengths), 16, 50
    hidden = torch.randn(n, h, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(v, dtype=torch.float64, requires_grad=True) if with_bias else None
    targets = torch.randint(0, v, (n,))
    upstream = torch.randn(len(lengths), dtype=torch.float64)
    ours = linear_sequence_logps(hidden, weight, targets, seq_index, offsets, bias, chunk_elems=chunk_elems,
                                 stash_bytes=stash)
    ref = naive_sums(hidden, weight, targets, seq_index, len(lengths), bias)
    assert ours.dtype == torch.float32 and ours[1].item() == 0.0
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)  # fp32 reduction inside
    inputs = (hidden, weight) + ((bias,) if with_bias else ())
    g_ours = torch.autograd.grad((ours.double() * upstream).sum(), inputs)
    g_ref = torch.autograd.grad((ref * upstream).sum(), inputs)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_frozen_head_and_no_grad():
    torch.manual_seed(1)
    seq_index, offsets = grouped([4, 6])
    hidden = torch.randn(10, 8, requires_grad=True)
    weight = torch.randn(30, 8)  # frozen: only the hidden gradient
    targets = torch.randint(0, 30, (10,))
    out = linear_sequence_logps(hidden, weight, targets, seq_index, offsets)
    (out * torch.tensor([1.0, -2.0])).sum().backward()
    h2 = hidden.detach().clone().requires_grad_()
    (naive_sums(h2, weight, targets, seq_index, 2) * torch.tensor([1.0, -2.0])).sum().backward()
    torch.testing.assert_close(hidden.grad, h2.grad, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # the reference pass: values only, nothing kept for backward
        torch.testing.assert_close(linear_sequence_logps(hidden, weight, targets, seq_index, offsets), out.detach())


def test_saved_tensors_are_small_gradients_not_logits():
    """Autograd keeps d(sum)/d(hidden) [N, H] and d(sum)/d(weight) per sequence [S, V, H]; never [N, V]."""
    n, h, v = 64, 8, 4096
    seq_index, offsets = grouped([30, 34])
    hidden = torch.randn(n, h, requires_grad=True)
    weight = torch.randn(v, h, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(tuple(t.shape)) or t, lambda t: t):
        linear_sequence_logps(hidden, weight, torch.randint(0, v, (n,)), seq_index, offsets, chunk_elems=16 * v)
    assert (2, v, h) in saved and (n, h) in saved
    assert all(s[-1] != v for s in saved)


def test_bf16_hidden_fp32_weight():
    torch.manual_seed(2)
    seq_index, offsets = grouped([4, 5])
    hidden = torch.randn(9, 8).bfloat16().requires_grad_()
    weight = torch.randn(20, 8, requires_grad=True)
    targets = torch.randint(0, 20, (9,))
    out = linear_sequence_logps(hidden, weight, targets, seq_index, offsets)
    out.sum().backward()
    assert out.dtype == torch.float32
    assert hidden.grad.dtype == torch.bfloat16 and weight.grad.dtype == torch.float32
    ref = naive_sums(hidden.float(), weight.bfloat16().float(), targets, seq_index, 2)
    torch.testing.assert_close(out, ref, atol=0.1, rtol=0.05)


def test_host_ints_stay_on_the_host():
    h = HostInts([0, 3, 5])
    assert h.to("cpu") is h and h.to(torch.device("meta"), non_blocking=True) is h and h.values == (0, 3, 5)


@pytest.fixture(scope="module")
def tiny_model(tiny_lm):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    lm = LlamaForCausalLM.from_pretrained(tiny_lm, dtype=torch.float32)
    with torch.no_grad():  # a non-trivial head: the saved tiny model is random already; perturb a bit
        lm.lm_head.weight.add_(0.05 * torch.randn_like(lm.lm_head.weight))
    return lm


@pytest.mark.parametrize("average", [False, True])
@pytest.mark.parametrize("num_codebooks,reduction", [(1, "flat"), (2, "flat"), (2, "sum"), (1, "sum")])
def test_causal_lm_fast_path_equals_token_path(tiny_model, average, num_codebooks, reduction):
    torch.manual_seed(3)
    rows = [([3, 4, 5], [7, 8, 9, 10]), ([6], [11, 12]), ([3, 4, 5], [20, 21, 22, 23, 24, 25]), ([6], [30, 31])]
    batch = pad_rows(rows, 0)
    batch.update(logp_rows(batch))
    model = CausalLMPairModel(tiny_model, average=average, num_codebooks=num_codebooks, codebook_reduction=reduction)
    fast = model(batch)
    params = [p for p in model.parameters()]
    loss = (fast.chosen * 1.3 - fast.rejected * 0.7 + 0.5 * fast.chosen_nll).sum()
    g_fast = torch.autograd.grad(loss, params)
    hidden = tiny_model.get_decoder()(input_ids=batch["input_ids"],
                                      attention_mask=batch["attention_mask"]).last_hidden_state
    slow = response_logps(hidden, batch["input_ids"], batch["response_mask"], tiny_model.get_output_embeddings(),
                          average=average, num_codebooks=num_codebooks, codebook_reduction=reduction,
                          response_pos=batch["response_pos"])
    for a, b in ((fast.chosen, slow.chosen), (fast.rejected, slow.rejected), (fast.chosen_nll, slow.chosen_nll)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    g_slow = torch.autograd.grad((slow.chosen * 1.3 - slow.rejected * 0.7 + 0.5 * slow.chosen_nll).sum(), params)
    for a, b in zip(g_fast, g_slow):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_logp_rows_layout():
    batch = pad_rows([([1, 2], [3, 4]), ([5], [6, 7, 8])], 0)
    sel = logp_rows(batch)
    # row 0: positions 1, 2 predict 3, 4; row 1 (width 4): positions 0, 1, 2 predict 6, 7, 8
    assert sel["logp_index"].tolist() == [1, 2, 4, 5, 6]
    assert sel["logp_targets"].tolist() == [3, 4, 6, 7, 8]
    assert sel["logp_seq"].tolist() == [0, 0, 1, 1, 1]
    assert sel["logp_offsets"].values == (0, 2, 5)
    assert sel["response_tokens"].tolist() == [2.0, 3.0]
