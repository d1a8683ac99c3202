"""Factorised feature interactions in O(k·n): the FM family's building blocks.

`e` is a batch of per-slot embeddings already scaled by their values, shape (B, n, k)
(x_i · v_i for every active slot i; padded slots are zeros and add nothing). With the power sums
p_r = Σ_i e_i^r (element-wise over k):

- `pairwise(e)`  = Σ_{i<j} e_i ∘ e_j           = (p1² − p2) / 2        (Rendle 2010, eq. 5;
  He & Chua 2017's bi-interaction pooling is exactly this vector)
- `triplewise(e)` = Σ_{i<j<k} e_i ∘ e_j ∘ e_k  = (p1³ − 3·p1·p2 + 2·p3) / 6  (Newton's identity
  for the third elementary symmetric polynomial)

Summing the returned vector over k gives the scalar FM term. deck 002 writes the 3rd-order term of
Neural FM as (xᵀU)∘(xᵀU)∘(xᵀU) = p1³, which also counts the i=j=k and i=j≠k products;
`deck_power(e, order)` is that form, kept for comparison with the deck.
"""

from __future__ import annotations

import torch


def _sums(e: torch.Tensor, up_to: int) -> list[torch.Tensor]:
    if e.dim() != 3:
        raise ValueError(f"expected slot embeddings of shape (batch, slots, dim), got {tuple(e.shape)}")
    return [e.pow(r).sum(dim=1) for r in range(1, up_to + 1)]


def pairwise(e: torch.Tensor) -> torch.Tensor:
    """Σ_{i<j} e_i ∘ e_j, shape (B, k)."""
    p1, p2 = _sums(e, 2)
    return 0.5 * (p1 * p1 - p2)


def triplewise(e: torch.Tensor) -> torch.Tensor:
    """Σ_{i<j<k} e_i ∘ e_j ∘ e_k, shape (B, k)."""
    p1, p2, p3 = _sums(e, 3)
    return (p1.pow(3) - 3.0 * p1 * p2 + 2.0 * p3) / 6.0


def deck_power(e: torch.Tensor, order: int) -> torch.Tensor:
    """(Σ_i e_i)^order element-wise, shape (B, k): deck 002's h2 / h3 (self-products included)."""
    if order < 1:
        raise ValueError(f"order must be at least 1, got {order}")
    return e.sum(dim=1).pow(order)
