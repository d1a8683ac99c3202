"""Each loss against a value computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from recforge.training.losses import (
    bce,
    bpr,
    bpr_max,
    mse,
    sampled_softmax,
    softmax_cross_entropy,
    top1,
    top1_max,
)

LN2, LN3 = math.log(2.0), math.log(3.0)


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def close(x: torch.Tensor, expected: float) -> None:
    assert x.dim() == 0
    assert x.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_mse_plain_and_weighted():
    pred, target = t(1.0, 2.0, 3.0), t(1.0, 0.0, 5.0)  # squared errors 0, 4, 4
    close(mse(pred, target), 8.0 / 3.0)
    close(mse(pred, target, weight=t(1.0, 1.0, 2.0)), (0 + 4 + 8) / 4)
    close(mse(pred, target, weight=t(0.0, 0.0, 0.0)), 0.0)


def test_bce_plain_and_weighted():
    logits, labels = t(0.0, LN3), t(1.0, 0.0)  # -log σ(0) = ln 2, -log(1 - σ(ln 3)) = ln 4
    close(bce(logits, labels), 1.5 * LN2)
    close(bce(logits, labels, weight=t(3.0, 1.0)), (3 * LN2 + 2 * LN2) / 4)


def test_bpr_one_and_many_negatives():
    # -log σ(0) = ln 2 and -log σ(-ln 3) = ln 4
    close(bpr(t(2.0), t(2.0 + LN3)), 2 * LN2)
    close(bpr(t(2.0), t([2.0, 2.0 + LN3])), 1.5 * LN2)


def test_top1():
    # σ(neg - pos) + σ(neg²) averaged over the two negatives
    expected = ((sig(0 - LN3) + sig(0.0)) + (sig(1 - LN3) + sig(1.0))) / 2
    close(top1(t(LN3), t([0.0, 1.0])), expected)


def test_bpr_max():
    # s = softmax([0, ln 3]) = [1/4, 3/4]; Σ s σ(0 - neg) = 1/4·1/2 + 3/4·1/4 = 0.3125
    expected = -math.log(0.3125) + 0.5 * (0.75 * LN3**2)
    close(bpr_max(t(0.0), t([0.0, LN3]), reg=0.5), expected)
    close(bpr_max(t(0.0), t([0.0, 0.0]), reg=1.0), LN2)


def test_top1_max():
    expected = 0.25 * (sig(0.0) + sig(0.0)) + 0.75 * (sig(LN3) + sig(LN3**2))
    close(top1_max(t(0.0), t([0.0, LN3])), expected)


def test_sampled_softmax_with_logq_and_shared_negatives():
    close(sampled_softmax(t(0.0), t([0.0, 0.0, 0.0])), math.log(4.0))
    # logQ: the positive's logit becomes 0 - ln(1/2) = ln 2, so the loss is ln(2 + 3) - ln 2
    close(sampled_softmax(t(0.0), t([0.0, 0.0, 0.0]), log_q_pos=t(math.log(0.5))), math.log(2.5))
    close(
        sampled_softmax(t(0.0), t([LN3]), log_q_neg=t([LN3])),  # negative corrected back to 0
        LN2,
    )
    pos = torch.tensor([0.3, -1.2])
    shared = torch.tensor([0.5, 0.1, -0.4])
    assert torch.allclose(sampled_softmax(pos, shared), sampled_softmax(pos, shared.expand(2, 3)))


def test_softmax_cross_entropy_indices_and_multi_hot():
    logits = t([0.0, LN3])
    close(softmax_cross_entropy(logits, torch.tensor([1])), math.log(4.0 / 3.0))
    # multinomial likelihood: -(log 1/4 + log 3/4)
    close(softmax_cross_entropy(logits, t([1.0, 1.0])), math.log(16.0 / 3.0))


def test_losses_backpropagate_finite_grads():
    pos = torch.randn(5, requires_grad=True)
    neg = torch.randn(5, 4, requires_grad=True)
    for loss in (bpr, top1, bpr_max, top1_max, sampled_softmax):
        pos.grad = neg.grad = None
        loss(pos, neg).backward()
        assert torch.isfinite(pos.grad).all() and torch.isfinite(neg.grad).all()
