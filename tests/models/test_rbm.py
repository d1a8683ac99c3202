"""`rbm`: free energy, contrastive divergence through the fit loop, and the planted signal."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
import torch
import torch.nn.functional as F

from recforge.data.interactions import InteractionData
from recforge.models.cf import rbm
from recforge.training.config import TrainConfig
from recforge.training.loop import fit
from recforge.training.recommender import Recommender

TRAIN = {"epochs": 20, "lr": 0.02, "batch_size": 16, "device": "cpu", "seed": 0}


def planted(n_users: int = 60, n_items: int = 40, per_user: int = 8, seed: int = 0) -> InteractionData:
    """Even users hold items of the first half of the catalogue, odd users of the second half."""
    rng = np.random.default_rng(seed)
    half = n_items // 2
    group = np.arange(n_users) % 2
    picks = np.argsort(rng.random((n_users, half)), axis=1)[:, :per_user] + group[:, None] * half
    n = n_users * per_user
    return InteractionData(
        user_idx=np.repeat(np.arange(n_users), per_user),
        item_idx=picks.ravel().astype(np.int64),
        value=np.ones(n, dtype=np.float32),
        timestamp=np.arange(n, dtype=np.int64),
        n_users=n_users,
        n_items=n_items,
    )


@pytest.fixture(scope="module")
def data() -> InteractionData:
    return planted()


@pytest.fixture
def rows(data) -> torch.Tensor:
    return torch.as_tensor(data.csr.toarray())  # (U, I)


def test_shapes_and_free_energy(data, rows):
    net = rbm.build(rbm.RBMConfig(hidden=6), data)
    v = rows[:5]
    assert net.free_energy(v).shape == (5,)
    chain = net.gibbs(v, 3)
    assert chain.shape == v.shape and ((chain >= 0) & (chain <= 1)).all()
    assert net.score_all(torch.arange(5), v).shape == (5, data.n_items)
    assert net.item_embeddings().shape == (data.n_items, 6)
    # F(v) = -a·v - Σ_j softplus(b_j + v W_:j), against a direct evaluation for one user
    a, b, w = net.visible_bias, net.hidden_bias, net.item.weight
    direct = -(a * v[0]).sum() - torch.log1p(torch.exp(b + v[0] @ w)).sum()
    torch.testing.assert_close(net.free_energy(v[:1])[0], direct)


def test_untrained_model_reproduces_item_popularity(data):
    net = rbm.build(rbm.RBMConfig(hidden=4), data)
    popularity = torch.as_tensor(data.item_popularity, dtype=torch.float32)
    scores = net.score_all(torch.tensor([0]), torch.zeros(1, data.n_items))[0]
    assert torch.corrcoef(torch.stack([scores, popularity]))[0, 1] > 0.9


def test_free_energy_loss_gradient_is_the_cd_update(data, rows):
    """∇ of F(v) − F(v_k) is −(⟨v hᵀ⟩_data − ⟨v hᵀ⟩_k) / B: autograd does CD-k."""
    net = rbm.build(rbm.RBMConfig(hidden=6, cd_steps=2), data)
    v = rows[:16]
    torch.manual_seed(3)
    rbm.loss(net, {"rows": v}, rbm.RBMConfig(hidden=6, cd_steps=2)).backward()
    torch.manual_seed(3)
    v_k = net.gibbs(v, 2)
    with torch.no_grad():
        h_data, h_k = torch.sigmoid(net.hidden_logits(v)), torch.sigmoid(net.hidden_logits(v_k))
        n = len(v)
        torch.testing.assert_close(net.item.weight.grad, -(v.T @ h_data - v_k.T @ h_k) / n)
        torch.testing.assert_close(net.visible_bias.grad, -(v - v_k).mean(0))
        torch.testing.assert_close(net.hidden_bias.grad, -(h_data - h_k).mean(0))


def noise_gap(net: rbm.RBM, rows: torch.Tensor, noise: torch.Tensor) -> float:
    with torch.no_grad():
        return float(net.free_energy(rows).mean() - net.free_energy(noise).mean())


def reconstruction_error(net: rbm.RBM, rows: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.binary_cross_entropy_with_logits(net.score_all(None, rows), rows))


def test_training_lowers_the_free_energy_of_the_data(data, rows):
    config = rbm.RBMConfig(hidden=8, cd_steps=1)
    torch.manual_seed(0)
    net = rbm.build(config, data)
    torch.manual_seed(5)
    gap_before = float(rbm.free_energy_gap(net, rows, 5))
    noise = (torch.rand(rows.shape, generator=torch.Generator().manual_seed(1)) < rows.mean()).float()
    noise_gap_before = noise_gap(net, rows, noise)
    recon_before = reconstruction_error(net, rows)

    def batches(epoch, generator):
        return rbm.batches(net, data, config, 16, generator)

    fit(net, batches, lambda n, b: rbm.loss(n, b, config), TrainConfig(**TRAIN))
    net.eval()
    torch.manual_seed(5)
    gap_after = float(rbm.free_energy_gap(net, rows, 5))
    noise_gap_after = noise_gap(net, rows, noise)
    recon_after = reconstruction_error(net, rows)
    # the data became more probable than the model's own samples, and than random rows
    assert gap_after < gap_before and gap_after < 0
    assert noise_gap_after < noise_gap_before - 1.0
    assert recon_after < 0.8 * recon_before


def test_learns_the_planted_groups(data):
    rec = Recommender("rbm", {"hidden": 8}, TRAIN)
    rec.fit(data)
    users = np.arange(data.n_users)
    top, _ = rec.recommend(users, k=5)
    own = (top >= data.n_items // 2) == (users % 2 == 1)[:, None]
    seen = data.csr.sum(1).mean()
    random_rate = (data.n_items // 2 - seen) / (data.n_items - seen)
    assert own.mean() > 0.9 > 2 * random_rate


def test_save_load_round_trip(tmp_path, data):
    rec = Recommender("rbm", {"hidden": 4}, {**TRAIN, "epochs": 2})
    rec.fit(data)
    rec.save(tmp_path / "rbm")
    users = np.arange(10)
    np.testing.assert_allclose(Recommender.load(tmp_path / "rbm").score(users), rec.score(users), rtol=1e-6)


@pytest.mark.parametrize("bad", [{"hidden": 0}, {"cd_steps": 0}, {"cd_steps": 1000}, {"visible": "softmax"}])
def test_config_out_of_range_raises(bad):
    with pytest.raises(pydantic.ValidationError):
        rbm.RBMConfig(**bad)
