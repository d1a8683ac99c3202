"""Full-ranking evaluation time at MovieLens-1M scale with an MF-style dot-product scorer.

Target: 6,040 users x 3,706 items, D = 64, `full_ranking` with ks = (5, 10, 20) in <= 1 s on
2 CPU cores (median of 5 runs after one warm-up). The interactions are synthetic with ML-1M's
density (~4.5 %, ~1M rows), split 80/20 at random, so every user has test items.

    .venv/bin/python bench/bench_eval.py [--threads 2] [--repeats 5] [--out bench/results/bench_eval.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from recforge.evaluation.protocols import full_ranking

logger = logging.getLogger("bench_eval")

N_USERS, N_ITEMS, DIM, DENSITY = 6040, 3706, 64, 0.0447


def make_split(seed: int = 0) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Random ML-1M-sized binary train/test matrices (80/20 of the interactions)."""
    rng = np.random.default_rng(seed)
    mask = rng.random((N_USERS, N_ITEMS)) < DENSITY  # (U, I)
    to_test = rng.random((N_USERS, N_ITEMS)) < 0.2  # (U, I)
    train = sp.csr_matrix((mask & ~to_test).astype(np.float32))
    test = sp.csr_matrix((mask & to_test).astype(np.float32))
    return train, test


def time_full_ranking(repeats: int, batch_size: int, with_auc: bool) -> dict[str, object]:
    """Median and all wall times of `full_ranking` over `repeats` runs, after one warm-up."""
    train, test = make_split()
    g = torch.Generator().manual_seed(0)
    user_f = torch.randn(N_USERS, DIM, generator=g)  # (U, D)
    item_f = torch.randn(N_ITEMS, DIM, generator=g)  # (I, D)

    def score_fn(user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return user_f[user] @ item_f.T  # (B, I)

    metrics = full_ranking(score_fn, train, test, batch_size=batch_size, with_auc=with_auc)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        full_ranking(score_fn, train, test, batch_size=batch_size, with_auc=with_auc)
        times.append(time.perf_counter() - t0)
    return {
        "n_users": N_USERS,
        "n_items": N_ITEMS,
        "dim": DIM,
        "train_nnz": int(train.nnz),
        "test_nnz": int(test.nnz),
        "batch_size": batch_size,
        "with_auc": with_auc,
        "threads": torch.get_num_threads(),
        "median_s": statistics.median(times),
        "times_s": [round(t, 4) for t in times],
        "ndcg@10": metrics["ndcg@10"],
    }


def main() -> None:
    """Run the benchmark, log the figures and write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--with-auc", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    result = time_full_ranking(args.repeats, args.batch_size, args.with_auc)
    logger.info(json.dumps(result, indent=2))
    logger.info("full ranking %dx%d: median %.3f s (target <= 1 s)", N_USERS, N_ITEMS, result["median_s"])
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
