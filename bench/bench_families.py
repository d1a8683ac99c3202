"""Per-family training and evaluation figures on MovieLens 100K or the synthetic `large` shop.

For each family: seconds per epoch (median over epochs), samples/s, peak RSS of a fresh process,
full-ranking test metrics and the full-ranking evaluation time, with the 1-minute load average
before and after the family (the machine may be shared). ML-100K follows RecBole 1.2.1's protocol
for comparison: random 80/10/10 split of all ratings treated as implicit feedback, batch 2048 rows,
one uniform negative, dim 64, Adam at 1e-3, up to 300 epochs with early stopping on validation
MRR@10 (patience 10) and the best epoch restored. Test metrics are given twice: with the training
items masked, and with the training and validation items masked, which is what RecBole masks
when it ranks for the test set.

    .venv/bin/python bench/bench_families.py --data ml100k --path ../shared/data/movielens-100k
    .venv/bin/python bench/bench_families.py --data large --families bpr als neumf
    .venv/bin/python bench/bench_families.py --families bpr neumf --fit-threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# RecBole 1.2.1 (recbole/properties/overall.yaml, model/BPR.yaml, model/NeuMF.yaml): 300 epochs at
# most, stopping after 10 without a better validation MRR@10.
RECBOLE_STOPPING = {"epochs": 300, "early_stopping_metric": "mrr@10", "patience": 10}
ADAM = {"optimizer": "adam", "lr": 0.001, "weight_decay": 0.0}

# (model config, train config) per family. RecBole's batch of 2048 counts rows after negative
# sampling: 2048 (user, positive, negative) triples for pairwise BPR, but 1024 positives and
# their 1024 negatives for pointwise NeuMF, which here is batch_size 1024 (positives per batch).
BENCH: dict[str, tuple[dict, dict]] = {
    "random": ({}, {"epochs": 0}),
    "popularity": ({}, {"epochs": 0}),
    "item_knn": ({"neighbours": 100}, {"epochs": 0}),
    "mf": ({"dim": 64, "l2": 0.02}, {"epochs": 20, "batch_size": 2048, "lr": 0.01}),
    # RecBole's BPR: embedding_size 64, no regularisation
    "bpr": ({"dim": 64, "l2": 0.0}, {"batch_size": 2048, **ADAM, **RECBOLE_STOPPING}),
    "als": ({"factors": 64}, {"epochs": 15}),
    # gmf and mlp as the two halves of the NeuMF below
    "gmf": ({"dim": 64, "n_negatives": 1}, {"batch_size": 1024, **ADAM, **RECBOLE_STOPPING}),
    "mlp": ({"dim": 64, "layers": [128, 64], "dropout": 0.1, "n_negatives": 1},
            {"batch_size": 1024, **ADAM, **RECBOLE_STOPPING}),
    # RecBole's NeuMF: mf_embedding_size 64, mlp_embedding_size 64, mlp_hidden_size [128, 64],
    # dropout_prob 0.1, no pretraining
    "neumf": ({"dim": 64, "mlp_dim": 64, "layers": [128, 64], "dropout": 0.1, "n_negatives": 1},
              {"batch_size": 1024, **ADAM, **RECBOLE_STOPPING}),
    "cdae": ({"hidden": 64}, {"epochs": 30, "batch_size": 128, "lr": 0.005}),
    "sdae": ({"hidden": [256, 64], "pretrain_epochs": 3}, {"epochs": 30, "batch_size": 128, "lr": 0.005}),
    "rbm": ({"hidden": 64}, {"epochs": 30, "batch_size": 128, "lr": 0.01}),
}
# `large` (≈ 630k training interactions, 37k users x 8k items) runs a fixed, smaller number of
# epochs without per-epoch validation, whose full ranking would cost more than the epoch itself.
LARGE_EPOCHS = {"mf": 5, "bpr": 10, "als": 5, "gmf": 5, "mlp": 2, "neumf": 2, "cdae": 3, "sdae": 3, "rbm": 3}
SPLITS = ("train", "valid", "test")
FIELDS = ("user_idx", "item_idx", "value", "timestamp", "session", "event")


def load_split(kind: str, path: str | None):
    """({split: all events}, {split: rating events only}) as `InteractionData`."""
    from recforge.data.interactions import InteractionData
    from recforge.data.filters import filter_interactions
    from recforge.data.splits import SplitConfig, split_interactions

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


def save_split(data: dict, ratings: dict, path: Path) -> None:
    """Both splits as one .npz, so each family's process skips regenerating the data."""
    arrays = {}
    for prefix, group in (("all", data), ("rating", ratings)):
        for split, d in group.items():
            arrays[f"{prefix}.{split}.shape"] = np.array([d.n_users, d.n_items])
            for f in FIELDS:
                if getattr(d, f) is not None:
                    arrays[f"{prefix}.{split}.{f}"] = getattr(d, f)
    np.savez(path, **arrays)


def read_split(path: Path):
    """Inverse of `save_split`."""
    from recforge.data.interactions import InteractionData

    z = np.load(path)
    out = []
    for prefix in ("all", "rating"):
        group = {}
        for split in SPLITS:
            n_users, n_items = z[f"{prefix}.{split}.shape"].tolist()
            fields = {f: z[f"{prefix}.{split}.{f}"] for f in FIELDS if f"{prefix}.{split}.{f}" in z}
            group[split] = InteractionData(**fields, n_users=n_users, n_items=n_items)
        out.append(group)
    return tuple(out)


def settings(family: str, kind: str) -> tuple[dict, dict]:
    model, train = BENCH.get(family, ({}, {}))
    if kind == "large" and family in LARGE_EPOCHS:
        train = {k: v for k, v in train.items() if k not in ("early_stopping_metric", "patience")}
        train["epochs"] = LARGE_EPOCHS[family]
    return model, train


def run_one(family: str, kind: str, split_path: Path, fit_threads: int | None) -> dict:
    import torch

    from recforge.evaluation.protocols import full_ranking
    from recforge.training.recommender import Recommender

    torch.set_num_threads(2)
    data, ratings = read_split(split_path)
    model, train = settings(family, kind)
    rec = Recommender(family, model, {"device": "cpu", "seed": 0, "num_threads": fit_threads, **train})
    fit_data = ratings["train"] if rec.uses_ratings else data["train"]
    valid = data["valid"] if "early_stopping_metric" in train else None
    t = time.perf_counter()
    hist = rec.fit(fit_data, valid, seen=data["train"].csr)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    m = full_ranking(rec.score_fn(), data["train"].csr, data["test"], ks=(10,))
    eval_s = time.perf_counter() - t
    m_rb = {}
    if kind == "ml100k":  # on `large` a second full ranking of the towers would take minutes
        history = ((data["train"].csr + data["valid"].csr) > 0).astype(np.float32).tocsr()
        m_rb = full_ranking(rec.score_fn(), history, data["test"], ks=(10,))
    h = hist.to_dict()
    out = {
        "family": family,
        "train_interactions": len(fit_data),
        "epochs": len(h["loss"]),
        "best_epoch": h["best_epoch"],
        "s_per_epoch": float(np.median(h["seconds"])) if h["seconds"] else 0.0,
        "s_per_epoch_min": float(np.min(h["seconds"])) if h["seconds"] else 0.0,
        "samples_per_s": float(np.median(h["samples_per_s"])) if h["samples_per_s"] else None,
        "samples_per_epoch": h["samples"][0] if h["samples"] else 0,
        "fit_s": fit_s,
        "eval_s": eval_s,
        "ndcg@10": m["ndcg@10"],
        "recall@10": m["recall@10"],
        "hr@10": m["hr@10"],
        "ndcg@10_recbole_mask": m_rb.get("ndcg@10"),
        "recall@10_recbole_mask": m_rb.get("recall@10"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_threads": torch.get_num_threads(),
        "fit_threads": fit_threads or torch.get_num_threads(),
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
    ap.add_argument("--fit-threads", type=int, default=None,
                    help="TrainConfig.num_threads for the fit (default: the process's 2 threads)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--split", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.data, args.split, args.fit_threads)))
        return
    from recforge.models.registry import FAMILIES

    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "split.npz"
        save_split(*load_split(args.data, args.path), split)
        for family in args.families or [f for f in FAMILIES if f in BENCH]:
            # a fresh process per family so peak RSS is that family's own
            cmd = [sys.executable, __file__, "--data", args.data, "--split", str(split), "--one", family]
            if args.fit_threads:
                cmd += ["--fit-threads", str(args.fit_threads)]
            load_before = os.getloadavg()[0]
            out = subprocess.run(
                cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
            )
            if out.returncode:
                row = {"family": family, "error": out.stderr.strip().splitlines()[-1]}
            else:
                row = json.loads(out.stdout.strip().splitlines()[-1])
            row["load_before"], row["load_after"] = load_before, os.getloadavg()[0]
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
