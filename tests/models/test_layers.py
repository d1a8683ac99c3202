"""The CPU fast paths the families train through (`models.layers.lookup` and `Dropout`, the BPR
and MF losses) agree with their plain definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recforge.data.interactions import InteractionData
from recforge.models.cf import bpr, mf
from recforge.models.layers import Dropout, lookup


def test_lookup_equals_the_embedding_with_its_gradient():
    torch.manual_seed(0)
    emb = nn.Embedding(7, 3)
    idx = torch.tensor([[0, 6, 6], [2, 0, 1]])
    for index in (idx[0], idx):
        torch.testing.assert_close(lookup(emb, index), emb(index))
    lookup(emb, idx).pow(2).sum().backward()
    fast = emb.weight.grad.clone()
    emb.weight.grad = None
    emb(idx).pow(2).sum().backward()
    torch.testing.assert_close(fast, emb.weight.grad)
    # a sparse table keeps nn.Embedding's sparse gradient, which SparseAdam needs
    sparse = nn.Embedding(7, 3, sparse=True)
    lookup(sparse, idx[0]).sum().backward()
    assert sparse.weight.grad.is_sparse


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_drops_each_element_with_probability_p(p):
    torch.manual_seed(0)
    drop = Dropout(p).train()
    out = drop(torch.ones(1000, 1000))
    kept = out != 0
    assert abs(1 - kept.float().mean().item() - p) < 5 * (p * (1 - p) / 1e6) ** 0.5
    assert torch.all(out[kept] == 1 / (1 - p))
    assert abs(out.mean().item() - 1.0) < 0.01
    # independent elements: a drop is as likely right after a drop as anywhere
    dropped = ~kept.flatten()
    after_drop = (dropped[1:] & dropped[:-1]).float().sum() / dropped[:-1].float().sum()
    assert abs(after_drop.item() - p) < 0.01


def test_dropout_is_seeded_by_the_global_generator_and_backpropagates_its_mask():
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(5)
    a = Dropout(0.3)(x)
    torch.manual_seed(5)
    b = Dropout(0.3)(x)
    assert torch.equal(a, b)
    a.sum().backward()
    torch.testing.assert_close(x.grad, (a.detach() != 0).float() / 0.7)


def test_dropout_is_the_identity_when_off_and_handles_tiny_tensors():
    x = torch.randn(5, 4)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0)(x), x)
    assert torch.equal(Dropout(1.0)(x), torch.zeros_like(x))
    assert Dropout(0.999).p == 0.999 and isinstance(Dropout(0.1), nn.Dropout)
    torch.manual_seed(0)
    for n in (1, 2, 3):
        out = Dropout(0.5)(torch.ones(n))
        assert set(out.tolist()) <= {0.0, 2.0}


def _toy(n_users: int = 6, n_items: int = 9) -> InteractionData:
    rng = np.random.default_rng(0)
    user, item = np.divmod(rng.choice(n_users * n_items, 20, replace=False), n_items)
    return InteractionData(
        user_idx=user.astype(np.int64), item_idx=item.astype(np.int64),
        value=rng.integers(1, 6, 20).astype(np.float32), timestamp=np.zeros(20, np.int64),
        n_users=n_users, n_items=n_items,
    )


def test_bpr_loss_is_the_papers():
    train = _toy()
    config = bpr.BPRConfig(dim=4, l2=0.01)
    torch.manual_seed(0)
    net = bpr.build(config, train)
    nn.init.normal_(net.item_bias.weight)
    batch = next(bpr.batches(net, train, config, 8, torch.Generator().manual_seed(0)))
    assert set(batch) == {"user", "item", "negative"} and len(batch["negative"]) == 8
    assert not train.csr.toarray()[batch["user"], batch["negative"]].any()
    u, i, j = batch["user"], batch["item"], batch["negative"]
    x_uij = net(u, i) - net(u, j)
    reg = net.user(u).pow(2).sum(-1) + net.item(i).pow(2).sum(-1) + net.item(j).pow(2).sum(-1)
    expected = -F.logsigmoid(x_uij).mean() + 0.01 * reg.mean()
    torch.testing.assert_close(bpr.loss(net, batch, config), expected)


def test_bpr_batches_cover_every_pair_once():
    train = _toy()
    config = bpr.BPRConfig(dim=4)
    net = bpr.build(config, train)
    batches = list(bpr.batches(net, train, config, 8, torch.Generator().manual_seed(1)))
    assert [len(b["user"]) for b in batches] == [8, 8, 4]
    pairs = sorted(zip(torch.cat([b["user"] for b in batches]).tolist(),
                       torch.cat([b["item"] for b in batches]).tolist()))
    assert pairs == sorted(zip(train.user_idx.tolist(), train.item_idx.tolist()))


def test_mf_loss_is_mse_plus_l2():
    train = _toy()
    config = mf.MFConfig(dim=4, l2=0.05)
    torch.manual_seed(0)
    net = mf.build(config, train)
    for emb in (net.user_bias, net.item_bias):
        nn.init.normal_(emb.weight)
    batch = next(mf.batches(net, train, config, 8, torch.Generator().manual_seed(0)))
    u, i = batch["user"], batch["item"]
    pred = (net.global_mean + net.user_bias(u).squeeze(-1) + net.item_bias(i).squeeze(-1)
            + (net.user(u) * net.item(i)).sum(-1))
    torch.testing.assert_close(net(u, i), pred)
    reg = net.user(u).pow(2).sum(-1) + net.item(i).pow(2).sum(-1)
    expected = (pred - batch["target"]).pow(2).mean() + 0.05 * reg.mean()
    torch.testing.assert_close(mf.loss(net, batch, config), expected)
