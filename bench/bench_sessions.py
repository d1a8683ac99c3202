"""Session and sequence families on user sequences of MovieLens-100K or the synthetic `large` shop,
against RecBole's GRU4Rec and SASRec figures.

Protocol (RecBole's sequential defaults): each user's interactions in time order (ties in file
order); leave-last-out — the last item is the test target, the one before it the validation
target, the rest is train. Sequences are cut to the last 50 items, the loss is full softmax
cross-entropy, a batch holds 2,048 next-item targets, Adam. The epoch is selected as RecBole does
for sequential models: validation NDCG@10 among all items, seen items included, patience 10, best
epoch restored. The test target is ranked against every item from the user's last 50 items before
it (train + validation item); NDCG@10 is reported as RecBole computes it for sequential models
(seen items not removed) and with the user's history removed.

Per family, in a fresh process: seconds per training epoch (the loop's own timing, without
validation), next-item targets per second, CPU seconds of the whole fit, peak RSS of the process
(`resource.getrusage`), test NDCG@10 / HR@10. `popularity`, `sknn` and `cooccurrence` have no
epochs: their fit time is their whole build.

Further tables (`--synthetic session leaderboard`) fit tcn, cnn3d, narm and sasrec with the
parameters proposed for `conf/base/parameters_training.yml` (`PROPOSALS`) on the synthetic `default` shop (temporal split as in
`parameters_splitting.yml`; cnn3d gets the items' text and category) and reports the fit time
against the 25 s budget, leaderboard NDCG@10 and next-item MRR@20 inside the test sessions.

    .venv/bin/python bench/bench_sessions.py [--data ml100k|large] [--path /work/shared/data/movielens-100k/u.data]
        [--families gru4rec lstm sasrec narm tcn ...] [--epochs 100] [--threads 2] [--seeds 0 1 2 3 4]
        [--model '{"dropout": 0.2}'] [--training '{"lr": 0.002}'] [--synthetic session leaderboard]
        [--out bench/results/sessions.md]

Every measured row, with its per-epoch validation NDCG@10 and training loss, also goes to the
JSON file next to `--out`. Test ranks are computed 1,024 users at a time, as the library's
evaluation does, so a worker's peak RSS is training plus a (1024, I) score block.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from recforge.data.interactions import InteractionData
from recforge.data.sequences import PAD
from recforge.evaluation.metrics import single_target_metrics
from recforge.training.recommender import Recommender

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger("bench_sessions")

MAX_LEN, BATCH, PATIENCE = 50, 2048, 10
# (model, training overrides) per family; every trained family also gets batch 2048, Adam, seed 0
SETTINGS: dict[str, tuple[dict, dict]] = {
    "popularity": ({}, {"epochs": 0}),
    "sknn": ({"max_len": MAX_LEN}, {"epochs": 0}),
    "cooccurrence": ({}, {"epochs": 0}),
    # RecBole's GRU4Rec architecture: emb 64, hidden 128, dropout 0.3, scores through a 128 -> 64
    # projection onto the input item embeddings; 2048 targets = 64 parallel slots x 32 BPTT steps
    "gru4rec": ({"dim": 64, "hidden": 128, "dropout": 0.3, "max_len": MAX_LEN, "bptt": 32, "tie_embeddings": True,
                 "by": "user"}, {"lr": 0.005}),
    "lstm": ({"dim": 64, "hidden": 128, "dropout": 0.3, "max_len": MAX_LEN, "tie_embeddings": True, "by": "user"},
             {"lr": 0.005}),
    "contextual_rnn": ({"dim": 64, "hidden": 128, "dropout": 0.3, "max_len": MAX_LEN, "bptt": 32, "tie_embeddings": True},
                       {"lr": 0.005}),
    "hrnn": ({"dim": 64, "hidden": 128, "dropout": 0.3, "max_len": MAX_LEN, "bptt": 32, "tie_embeddings": True},
             {"lr": 0.005}),
    # windows end every 25 steps, so each target sees at least 26 items before it (or its whole
    # prefix), as in RecBole's one-example-per-prefix training, at twice the cost of disjoint windows;
    # its NDCG@10 claim is the median over seeds 0-4 (`--seeds 0 1 2 3 4`): patience 10 on a
    # 943-user validation set stops single runs at noisy early peaks (results/sessions.md)
    "sasrec": ({"dim": 64, "heads": 2, "blocks": 2, "ffn_dim": 256, "dropout": 0.5, "max_len": MAX_LEN, "loss": "ce",
                "by": "user", "window_stride": 25}, {"lr": 0.002}),
    "narm": ({"dim": 64, "hidden": 100, "max_len": MAX_LEN, "loss": "ce", "by": "user"}, {"lr": 0.002}),
    # cnn3d: the items' id, title + genres and first genre as character frames (u.item)
    "cnn3d": ({"dim": 64, "width": 32, "dropout": 0.3, "max_len": MAX_LEN, "loss": "ce", "by": "user"}, {"lr": 0.002}),
    "tcn": ({"dim": 64, "levels": 4, "kernel_size": 3, "dropout": 0.3, "max_len": MAX_LEN, "loss": "ce", "by": "user"},
            {"lr": 0.002}),
}
RECBOLE = {"gru4rec": {"epoch_s": 31.0, "ndcg@10": 0.045}, "sasrec": {"epoch_s": 121.0, "ndcg@10": 0.058, "peak_rss_gb": 3.7}}
# Parameters proposed for the default `kedro run`, (model, training) per family. On the synthetic
# shop the two leaderboards pull apart: the longer a sequence model trains, the better it predicts
# the next item of a session and the worse it ranks the items of the user's later sessions.
PROPOSALS: dict[str, dict[str, tuple[dict, dict]]] = {
    # next-item prediction (the session leaderboard): a fixed number of epochs
    "session": {
        "tcn": ({}, {"epochs": 5, "batch_size": 1024, "lr": 0.003}),
        "cnn3d": ({}, {"epochs": 6, "batch_size": 1024, "lr": 0.003}),
        "narm": ({}, {"epochs": 6, "batch_size": 1024, "lr": 0.003}),
        "sasrec": ({}, {"epochs": 6, "batch_size": 1024, "lr": 0.003}),
    },
    # the user-level leaderboard: early stopping on validation NDCG@10, user sequences
    "leaderboard": {
        "tcn": ({}, {"epochs": 4, "batch_size": 2048, "lr": 0.003, "early_stopping_metric": "ndcg@10", "patience": 2}),
        "cnn3d": ({"by": "user"},
                  {"epochs": 4, "batch_size": 2048, "lr": 0.003, "early_stopping_metric": "ndcg@10", "patience": 2}),
        "narm": ({"by": "user", "max_len": 20},
                 {"epochs": 4, "batch_size": 2048, "lr": 0.003, "early_stopping_metric": "ndcg@10", "patience": 2}),
        "sasrec": ({"dropout": 0.5},
                   {"epochs": 4, "batch_size": 2048, "lr": 0.002, "early_stopping_metric": "ndcg@10", "patience": 2}),
    },
}


def leave_last_out(user: np.ndarray, item: np.ndarray, ts: np.ndarray) -> tuple[InteractionData, InteractionData, np.ndarray]:
    """(train, valid, rows): per user, the last item is test, the one before valid; `rows` holds
    (user, item, rank from the end) of every row in time order. Ids: any integer codes."""
    _, user = np.unique(user, return_inverse=True)
    _, item = np.unique(item, return_inverse=True)
    order = np.lexsort((np.arange(len(user)), ts, user))
    user, item, ts = user[order], item[order], ts[order]
    last = np.flatnonzero(np.r_[user[1:] != user[:-1], True])  # (U,) each user's last row
    first = np.r_[0, last[:-1] + 1]
    rank = np.repeat(last, last - first + 1) - np.arange(len(user))  # (N,) 0 = last, 1 = second last
    n_users, n_items = int(user.max()) + 1, int(item.max()) + 1

    def part(mask: np.ndarray) -> InteractionData:
        return InteractionData(
            user_idx=user[mask], item_idx=item[mask], value=np.ones(int(mask.sum()), np.float32),
            timestamp=ts[mask], n_users=n_users, n_items=n_items,
        )

    return part(rank >= 2), part(rank == 1), np.stack([user, item, rank], axis=1)


def load_rows(data: str, path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """(user, item, timestamp, items) of MovieLens-100K's u.data and u.item (next to it), or of the
    synthetic `large` shop with each user's repeated items kept once (first time), users with at
    least 3 items. `item` holds the original item ids; `items` is the canonical items table (title,
    text, category) that cnn3d reads."""
    import pandas as pd

    if data == "ml100k":
        from recforge.data.movielens import read_items

        raw = np.loadtxt(path, dtype=np.int64)  # user, item, rating, timestamp
        return raw[:, 0], raw[:, 1], raw[:, 3], read_items(Path(path).with_name("u.item"))
    from recforge.data.synthetic import ShopConfig, generate_shop

    shop = generate_shop(ShopConfig(preset="large", with_media=False))
    frame = shop.interactions.sort_values("timestamp", kind="stable").drop_duplicates(["user_id", "item_id"])
    frame = frame[frame.groupby("user_id")["item_id"].transform("size") >= 3]
    user = pd.factorize(frame["user_id"])[0]
    return user, frame["item_id"].to_numpy(), frame["timestamp"].to_numpy(np.int64), shop.items


def content_of(items: pd.DataFrame, item_ids: np.ndarray) -> torch.Tensor:
    """cnn3d's character frames of every item, in the item codes `leave_last_out` gives (the
    sorted unique original ids)."""
    import pandas as pd

    from recforge.models.sequence.cnn3d import item_content

    ids = np.unique(item_ids)
    return item_content(items, pd.DataFrame({"item_id": ids.astype(str), "item_idx": np.arange(len(ids))}))


def prefixes_before(rows: np.ndarray, max_len: int, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users (U,), right-aligned prefixes (U, max_len) of the items before each user's row
    `rank` from the end (0 = test, 1 = validation), those rows' items (U,))."""
    user, item, from_end = rows.T
    last = np.flatnonzero(from_end == 0)  # (U,) each user's last row
    first = np.r_[0, last[:-1] + 1]  # (U,) each user's first row
    at = last - rank  # (U,)
    window = at[:, None] - max_len + np.arange(max_len)[None, :]  # (U, L)
    prefixes = np.where(window >= first[:, None], item[np.clip(window, 0, None)], PAD)
    return user[at], prefixes, item[at]


def sequence_scores(net, prefixes: torch.Tensor) -> torch.Tensor:
    """(B, I) scores of every item after each prefix; popularity ignores the prefix."""
    if hasattr(net, "score_sequence"):
        return net.score_sequence(prefixes).float()
    return net.log_count.float().expand(len(prefixes), -1)


@torch.no_grad()
def target_ranks(net, prefixes: np.ndarray, targets: np.ndarray, seen=None, chunk: int = 1024) -> tuple[np.ndarray, ...]:
    """0-based rank (U,) of each row's target among all items scored after its prefix, and with
    `seen` (a (U, I) CSR) also the rank once the row's seen items other than the target are
    removed. Rows are scored `chunk` at a time, as the library's evaluation does, so memory stays
    at (chunk, I) scores whatever the number of users. Unlike `evaluation.sessions.target_ranks`
    (ties ranked against the target, no masking), ties count in the target's favour here and
    seen items can be masked, which is how every figure in results/sessions.md was computed."""
    ranks, masked = [], []
    for start in range(0, len(prefixes), chunk):
        scores = sequence_scores(net, torch.as_tensor(prefixes[start : start + chunk]))  # (B, I)
        target = torch.as_tensor(targets[start : start + chunk])  # (B,)
        at = scores.gather(1, target[:, None])  # (B, 1)
        ranks.append((scores > at).sum(1).numpy())
        if seen is not None:
            mask = torch.as_tensor(seen[start : start + chunk].toarray() > 0)  # (B, I)
            mask[torch.arange(len(target)), target] = False
            masked.append((scores.masked_fill(mask, float("-inf")) > at).sum(1).numpy())
    return (np.concatenate(ranks),) + ((np.concatenate(masked),) if seen is not None else ())


def ndcg_hr(rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row NDCG@10 and HR@10 of a single target at 0-based `rank` (the library's formulas)."""
    per = single_target_metrics(rank, ks=(10,))
    return per["ndcg@10"], per["hr@10"]


class SequentialValidation:
    """RecBole's model selection for sequential models, as a fit-loop callback: validation
    NDCG@10 of each user's validation item among all items (seen items not removed), the best
    epoch's parameters kept, training stopped after `PATIENCE` epochs without improvement."""

    def __init__(self, rec: Recommender, prefixes: np.ndarray, targets: np.ndarray) -> None:
        self.rec, self.prefixes, self.targets = rec, prefixes, targets
        self.best, self.best_epoch, self.bad, self.state = -1.0, -1, 0, None
        self.curve: list[float] = []  # validation NDCG@10 per epoch

    def on_epoch_end(self, epoch: int, logs: dict) -> bool:
        net = self.rec.network.eval()
        ndcg, _ = ndcg_hr(target_ranks(net, self.prefixes, self.targets)[0])
        net.train()
        self.curve.append(float(ndcg.mean()))
        if ndcg.mean() > self.best:
            self.best, self.best_epoch, self.bad = float(ndcg.mean()), epoch, 0
            self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            self.bad += 1
        return self.bad >= PATIENCE


def measure(job: dict) -> dict:
    """Fit one family and evaluate it on test; run in its own process for a clean peak RSS."""
    torch.set_num_threads(job["threads"])
    user, item, ts, items = load_rows(job["data"], job["path"])
    train, valid, rows = leave_last_out(user, item, ts)
    family = job["family"]
    model, training = SETTINGS[family]
    model, training = {**model, **job.get("model", {})}, {**training, **job.get("training", {})}
    rec = Recommender(
        family, model, {"epochs": job["epochs"], "batch_size": BATCH, "device": "cpu", "seed": job.get("seed", 0), **training},
    )
    _, valid_prefixes, valid_targets = prefixes_before(rows, MAX_LEN, rank=1)
    selection = SequentialValidation(rec, valid_prefixes, valid_targets)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    load = [os.getloadavg()[0]]
    content = content_of(items, item) if family == "cnn3d" else None  # items' id, title and genre characters
    history = rec.fit(train, seen=train.csr, callbacks=[selection], item_vectors=content)
    fit_s, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    load.append(os.getloadavg()[0])
    if selection.state is not None:
        rec.network.load_state_dict(selection.state)

    users, prefixes, targets = prefixes_before(rows, MAX_LEN, rank=0)
    net = rec.network.eval()
    rank, rank_masked = target_ranks(net, prefixes, targets, seen=(train.csr + valid.csr)[users])  # whole history
    ndcg, hr = ndcg_hr(rank)
    ndcg_masked, hr_masked = ndcg_hr(rank_masked)
    targets_per_epoch = len(train) - len(np.unique(train.user_idx))
    return {
        **job, "epochs_run": history.epochs, "best_epoch": selection.best_epoch,
        "epoch_s": float(np.median(history.seconds)) if history.seconds else 0.0,
        "targets_per_epoch": int(targets_per_epoch),
        "targets_per_s": float(targets_per_epoch / np.median(history.seconds)) if history.seconds else 0.0,
        "fit_s": fit_s, "fit_cpu_s": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ndcg@10": float(ndcg.mean()), "hr@10": float(hr.mean()),
        "ndcg@10_seen_removed": float(ndcg_masked.mean()), "hr@10_seen_removed": float(hr_masked.mean()),
        "valid_ndcg@10": selection.best if selection.state is not None else None, "load": load,
        "valid_curve": selection.curve, "loss_curve": list(history.loss),
        "shape": f"{train.n_users} users x {train.n_items} items, {len(train)} train rows",
    }


def measure_synthetic(job: dict) -> dict:
    """Fit one family with its proposed parameters on the synthetic default shop."""
    from recforge.data.sequences import build_sequences, next_item_examples
    from recforge.data.filters import filter_interactions
    from recforge.data.splits import SplitConfig, split_interactions
    from recforge.data.synthetic import ShopConfig, generate_shop
    from recforge.evaluation.protocols import full_ranking
    from recforge.models.sequence.cnn3d import item_content

    torch.set_num_threads(job["threads"])
    shop = generate_shop(ShopConfig(with_media=False))
    config = SplitConfig(strategy="temporal", valid_fraction=0.1, test_fraction=0.1, seed=42,
                         min_user_interactions=3, min_item_interactions=3)
    s = split_interactions(filter_interactions(shop.interactions, config), None, config)
    n_users, n_items = len(s.user_map), len(s.item_map)
    train, valid, test = (InteractionData.from_frame(f, n_users, n_items) for f in (s.train, s.valid, s.test))
    family = job["family"]
    model, training = PROPOSALS[job["proposal"]].get(family, ({}, {"epochs": 0}))
    rec = Recommender(family, model, {**training, "device": "cpu", "seed": 0})
    content = item_content(shop.items, s.item_map.to_frame()) if family == "cnn3d" else None
    load = [os.getloadavg()[0]]
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    history = rec.fit(train, valid, seen=train.csr, item_vectors=content)
    fit_s, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    load.append(os.getloadavg()[0])
    ndcg = full_ranking(rec.score_fn(), train.csr, test, ks=(10,))["ndcg@10"]
    prefixes, targets, _ = next_item_examples(build_sequences(test, by="session", min_length=2), 20)
    (rank,) = target_ranks(rec.network, prefixes, targets)
    mrr = float(np.where(rank < 20, 1.0 / (rank + 1), 0.0).mean())
    return {
        **job, "model": model, "training": training, "epochs_run": history.epochs, "best_epoch": history.best_epoch,
        "fit_s": fit_s, "fit_cpu_s": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
        "epoch_s": float(np.mean(history.seconds)) if history.seconds else 0.0,
        "ndcg@10": ndcg, "session_mrr@20": mrr, "load": load,
        "shape": f"{n_users} users x {n_items} items, {len(train)} train / {len(test)} test rows, "
                 f"{len(targets)} test-session next-item targets",
    }


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def report(rows: list[dict], command: str) -> str:
    data = rows[0]["data"]
    title = "MovieLens-100K" if data == "ml100k" else "the synthetic `large` shop"
    lines = [
        f"## Session and sequence families on {title} user sequences",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}; torch {torch.__version__}, "
        f"{rows[0]['threads']} torch thread(s), CPU only; each family in its own process. `load` is the "
        "1-minute load average before and after the fit: other jobs on the machine inflate the wall "
        "times (CPU s is less sensitive to them).",
        "",
        f"Data: {rows[0]['shape']}; leave-last-out, max length {MAX_LEN}, full softmax cross-entropy, "
        f"{BATCH} next-item targets per batch, Adam, model selection on validation NDCG@10 "
        f"with seen items kept, as RecBole (patience {PATIENCE}, at most {rows[0]['epochs']} epochs), best epoch "
        "restored. Test: full ranking of all items; `NDCG@10` keeps seen items in the ranking (RecBole's protocol "
        "for sequential models), `seen removed` masks the user's history. `s / epoch`: median over epochs.",
        "",
    ]
    if data == "ml100k":
        lines += [
            "References (RecBole 1.2.1, same protocol, from issue #5): GRU4Rec "
            f"{RECBOLE['gru4rec']['epoch_s']:.0f} s per epoch, test NDCG@10 {RECBOLE['gru4rec']['ndcg@10']}; SASRec "
            f"{RECBOLE['sasrec']['epoch_s']:.0f} s per epoch, test NDCG@10 {RECBOLE['sasrec']['ndcg@10']}, peak RSS "
            f"{RECBOLE['sasrec']['peak_rss_gb']} GB. `vs RecBole`: our s / epoch over RecBole's for that family "
            "(target ≤ 0.25).",
            "",
        ]
    lines += [
        "| family | epochs (best) | s / epoch | vs RecBole | targets / s | fit s (CPU s) | peak RSS MB | "
        "NDCG@10 | HR@10 | NDCG@10 seen removed | valid NDCG@10 | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    seeds_of: dict[str, list[dict]] = {}
    for r in rows:
        seeds_of.setdefault(r["family"], []).append(r)
    for r in rows:
        ref = RECBOLE.get(r["family"]) if data == "ml100k" else None
        vs = f"{r['epoch_s'] / ref['epoch_s']:.3f}x" if ref else "–"
        best = f" ({r['best_epoch'] + 1})" if r["epochs_run"] else ""
        valid = f"{r['valid_ndcg@10']:.4f}" if r["valid_ndcg@10"] is not None else "–"
        label = r["family"] + (f" (seed {r['seed']})" if len(seeds_of[r["family"]]) > 1 else "")
        lines.append(
            f"| {label} | {r['epochs_run']}{best} | {r['epoch_s']:.2f} | {vs} | {r['targets_per_s']:,.0f} | "
            f"{r['fit_s']:.0f} ({r['fit_cpu_s']:.0f}) | {r['peak_rss_mb']:.0f} | {r['ndcg@10']:.4f} | {r['hr@10']:.4f} | "
            f"{r['ndcg@10_seen_removed']:.4f} | {valid} | {r['load'][0]:.1f} / {r['load'][1]:.1f} |"
        )
    several = {f: rs for f, rs in seeds_of.items() if len(rs) > 1}
    if several:
        lines += ["", "Over seeds (test NDCG@10 with seen items kept; s / epoch):", ""]
        for f, rs in several.items():
            ndcg = np.array([r["ndcg@10"] for r in rs])
            epoch_s = np.array([r["epoch_s"] for r in rs])
            lines.append(
                f"- `{f}`, seeds {', '.join(str(r['seed']) for r in rs)}: NDCG@10 median {np.median(ndcg):.4f}, "
                f"mean {ndcg.mean():.4f} ± {ndcg.std(ddof=1):.4f} (sd), min {ndcg.min():.4f}, max {ndcg.max():.4f}; "
                f"s / epoch median {np.median(epoch_s):.2f}"
            )
    lines += ["", "Settings (model; training overrides):", ""]
    lines += [f"- `{r['family']}`: {json.dumps({**SETTINGS[r['family']][0], **r.get('model', {})})}; "
              f"{json.dumps({**SETTINGS[r['family']][1], **r.get('training', {})})}"
              for r in {r["family"]: r for r in rows}.values()]
    return "\n".join(lines + [""])


def report_synthetic(rows: list[dict], proposal: str) -> str:
    lines = [
        f"## Synthetic default shop: the `{proposal}` parameters proposed for the default `kedro run`",
        "",
        f"Data: {rows[0]['shape']}; temporal split 80/10/10, k-core 3 (as `parameters_splitting.yml`); "
        f"{rows[0]['threads']} torch thread(s). Fit = `Recommender.fit`, with the per-epoch validation where "
        "the parameters early-stop on NDCG@10 (best epoch restored); budget 25 s per family. NDCG@10: full ranking "
        "of the test split from each user's training sequence (the leaderboard); session MRR@20: every "
        "next item of the test sessions scored from the session's own prefix.",
        "",
        "| family | model | training | epochs (best) | s / epoch | fit s | fit CPU s | NDCG@10 | session MRR@20 | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        best = "" if r["best_epoch"] is None else f" ({r['best_epoch'] + 1})"
        lines.append(
            f"| {r['family']} | `{json.dumps(r['model'])}` | `{json.dumps(r['training'])}` | {r['epochs_run']}{best} | "
            f"{r['epoch_s']:.1f} | {r['fit_s']:.1f} | {r['fit_cpu_s']:.1f} | {r['ndcg@10']:.4f} | "
            f"{r['session_mrr@20']:.4f} | {r['load'][0]:.1f} / {r['load'][1]:.1f} |"
        )
    return "\n".join(lines + [""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["ml100k", "large"], default="ml100k")
    parser.add_argument("--path", default="/work/shared/data/movielens-100k/u.data", help="u.data for ml100k")
    parser.add_argument("--families", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/sessions.md")
    parser.add_argument("--append", action="store_true", help="add to --out instead of replacing it")
    parser.add_argument("--training", type=json.loads, default={}, help="JSON overrides of every family's training config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="fit each family once per seed")
    parser.add_argument("--model", type=json.loads, default={}, help="JSON overrides of every family's model config")
    parser.add_argument("--synthetic", nargs="*", default=[], choices=list(PROPOSALS),
                        help="also fit these proposed defaults on the synthetic shop")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # JSON job: run one family, print JSON
    args = parser.parse_args()
    if args.worker:
        logging.disable(logging.INFO)
        job = json.loads(args.worker)
        result = measure_synthetic(job) if job.get("synthetic") else measure(job)
        sys.stdout.write(json.dumps(result) + "\n")
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def run(job: dict) -> dict:
        out = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(job)], check=True, capture_output=True, text=True,
        ).stdout
        row = json.loads(out.strip().splitlines()[-1])
        logger.info("%s", {k: row.get(k) for k in ("family", "epochs_run", "epoch_s", "fit_cpu_s", "ndcg@10", "load")})
        return row

    rows = [run({"family": f, "epochs": args.epochs, "threads": args.threads, "data": args.data, "path": args.path,
                 "training": args.training, "model": args.model, "seed": seed})
            for f in args.families for seed in args.seeds]
    command = (f"OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_sessions.py --data {args.data} "
               f"--families {' '.join(args.families)} --epochs {args.epochs} --threads {args.threads}"
               + (f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds != [0] else "")
               + (f" --model '{json.dumps(args.model)}'" if args.model else "")
               + (f" --training '{json.dumps(args.training)}'" if args.training else "")
               + (f" --synthetic {' '.join(args.synthetic)}" if args.synthetic else ""))
    text = report(rows, command) if rows else f"Command: `{command}`\n"
    for proposal in args.synthetic:
        rows_p = [run({"family": f, "threads": args.threads, "synthetic": True, "proposal": proposal})
                  for f in ("popularity", *PROPOSALS[proposal])]
        text += "\n" + report_synthetic(rows_p, proposal)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.append and out.exists():
        text = out.read_text() + "\n" + text
    out.write_text(text)
    if rows:  # every measured row, with the per-epoch validation NDCG@10 and loss curves
        out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    logger.info("wrote %s", out)


if __name__ == "__main__":
    main()
