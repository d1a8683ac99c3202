"""Feature-aware families on ratings (deck 002 Assignment I): RMSE / MAE against mf and the
global-mean and item-mean baselines, on MovieLens 1M when its files are present, else MovieLens 100K.

    .venv/bin/python bench/bench_features.py --ml1m data/01_raw/ml-1m --ml100k ../shared/data/movielens-100k

The split is random 80/10/10 per rating (seed 0; k-core 1), every family trained with MSE on the
train ratings for a fixed number of epochs with early stopping on valid RMSE (patience 3), the
same fields for all (conf/<env>/parameters_features.yml); test RMSE / MAE over the test ratings.
Each family is run with and without its attribute fields (`use_features`), so the table shows what
the side information buys. Writes bench/results/features_rating.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from recforge.data.filters import filter_interactions  # noqa: E402
from recforge.data.interactions import InteractionData  # noqa: E402
from recforge.data.movielens import MovieLens1MConfig, MovieLensConfig, load_movielens1m, load_movielens100k  # noqa: E402
from recforge.data.splits import SplitConfig, split_interactions  # noqa: E402
from recforge.evaluation.metrics import mae, rmse  # noqa: E402
from recforge.features.tables import build_field_tables  # noqa: E402
from recforge.training.recommender import Recommender  # noqa: E402

FAMILIES = {
    "mf": {"dim": 32, "l2": 0.05},
    "fm": {"dim": 32, "objective": "mse"},
    "nfm": {"dim": 32, "objective": "mse", "layers": [64], "dropout": 0.2},
    "wide_deep": {"dim": 16, "objective": "mse", "layers": [128, 64], "dropout": 0.2},
    "deepfm": {"dim": 16, "objective": "mse", "layers": [128, 64], "dropout": 0.2},
    "deep_regression": {"dim": 16, "objective": "mse"},
    "neural_mf_v1": {"dim": 16, "objective": "mse", "layers": [64, 32]},
    "neural_mf_v2": {"dim": 16, "objective": "mse", "layers": [64, 32]},
}
TRAIN = {"epochs": 40, "batch_size": 1024, "lr": 0.002, "weight_decay": 1e-5, "early_stopping_metric": "rmse",
         "early_stopping_mode": "min", "patience": 3, "device": "auto", "seed": 0}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ml1m", type=Path, default=ROOT / "data/01_raw/ml-1m")
    ap.add_argument("--ml100k", type=Path, default=ROOT.parent / "shared/data/movielens-100k")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results")
    args = ap.parse_args()
    if (args.ml1m / "ratings.dat").is_file():
        name, env = "MovieLens 1M", "movielens1m"
        interactions, items, users = load_movielens1m(MovieLens1MConfig(raw_dir=args.ml1m, download=False))
    else:
        name, env = "MovieLens 100K", "movielens100k"
        interactions, items, users = load_movielens100k(MovieLensConfig(raw_dir=args.ml100k, download=False))
    features = yaml.safe_load((ROOT / f"conf/{env}/parameters_features.yml").read_text())["features"]
    split = SplitConfig(strategy="random", valid_fraction=0.1, test_fraction=0.1, seed=0,
                        min_user_interactions=1, min_item_interactions=1)  # fmt: skip
    s = split_interactions(filter_interactions(interactions, split), None, split)
    nu, ni = len(s.user_map), len(s.item_map)
    data = {k: InteractionData.from_frame(getattr(s, k), nu, ni, name=k, events=("rating",)) for k in ("train", "valid", "test")}
    tables = build_field_tables(users, items, s.user_map.to_frame(), s.item_map.to_frame(), features)
    test = data["test"]
    y = test.value.astype(np.float64)
    mu = float(data["train"].value.mean())
    item_sum = np.bincount(data["train"].item_idx, data["train"].value, ni)
    item_n = np.bincount(data["train"].item_idx, minlength=ni)
    item_mean = np.where(item_n > 0, item_sum / np.maximum(item_n, 1), mu)
    rows = [{"family": "global mean", "features": "–", "rmse": rmse(y, np.full(len(y), mu)), "mae": mae(y, np.full(len(y), mu)), "seconds": 0.0, "epochs": 0},
            {"family": "item mean", "features": "–", "rmse": rmse(y, item_mean[test.item_idx]), "mae": mae(y, item_mean[test.item_idx]), "seconds": 0.0, "epochs": 0}]  # fmt: skip
    for family, model in FAMILIES.items():
        variants = [None] if family == "mf" else [True, False]
        for use in variants:
            config = dict(model) if use is None else {**model, "use_features": use}
            rec = Recommender(family, config, TRAIN)
            t = time.perf_counter()
            inputs = {} if use is None else {"item_vectors": tables}
            rec.fit(data["train"], data["valid"], **inputs)
            secs = time.perf_counter() - t
            pred = rec.predict(test.user_idx, test.item_idx).astype(np.float64)
            row = {"family": family, "features": "ids" if use is None else ("ids + attributes" if use else "ids only"),
                   "rmse": rmse(y, pred), "mae": mae(y, pred), "seconds": round(secs, 1), "epochs": rec.history.epochs}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    sizes = {k: len(v) for k, v in data.items()}
    lines = [f"# Rating prediction with attributes: {name}", "",
             f"`.venv/bin/python bench/bench_features.py` on {machine}. Random 80/10/10 split of the "
             f"ratings (seed 0): {sizes['train']:,} train, {sizes['valid']:,} valid, {sizes['test']:,} test ratings; "
             "early stopping on valid RMSE (patience 3, at most 40 epochs), Adam lr 0.002, batch 1024. "
             f"Fields: conf/{env}/parameters_features.yml.", "",
             "| family | fields | test RMSE | test MAE | epochs | fit s |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in sorted(rows, key=lambda r: r["rmse"]):
        lines.append(f"| {r['family']} | {r['features']} | {r['rmse']:.4f} | {r['mae']:.4f} | {r['epochs']} | {r['seconds']} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "features_rating.md").write_text("\n".join(lines) + "\n")
    (args.out / "features_rating.json").write_text(json.dumps({"dataset": name, "machine": machine, "rows": rows}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
