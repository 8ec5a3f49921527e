"""Preference losses: LPO and its variants, plus the DPO family they are compared with.

Notation per pair (prompt x, chosen y_w, rejected y_l), with logp the (optionally length-averaged)
sequence log-probability of the response:

    x1 = logp_pi(y_w) - logp_ref(y_w)          (chosen log-ratio)
    x2 = logp_pi(y_l) - logp_ref(y_l)          (rejected log-ratio)
    m  = 1 / (2 * beta)                        (LPO offset)
    sg = stop-gradient (.detach())

    lpo              4*beta * |x1 - x2 - m|
    lpo-r            4*beta * |r1*x1 - r2*x2 - m|
    lpo-ste          4*beta/(r1+r2) * ( r1*|x1 - sg(x2) - m| + r2*|sg(x1) - x2 - m| )
    lpo-ste-dynamic  lpo-ste with r1 = 1 and, per pair, r2 = exp(sg(x2) - sg(x1))
    sigmoid (DPO)    -(1-eps)*logsigmoid(beta*(x1-x2)) - eps*logsigmoid(-beta*(x1-x2))
    hinge            relu(1 - beta*(x1 - x2))
    ipo              (x1 - x2 - m)**2
    kto_pair         KLc = mean(x1).clamp(min=0), KLr = mean(x2).clamp(min=0) over the batch;
                     the 2B values 1 - sigmoid(beta*(x1 - KLr)) and 1 - sigmoid(beta*(KLc - x2))
    sft              0: no preference term; with loss.sft_weight > 0 the trainer then runs plain SFT
                     on the chosen responses (the honest baseline when the chosen side is gold)

Added to every pair: the positive regularizer gamma * relu(-x1) (keeps the chosen log-prob from
falling below the reference; off at gamma 0). The optional NLL ("sft") term on the chosen response,
weighted by `sft_weight`, is added by the trainer from the policy's chosen NLL. The batch loss is the
mean of the returned per-example tensor.

Online training (lpo_speech.online) can instead use GRPO: each prompt's G sampled responses form a
group, and with rewards r, sequence log-probs logp and the reference's logp_ref:

    advantage        A_i = (r_i - mean_g(r)) / (std_g(r) + 1e-4)      (normalize std: GRPO)
                     A_i =  r_i - mean_g(r)                           (normalize none: Dr. GRPO)
    grpo             -A_i * logp_pi(y_i) + kl_coef * KL_i,
                     KL_i = exp(d_i) - d_i - 1 with d_i = logp_ref(y_i) - logp_pi(y_i)   (the k3 estimator)

(std_g is the population standard deviation of the group's G rewards.) One update per batch of
samples, so the PPO ratio is 1 and its clip never acts: the gradient is the plain policy gradient
A_i * grad logp_pi(y_i). With length-averaged log-probs (loss.average_logps) this is GRPO's per-token
mean; Dr. GRPO sums over tokens (average_logps false) and drops the std.

Why lpo-ste: below the offset its gradients are constant, -4*beta*r1/(r1+r2) on x1 and
+4*beta*r2/(r1+r2) on x2, so chosen and rejected are decoupled and r2/r1 sets linearly how fast the
rejected log-prob is pushed down; DPO scales both by the same shrinking sigmoid, which lets x1 and x2
fall together late in training.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _lpo(x1: Tensor, x2: Tensor, *, beta: float, **_) -> Tensor:
    m = 1.0 / (2.0 * beta)
    return 4.0 * beta * (x1 - x2 - m).abs()


def _lpo_r(x1: Tensor, x2: Tensor, *, beta: float, r1: float, r2: float, **_) -> Tensor:
    m = 1.0 / (2.0 * beta)
    return 4.0 * beta * (r1 * x1 - r2 * x2 - m).abs()


def _lpo_ste(x1: Tensor, x2: Tensor, *, beta: float, r1, r2, **_) -> Tensor:
    # r1, r2 may be floats or per-pair tensors (lpo-ste-dynamic).
    m = 1.0 / (2.0 * beta)
    chosen_term = (x1 - x2.detach() - m).abs()
    rejected_term = (x1.detach() - x2 - m).abs()
    return 4.0 * beta / (r1 + r2) * (r1 * chosen_term + r2 * rejected_term)


def dynamic_r2(x1: Tensor, x2: Tensor) -> Tensor:
    """Per-pair r2 of lpo-ste-dynamic: exp(sg(x2) - sg(x1))."""
    return torch.exp(x2.detach() - x1.detach())


def _lpo_ste_dynamic(x1: Tensor, x2: Tensor, *, beta: float, **_) -> Tensor:
    return _lpo_ste(x1, x2, beta=beta, r1=1.0, r2=dynamic_r2(x1, x2))


def _sigmoid(x1: Tensor, x2: Tensor, *, beta: float, label_smoothing: float, **_) -> Tensor:
    z = beta * (x1 - x2)
    return -(1.0 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)


def _hinge(x1: Tensor, x2: Tensor, *, beta: float, **_) -> Tensor:
    return torch.relu(1.0 - beta * (x1 - x2))


def _ipo(x1: Tensor, x2: Tensor, *, beta: float, **_) -> Tensor:
    m = 1.0 / (2.0 * beta)
    return (x1 - x2 - m) ** 2


def _kto_pair(x1: Tensor, x2: Tensor, *, beta: float, **_) -> Tensor:
    kl_chosen = x1.mean().clamp(min=0)
    kl_rejected = x2.mean().clamp(min=0)
    chosen = 1.0 - torch.sigmoid(beta * (x1 - kl_rejected))
    rejected = 1.0 - torch.sigmoid(beta * (kl_chosen - x2))
    return torch.cat([chosen, rejected], dim=0)


def _sft(x1: Tensor, x2: Tensor, **_) -> Tensor:
    return torch.zeros_like(x1)


LOSSES: dict[str, Callable[..., Tensor]] = {
    "lpo": _lpo,
    "lpo-r": _lpo_r,
    "lpo-ste": _lpo_ste,
    "lpo-ste-dynamic": _lpo_ste_dynamic,
    "sigmoid": _sigmoid,
    "hinge": _hinge,
    "ipo": _ipo,
    "kto_pair": _kto_pair,
    "sft": _sft,
}


def preference_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    loss_type: str = "lpo-ste",  # defaults are the recipe's (config.LossConfig; a test keeps them equal)
    beta: float = 0.2,
    r1: float = 1.0,
    r2: float = 0.8,
    gamma: float = 5.0,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-example preference losses (regularizer included) and detached metrics.

    Returns `(losses, metrics)`: `losses` has B values (2B for kto_pair) whose mean is the batch loss;
    `metrics` holds x1 and x2 (signed means), margin (mean x1 - x2), accuracy (share with x1 > x2),
    loss_unreg (mean loss without the regularizer), reg (mean regularizer) and r2 (mean dynamic r2 for
    lpo-ste-dynamic, else the constant r2).
    """
    if loss_type not in LOSSES:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {sorted(LOSSES)}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    x1 = policy_chosen_logps - ref_chosen_logps
    x2 = policy_rejected_logps - ref_rejected_logps
    unreg = LOSSES[loss_type](x1, x2, beta=beta, r1=r1, r2=r2, label_smoothing=label_smoothing)
    reg = gamma * torch.relu(-x1) if gamma > 0 else torch.zeros_like(x1)
    # kto_pair returns 2B values: the regularizer joins the chosen half only.
    losses = unreg + (torch.cat([reg, torch.zeros_like(reg)]) if loss_type == "kto_pair" else reg)
    with torch.no_grad():
        r2_value = dynamic_r2(x1, x2).mean() if loss_type == "lpo-ste-dynamic" else torch.tensor(float(r2))
        metrics = {
            "x1": x1.mean(),
            "x2": x2.mean(),
            "margin": (x1 - x2).mean(),
            "accuracy": (x1 > x2).float().mean(),
            "loss_unreg": unreg.mean(),
            "reg": reg.mean(),
            "r2": r2_value,
        }
    return losses, {k: v.detach() for k, v in metrics.items()}


# ------------------------------------------------------------------ group-relative policy gradient

def group_advantages(rewards: Tensor, group_size: int, *, normalize: str = "std", eps: float = 1e-4) -> Tensor:
    """Advantages of rewards laid out group by group ([P * G], G = `group_size`): each reward minus its
    group's mean, divided by the group's population std + eps when `normalize` is "std" (GRPO); "none"
    keeps the difference (Dr. GRPO). A group whose rewards are all equal gets zero advantages."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.float().reshape(-1, group_size)
    a = r - r.mean(dim=1, keepdim=True)
    if normalize == "std":
        sd = r.std(dim=1, unbiased=False, keepdim=True)
        a = torch.where(sd > 0, a / (sd + eps), torch.zeros_like(a))  # an all-equal group: 0, never 0/0
    elif normalize != "none":
        raise ValueError(f"normalize must be 'std' or 'none', got {normalize!r}")
    return a.reshape(-1)


def grpo_loss(logps: Tensor, advantages: Tensor, *, ref_logps: Tensor | None = None,
              kl_coef: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-sequence GRPO losses `-A * logp + kl_coef * KL` (module docstring) and detached metrics:
    `kl` (mean k3 KL to the reference; 0 without one), `logp` (mean sequence log-prob), `pg` (mean
    policy-gradient term). The batch loss is the mean."""
    pg = -advantages.detach() * logps
    if ref_logps is not None and kl_coef > 0:
        d = ref_logps.detach() - logps
        kl = torch.exp(d) - d - 1.0
    else:
        kl = torch.zeros_like(logps)
    losses = pg + kl_coef * kl
    return losses, {"kl": kl.detach().mean(), "logp": logps.detach().mean(), "pg": pg.detach().mean()}

