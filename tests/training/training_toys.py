"""Toy data and a toy network for the fit-loop tests: users like the items of their cluster.

(A uniquely named helper module rather than `conftest` imports, which would clash across test
folders.)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from recforge.training.losses import bpr
from recforge.training.samplers import shuffled_batches, uniform_negatives

N_USERS, N_ITEMS, N_CLUSTERS = 24, 30, 4


class DotModel(nn.Module):
    """Embedding-dot scorer with optional dropout (to exercise the global torch RNG)."""

    def __init__(
        self, n_users: int, n_items: int, dim: int = 8, *, sparse: bool = False, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim, sparse=sparse)
        self.item = nn.Embedding(n_items, dim, sparse=sparse)
        self.bias = nn.Parameter(torch.zeros(()))
        self.drop = nn.Dropout(dropout)
        nn.init.normal_(self.user.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return (self.drop(self.user(user)) * self.item(item)).sum(-1) + self.bias  # (...)


def toy_csr() -> sp.csr_matrix:
    """User u likes the items i with i % N_CLUSTERS == u % N_CLUSTERS."""
    u, i = np.meshgrid(np.arange(N_USERS), np.arange(N_ITEMS), indexing="ij")
    liked = (u % N_CLUSTERS) == (i % N_CLUSTERS)
    m = sp.csr_matrix(liked.astype(np.float32))
    m.sort_indices()
    return m


def make_network(seed: int = 0, **kw) -> DotModel:
    torch.manual_seed(seed)
    return DotModel(N_USERS, N_ITEMS, **kw)


def bpr_task(csr: sp.csr_matrix, batch_size: int = 16, n_neg: int = 2, numpy_noise: bool = False):
    """(batches, loss_fn) for BPR on `csr`'s positives with uniform negatives."""
    coo = csr.tocoo()
    users = torch.as_tensor(coo.row, dtype=torch.int64)
    items = torch.as_tensor(coo.col, dtype=torch.int64)

    def batches(epoch: int, generator: torch.Generator):
        for idx in shuffled_batches(len(users), batch_size, generator):
            neg = uniform_negatives(users[idx], csr, n_neg, generator)  # (B, n_neg)
            yield {"user": users[idx], "pos": items[idx], "neg": neg}

    def loss_fn(net: DotModel, batch):
        pos = net(batch["user"], batch["pos"])  # (B,)
        neg = net(batch["user"][:, None], batch["neg"])  # (B, n_neg)
        loss = bpr(pos, neg)
        if numpy_noise:
            # draws from numpy's global RNG so the resume test covers its state too
            loss = loss * (1.0 + 0.01 * float(np.random.rand()))
        return loss

    return batches, loss_fn


def params(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def assert_same_params(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs"
