"""The recurrent session families — gru4rec, contextual_rnn, hrnn, lstm: session-parallel
batching, next-item quality on the synthetic shop's sessions (whose order carries signal by
construction: shoppers often follow an item to one of its successors), and what each model adds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from recforge.data.interactions import InteractionData
from recforge.data.sequences import PAD, build_sequences, next_item_examples
from recforge.data.synthetic import ShopConfig, generate_shop
from recforge.evaluation.metrics import single_target_metrics
from recforge.models.sequence import contextual_rnn, gru4rec, hrnn, lstm
from recforge.models.sequence.rnn_common import run_prefix
from recforge.models.sequence.session_steps import (
    UNKNOWN_EVENT,
    cut_units,
    event_codes,
    gap_buckets,
    parallel_batches,
    parallel_layout,
    sequence_steps,
    training_sequences,
)
from recforge.training.recommender import Recommender

FAMILIES = ("gru4rec", "contextual_rnn", "hrnn", "lstm")
MODULES = {"gru4rec": gru4rec, "contextual_rnn": contextual_rnn, "hrnn": hrnn, "lstm": lstm}
TRAIN = {"device": "cpu", "seed": 0, "epochs": 4, "batch_size": 512, "lr": 0.01}



@pytest.fixture(scope="module")
def sessions() -> tuple[InteractionData, InteractionData]:
    """The synthetic shop split by session start: the last 20 % of sessions are the test."""
    shop = generate_shop(ShopConfig(preset="tiny", n_users=200, n_items=150, n_sessions=2000, with_media=False))
    df = shop.interactions
    df = df.assign(user_idx=pd.factorize(df["user_id"])[0], item_idx=pd.factorize(df["item_id"])[0])
    start = df.groupby("session_id")["timestamp"].transform("min")
    cut = np.quantile(df.groupby("session_id")["timestamp"].min(), 0.8)
    n_users, n_items = int(df["user_idx"].max()) + 1, int(df["item_idx"].max()) + 1
    train = InteractionData.from_frame(df[start < cut], n_users, n_items)
    test = InteractionData.from_frame(df[start >= cut], n_users, n_items)
    return train, test


def session_examples(test: InteractionData, max_len: int = 20) -> dict[str, torch.Tensor]:
    """Every position of every test session: right-aligned prefixes, their context, the target."""
    seqs = build_sequences(test, by="session", min_length=2)
    items, target, _ = next_item_examples(seqs, max_len)
    first = np.zeros(len(seqs.items), dtype=bool)
    first[seqs.offsets[:-1]] = True
    events, next_event, _ = next_item_examples(dataclasses.replace(seqs, items=event_codes(seqs)), max_len)
    gaps, _, _ = next_item_examples(dataclasses.replace(seqs, items=gap_buckets(seqs.timestamps, first, 1800)), max_len)
    out = {"items": items, "target": target, "events": np.where(items < 0, 0, events),
           "gaps": np.where(items < 0, 0, gaps), "next_event": next_event}
    return {k: torch.as_tensor(v) for k, v in out.items()}


def mrr20(scores: torch.Tensor, target: torch.Tensor) -> float:
    rank = (scores > scores.gather(1, target[:, None])).sum(1).numpy()
    return float(single_target_metrics(rank, (20,))["mrr@20"].mean())


@pytest.fixture(scope="module")
def trained(sessions):
    cache: dict[str, Recommender] = {}

    def get(family: str) -> Recommender:
        if family not in cache:
            cache[family] = Recommender(family, {}, TRAIN)
            cache[family].fit(sessions[0])
        return cache[family]

    return get


# ------------------------------------------------------------------------------ batching
def hand_made() -> InteractionData:
    """Three sessions: user 0 views 1 2 3 4, user 1 views 5 6, user 0 comes back for 7 8 9."""
    items = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9])
    return InteractionData(
        user_idx=np.array([0, 0, 0, 0, 1, 1, 0, 0, 0]), item_idx=items,
        value=np.ones(9, np.float32), timestamp=np.array([10, 20, 30, 40, 15, 25, 5000, 5010, 5020]),
        n_users=2, n_items=10, session=np.array([0, 0, 0, 0, 1, 1, 2, 2, 2]),
    )


def test_session_parallel_batches_reset_the_state_exactly_at_session_boundaries():
    data = hand_made()
    config = gru4rec.GRU4RecConfig(dim=4, hidden=3, bptt=2, max_len=20)
    net = gru4rec.build(config, data)
    batches = list(gru4rec.batches(net, data, config, 2 * config.bptt, torch.Generator().manual_seed(0)))
    assert all(b["item"].shape[1] == 2 for b in batches)  # two sessions side by side
    item, target, start = (torch.cat([b[k] for b in batches]) for k in ("item", "target", "start"))  # (T, 2)
    with torch.no_grad():
        states = torch.cat([net.run_chunk(b["item"], b["start"]) for b in batches])  # (T, 2, H), carried

    # each slot plays whole sessions back to back, restarting exactly where one begins
    sessions = {(1, 2, 3, 4), (5, 6), (7, 8, 9)}
    seen = set()
    for slot in range(2):
        runs, cells = [], []
        for t in range(item.shape[0]):
            if target[t, slot] == PAD:
                continue
            if start[t, slot]:
                runs.append([int(item[t, slot])])
                cells.append([])
            else:
                assert int(item[t, slot]) == runs[-1][-1]  # the previous step's target
            runs[-1].append(int(target[t, slot]))
            cells[-1].append(t)
        for run, ts in zip(runs, cells):
            seen.add(tuple(run))
            # the carried state equals a fresh GRU run over the session alone, step by step
            prefix = torch.tensor([run[:-1]])
            for k, t in enumerate(ts):
                with torch.no_grad():
                    alone = run_prefix(net.cell, net.gates(prefix[:, : k + 1]), prefix[:, : k + 1], torch.zeros(1, 3))
                torch.testing.assert_close(states[t, slot], alone[0])
    assert seen == sessions

    # and without the resets the state leaks from one session into the next
    with torch.no_grad():
        net.state = None
        leaky = torch.cat([net.run_chunk(b["item"], torch.zeros_like(b["start"])) for b in batches])
    assert not torch.allclose(leaky, states)


def test_parallel_layout_places_every_step_once_with_even_slots():
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.zipf(1.6, 500), 200)
    unit = np.r_[0, np.cumsum(lengths)]
    layout = parallel_layout(unit, 16, rng.permutation(500))
    assert np.array_equal(np.sort(layout.step), np.arange(unit[-1]))
    assert len(set(zip(layout.time.tolist(), layout.slot.tolist()))) == unit[-1]
    # a unit occupies consecutive times of one slot
    pos = np.empty(unit[-1], dtype=np.int64)
    pos[layout.step] = np.arange(len(layout.step))
    t, s = layout.time[pos], layout.slot[pos]
    inner = np.setdiff1d(np.arange(1, unit[-1]), unit[1:-1])
    assert (t[inner] == t[inner - 1] + 1).all() and (s[inner] == s[inner - 1]).all()
    # slots end within one (non-opening) unit of an even share
    assert layout.length <= max(np.ceil(unit[-1] / 16), lengths.max()) + np.sort(lengths)[-17]


def test_gap_buckets_mark_session_starts_and_grow_with_log_time():
    ts = np.array([0, 0, 1, 3, 100, 10_000, 10_001])
    first = np.array([True, False, False, False, False, False, False])
    assert gap_buckets(ts, first, 1800).tolist() == [0, 1, 2, 2, 7, 0, 2]


# ------------------------------------------------------------------------------ every family
@pytest.mark.parametrize("family", FAMILIES)
def test_scores_have_the_catalogue_shape_and_ignore_left_padding(family, trained, sessions):
    net = trained(family).network
    prefix = torch.tensor([[PAD, PAD, 3, 4, 5], [1, 2, 3, 4, 5], [PAD, PAD, PAD, PAD, 7]])
    with torch.no_grad():
        scores = net.score_sequence(prefix)
        padded = net.score_sequence(torch.cat([torch.full((3, 4), PAD), prefix], dim=1))
    assert scores.shape == (3, sessions[0].n_items) and torch.isfinite(scores).all()
    torch.testing.assert_close(padded, scores)
    assert not torch.allclose(scores[0], scores[1])  # the earlier items matter


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_falls_and_next_item_mrr_beats_popularity(family, trained, sessions):
    rec = trained(family)
    assert rec.history.loss[-1] < rec.history.loss[0]
    ex = session_examples(sessions[1])
    popularity = torch.as_tensor(sessions[0].item_popularity, dtype=torch.float32).expand(len(ex["target"]), -1)
    with torch.no_grad():
        model = mrr20(rec.network.score_sequence(ex["items"]), ex["target"])
    assert model > 1.5 * mrr20(popularity, ex["target"])


@pytest.mark.parametrize("neighbourhood", ["sknn", "item_knn"])
def test_gru4rec_beats_the_item_knn_baselines_on_next_item_mrr(neighbourhood, trained, sessions):
    """Issue #5's floor: GRU4Rec beats session item-kNN (Jannach & Ludewig 2017) and item-kNN on
    the interaction matrix, scored from the same session prefixes."""
    train, test = sessions
    ex = session_examples(test)
    knn = Recommender(neighbourhood, {}, {"epochs": 0, "device": "cpu"})
    knn.fit(train)
    gru4rec = trained("gru4rec")  # fitted outside no_grad
    with torch.no_grad():
        if neighbourhood == "item_knn":  # the prefix as the history row
            prefixes = ex["items"]
            rows = torch.zeros(len(prefixes), train.n_items).scatter_(1, prefixes.clamp_min(0), (prefixes >= 0).float())
            scores = knn.network.score_all(torch.zeros(len(prefixes), dtype=torch.long), rows)
        else:
            scores = knn.network.score_sequence(ex["items"])
        model = mrr20(gru4rec.network.score_sequence(ex["items"]), ex["target"])
    assert model > mrr20(scores, ex["target"])


def test_gru4rec_learns_from_the_order_of_events(trained, sessions):
    train, test = sessions
    rng = np.random.default_rng(0)
    # shuffle the items within each training session by handing its timestamps out at random
    by_session_time = np.lexsort((train.timestamp, train.session))
    by_session_random = np.lexsort((rng.random(len(train)), train.session))
    timestamp = train.timestamp.copy()
    timestamp[by_session_random] = train.timestamp[by_session_time]
    shuffled = Recommender("gru4rec", {}, TRAIN)
    shuffled.fit(dataclasses.replace(train, timestamp=timestamp))
    ex = session_examples(test)
    with torch.no_grad():
        ordered = mrr20(trained("gru4rec").network.score_sequence(ex["items"]), ex["target"])
        unordered = mrr20(shuffled.network.score_sequence(ex["items"]), ex["target"])
    assert ordered > unordered + 0.03


@pytest.mark.parametrize("loss", ["bpr", "top1", "bpr_max", "top1_max", "sampled_softmax", "cross_entropy"])
def test_gru4rec_trains_with_every_ranking_loss(loss, sessions):
    train = sessions[0]
    small = dataclasses.replace(train, **{k: getattr(train, k)[:4000] for k in
                                          ("user_idx", "item_idx", "value", "timestamp", "session", "event")})
    rec = Recommender("gru4rec", {"loss": loss, "n_extra_negatives": 32}, {**TRAIN, "epochs": 3})
    history = rec.fit(small)
    assert np.isfinite(history.loss).all() and history.loss[-1] < history.loss[0]


def test_gru4rec_onehot_input_trains_and_cannot_be_tied(sessions):
    rec = Recommender("gru4rec", {"input": "onehot"}, {**TRAIN, "epochs": 2})
    assert rec.fit(sessions[0]).loss[-1] < rec.history.loss[0]
    assert rec.network.item is None
    with pytest.raises(ValueError, match="tie_embeddings"):
        gru4rec.GRU4RecConfig(input="onehot", tie_embeddings=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_item_vectors_initialise_the_item_embedding(family, sessions):
    train = sessions[0]
    module = MODULES[family]
    vectors = torch.randn(train.n_items, 64)
    net = module.build(module.FAMILY.config(), train, vectors)
    centred = vectors - vectors.mean(0)
    torch.testing.assert_close(net.item.weight / net.item.weight.std(), centred / centred.std())


# ------------------------------------------------------------------------------ what each adds
def test_contextual_rnn_reads_the_event_types_and_gains_from_them(trained, sessions):
    net = trained("contextual_rnn").network
    ex = session_examples(sessions[1])
    with torch.no_grad():
        blind = net.score_sequence(ex["items"])
        informed = net.score_sequence(ex["items"], ex["events"], ex["gaps"], ex["next_event"])
        other = torch.where(ex["items"] >= 0, (ex["events"] + 2) % UNKNOWN_EVENT, ex["events"])
        changed = net.score_sequence(ex["items"], other, ex["gaps"], ex["next_event"])
    assert (changed - informed).abs().amax(1).min() > 0  # every prefix's scores move
    assert mrr20(informed, ex["target"]) > mrr20(blind, ex["target"]) + 0.02


def test_hrnn_carries_the_user_state_across_sessions(trained, sessions):
    net = trained("hrnn").network
    assert not net.stale  # eval() recomputed the users' states with the final parameters
    users = torch.as_tensor(np.unique(sessions[0].user_idx)[:50])
    session = torch.tensor([[PAD, 3, 4, 5]]).expand(len(users), -1)
    with torch.no_grad():
        returning = net.score_sequence(session, users)
        fresh = net.score_sequence(session)
    assert (returning - fresh).abs().amax(1).min() > 1e-3

    # session_state is what reading the user's sessions one step at a time gives
    steps = net.steps
    u = int(users[0])
    mine = np.flatnonzero(steps.user == u)
    c = torch.zeros(1, net.user_size)
    s = net.start_session(c)
    with torch.no_grad():
        for j in mine:
            s, c = net.step(net.gates(torch.tensor([steps.item[j]])), s, c,
                            torch.tensor([bool(steps.start[j])]), torch.tensor([j == mine[0]]))
    torch.testing.assert_close(net.session_state[u], s[0])


def test_sequence_steps_cut_long_sequences_into_runs():
    data = hand_made()
    steps = sequence_steps(training_sequences(data, "user"), max_len=3)
    # user 0: 7 items -> 6 steps in runs of 3; user 1: 2 items -> 1 step
    assert np.diff(steps.unit).tolist() == [3, 3, 1]
    assert steps.start.tolist() == [True, False, False, True, False, False, True]
    batches = list(parallel_batches(steps, 6, 3, torch.Generator().manual_seed(0)))
    assert sum(len(b["rows"]) for b in batches) == 7


def test_heavy_units_are_cut_at_run_starts():
    data = hand_made()
    steps = sequence_steps(training_sequences(data, "user"), max_len=2)
    # user 0: 6 steps in runs of 2; user 1: 1 step. Cut at 4: user 0 becomes 4 + 2 steps.
    steps = dataclasses.replace(steps, unit=np.array([0, 6, 7]))
    assert np.diff(cut_units(steps, 4).unit).tolist() == [4, 2, 1]
    assert np.diff(cut_units(steps, 3).unit).tolist() == [4, 2, 1]  # never inside a run
    assert cut_units(steps, 6) is steps


def test_without_a_session_column_sessions_are_cut_by_inactivity():
    data = dataclasses.replace(hand_made(), session=None)
    seqs = training_sequences(data, "session", session_gap_s=100)
    # user 0 pauses for ~80 minutes between 4 and 7; each user's sessions come in time order
    assert np.diff(seqs.offsets).tolist() == [4, 3, 2]
    assert seqs.users.tolist() == [0, 0, 1]
    config = hrnn.HRNNConfig(dim=4, hidden=3, user_hidden=2, session_gap_s=100)
    net = hrnn.build(config, data)
    assert net.steps.start.sum() == 3 and net.steps.unit_start.sum() == 2
