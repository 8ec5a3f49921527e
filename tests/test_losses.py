"""preference_loss against REFERENCE §1, with numbers worked by hand.

Common case: reference log-probs 0, so x1 = policy chosen logp, x2 = policy rejected logp.
x1 = 0.5, x2 = -0.25, beta = 0.5  =>  m = 1/(2*beta) = 1, x1 - x2 = 0.75, x1 - x2 - m = -0.25.
"""

import math

import pytest
import torch

from lpo_speech.losses import LOSSES, preference_loss


def run(x1, x2, gamma=0.0, **kw):
    """The loss on float64 inputs with zero reference; the regularizer is off unless a test sets gamma."""
    kw["gamma"] = gamma
    x1 = torch.tensor(x1, dtype=torch.float64, requires_grad=True)
    x2 = torch.tensor(x2, dtype=torch.float64, requires_grad=True)
    zero = torch.zeros_like(x1)
    losses, metrics = preference_loss(x1, x2, zero, zero, **kw)
    return x1, x2, losses, metrics


@pytest.mark.parametrize(
    "loss_type, extra, expected",
    [
        ("lpo", {}, 0.5),  # 4*0.5*|0.75 - 1| = 2*0.25
        ("lpo-r", {"r1": 1.0, "r2": 3.0}, 0.5),  # 2*|0.5 + 0.75 - 1| = 2*0.25
        ("lpo-r", {"r1": 1.0, "r2": 1.0}, 0.5),  # r1 = r2 = 1 is plain lpo
        ("lpo-ste", {"r1": 1.0, "r2": 3.0}, 0.5),  # 2/4 * (1*0.25 + 3*0.25) = 0.5: equals lpo
        ("lpo-ste-dynamic", {}, 0.5),  # both terms equal |d|, any weights give 4*beta*|d|
        ("sigmoid", {}, 0.52312326413984),  # -logsigmoid(0.375) = log(1 + e^-0.375)
        ("sigmoid", {"label_smoothing": 0.1}, 0.5606232641398401),  # 0.9*0.523123 + 0.1*log(1+e^0.375)
        ("hinge", {}, 0.625),  # relu(1 - 0.5*0.75)
        ("ipo", {}, 0.0625),  # (0.75 - 1)^2
    ],
)
def test_values(loss_type, extra, expected):
    _, _, losses, _ = run([0.5], [-0.25], loss_type=loss_type, beta=0.5, **extra)
    assert losses.shape == (1,)
    assert losses.item() == pytest.approx(expected, abs=1e-12)


def test_kto_pair_values():
    # KLc = max(mean x1, 0) = 0.5, KLr = max(mean x2, 0) = 0
    # chosen: 1 - sigmoid(0.5*(0.5 - 0)) = 0.437823; rejected: 1 - sigmoid(0.5*(0.5 + 0.25)) = 0.407333
    _, _, losses, _ = run([0.5], [-0.25], loss_type="kto_pair", beta=0.5)
    assert losses.shape == (2,)
    assert losses.tolist() == pytest.approx([0.43782349911420193, 0.4073334000459303], abs=1e-12)


def test_every_registered_type_is_tested():
    assert set(LOSSES) == {"lpo", "lpo-r", "lpo-ste", "lpo-ste-dynamic", "sigmoid", "hinge", "ipo", "kto_pair", "sft"}


def test_sft_has_no_preference_term():
    x1, x2, losses, _ = run([0.5], [-0.25], loss_type="sft", beta=0.5)
    assert losses.item() == 0.0


def test_regularizer_added_only_below_zero():
    # x1 = -0.5: gamma*relu(0.5) = 2*0.5 = 1.0 added to lpo's 4*0.5*|-0.5 - (-1) - 1| = 2*0.5 = 1.0
    x1, _, losses, m = run([-0.5], [-1.0], loss_type="lpo", beta=0.5, gamma=2.0)
    assert losses.item() == pytest.approx(2.0)
    assert m["loss_unreg"].item() == pytest.approx(1.0) and m["reg"].item() == pytest.approx(1.0)
    # its gradient on x1 is -gamma while x1 < 0 and nothing once x1 > 0: compare with gamma = 0
    for x, want in [(-0.5, -2.0), (0.3, 0.0)]:
        grads = []
        for gamma in (2.0, 0.0):
            x1 = torch.tensor([x], dtype=torch.float64, requires_grad=True)
            zero = torch.zeros(1, dtype=torch.float64)
            losses, _ = preference_loss(x1, zero - 5, zero, zero, loss_type="lpo", beta=0.5, gamma=gamma)
            grads.append(torch.autograd.grad(losses.sum(), x1)[0].item())
        assert grads[0] - grads[1] == pytest.approx(want)


def test_gamma_zero_is_off():
    _, _, a, m = run([-0.5], [-1.0], loss_type="lpo-ste", beta=0.5, gamma=0.0)
    _, _, b, m5 = run([-0.5], [-1.0], loss_type="lpo-ste", beta=0.5, gamma=5.0)
    assert m["reg"].item() == 0.0 and m5["reg"].item() == pytest.approx(2.5)  # 5 * relu(0.5)
    assert b.item() == pytest.approx(a.item() + 2.5)


@pytest.mark.parametrize("beta, r1, r2", [(0.5, 1.0, 3.0), (0.2, 1.0, 0.8), (0.1, 2.0, 0.5)])
def test_lpo_ste_gradients_constant_decoupled_and_flip(beta, r1, r2):
    m = 1 / (2 * beta)
    for x1v, x2v, sign in [(0.1, 0.0, 1), (-3.0, 2.0, 1), (0.3, -0.1, 1), (m + 1.0, -0.5, -1)]:
        x1, x2, losses, _ = run([x1v], [x2v], loss_type="lpo-ste", beta=beta, r1=r1, r2=r2)
        g1, g2 = torch.autograd.grad(losses.sum(), (x1, x2))
        # below the offset: dL/dx1 = -4*beta*r1/(r1+r2), dL/dx2 = +4*beta*r2/(r1+r2); past it: both flip
        assert g1.item() == pytest.approx(-sign * 4 * beta * r1 / (r1 + r2))
        assert g2.item() == pytest.approx(sign * 4 * beta * r2 / (r1 + r2))


def test_lpo_ste_value_equals_lpo():
    torch.manual_seed(0)
    x1, x2 = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    zero = torch.zeros(16, dtype=torch.float64)
    a, _ = preference_loss(x1, x2, zero, zero, loss_type="lpo-ste", beta=0.2, r1=1.0, r2=0.37)
    b, _ = preference_loss(x1, x2, zero, zero, loss_type="lpo", beta=0.2)
    torch.testing.assert_close(a, b)


def test_r2_scales_rejected_gradient_linearly():
    ratios = []
    for r2 in (0.1, 0.5, 1.0, 3.0):
        x1, x2, losses, _ = run([0.0], [0.0], loss_type="lpo-ste", beta=0.2, r1=1.0, r2=r2)
        g1, g2 = torch.autograd.grad(losses.sum(), (x1, x2))
        ratios.append(-(g2 / g1).item())  # rejected push relative to chosen pull
    assert ratios == pytest.approx([0.1, 0.5, 1.0, 3.0])


def test_lpo_ste_dynamic_r2():
    x1, x2, losses, m = run([0.2, -0.1], [-0.3, 0.4], loss_type="lpo-ste-dynamic", beta=0.5)
    r2 = torch.exp(torch.tensor([-0.5, 0.5], dtype=torch.float64))  # exp(x2 - x1)
    assert m["r2"].item() == pytest.approx(r2.mean().item())
    g1, g2 = torch.autograd.grad(losses.sum(), (x1, x2))
    torch.testing.assert_close(g1, -2.0 / (1 + r2))  # below offset: -4*beta*1/(1+r2)
    torch.testing.assert_close(g2, 2.0 * r2 / (1 + r2))


def test_dpo_gradient_shrinks_with_margin_lpo_does_not():
    # DPO scales both gradients by sigmoid(-beta*(x1-x2)): large margins stop the push.
    small = run([0.1], [0.0], loss_type="sigmoid", beta=0.5)
    large = run([8.0], [-8.0], loss_type="sigmoid", beta=0.5)
    g_small = torch.autograd.grad(small[2].sum(), small[0])[0].item()
    g_large = torch.autograd.grad(large[2].sum(), large[0])[0].item()
    assert g_small == pytest.approx(-0.5 * (1 / (1 + math.exp(0.05))))
    assert abs(g_large) < 0.01 * abs(g_small)


def test_metrics():
    _, _, _, m = run([0.5, -1.0], [-0.25, 0.0], loss_type="lpo-ste", beta=0.5, r2=0.8)
    assert m["x1"].item() == pytest.approx(-0.25) and m["x2"].item() == pytest.approx(-0.125)
    assert m["margin"].item() == pytest.approx(-0.125) and m["accuracy"].item() == 0.5
    assert m["r2"].item() == pytest.approx(0.8)
    assert all(not v.requires_grad for v in m.values())


def test_bad_arguments():
    z = torch.zeros(1)
    with pytest.raises(ValueError, match="unknown loss_type"):
        preference_loss(z, z, z, z, loss_type="nope")
    with pytest.raises(ValueError, match="beta"):
        preference_loss(z, z, z, z, beta=0.0)


def test_function_defaults_are_the_recipe_defaults():
    import inspect

    from lpo_speech.recipe import LossConfig

    params = inspect.signature(preference_loss).parameters
    cfg = LossConfig()
    for name in ("beta", "r1", "r2", "gamma", "label_smoothing"):
        assert params[name].default == getattr(cfg, name), name
    assert params["loss_type"].default == cfg.type
