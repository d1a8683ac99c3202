"""`cdae` and `sdae`: user-row batches, shapes, learning a planted signal, layer-wise pretraining."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest
import torch

from recforge.data.interactions import InteractionData
from recforge.models.cf import cdae, sdae
from recforge.training.config import TrainConfig
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


def in_group_rate(rec: Recommender, data: InteractionData, k: int = 5) -> float:
    """Share of the top-k unseen recommendations that fall in the user's own half."""
    users = np.arange(data.n_users)
    top, _ = rec.recommend(users, k=k)
    own = (top >= data.n_items // 2) == (users % 2 == 1)[:, None]
    return float(own.mean())


def random_rate(data: InteractionData) -> float:
    seen = data.csr.sum(1).mean()
    return float((data.n_items // 2 - seen) / (data.n_items - seen))


@pytest.fixture(scope="module")
def data() -> InteractionData:
    return planted()


def test_user_row_batches_cover_every_user_once_with_their_rows(data):
    g = torch.Generator().manual_seed(0)
    got = list(cdae.user_rows_in_batches(data, 16, g))
    users = torch.cat([b["user"] for b in got])
    assert sorted(users.tolist()) == list(range(data.n_users))
    for b in got:
        assert b["rows"].shape == (len(b["user"]), data.n_items) and b["rows"].dtype == torch.float32
        np.testing.assert_array_equal(b["rows"].numpy(), data.csr[b["user"].numpy()].toarray())
        assert "mask" not in b


def test_negative_sampling_mask_keeps_positives_and_about_ratio_negatives(data):
    g = torch.Generator().manual_seed(0)
    got = list(cdae.user_rows_in_batches(data, 64, g, negative_ratio=2.0))
    mask, rows = torch.cat([b["mask"] for b in got]), torch.cat([b["rows"] for b in got])
    assert mask[rows > 0].all()
    negatives_per_positive = (mask & (rows == 0)).sum() / rows.sum()
    assert 1.6 < float(negatives_per_positive) < 2.4


def test_shapes(data):
    users, rows = torch.tensor([0, 3, 5]), torch.as_tensor(data.csr[[0, 3, 5]].toarray())
    c = cdae.build(cdae.CDAEConfig(hidden=12), data)
    assert c.score_all(users, rows).shape == (3, data.n_items)
    assert c.item_embeddings().shape == (data.n_items, 12)
    s = sdae.build(sdae.SDAEConfig(hidden=(16, 8, 4)), data)
    assert s.encode(rows).shape == (3, 4) and s.encode(rows, 1).shape == (3, 16)
    assert s.score_all(users, rows).shape == (3, data.n_items)
    assert s.item_embeddings().shape == (data.n_items, 16)
    for layer in (1, 2, 3):
        assert s.layer_loss(rows, layer, "bce").dim() == 0


def test_scoring_is_deterministic_and_uses_no_corruption(data):
    net = cdae.build(cdae.CDAEConfig(hidden=12, corruption=0.5), data)
    users, rows = torch.arange(4), torch.as_tensor(data.csr[:4].toarray())
    net.train()
    torch.testing.assert_close(net.score_all(users, rows), net.score_all(users, rows))


@pytest.mark.parametrize(
    ("family", "config"),
    [
        ("cdae", {"hidden": 16}),
        ("cdae", {"hidden": 16, "negative_ratio": 3.0, "loss": "squared"}),
        ("sdae", {"hidden": (32, 8), "activation": "relu", "loss": "squared"}),
    ],
)
def test_learns_the_planted_groups(family, config, data):
    rec = Recommender(family, config, TRAIN)
    history = rec.fit(data)
    assert history.loss[-1] < 0.8 * history.loss[0]
    assert in_group_rate(rec, data) > 0.9 > 2 * random_rate(data)


def test_pretraining_runs_the_fit_loop_per_layer_and_moves_the_initial_weights(data, monkeypatch):
    calls = []
    real_fit = sdae.fit
    monkeypatch.setattr(sdae, "fit", lambda *a, **k: calls.append(a[3]) or real_fit(*a, **k))
    base = {"hidden": (32, 8), "pretrain_lr": 0.02, "pretrain_batch_size": 16}
    torch.manual_seed(0)
    scratch = sdae.build(sdae.SDAEConfig(**base), data)
    assert calls == []
    torch.manual_seed(0)
    pre_config = sdae.SDAEConfig(**base, pretrain_epochs=15)
    pre = sdae.build(pre_config, data)
    assert calls == []  # build never pretrains: the estimator calls Family.pretrain, load does not
    sdae.FAMILY.pretrain(pre, data, pre_config)
    assert [c.epochs for c in calls] == [15, 15]

    # same seed, same random init: every layer moved away from it, and the denoising losses fell
    for (name, w0), w1 in zip(scratch.named_parameters(), pre.parameters(), strict=True):
        assert not torch.allclose(w0, w1), name
        assert w1.requires_grad, name
    rows = torch.as_tensor(data.csr.toarray())
    with torch.no_grad():
        torch.manual_seed(1)
        before = [float(scratch.layer_loss(rows, layer, "bce")) for layer in (1, 2)]
        torch.manual_seed(1)
        after = [float(pre.layer_loss(rows, layer, "bce")) for layer in (1, 2)]
    assert all(a < b for a, b in zip(after, before, strict=True))

    # unsupervised pretraining alone already finds the two groups; the random init does not
    def own_group_share(net: sdae.SDAE) -> float:
        with torch.no_grad():
            scores = net.score_all(torch.arange(data.n_users), rows).masked_fill(rows > 0, -torch.inf)
        own = (scores.topk(5).indices >= data.n_items // 2) == (torch.arange(data.n_users) % 2 == 1)[:, None]
        return float(own.float().mean())

    assert own_group_share(pre) > 0.9 and own_group_share(scratch) < 0.6


def test_pretraining_takes_the_estimators_train_config_without_its_early_stopping(data, monkeypatch):
    stages = []
    real_fit = sdae.fit
    monkeypatch.setattr(sdae, "fit", lambda *a, **k: stages.append(a[3]) or real_fit(*a, **k))
    config = sdae.SDAEConfig(hidden=(8,), pretrain_epochs=2, pretrain_lr=0.05, pretrain_batch_size=32)
    outer = TrainConfig(epochs=50, lr=1e-4, optimizer="adamw", seed=7, early_stopping_metric="ndcg@10")
    sdae.pretrain(sdae.build(sdae.SDAEConfig(hidden=(8,)), data), data, config, outer)
    (stage,) = stages
    assert (stage.epochs, stage.lr, stage.batch_size) == (2, 0.05, 32)
    assert (stage.optimizer, stage.seed, stage.early_stopping_metric) == ("adamw", 7, None)


@pytest.mark.parametrize("pretrain_epochs", [0, 10])
def test_sdae_trains_with_and_without_pretraining(pretrain_epochs, data):
    config = {"hidden": (32, 8), "pretrain_lr": 0.02, "pretrain_batch_size": 16}
    rec = Recommender("sdae", {**config, "pretrain_epochs": pretrain_epochs}, TRAIN)
    history = rec.fit(data)
    assert history.loss[-1] < history.loss[0]
    assert in_group_rate(rec, data) > 0.9


@pytest.mark.parametrize("family", ["cdae", "sdae"])
def test_item_vectors_initialise_the_first_layer(family, data):
    vectors = torch.randn(data.n_items, 16)
    module = {"cdae": cdae, "sdae": sdae}[family]
    config = module.FAMILY.config(hidden=16 if family == "cdae" else (16, 4), freeze_item_vectors=True)
    net = module.build(config, data, vectors)
    w = net.item_embeddings()
    centred = vectors - vectors.mean(0)
    torch.testing.assert_close(w / w.std(), centred / centred.std())
    assert not w.requires_grad


@pytest.mark.parametrize(("family", "config"), [("cdae", {"hidden": 8}), ("sdae", {"hidden": (8, 4)})])
def test_save_load_round_trip(family, config, tmp_path, data):
    rec = Recommender(family, config, {**TRAIN, "epochs": 2})
    rec.fit(data)
    rec.save(tmp_path / family)
    back = Recommender.load(tmp_path / family)
    users = np.arange(10)
    np.testing.assert_allclose(back.score(users), rec.score(users), rtol=1e-6)
    np.testing.assert_allclose(back.predict(users, users), rec.predict(users, users), rtol=1e-6)


@pytest.mark.parametrize(
    ("config", "bad"),
    [
        (cdae.CDAEConfig, {"corruption": 1.0}),
        (cdae.CDAEConfig, {"hidden": 0}),
        (cdae.CDAEConfig, {"negative_ratio": -1}),
        (cdae.CDAEConfig, {"loss": "hinge"}),
        (sdae.SDAEConfig, {"hidden": ()}),
        (sdae.SDAEConfig, {"hidden": (64, 0)}),
        (sdae.SDAEConfig, {"pretrain_epochs": -1}),
        (sdae.SDAEConfig, {"hiden": (64,)}),
    ],
)
def test_config_out_of_range_raises(config, bad):
    with pytest.raises(pydantic.ValidationError):
        config(**bad)
