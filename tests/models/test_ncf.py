"""NCF families (`gmf`, `mlp`, `neumf`) on small synthetic problems whose answer is planted."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from recforge.data.interactions import InteractionData
from recforge.models.cf import ncf
from recforge.models.cf.gmf import GMFConfig
from recforge.models.cf.mlp import MLPConfig
from recforge.models.cf.neumf import NeuMFConfig, neumf_from_pretrained
from recforge.models.registry import get_family
from recforge.training.recommender import Recommender

FAMILIES = ("gmf", "mlp", "neumf")
SMALL = {
    "gmf": {"dim": 8},
    "mlp": {"dim": 8, "layers": (16, 8)},
    "neumf": {"dim": 8, "mlp_dim": 8, "layers": (16, 8)},
}
GROUPS = 4


def _data(user, item, n_users: int, n_items: int, value=None) -> InteractionData:
    n = len(user)
    return InteractionData(
        user_idx=np.asarray(user, dtype=np.int64),
        item_idx=np.asarray(item, dtype=np.int64),
        value=np.ones(n, np.float32) if value is None else np.asarray(value, np.float32),
        timestamp=np.arange(n, dtype=np.int64),
        n_users=n_users,
        n_items=n_items,
    )


def _planted(n_users: int = 120, n_items: int = 80, per_user: int = 8, seed: int = 0) -> InteractionData:
    """Users and items fall in GROUPS groups (u % GROUPS, i % GROUPS); a user meets only
    `per_user` distinct items of its own group."""
    rng = np.random.default_rng(seed)
    own = np.arange(n_items).reshape(-1, GROUPS).T  # (GROUPS, n_items / GROUPS)
    items = np.stack([rng.choice(own[u % GROUPS], per_user, replace=False) for u in range(n_users)])
    users = np.repeat(np.arange(n_users), per_user)
    return _data(users, items.reshape(-1), n_users, n_items)


def _fit(family: str, train: InteractionData, epochs: int = 10, **config) -> Recommender:
    rec = Recommender(
        family, {**SMALL[family], **config},
        {"epochs": epochs, "batch_size": 128, "lr": 0.01, "device": "cpu", "seed": 0},
    )
    rec.fit(train)
    return rec


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_and_score_all_agree(family, monkeypatch):
    # a tiny block size makes score_all of the towers go through several item chunks
    monkeypatch.setattr(ncf, "_CROSS_ELEMS", 64)
    train = _planted()
    fam = get_family(family)
    net = fam.build(fam.config.model_validate({**SMALL[family], "dropout": 0.3} if family != "gmf"
                                              else SMALL[family]), train, None).eval()
    with torch.no_grad():
        for p in net.parameters():  # N(0, 0.01) embeddings make every score look alike
            p.normal_()
        user = torch.tensor([0, 5, 17, 119])
        out = net(user, torch.tensor([1, 2, 3, 79]))
        assert out.shape == (4,)
        scores = net.score_all(user, torch.zeros(4, train.n_items))
        assert scores.shape == (4, train.n_items)
        pairs = net(user.repeat_interleave(train.n_items), torch.arange(train.n_items).repeat(4))
    torch.testing.assert_close(scores, pairs.view(4, train.n_items), rtol=1e-5, atol=1e-5)


def test_bce_batches_hold_positives_and_unseen_negatives():
    train = _planted()
    cfg = GMFConfig(n_negatives=3)
    batches = list(ncf.pointwise_batches(train, cfg, 100, torch.Generator().manual_seed(0)))
    assert [len(b["user"]) for b in batches] == [400] * 9 + [240]
    user = torch.cat([b["user"] for b in batches]).numpy()
    item = torch.cat([b["item"] for b in batches]).numpy()
    target = torch.cat([b["target"] for b in batches]).numpy()
    seen = train.csr.toarray()[user, item]
    np.testing.assert_array_equal(seen, target)  # positives are seen, negatives never
    assert target.sum() == len(train)
    pos = np.sort(user[target == 1] * train.n_items + item[target == 1])
    np.testing.assert_array_equal(pos, np.sort(train.user_idx * train.n_items + train.item_idx))
    assert "weight" not in batches[0]


def test_popularity_negatives_follow_popularity():
    rng = np.random.default_rng(1)
    n_users, n_items = 200, 50
    # item i is met ∝ (i + 1)² times, each user meets a few items
    p = (np.arange(n_items) + 1.0) ** 2
    item = rng.choice(n_items, 2000, p=p / p.sum())
    train = _data(rng.integers(0, n_users, 2000), item, n_users, n_items)
    cfg = GMFConfig(n_negatives=4, negative_sampler="popularity", popularity_alpha=1.0)
    b = next(ncf.pointwise_batches(train, cfg, 2000, torch.Generator().manual_seed(0)))
    neg = b["item"][b["target"] == 0].numpy()
    assert neg.mean() > 1.4 * np.arange(n_items).mean()  # uniform draws would average 24.5


def test_mse_batches_use_ratings_and_weight_negatives():
    train = _data([0, 0, 1, 2], [0, 1, 2, 3], 3, 10, value=[5, 3, 4, 1])
    plain = next(ncf.pointwise_batches(train, GMFConfig(objective="mse"), 8, torch.Generator()))
    assert sorted(plain["target"].tolist()) == [1, 3, 4, 5] and "weight" not in plain
    cfg = GMFConfig(objective="mse", negative_weight=0.1, n_negatives=2)
    b = next(ncf.pointwise_batches(train, cfg, 8, torch.Generator()))
    assert len(b["user"]) == 12
    neg = b["target"] == 0
    assert neg.sum() == 8
    torch.testing.assert_close(b["weight"][neg], torch.full((8,), 0.1))
    torch.testing.assert_close(b["weight"][~neg], torch.ones(4))


@pytest.fixture(scope="module", params=FAMILIES)
def planted_fit(request) -> tuple[InteractionData, Recommender]:
    """Each family fitted once with BCE on the planted groups, shared by the tests below."""
    train = _planted()
    return train, _fit(request.param, train, epochs=25)


def test_bce_loss_falls(planted_fit):
    _, rec = planted_fit
    loss = rec.history.loss
    # one positive in five: the best constant logit scores the entropy H(0.2) = 0.50
    constant = -(0.2 * np.log(0.2) + 0.8 * np.log(0.8))
    assert loss[0] < np.log(2) + 0.01, loss
    assert loss[-1] < 0.6 * constant, loss


def test_learns_planted_groups(planted_fit):
    train, rec = planted_fit
    users = np.arange(train.n_users)
    top, _ = rec.recommend(users, k=5)
    in_group = (top % GROUPS == users[:, None] % GROUPS).mean()
    # 12 unseen items of the user's group among 72 unseen: random top-5 lists score about 0.17
    assert in_group > 0.9, in_group
    assert not np.take_along_axis(train.csr.toarray(), top, axis=1).any()  # seen items are filtered


def test_save_load_round_trip(planted_fit, tmp_path):
    _, rec = planted_fit
    rec.save(tmp_path / rec.name)
    again = Recommender.load(tmp_path / rec.name)
    np.testing.assert_array_equal(again.score([0, 7]), rec.score([0, 7]))
    np.testing.assert_array_equal(again.predict([1, 2], [3, 4]), rec.predict([1, 2], [3, 4]))


def _ratings(n_users: int = 120, n_items: int = 60, per_user: int = 20, seed: int = 0):
    """Rating 4.5 ± noise on items of the user's group, 1.5 ± noise elsewhere."""
    rng = np.random.default_rng(seed)
    item = np.stack([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)]).reshape(-1)
    user = np.repeat(np.arange(n_users), per_user)
    value = np.where(user % GROUPS == item % GROUPS, 4.5, 1.5) + rng.normal(0, 0.3, len(user))
    return user, item, value.astype(np.float32)


@pytest.mark.parametrize("family", FAMILIES)
def test_mse_fits_ratings(family):
    user, item, value = _ratings()
    test = np.arange(len(user)) % 5 == 0
    train = _data(user[~test], item[~test], 120, 60, value[~test])
    rec = _fit(family, train, epochs=30, objective="mse")
    assert rec.uses_ratings
    pred = rec.predict(user[test], item[test])
    rmse = np.sqrt(np.mean((pred - value[test]) ** 2))
    baseline = np.sqrt(np.mean((value[~test].mean() - value[test]) ** 2))
    assert rmse < 0.6 * baseline, (rmse, baseline)


def test_neumf_from_pretrained_scores_alpha_mix(tmp_path):
    train = _planted()
    gmf = _fit("gmf", train, epochs=3)
    mlp = _fit("mlp", train, epochs=3, dropout=0.2)
    gmf.save(tmp_path / "gmf")
    mlp.save(tmp_path / "mlp")
    user = torch.arange(train.n_users).repeat_interleave(train.n_items)
    item = torch.arange(train.n_items).repeat(train.n_users)
    alpha = 0.3
    with torch.no_grad():
        mix = alpha * gmf.network(user, item) + (1 - alpha) * mlp.network(user, item)

        net = neumf_from_pretrained(gmf.network, mlp.network, alpha).eval()
        torch.testing.assert_close(net(user, item), mix, rtol=1e-5, atol=1e-6)

        config = {**SMALL["neumf"], "alpha": alpha, "dropout": 0.1, "pretrain": True}
        fam = get_family("neumf")
        networks = {"gmf": gmf.network, "mlp": mlp.network}
        built = fam.warm_start(fam.config.model_validate(config), train, None, networks).eval()
        torch.testing.assert_close(built(user, item), mix, rtol=1e-5, atol=1e-6)
        all_scores = built.score_all(torch.arange(train.n_users), torch.zeros(0))
        torch.testing.assert_close(all_scores.reshape(-1), mix, rtol=1e-5, atol=1e-5)
        assert built.tower.dropout.p == 0.1

    # the paper's recipe: plain SGD from the pretrained weights (the saved models, as the training
    # pipeline hands them over); then a save/load round trip that needs no gmf or mlp folder
    train_config = {"epochs": 2, "optimizer": "sgd", "lr": 0.01, "device": "cpu"}
    rec = Recommender("neumf", config, train_config)
    rec.fit(train, warm_start={"gmf": Recommender.load(tmp_path / "gmf"), "mlp": Recommender.load(tmp_path / "mlp")})
    assert rec.history.epochs == 2 and rec.fit_seconds > 0
    rec.save(tmp_path / "neumf")
    for folder in ("gmf", "mlp"):
        shutil.rmtree(tmp_path / folder)
    again = Recommender.load(tmp_path / "neumf")
    np.testing.assert_allclose(again.score([0, 1]), rec.score([0, 1]), rtol=1e-6)
    assert again.history.loss == rec.history.loss and again.fit_seconds == rec.fit_seconds

    with pytest.raises(ValueError, match="do not match"):
        fam.warm_start(fam.config.model_validate({**config, "dim": 16}), train, None, networks)
    with pytest.raises(ValueError, match="not a GMF"):
        fam.warm_start(fam.config.model_validate(config), train, None, {"gmf": mlp.network, "mlp": mlp.network})
    with pytest.raises(ValueError, match="holds a 'mlp' model"):
        Recommender("neumf", config, train_config).fit(train, warm_start={"gmf": mlp, "mlp": mlp})
    with pytest.raises(ValueError, match="pass the trained gmf and mlp"):
        Recommender("neumf", config, train_config).fit(train)
    with pytest.raises(ValueError, match="lacks the trained"):
        Recommender("neumf", config, train_config).fit(train, warm_start={"gmf": gmf})
    with pytest.raises(ValueError, match="does not start from other models"):
        Recommender("gmf", SMALL["gmf"], train_config).fit(train, warm_start={"mlp": mlp})
    # pretrain false: the models are ignored and NeuMF starts from a random init
    cold = Recommender("neumf", {**config, "pretrain": False}, {**train_config, "epochs": 0})
    cold.fit(train, warm_start={"gmf": gmf, "mlp": mlp})
    assert not torch.allclose(cold.network.gmf_user.weight, gmf.network.user.weight)


@pytest.mark.parametrize("family", FAMILIES)
def test_item_vectors_initialise_item_embeddings(family):
    train = _planted()
    vectors = torch.randn(train.n_items, 8)
    fam = get_family(family)
    config = fam.config.model_validate({**SMALL[family], "freeze_item_vectors": True})
    net = fam.build(config, train, vectors)
    tables = [net.gmf_item, net.mlp_item] if family == "neumf" else [net.item]
    centred = vectors - vectors.mean(0)
    for table in tables:
        ratio = table.weight.detach() / centred  # same dim: only rescaled
        torch.testing.assert_close(ratio, torch.full_like(ratio, ratio[0, 0].item()), rtol=1e-4, atol=1e-4)
        assert not table.weight.requires_grad


@pytest.mark.parametrize(
    ("config_cls", "bad"),
    [
        (GMFConfig, {"dim": 0}),
        (GMFConfig, {"n_negatives": 0}),
        (GMFConfig, {"objective": "hinge"}),
        (GMFConfig, {"negative_weight": -1.0}),
        (GMFConfig, {"dims": 8}),
        (MLPConfig, {"layers": []}),
        (MLPConfig, {"layers": [16, 0]}),
        (MLPConfig, {"dropout": 1.0}),
        (NeuMFConfig, {"alpha": 1.5}),
        (NeuMFConfig, {"pretrain": "sometimes"}),
    ],
)
def test_config_out_of_range_raises(config_cls, bad):
    with pytest.raises(ValidationError):
        config_cls.model_validate(bad)


def test_configs_round_trip_through_json():
    cfg = NeuMFConfig(layers=[32, 16], alpha=0.7)
    assert cfg.layers == (32, 16)
    assert NeuMFConfig.model_validate_json(cfg.model_dump_json()) == cfg
