"""GRPO's advantage normalization and loss, worked by hand."""

import math

import pytest
import torch

from lpo_speech.losses import group_advantages, grpo_loss


def test_advantages_std_and_dr_grpo_by_hand():
    r = torch.tensor([1.0, 0.0, 0.5, 0.5,   # group 1: mean 0.5, population std sqrt(0.125) = 0.35355
                      2.0, 2.0, 2.0, 2.0])  # group 2: all equal -> zero advantages
    a = group_advantages(r, 4, normalize="std", eps=0.0)
    s = math.sqrt(0.125)
    assert a.tolist()[:4] == pytest.approx([0.5 / s, -0.5 / s, 0.0, 0.0])
    assert a.tolist()[4:] == [0.0, 0.0, 0.0, 0.0]
    a_eps = group_advantages(r, 4)  # the default eps (1e-4) keeps an all-equal group at zero, not NaN
    assert a_eps[0].item() == pytest.approx(0.5 / (s + 1e-4)) and a_eps[4:].abs().max().item() == 0.0
    dr = group_advantages(r, 4, normalize="none")  # Dr. GRPO: no std division
    assert dr.tolist() == pytest.approx([0.5, -0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        group_advantages(r, 3)


def test_grpo_loss_and_gradient_by_hand():
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    adv = torch.tensor([2.0, -1.0])
    losses, m = grpo_loss(logp, adv)
    assert losses.tolist() == pytest.approx([2.0, -2.0])  # -A * logp
    losses.mean().backward()
    assert logp.grad.tolist() == pytest.approx([-1.0, 0.5])  # d/dlogp of mean(-A logp) = -A / 2
    assert m["kl"].item() == 0.0 and m["logp"].item() == pytest.approx(-1.5)


def test_grpo_kl_is_k3_by_hand():
    logp = torch.tensor([-1.0, -1.0], requires_grad=True)
    ref = torch.tensor([-1.0, -1.5])  # d = ref - logp = 0 and -0.5
    losses, m = grpo_loss(logp, torch.zeros(2), ref_logps=ref, kl_coef=0.1)
    k3 = math.exp(-0.5) + 0.5 - 1.0  # 0.10653
    assert losses.tolist() == pytest.approx([0.0, 0.1 * k3])
    assert m["kl"].item() == pytest.approx(k3 / 2)
    losses.sum().backward()
    # dKL/dlogp = -exp(d) + 1: 0 at d = 0, 1 - exp(-0.5) at d = -0.5
    assert logp.grad.tolist() == pytest.approx([0.0, 0.1 * (1 - math.exp(-0.5))])
