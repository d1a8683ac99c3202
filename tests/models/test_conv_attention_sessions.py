"""tcn, cnn3d, narm, sasrec: window batching, causality, training, next-item quality on the
synthetic shop's sessions, order sensitivity (SASRec) and use of content (3D-CNN)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recforge.data.filters import filter_interactions
from recforge.data.interactions import InteractionData
from recforge.data.sequences import PAD, Sequences, build_sequences, next_item_examples
from recforge.data.splits import SplitConfig, split_interactions
from recforge.data.synthetic import ShopConfig, generate_shop
from recforge.models.sequence import cnn3d
from recforge.models.registry import FAMILIES
from recforge.models.sequence.sasrec import left_align, sequence_windows, window_batches
from recforge.training.recommender import Recommender

FAMILY_NAMES = ["tcn", "cnn3d", "narm", "sasrec"]
SMALL: dict[str, dict] = {
    "tcn": {"dim": 32, "levels": 2},
    "cnn3d": {"dim": 32},
    "narm": {"dim": 32, "hidden": 32},
    "sasrec": {"dim": 32, "blocks": 1},
}
TRAIN = {"device": "cpu", "seed": 1, "epochs": 6, "batch_size": 512, "lr": 0.005}
# every family, plus SASRec's BERT-style encoder (RecBole's): LayerNorm after each residual, GELU
RECBOLE_SASREC = {"norm": "post", "activation": "gelu"}
VARIANTS = [pytest.param(f, {}, id=f) for f in FAMILY_NAMES] + [
    pytest.param("sasrec", RECBOLE_SASREC, id="sasrec-post-norm")
]


def toy_data(lengths: list[int], n_items: int = 40, seed: int = 0) -> InteractionData:
    """One user per sequence, items random, timestamps increasing, rows shuffled."""
    rng = np.random.default_rng(seed)
    user = np.repeat(np.arange(len(lengths)), lengths)
    ts = np.concatenate([np.arange(n) for n in lengths]) * 10
    order = rng.permutation(len(user))
    return InteractionData(
        user_idx=user[order], item_idx=rng.integers(0, n_items, len(user))[order],
        value=np.ones(len(user), dtype=np.float32), timestamp=ts[order].astype(np.int64),
        n_users=len(lengths), n_items=n_items,
    )


# ---------------------------------------------------------------- windows and alignment
def test_windows_make_every_item_but_the_first_a_target_once_with_its_predecessor_as_input():
    data = toy_data([1, 2, 7, 23, 50])
    seqs = build_sequences(data, by="user")
    inputs, targets, seq = sequence_windows(seqs, max_len=10)
    assert inputs.shape == targets.shape == (len(seq), 10)
    assert list(np.bincount(seq, minlength=5)) == [0, 1, 1, 3, 5]
    for s in range(len(seqs)):
        items = seqs.items[seqs.offsets[s] : seqs.offsets[s + 1]]
        rows = np.flatnonzero(seq == s)
        got_t = np.concatenate([targets[r][targets[r] >= 0] for r in rows]) if len(rows) else []
        got_i = np.concatenate([inputs[r][inputs[r] >= 0] for r in rows]) if len(rows) else []
        np.testing.assert_array_equal(got_t, items[1:])
        np.testing.assert_array_equal(got_i, items[:-1])
    # left-aligned: padding only after the real steps, and the most recent window is full
    valid = targets >= 0
    assert (valid[:, :-1] | ~valid[:, 1:]).all()
    assert valid[np.flatnonzero(seq == 4)[-1]].all()


def test_overlapping_windows_score_every_target_once_with_at_least_max_len_minus_stride_context():
    lengths = np.array([1, 2, 7, 23, 50, 61])
    offsets = np.r_[0, np.cumsum(lengths)]
    seqs = Sequences(offsets=offsets, items=np.arange(offsets[-1]), users=np.arange(6),
                     timestamps=np.arange(offsets[-1]), events=None, n_items=int(offsets[-1]))
    inputs, targets, seq = sequence_windows(seqs, max_len=10, stride=4)
    valid = targets >= 0
    # item ids are flat positions, so every target appears once and all but the first items do
    np.testing.assert_array_equal(np.sort(targets[valid]), np.setdiff1d(seqs.items, offsets[:-1]))
    for r, c in zip(*np.nonzero(valid)):
        p = targets[r, c] - offsets[seq[r]]  # the target's position in its sequence
        np.testing.assert_array_equal(inputs[r, : c + 1], np.arange(targets[r, c] - c - 1, targets[r, c]))
        assert c + 1 >= min(p, 10 - 4 + 1)  # max_len - stride + 1 items of context, or all of them


def test_window_batches_hold_about_batch_size_targets_and_cover_every_target():
    data = toy_data([5, 40, 12, 3, 30, 2, 60, 9] * 10)
    seen, widths = [], []
    for batch in window_batches(data, 16, 64, torch.Generator().manual_seed(0), by="user"):
        valid = batch["targets"] >= 0
        assert batch["items"].shape == batch["targets"].shape and batch["user"].shape == (len(valid),)
        assert valid[:, -1].any()  # trimmed to the batch's longest window
        seen.append(int(valid.sum()))
        widths.append(batch["items"].shape[1])
    assert sum(seen) == len(data) - 80  # one target per item but the first of each user
    assert max(seen[:-1]) < 64 + 16
    assert min(widths) < 16  # short windows are batched together, not padded to max_len


def test_bce_batches_draw_negatives_the_user_never_met():
    data = toy_data([20, 30, 25], n_items=200)
    csr = data.csr.toarray()
    for batch in window_batches(data, 8, 32, torch.Generator().manual_seed(0), by="user", negatives=True):
        neg = batch["negative"]
        assert neg.shape == batch["items"].shape
        assert not csr[batch["user"][:, None].numpy(), neg.numpy()].any()


def test_left_align_moves_padding_to_the_right_and_trims():
    x = torch.tensor([[PAD, PAD, 3, 4], [1, 2, 3, 4], [PAD, PAD, PAD, 9]])
    aligned, lengths = left_align(x)
    assert aligned.tolist() == [[3, 4, PAD, PAD], [1, 2, 3, 4], [9, PAD, PAD, PAD]]
    assert lengths.tolist() == [2, 4, 1]
    aligned, _ = left_align(x[[0, 2]])
    assert aligned.tolist() == [[3, 4], [9, PAD]]


# ---------------------------------------------------------------- networks
def build(family: str, data: InteractionData, **overrides):
    f = FAMILIES[family]
    torch.manual_seed(0)
    net = f.build(f.config.model_validate({**SMALL[family], **overrides}), data, None)
    return net.eval()


@pytest.mark.parametrize(("family", "variant"), VARIANTS)
def test_shapes_and_per_position_outputs_match_prefix_scores(family, variant):
    data = toy_data([12, 30, 6])
    net = build(family, data, max_len=20, **variant)
    items = torch.randint(0, 40, (3, 8))
    with torch.no_grad():
        h = net.encode(items)  # (B, w, D)
        per_position = net.logits(h)  # (B, w, I)
        assert h.shape[:2] == (3, 8) and per_position.shape == (3, 8, 40)
        # training reads position t of a window; serving scores the prefix ending at t
        for t in range(8):
            prefix = torch.full((3, 20), PAD)
            prefix[:, 20 - t - 1 :] = items[:, : t + 1]
            torch.testing.assert_close(net.score_sequence(prefix), per_position[:, t], rtol=1e-4, atol=1e-4)
        scores = net.score_all(torch.arange(3), torch.zeros(3, 40))
    assert scores.shape == (3, 40) and torch.isfinite(scores).all()


@pytest.mark.parametrize(("family", "variant"), VARIANTS)
def test_changing_a_later_item_never_changes_an_earlier_prediction(family, variant):
    net = build(family, toy_data([10, 10]), max_len=16, **variant)
    items = torch.randint(0, 40, (4, 12))
    with torch.no_grad():
        before = net.encode(items)
        for k in (3, 7, 11):
            changed = items.clone()
            changed[:, k] = (changed[:, k] + 1 + torch.arange(4)) % 40
            after = net.encode(changed)
            torch.testing.assert_close(after[:, :k], before[:, :k], rtol=0, atol=0)
            assert not torch.allclose(after[:, k], before[:, k])


def test_no_family_turns_on_anomaly_detection():
    data = toy_data([12, 30, 6])
    for family in FAMILY_NAMES:
        f = FAMILIES[family]
        config = f.config.model_validate(SMALL[family])
        net = f.build(config, data, None).train()
        batch = next(iter(f.batches(net, data, config, 64, torch.Generator().manual_seed(0))))
        f.loss(net, batch, config).backward()
        assert not torch.is_anomaly_enabled(), family


# ---------------------------------------------------------------- the synthetic shop's sessions
@pytest.fixture(scope="module")
def shop_sessions():
    shop = generate_shop(ShopConfig(preset="tiny", n_users=300, n_items=150, n_sessions=2400, with_media=False))
    config = SplitConfig(strategy="last_sessions", valid_fraction=0.05, test_fraction=0.2, seed=0,
                         min_user_interactions=3, min_item_interactions=3)
    s = split_interactions(filter_interactions(shop.interactions, config), None, config)
    n_users, n_items = len(s.user_map), len(s.item_map)
    train = InteractionData.from_frame(s.train, n_users, n_items)
    test = InteractionData.from_frame(s.test, n_users, n_items)
    content = cnn3d.item_content(shop.items, s.item_map.to_frame())
    return shop, s, train, test, content


def session_mrr20(score_sequence, train: InteractionData, test: InteractionData) -> float:
    """Mean reciprocal rank (cut at 20) of every next item of the test sessions, scored from the
    session's own prefix."""
    prefixes, targets, _ = next_item_examples(build_sequences(test, by="session", min_length=2), 20)
    with torch.no_grad():
        scores = score_sequence(torch.as_tensor(prefixes))  # (E, I)
    target = torch.as_tensor(targets)
    rank = (scores > scores.gather(1, target[:, None])).sum(1)
    return float(torch.where(rank < 20, 1.0 / (rank + 1), 0.0).mean())


@pytest.fixture(scope="module")
def trained(shop_sessions):
    _, _, train, _, content = shop_sessions
    cache: dict[tuple, Recommender] = {}

    def get(family: str, data: InteractionData | None = None, tag: str = "", **model) -> Recommender:
        key = (family, tag, tuple(sorted(model.items())))
        if key not in cache:
            rec = Recommender(family, {**SMALL[family], **model}, TRAIN)
            with_content = family == "cnn3d" and tag != "ids only"
            rec.fit(data if data is not None else train, item_vectors=content if with_content else None)
            cache[key] = rec
        return cache[key]

    return get


@pytest.mark.parametrize(("family", "variant"), VARIANTS)
def test_loss_falls_and_beats_popularity_on_next_item_mrr(family, variant, trained, shop_sessions):
    _, _, train, test, _ = shop_sessions
    rec = trained(family, **variant)
    losses = rec.history.loss
    assert losses[-1] < losses[0] - 0.5
    popularity = torch.log1p(torch.as_tensor(train.item_popularity, dtype=torch.float32))
    baseline = session_mrr20(lambda p: popularity.expand(len(p), -1), train, test)
    mrr = session_mrr20(rec.network.score_sequence, train, test)
    assert mrr > 1.5 * baseline, (mrr, baseline)


def test_sasrec_learns_order_shuffled_sequences_do_measurably_worse(trained, shop_sessions):
    _, _, train, test, _ = shop_sessions
    # the same interactions, but each user's timestamps permuted: what follows what is lost
    rng = np.random.default_rng(0)
    ts = train.timestamp.copy()
    for u in np.unique(train.user_idx):
        rows = np.flatnonzero(train.user_idx == u)
        ts[rows] = ts[rng.permutation(rows)]
    shuffled = InteractionData(train.user_idx, train.item_idx, train.value, ts, train.n_users, train.n_items)
    ordered = session_mrr20(trained("sasrec").network.score_sequence, train, test)
    unordered = session_mrr20(trained("sasrec", shuffled, tag="shuffled").network.score_sequence, train, test)
    assert ordered > unordered + 0.05, (ordered, unordered)


def test_sasrec_with_the_papers_bce_loss_trains(trained, shop_sessions):
    _, _, train, test, _ = shop_sessions
    rec = trained("sasrec", loss="bce")
    assert rec.history.loss[-1] < rec.history.loss[0]
    popularity = torch.log1p(torch.as_tensor(train.item_popularity, dtype=torch.float32))
    baseline = session_mrr20(lambda p: popularity.expand(len(p), -1), train, test)
    assert session_mrr20(rec.network.score_sequence, train, test) > baseline


# ---------------------------------------------------------------- 3D-CNN content
def test_item_content_codes_id_text_and_category(shop_sessions):
    shop, s, _, _, content = shop_sessions
    item_map = s.item_map.to_frame()
    assert content.shape == (len(item_map), 3, 64) and content.dtype == torch.uint8
    row = int(np.flatnonzero(item_map["item_id"].to_numpy() == shop.items["item_id"].iloc[5])[0])
    alphabet = np.array(["", *cnn3d.ALPHABET, "?"])
    decoded = ["".join(alphabet[c]) for c in content[row].numpy()]
    item = shop.items.iloc[5]
    assert decoded[0] == item["item_id"].lower()
    assert decoded[1] == f"{item['title']} {item['text']}".lower()[:64]
    assert decoded[2] == item["category"].lower()


def test_item_content_tolerates_missing_items_and_columns():
    items = pd.DataFrame({"item_id": ["b", "a"], "title": ["Big Hat", None]})
    item_map = pd.DataFrame({"item_id": ["a", "b", "c"], "item_idx": [0, 1, 2]})
    codes = cnn3d.item_content(items, item_map, width=8)
    assert codes.shape == (3, 3, 8)
    assert codes[2, 1:].sum() == 0 and codes[0, 1].sum() == 0 and codes[1, 1].sum() > 0


def test_cnn3d_scores_change_when_an_items_text_changes(trained, shop_sessions):
    net = trained("cnn3d").network
    seq = torch.full((1, 20), PAD)
    seq[0, -3:] = torch.tensor([4, 9, 17])
    with torch.no_grad():
        before = net.score_sequence(seq)
        saved = net.content[9].clone()
        net.content[9, 1] = torch.roll(net.content[9, 1], 5)  # item 9's text, scrambled
        after = net.score_sequence(seq)
        net.content[9] = saved
        unrelated = torch.full((1, 20), PAD)
        unrelated[0, -3:] = torch.tensor([4, 11, 17])
        kept = net.score_sequence(unrelated)
        net.content[9, 1] = torch.roll(net.content[9, 1], 5)
        assert torch.equal(net.score_sequence(unrelated), kept)  # item 9 not in this sequence
        net.content[9] = saved
    assert (after - before).abs().max() > 1e-3


def test_cnn3d_content_improves_next_item_mrr_over_ids_alone(trained, shop_sessions):
    _, _, train, test, _ = shop_sessions
    with_content = session_mrr20(trained("cnn3d").network.score_sequence, train, test)
    ids_only = session_mrr20(trained("cnn3d", tag="ids only").network.score_sequence, train, test)
    assert with_content > ids_only + 0.03, (with_content, ids_only)


def test_cnn3d_trains_on_ids_alone_and_keeps_content_through_save_and_load(trained, shop_sessions, tmp_path):
    _, _, train, _, content = shop_sessions
    net = FAMILIES["cnn3d"].build(cnn3d.CNN3DConfig(), train, None)
    assert net.content[:, 1:].sum() == 0 and net.content[:, 0].sum() > 0  # digits of the index only
    rec = trained("cnn3d")
    torch.testing.assert_close(rec.network.content, content[:, :, : rec.config.width])
    rec.save(tmp_path / "cnn3d")
    loaded = Recommender.load(tmp_path / "cnn3d")
    assert torch.equal(loaded.network.content, rec.network.content)
    np.testing.assert_allclose(loaded.score(np.arange(5)), rec.score(np.arange(5)), rtol=1e-5, atol=1e-5)


def test_cnn3d_float_item_vectors_initialise_the_output_table(shop_sessions):
    _, _, train, _, _ = shop_sessions
    vectors = torch.randn(train.n_items, 8)
    net = FAMILIES["cnn3d"].build(cnn3d.CNN3DConfig(dim=8), train, vectors)
    corr = torch.corrcoef(torch.stack([net.item.weight.detach().flatten(), (vectors - vectors.mean(0)).flatten()]))
    assert corr[0, 1] > 0.99


@pytest.mark.parametrize("neighbourhood", ["sknn", "item_knn"])
def test_sasrec_beats_the_item_knn_baselines_on_next_item_mrr(neighbourhood, trained, shop_sessions):
    """Issue #5's floor: the self-attentive model beats session item-kNN (Jannach & Ludewig 2017)
    and item-kNN on the interaction matrix, scored from the same session prefixes."""
    _, _, train, test, _ = shop_sessions
    knn = Recommender(neighbourhood, {}, {"epochs": 0, "device": "cpu"})
    knn.fit(train)
    if neighbourhood == "item_knn":
        def score(prefixes: torch.Tensor) -> torch.Tensor:  # the prefix as the history row
            rows = torch.zeros(len(prefixes), train.n_items)
            rows.scatter_(1, prefixes.clamp_min(0), (prefixes >= 0).float())
            return knn.network.score_all(torch.zeros(len(prefixes), dtype=torch.long), rows)
    else:
        score = knn.network.score_sequence
    baseline = session_mrr20(score, train, test)
    assert session_mrr20(trained("sasrec").network.score_sequence, train, test) > baseline, baseline
