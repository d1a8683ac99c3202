"""Session protocols on hand-made cases with known ranks, unknown-item accounting, user-sequence
protocols next to the existing full/sampled ranking, and the session leaderboard."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from recforge.data.filters import filter_interactions
from recforge.data.interactions import InteractionData
from recforge.data.sequences import PAD
from recforge.data.splits import SplitConfig, split_interactions
from recforge.data.synthetic import ShopConfig, generate_shop
from recforge.evaluation.protocols import full_ranking
from recforge.evaluation.sessions import (
    evaluate_sessions,
    prefix_scorer,
    session_examples,
    session_leaderboard,
    target_ranks,
)
from recforge.models.sequence.sequence import SequenceNetwork
from recforge.training.recommender import Recommender

N_ITEMS = 5


class NextOfLast(SequenceNetwork):
    """Scores (last item + 1) mod 5 first, then items in the fixed order 0 > 1 > 2 > 3 > 4."""

    def __init__(self, train: InteractionData) -> None:
        super().__init__()
        self.init_user_sequences(train, max_len=3)
        self.calls: list[int] = []

    def score_sequence(self, items: torch.Tensor) -> torch.Tensor:
        self.calls.append(items.shape[0])
        assert (items[:, -1] >= 0).all(), "a prefix reached the network with no known last item"
        base = torch.arange(N_ITEMS, 0, -1, dtype=torch.float32).expand(len(items), -1).clone()  # (B, I)
        base[torch.arange(len(items)), (items[:, -1] + 1) % N_ITEMS] += 10.0
        return base


class Constant(NextOfLast):
    def score_sequence(self, items: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(items), N_ITEMS)


def frame(sessions: dict[str, list[int]], user_idx: int = -1) -> pd.DataFrame:
    rows = [(s, i, 100 * k + t) for k, (s, items) in enumerate(sessions.items()) for t, i in enumerate(items)]
    f = pd.DataFrame(rows, columns=["session_id", "item_idx", "timestamp"])
    f["user_id"], f["user_idx"], f["value"] = f["session_id"], user_idx, 1.0
    return f.sample(frac=1.0, random_state=0).reset_index(drop=True)  # table order must not matter


SESSIONS = {"A": [0, 1, 2], "B": [3, 0], "C": [4, -1, 2], "D": [-1, 3], "E": [2]}


def tiny_train() -> InteractionData:
    return InteractionData(
        user_idx=np.zeros(3, np.int64), item_idx=np.array([0, 1, 2]), value=np.ones(3, np.float32),
        timestamp=np.arange(3), n_users=1, n_items=N_ITEMS,
    )  # fmt: skip


def test_examples_drop_unknown_prefix_items_and_count_exclusions() -> None:
    prefixes, targets, counts = session_examples(frame(SESSIONS), max_len=3, positions="all")
    got = sorted(zip(map(tuple, prefixes.tolist()), targets.tolist(), strict=True))
    assert got == sorted([((PAD, PAD, 0), 1), ((PAD, 0, 1), 2), ((PAD, PAD, 3), 0), ((PAD, PAD, 4), 2)])
    assert counts == {"n_sessions": 5, "n_targets": 4, "n_unknown_targets": 1, "n_empty_prefix": 1,
                      "n_unknown_events": 2}  # fmt: skip
    _, last_targets, last_counts = session_examples(frame(SESSIONS), max_len=2, positions="last")
    assert sorted(last_targets.tolist()) == [0, 2, 2] and last_counts["n_empty_prefix"] == 1


def test_known_recall_and_mrr() -> None:
    net = NextOfLast(tiny_train())
    m = evaluate_sessions(net, tiny_train(), frame(SESSIONS), ks=(1, 2, 5))
    # next_item ranks: A->1: 0, A->2: 0, B->0: 1 (4 comes first), C->2: 2 (0 first, then 1).
    nxt = m["next_item"]
    assert nxt["recall@1"] == pytest.approx(2 / 4) and nxt["recall@2"] == pytest.approx(3 / 4)
    assert nxt["recall@5"] == pytest.approx(1.0)
    assert nxt["mrr@2"] == pytest.approx((1 + 1 + 0.5) / 4)
    assert nxt["mrr@5"] == pytest.approx((1 + 1 + 0.5 + 1 / 3) / 4)
    assert nxt["n_targets"] == 4 and nxt["n_unknown_targets"] == 1 and nxt["n_empty_prefix"] == 1
    last = m["last_item"]  # A->2: 0, B->0: 1, C->2: 2
    assert last["recall@1"] == pytest.approx(1 / 3) and last["mrr@5"] == pytest.approx((1 + 0.5 + 1 / 3) / 3)
    assert "user_sequences" not in m  # every test user is unknown to train
    json.dumps(m)


def test_ties_count_against_the_target_and_batches_do_not_change_ranks() -> None:
    m = evaluate_sessions(Constant(tiny_train()), tiny_train(), frame(SESSIONS), ks=(4, 5))
    # All 5 items tie: each target ranks last, behind the 4 others.
    assert m["next_item"]["recall@4"] == 0.0 and m["next_item"]["mrr@5"] == pytest.approx(1 / 5)
    net = NextOfLast(tiny_train())
    prefixes, targets, _ = session_examples(frame(SESSIONS), max_len=3)
    one = target_ranks(net.score_sequence, prefixes, targets, batch_size=1)
    assert net.calls == [1, 1, 1, 1]
    np.testing.assert_array_equal(one, target_ranks(net.score_sequence, prefixes, targets, batch_size=64))
    assert net.calls[-1] == 4  # one batched call, not one per session


@pytest.fixture(scope="module")
def shop_split():
    shop = generate_shop(ShopConfig(preset="tiny", n_users=200, n_items=300, n_sessions=1200, with_media=False))
    config = SplitConfig(strategy="leave_last_out", valid_fraction=0.0, events=("view",),
                         min_user_interactions=3, min_item_interactions=2)  # fmt: skip
    s = split_interactions(filter_interactions(shop.interactions, config), None, config)
    train = InteractionData.from_frame(s.train, len(s.user_map), len(s.item_map))
    return train, s.test


def fitted(family: str, train: InteractionData, model: dict | None = None) -> Recommender:
    rec = Recommender(family, model or {}, {"device": "cpu"})
    rec.fit(train)
    return rec


def test_user_sequences_full_and_sampled_side_by_side(shop_split) -> None:
    train, test = shop_split
    pop = fitted("popularity", train)
    m = evaluate_sessions(pop, train, test, max_len=10, ks=(10,), n_negatives=100, seed=1)
    user = m["user_sequences"]
    test_data = InteractionData.from_frame(test, train.n_users, train.n_items)
    # Popularity ignores the prefix, so the full protocol must agree with the plain full ranking.
    expected = full_ranking(pop.score_fn(), train.csr, test_data, ks=(10,))
    assert user["full"]["ndcg@10"] == pytest.approx(expected["ndcg@10"])
    assert user["sampled"]["n_pairs"] == len(test_data) and user["sampled"]["hr@10"] > user["full"]["hr@10"]
    # leave_last_out with sessions: the last event of each user's last session is the session target.
    assert m["last_item"]["n_targets"] + m["last_item"]["n_empty_prefix"] + m["last_item"]["n_unknown_targets"] \
        <= m["last_item"]["n_sessions"]  # fmt: skip


def test_non_sequence_families_are_skipped_and_the_board_sorts(shop_split) -> None:
    train, test = shop_split
    knn = fitted("item_knn", train)
    assert prefix_scorer(knn) is None
    metrics = {
        "item_knn": evaluate_sessions(knn, train, test),
        "popularity": evaluate_sessions(fitted("popularity", train), train, test, max_len=10, n_negatives=50),
        "cooccurrence": evaluate_sessions(fitted("cooccurrence", train), train, test, n_negatives=50),
    }
    assert "skipped" in metrics["item_knn"]
    board = session_leaderboard(metrics)
    # Leave-last-out test sessions hold one event: no next-item target, so the board ranks by the
    # user-sequence full NDCG, and the empty session columns are left out.
    assert board["family"].tolist() == ["cooccurrence", "popularity"]
    assert {"user_full_ndcg@20", "user_sampled_hr@10"} <= set(board.columns)
    assert "next_item_mrr@20" not in board.columns and (board["next_item_targets"] == 0).all()
    assert board["user_full_ndcg@20"].is_monotonic_decreasing
    assert session_leaderboard({"item_knn": metrics["item_knn"]}).empty


def test_user_sequence_prefixes_are_each_users_latest_training_items() -> None:
    # User 0 saw 3 then 0 then 1 (table order differs from time order); user 1 saw 2; user 2 is not tested.
    train = InteractionData(
        user_idx=np.array([0, 1, 0, 0, 2]), item_idx=np.array([1, 2, 0, 3, 4]), value=np.ones(5, np.float32),
        timestamp=np.array([30, 5, 20, 10, 1]), n_users=3, n_items=N_ITEMS,
    )  # fmt: skip
    test = pd.DataFrame({"user_id": ["u0", "u1"], "user_idx": [0, 1], "item_idx": [2, 3], "timestamp": [40, 41],
                         "value": 1.0, "session_id": pd.NA})  # fmt: skip
    m = evaluate_sessions(NextOfLast(train), train, test, max_len=2, ks=(1,), n_negatives=1)
    assert "next_item" not in m  # no sessions in this test split
    assert m["user_sequences"]["full"]["hr@1"] == 1.0 and m["user_sequences"]["full"]["n_users"] == 2
    assert m["user_sequences"]["sampled"]["hr@1"] == 1.0
