"""`als`: the batched solves against direct per-user solves and `implicit`, the loss, the fit loop,
a planted signal, persistence and config ranges."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from pydantic import ValidationError

from recforge.data.interactions import InteractionData
from recforge.models.cf import als
from recforge.models.registry import get_family
from recforge.training.recommender import Recommender

D = 6



def _data(user, item, value, n_users: int, n_items: int) -> InteractionData:
    n = len(user)
    return InteractionData(
        user_idx=np.asarray(user, dtype=np.int64), item_idx=np.asarray(item, dtype=np.int64),
        value=np.asarray(value, dtype=np.float32), timestamp=np.arange(n, dtype=np.int64),
        n_users=n_users, n_items=n_items,
    )


def _planted(n_users: int = 60, n_items: int = 40, per_user: int = 8, seed: int = 0) -> InteractionData:
    """Even users hold items of the first half of the catalogue, odd users of the second half."""
    rng = np.random.default_rng(seed)
    half = n_items // 2
    group = np.arange(n_users) % 2
    picks = np.argsort(rng.random((n_users, half)), axis=1)[:, :per_user] + group[:, None] * half
    n = n_users * per_user
    return _data(np.repeat(np.arange(n_users), per_user), picks.ravel(), np.ones(n), n_users, n_items)


def _tiny(seed: int = 1) -> sp.csr_matrix:
    """A 12 x 9 matrix of counts with one disliked cell (-2), one stored zero and an empty row."""
    rng = np.random.default_rng(seed)
    dense = (rng.random((12, 9)) < 0.35) * rng.integers(1, 5, (12, 9)).astype(np.float32)
    dense[3] = 0
    dense[0, 1], dense[2, 2], dense[5, 0] = -2.0, 3.0, 0.0
    row, col = np.nonzero(dense)
    data = dense[row, col]
    m = sp.csr_matrix((np.append(data, 0.0), (np.append(row, 5), np.append(col, 0))), shape=dense.shape)
    m.sort_indices()
    assert m.nnz == len(data) + 1  # the zero is stored
    return m


def _tensor(m: sp.csr_matrix) -> torch.Tensor:
    return als.csr_tensor(
        torch.from_numpy(m.indptr.astype(np.int64)), torch.from_numpy(m.indices.astype(np.int64)),
        torch.from_numpy(m.data.astype(np.float32)), m.shape,
    )


def _reference_solve(m: sp.csr_matrix, y: np.ndarray, cfg: als.ALSConfig) -> np.ndarray:
    """x_u = (Yᵀ C_u Y + λ_u I)⁻¹ Yᵀ C_u p_u, one dense float64 solve per user."""
    r = m.toarray().astype(np.float64)
    y = y.astype(np.float64)
    out = np.zeros((r.shape[0], y.shape[1]))
    for u in range(r.shape[0]):
        c = 1 + cfg.alpha * np.abs(r[u])
        p = (r[u] > 0).astype(np.float64)
        lam = cfg.regularization * (max(m.indptr[u + 1] - m.indptr[u], 1) if cfg.weighted_reg else 1)
        a = y.T @ (c[:, None] * y) + lam * np.eye(y.shape[1])
        out[u] = np.linalg.solve(a, y.T @ (c * p))
    return out


def _factors(shape: tuple[int, int], seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


# ---------------------------------------------------------------------------------- network
def test_shapes_and_one_batch_per_epoch():
    train = _planted()
    cfg = als.ALSConfig(factors=D)
    net = als.build(cfg, train)
    user = torch.tensor([0, 1, 59])
    assert net(user, torch.tensor([0, 5, 39])).shape == (3,)
    assert net.score_all(user, torch.zeros(3, train.n_items)).shape == (3, train.n_items)
    assert net.item_embeddings().shape == (train.n_items, D)
    assert not any(p.requires_grad for p in net.parameters())
    epoch = list(als.batches(net, train, cfg, 1024, torch.Generator()))
    assert len(epoch) == 1
    batch = epoch[0]
    assert next(iter(batch)) == "ui_value" and len(batch["ui_value"]) == len(train)
    assert batch["ui_indptr"].shape == (train.n_users + 1,) and batch["iu_indptr"].shape == (train.n_items + 1,)
    loss = als.loss(net, batch, cfg)
    assert loss.shape == () and not loss.requires_grad
    # later epochs of the same fit reuse the matrices; other training data gets its own
    assert next(als.batches(net, train, cfg, 1024, torch.Generator())) is batch
    other = _planted(seed=1)
    assert next(als.batches(net, other, cfg, 1024, torch.Generator()))["ui_indices"].tolist() == (
        als.interaction_matrices(other)["ui_indices"].tolist()
    )
    assert "matrices" not in "".join(net.state_dict())


def test_repeated_events_add_up():
    train = _data([0, 0, 1], [2, 2, 0], [1.0, 2.5, 1.0], 2, 3)
    batch = als.interaction_matrices(train)
    assert batch["ui_value"].tolist() == [3.5, 1.0]
    assert batch["iu_indices"].tolist() == [1, 0]


# ---------------------------------------------------------------------------------- solves
@pytest.mark.parametrize("weighted_reg", [False, True])
def test_exact_solve_matches_per_user_closed_form(weighted_reg):
    m = _tiny()
    cfg = als.ALSConfig(factors=D, regularization=0.3, alpha=2.0, weighted_reg=weighted_reg, use_cg=False)
    y = _factors((m.shape[1], D), 0)
    x = als.solve_factors(_tensor(m), y, _factors((m.shape[0], D), 1), cfg)
    np.testing.assert_allclose(x.numpy(), _reference_solve(m, y.numpy(), cfg), rtol=1e-4, atol=1e-5)
    assert x[3].abs().max() < 1e-6  # a user without interactions only has p = 0 targets


def test_exact_solve_is_the_same_in_many_chunks(monkeypatch):
    m = _tiny()
    cfg = als.ALSConfig(factors=D, alpha=1.5, use_cg=False)
    y, x0 = _factors((m.shape[1], D), 0), _factors((m.shape[0], D), 1)
    whole = als.solve_factors(_tensor(m), y, x0, cfg)
    monkeypatch.setattr(als, "_CHUNK_ELEMS", 2 * D * D)  # two rows of at most D items per chunk
    torch.testing.assert_close(als.solve_factors(_tensor(m), y, x0, cfg), whole, rtol=1e-5, atol=1e-6)


def test_cg_steps_match_implicit_and_converge_to_the_exact_solve():
    from implicit.cpu import _als

    m = _tiny()
    m.eliminate_zeros()  # implicit reads a stored 0 as confidence 0, recforge as "no event"
    cfg = als.ALSConfig(factors=D, regularization=0.3, alpha=2.0, use_cg=True, cg_steps=3)
    y, x0 = _factors((m.shape[1], D), 0), _factors((m.shape[0], D), 1)
    ours = als.solve_factors(_tensor(m), y, x0, cfg)
    # implicit reads its matrix as the confidence: give it the paper's c = 1 + α|r|, sign kept
    cui = m.copy()
    cui.data = np.sign(cui.data) * (1 + cfg.alpha * np.abs(cui.data))
    theirs = x0.numpy().copy()
    _als.least_squares_cg(cui, theirs, y.numpy().copy(), cfg.regularization, num_threads=1, cg_steps=3)
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-4, atol=1e-4)
    assert not torch.equal(ours, x0)  # it moved: the warm start is only a start
    many = als.solve_factors(_tensor(m), y, x0, cfg.model_copy(update={"cg_steps": 4 * D}))
    np.testing.assert_allclose(many.numpy(), _reference_solve(m, y.numpy(), cfg), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("weighted_reg", [False, True])
def test_weighted_loss_is_the_sum_over_every_cell(weighted_reg):
    m = _tiny()
    cfg = als.ALSConfig(factors=D, regularization=0.2, alpha=3.0, weighted_reg=weighted_reg)
    x, y = _factors((m.shape[0], D), 2) * 0.3, _factors((m.shape[1], D), 3) * 0.3
    r = m.toarray().astype(np.float64)
    c, p = 1 + cfg.alpha * np.abs(r), (r > 0).astype(np.float64)
    s = x.double().numpy() @ y.double().numpy().T
    n_u = np.maximum(np.diff(m.indptr), 1) if weighted_reg else 1
    n_i = np.maximum(np.bincount(m.indices, minlength=m.shape[1]), 1) if weighted_reg else 1
    reg = cfg.regularization * ((n_u * (x.double().numpy() ** 2).sum(1)).sum()
                                + (n_i * (y.double().numpy() ** 2).sum(1)).sum())
    expected = ((c * (p - s) ** 2).sum() + reg) / c.sum()
    assert als.weighted_loss(_tensor(m), x, y, cfg).item() == pytest.approx(expected, rel=1e-6)


def test_weighted_loss_matches_implicit():
    from implicit.cpu import _als

    m = _tiny()
    m.eliminate_zeros()
    m.data = np.abs(m.data)
    cfg = als.ALSConfig(factors=D, regularization=0.2, alpha=3.0)
    x, y = _factors((m.shape[0], D), 2) * 0.3, _factors((m.shape[1], D), 3) * 0.3
    cui = m.copy()
    cui.data = 1 + cfg.alpha * cui.data
    theirs = _als.calculate_loss(cui, x.numpy(), y.numpy(), cfg.regularization, num_threads=1)
    assert als.weighted_loss(_tensor(m), x, y, cfg).item() == pytest.approx(theirs, rel=1e-5)


# ---------------------------------------------------------------------------------- fitting
@pytest.mark.parametrize(
    "config",
    [{"use_cg": False}, {"use_cg": True}, {"use_cg": False, "weighted_reg": True, "regularization": 0.05}],
)
def test_weighted_loss_decreases_across_epochs(config):
    rec = Recommender("als", {"factors": D, "alpha": 5.0, **config}, {"epochs": 6, "device": "cpu", "seed": 0})
    history = rec.fit(_planted())
    assert history.epochs == 6 and history.samples[0] == len(_planted())
    assert all(b <= a * (1 + 1e-5) for a, b in zip(history.loss, history.loss[1:])), history.loss
    assert history.loss[-1] < 0.8 * history.loss[0]
    assert rec.network.user.weight.grad is None  # the loop skipped backward


@pytest.mark.parametrize("use_cg", [True, False])
def test_learns_the_planted_two_groups(use_cg):
    train = _planted()
    rec = Recommender("als", {"factors": 4, "alpha": 5.0, "regularization": 0.1, "use_cg": use_cg},
                      {"epochs": 8, "device": "cpu", "seed": 0})
    rec.fit(train)
    users = np.arange(train.n_users)
    top, _ = rec.recommend(users, k=5)
    half = train.n_items // 2
    own = (top >= half) == (users % 2 == 1)[:, None]  # (U, 5): recommended from the user's group
    assert own.mean() > 0.95
    seen = train.csr.toarray()
    assert not seen[users[:, None], top].any()  # liked items are filtered
    similar, _ = rec.similar_items(np.array([0, half]), k=5)
    assert (similar[0] < half).all() and (similar[1] >= half).all()


def test_save_load_round_trip(tmp_path):
    train = _planted()
    rec = Recommender("als", {"factors": D, "weighted_reg": True}, {"epochs": 2, "device": "cpu"})
    rec.fit(train)
    rec.save(tmp_path / "als")
    back = Recommender.load(tmp_path / "als")
    assert back.name == "als" and back.config == rec.config
    users = np.array([0, 7, 59])
    np.testing.assert_array_equal(back.score(users), rec.score(users))
    np.testing.assert_array_equal(back.recommend(users, k=4)[0], rec.recommend(users, k=4)[0])


def test_item_vectors_initialise_the_item_factors():
    train = _planted()
    vectors = _factors((train.n_items, D), 5)
    net = als.build(als.ALSConfig(factors=D), train, vectors)
    assert not net.item.weight.requires_grad
    corr = np.corrcoef(net.item.weight.numpy().ravel(), (vectors - vectors.mean(0)).numpy().ravel())[0, 1]
    assert corr > 0.99


# ---------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "bad",
    [{"factors": 0}, {"regularization": 0.0}, {"regularization": -1.0}, {"alpha": -0.5},
     {"cg_steps": 0}, {"iterations": 5}],
)
def test_config_range_errors(bad):
    with pytest.raises(ValidationError):
        als.ALSConfig(**bad)
    with pytest.raises(ValidationError):
        Recommender("als", bad)


def test_registered():
    family = get_family("als")
    assert family.config is als.ALSConfig and family.trainable and "Hu" in family.paper
