"""`gru4rec` and `lstm` on MovieLens-100K user sequences, against RecBole's GRU4Rec figures.

Protocol (RecBole's sequential one): each user's ratings in time order; leave-last-out — the
last rating is the test item, the second-last the validation item, the rest train; histories of
at most 50 items; full softmax cross-entropy; 2,048 next-item targets per optimiser step; full
ranking of all items with the user's train + validation items masked; NDCG@10 of the test item
scored from the last 50 train + validation items. Training stops early on validation NDCG@10
(patience 3) and keeps the best epoch. Each family runs in its own process, so peak RSS is its.

RecBole's GRU4Rec reference (emb 64, hidden 128, dropout 0.3, lr 0.001, batch 2048): 31 s per
epoch, test NDCG@10 0.045. Target: <= 1/4 of that time per epoch with at least that NDCG.

    .venv/bin/python bench/bench_sessions_rnn.py [/work/shared/data/movielens-100k/u.data]
        [--threads 2] [--families gru4rec lstm] [--out bench/results/sessions_rnn.md]
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

import numpy as np
import torch

from recforge.data.interactions import InteractionData
from recforge.data.sequences import PAD
from recforge.evaluation.protocols import full_ranking
from recforge.training.recommender import Recommender

logger = logging.getLogger("bench_sessions_rnn")

MAX_LEN, BATCH = 50, 2048
RECBOLE = {"epoch_s": 31.0, "ndcg@10": 0.045}
# RecBole's GRU4Rec architecture: emb 64, hidden 128, dropout 0.3, scores through a 128 -> 64
# projection onto the input item embeddings (tie_embeddings)
SETTINGS: dict[str, tuple[dict, dict]] = {
    # 2048 targets per step = 64 parallel slots x 32 steps of truncated BPTT
    "gru4rec": ({"dim": 64, "hidden": 128, "dropout": 0.3, "max_len": MAX_LEN, "bptt": 32,
                 "tie_embeddings": True}, {"lr": 0.005}),
    "lstm": ({"dim": 64, "hidden": 128, "dropout": 0.3, "max_len": MAX_LEN, "tie_embeddings": True},
             {"lr": 0.005}),
}
EPOCHS, PATIENCE = 60, 3


def leave_last_out(path: Path) -> tuple[InteractionData, InteractionData, np.ndarray, np.ndarray]:
    """(train, valid, test items (U,), scoring histories (U, MAX_LEN)) from u.data."""
    raw = np.loadtxt(path, dtype=np.int64)  # user, item, rating, time
    _, user = np.unique(raw[:, 0], return_inverse=True)
    _, item = np.unique(raw[:, 1], return_inverse=True)
    ts = raw[:, 3]
    n_users, n_items = int(user.max()) + 1, int(item.max()) + 1
    order = np.lexsort((np.arange(len(user)), ts, user))
    u, i, t = user[order], item[order], ts[order]
    end = np.r_[np.flatnonzero(u[1:] != u[:-1]) + 1, len(u)]  # one past each user's last row
    from_end = np.repeat(end, np.diff(np.r_[0, end])) - np.arange(len(u))  # 1 = last
    test_item = i[from_end == 1][np.argsort(u[from_end == 1])]

    def data(mask: np.ndarray) -> InteractionData:
        return InteractionData(
            user_idx=u[mask], item_idx=i[mask], value=np.ones(int(mask.sum()), np.float32),
            timestamp=t[mask], n_users=n_users, n_items=n_items,
        )

    # histories for the test: the last MAX_LEN items before the test item, right-aligned
    hist = np.full((n_users, MAX_LEN), PAD, dtype=np.int64)
    keep = (from_end >= 2) & (from_end <= MAX_LEN + 1)
    hist[u[keep], MAX_LEN - from_end[keep] + 1] = i[keep]
    return data(from_end >= 3), data(from_end == 2), test_item, hist


def ndcg_at_10(scores: torch.Tensor, seen: np.ndarray, target: np.ndarray) -> float:
    """Full ranking with seen items masked: mean 1 / log2(rank + 2) over ranks < 10."""
    scores = scores.clone()
    scores[torch.as_tensor(seen[:, 0]), torch.as_tensor(seen[:, 1])] = -torch.inf
    t = torch.as_tensor(target)
    rank = (scores > scores.gather(1, t[:, None])).sum(1).numpy()
    return float(np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0).mean())


class _CPUClock:
    """Callback: this process's CPU time at the end of every epoch."""

    def __init__(self) -> None:
        self.cpu: list[float] = []

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.cpu.append(time.process_time())


def measure(job: dict) -> dict:
    torch.set_num_threads(job["threads"])
    train, valid, test_item, hist = leave_last_out(Path(job["udata"]))
    model, training = SETTINGS[job["family"]]
    rec = Recommender(job["family"], model, {
        "device": "cpu", "seed": 0, "epochs": EPOCHS, "batch_size": BATCH, "early_stopping_metric": "ndcg@10",
        "patience": PATIENCE, **training,
    })
    load0 = os.getloadavg()[0]
    ticks = _CPUClock()
    t0, c0 = time.perf_counter(), time.process_time()
    history = rec.fit(train, valid, callbacks=[ticks])
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    # an epoch's CPU time between two callbacks includes its validation: time one and take it off
    c1 = time.process_time()
    full_ranking(rec.score_fn(), train.csr, valid, ks=(10,))
    validate_cpu = time.process_time() - c1
    epoch_cpu = float(np.median(np.diff(np.r_[c0, ticks.cpu]))) - validate_cpu
    with torch.no_grad():
        scores = rec.network.score_sequence(torch.as_tensor(hist)).float()  # (U, I)
    seen = np.concatenate([np.c_[train.user_idx, train.item_idx], np.c_[valid.user_idx, valid.item_idx]])
    return {
        "family": job["family"], "threads": job["threads"], "model": model, "training": training,
        "epochs": history.epochs, "best_epoch": history.best_epoch + 1,
        "epoch_s": float(np.median(history.seconds)), "samples_per_s": float(np.median(history.samples_per_s)),
        "samples": history.samples[0], "fit_s": fit_s, "fit_cpu_s": fit_cpu, "epoch_cpu_s": epoch_cpu,
        "valid_ndcg@10": history.best_metric, "test_ndcg@10": ndcg_at_10(scores, seen, test_item),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load": [load0, os.getloadavg()[0]],
        "shape": f"{train.n_users} users x {train.n_items} items, {len(train)} train ratings",
    }


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def report(rows: list[dict], command: str) -> str:
    lines = [
        "# Session RNNs on MovieLens-100K (issue #5)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}; torch {torch.__version__}; CPU only. "
        "`load` is the 1-minute load average before and after the fit: the machine is shared, and "
        "other jobs slow a run down. `s / epoch` is the wall time of an epoch's training (median; "
        "the fit loop's clock, validation excluded); `CPU s / epoch` is this process's CPU time for "
        "it (median epoch, one validation pass taken off), what a core of its own would take.",
        "",
        f"Data: {rows[0]['shape']}. Protocol: see the module docstring (leave-last-out, histories "
        f"of {MAX_LEN}, full softmax cross-entropy, {BATCH} targets per step, full ranking).",
        "",
        "| family | threads | epochs (best) | s / epoch | CPU s / epoch | samples / s | fit s | fit CPU s "
        "| peak RSS MB | valid NDCG@10 | test NDCG@10 | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['family']} | {r['threads']} | {r['epochs']} ({r['best_epoch']}) | {r['epoch_s']:.2f} | "
            f"{r['epoch_cpu_s']:.2f} | {r['samples_per_s']:,.0f} | {r['fit_s']:.1f} | {r['fit_cpu_s']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | "
            f"{r['valid_ndcg@10']:.4f} | {r['test_ndcg@10']:.4f} | {r['load'][0]:.1f} / {r['load'][1]:.1f} |"
        )
    lines += [
        f"| RecBole GRU4Rec (reference) | | | {RECBOLE['epoch_s']:.0f} | | | | | | | "
        f"{RECBOLE['ndcg@10']:.3f} | |",
        "",
        "Settings (model config; training overrides on top of epochs "
        f"{EPOCHS} with early stopping, batch_size {BATCH}):",
        "",
    ]
    for r in rows:
        lines.append(f"- `{r['family']}`: {json.dumps(r['model'])}; {json.dumps(r['training'])}")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("udata", nargs="?", default="/work/shared/data/movielens-100k/u.data")
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--families", nargs="+", default=list(SETTINGS))
    parser.add_argument("--out", default="bench/results/sessions_rnn.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # JSON job: run one cell, print JSON
    args = parser.parse_args()
    if args.worker:
        logging.disable(logging.INFO)
        sys.stdout.write(json.dumps(measure(json.loads(args.worker))) + "\n")
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = []
    for family in args.families:
        for threads in args.threads:
            job = {"family": family, "threads": threads, "udata": args.udata}
            out = subprocess.run(
                [sys.executable, __file__, "--worker", json.dumps(job)], check=True, capture_output=True, text=True,
            ).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            logger.info("%s", {k: rows[-1][k] for k in ("family", "threads", "epoch_s", "test_ndcg@10", "load")})
    command = (f"cd /work/main && .venv/bin/python bench/bench_sessions_rnn.py {args.udata} "
               f"--threads {' '.join(map(str, args.threads))} --families {' '.join(args.families)}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report(rows, command) + "\n")
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
