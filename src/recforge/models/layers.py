"""Small building blocks shared by families."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from recforge.training.samplers import shuffled_batches


def init_embedding_from_vectors(
    embedding: nn.Embedding, vectors: torch.Tensor, *, freeze: bool = False
) -> None:
    """Initialise `embedding` (n, D) from pretrained vectors (n, D'), as in Content2Vec.

    When D' != D the vectors are projected on their top-D principal directions (zero-padded if
    D' < D); they are then rescaled to the embedding's current standard deviation so the optimiser
    sees the same scale as a random init. `freeze` stops gradient updates of the table.
    """
    n, d = embedding.weight.shape
    if vectors.shape[0] != n:
        raise ValueError(f"item_vectors has {vectors.shape[0]} rows, the embedding has {n}")
    v = vectors.detach().to(torch.float32)
    v = v - v.mean(dim=0, keepdim=True)
    if v.shape[1] > d:
        _, _, basis = torch.pca_lowrank(v, q=d, center=False)  # basis: (D', D)
        v = v @ basis  # (n, D)
    elif v.shape[1] < d:
        v = torch.cat([v, torch.zeros(n, d - v.shape[1])], dim=1)  # (n, D)
    std = embedding.weight.detach().std().clamp_min(1e-6)
    v = v / v.std().clamp_min(1e-12) * std
    with torch.no_grad():
        embedding.weight.copy_(v.to(embedding.weight.dtype))
    embedding.weight.requires_grad_(not freeze)


def pairs_in_batches(
    user: torch.Tensor, item: torch.Tensor, batch_size: int, generator: torch.Generator, **extra: torch.Tensor
) -> Iterator[dict[str, torch.Tensor]]:
    """Shuffle aligned (user, item, …) rows and yield them as dict batches by tensor indexing."""
    for idx in shuffled_batches(len(user), batch_size, generator):
        batch = {"user": user[idx], "item": item[idx]}
        batch.update({k: v[idx] for k, v in extra.items()})
        yield batch
