"""Per-family training and evaluation figures on MovieLens 100K or the synthetic `large` shop.

For each family: seconds per epoch (median over epochs), samples/s, peak RSS of a fresh process,
full-ranking test metrics (training items masked) and the full-ranking evaluation time.
ML-100K uses RecBole's protocol for comparison: random 80/10/10 split of all ratings treated as
implicit feedback, batch 2048, one negative, dim 64.

    .venv/bin/python bench/bench_families.py --data ml100k --path ../shared/data/movielens-100k
    .venv/bin/python bench/bench_families.py --data large --families bpr als neumf
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# Settings comparable to RecBole's defaults where one exists (batch 2048, dim 64, 1 negative).
BENCH: dict[str, tuple[dict, dict]] = {
    "random": ({}, {"epochs": 0}),
    "popularity": ({}, {"epochs": 0}),
    "item_knn": ({"neighbours": 100}, {"epochs": 0}),
    "mf": ({"dim": 64, "l2": 0.02}, {"epochs": 20, "batch_size": 2048, "lr": 0.01}),
    "bpr": ({"dim": 64, "l2": 1e-5}, {"epochs": 20, "batch_size": 2048, "lr": 0.005}),
    "als": ({"factors": 64}, {"epochs": 15}),
    "gmf": ({"dim": 64, "n_negatives": 1}, {"epochs": 20, "batch_size": 2048, "lr": 0.001}),
    "mlp": ({"dim": 64, "layers": [128, 64, 32], "n_negatives": 1}, {"epochs": 20, "batch_size": 2048, "lr": 0.001}),
    "neumf": ({"dim": 64, "mlp_dim": 64, "layers": [128, 64, 32], "n_negatives": 1},
              {"epochs": 20, "batch_size": 2048, "lr": 0.001}),
    "cdae": ({"hidden": 64}, {"epochs": 30, "batch_size": 128, "lr": 0.005}),
    "sdae": ({"hidden": [256, 64], "pretrain_epochs": 3}, {"epochs": 30, "batch_size": 128, "lr": 0.005}),
    "rbm": ({"hidden": 64}, {"epochs": 30, "batch_size": 128, "lr": 0.01}),
}


def load_split(kind: str, path: str | None):
    import pandas as pd

    from recforge.data.interactions import InteractionData
    from recforge.data.splits import SplitConfig, filter_interactions, split_interactions

    if kind == "ml100k":
        from recforge.data.movielens import read_ratings

        raw = read_ratings(Path(path) / "u.data")
        config = SplitConfig(strategy="random", valid_fraction=0.1, test_fraction=0.1, seed=2020)
    else:
        from recforge.data.synthetic import ShopConfig, generate_shop

        raw = generate_shop(ShopConfig(preset="large", with_media=False)).interactions
        config = SplitConfig(strategy="random", valid_fraction=0.1, test_fraction=0.1, seed=0,
                             min_user_interactions=3, min_item_interactions=3, dedupe=True)
    s = split_interactions(filter_interactions(raw, config), None, config)
    nu, ni = len(s.user_map), len(s.item_map)
    frames = {"train": s.train, "valid": s.valid, "test": s.test}
    data = {k: InteractionData.from_frame(v, nu, ni) for k, v in frames.items()}
    ratings = {k: InteractionData.from_frame(v, nu, ni, events=("rating",)) for k, v in frames.items()}
    return data, ratings


def run_one(family: str, kind: str, path: str | None) -> dict:
    import torch

    from recforge.evaluation.protocols import full_ranking
    from recforge.training.recommender import Recommender

    torch.set_num_threads(2)
    data, ratings = load_split(kind, path)
    model, train = BENCH.get(family, ({}, {}))
    rec = Recommender(family, model, {"device": "cpu", "seed": 0, **train})
    fit_data = ratings["train"] if rec.uses_ratings else data["train"]
    t = time.perf_counter()
    hist = rec.fit(fit_data, seen=data["train"].csr)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    m = full_ranking(rec.score_fn(), data["train"].csr, data["test"], ks=(10,))
    eval_s = time.perf_counter() - t
    h = hist.to_dict()
    out = {
        "family": family,
        "train_interactions": len(fit_data),
        "epochs": len(h["loss"]),
        "s_per_epoch": float(np.median(h["seconds"])) if h["seconds"] else 0.0,
        "samples_per_s": float(np.median(h["samples_per_s"])) if h["samples_per_s"] else None,
        "fit_s": fit_s,
        "eval_s": eval_s,
        "ndcg@10": m["ndcg@10"],
        "recall@10": m["recall@10"],
        "hr@10": m["hr@10"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if rec.uses_ratings:
        test = ratings["test"]
        pred = rec.predict(test.user_idx, test.item_idx)
        out["rmse"] = float(np.sqrt(np.mean((pred - test.value) ** 2)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", choices=["ml100k", "large"], default="ml100k")
    ap.add_argument("--path", default=str(Path(__file__).resolve().parents[2] / "shared/data/movielens-100k"))
    ap.add_argument("--families", nargs="*")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.data, args.path)))
        return
    from recforge.models.registry import FAMILIES

    rows = []
    for family in args.families or [f for f in FAMILIES if f in BENCH]:
        # a fresh process per family so peak RSS is that family's own
        out = subprocess.run(
            [sys.executable, __file__, "--data", args.data, "--path", args.path, "--one", family],
            capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        if out.returncode:
            rows.append({"family": family, "error": out.stderr.strip().splitlines()[-1]})
        else:
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
