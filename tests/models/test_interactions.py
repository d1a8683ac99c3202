"""The O(k·n) interaction identities against explicit loops over slot pairs and triples."""

from __future__ import annotations

import itertools

import pytest
import torch

from recforge.models.features.interactions import deck_power, pairwise, triplewise


@pytest.fixture
def e() -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(4, 7, 5, dtype=torch.float64)
    x[:, 5:] = 0.0  # padded slots contribute nothing
    return x


def test_pairwise_equals_the_loop_over_pairs(e):
    loop = sum(e[:, i] * e[:, j] for i, j in itertools.combinations(range(e.shape[1]), 2))
    torch.testing.assert_close(pairwise(e), loop)


def test_triplewise_equals_the_loop_over_triples(e):
    loop = sum(e[:, i] * e[:, j] * e[:, k] for i, j, k in itertools.combinations(range(e.shape[1]), 3))
    torch.testing.assert_close(triplewise(e), loop)


def test_padding_changes_nothing(e):
    torch.testing.assert_close(pairwise(e), pairwise(e[:, :5]))
    torch.testing.assert_close(triplewise(e), triplewise(e[:, :5]))


def test_deck_power_counts_self_products(e):
    full = sum(e[:, i] * e[:, j] * e[:, k] for i, j, k in itertools.product(range(5), repeat=3))
    torch.testing.assert_close(deck_power(e[:, :5], 3), full)
    with pytest.raises(ValueError, match="order"):
        deck_power(e, 0)


def test_gradients_flow_and_shapes_are_checked(e):
    x = e.clone().requires_grad_(True)
    (pairwise(x).sum() + triplewise(x).sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="batch, slots, dim"):
        pairwise(e[0])
