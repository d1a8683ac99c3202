"""VBPR against BPR-MF on the same split, with the same dimensions and epochs (deck 004's claim:
"VBPR improves on BPR-MF by over 12%", AUC in He & McAuley 2016, Table 3).

    .venv/bin/python bench/bench_content.py --shop <project>/data --amazon ../shared/data/amazon-fashion-5core

`--shop`: the `data/` folder of a project where `kedro run --pipelines ingestion,validation,
splitting,pretraining` has run (the synthetic shop: its split and the `image`, `text` and `audio`
vector tables of the real encoders). `--amazon`: a folder with an Amazon 5-core review file (2014
or 2018 layout); its items' content is the TF-IDF + SVD of their TRAIN reviews' text (the fashion
file has no metadata, so no images): the paper's visual features are replaced by text here.

AUC is the paper's: per test user, the share of (held-out item i, item j the user never
interacted with) pairs the model orders i above j, averaged over users. Cold items (the shop's
late releases, unknown to training) are ranked among the cold items only: BPR-MF cannot score
them at all. Each setting runs for 3 seeds; mean ± std. Both models get the same batches (4096 pairs, or
1/32 of the train split on small data). Writes bench/results/content.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from recforge.data.interactions import InteractionData  # noqa: E402
from recforge.encoders.vectors import align_item_vectors, vector_table  # noqa: E402
from recforge.training.inputs import cold_item_map  # noqa: E402
from recforge.training.recommender import Recommender  # noqa: E402

SEEDS = (0, 1, 2)
DIM, EPOCHS = 32, 20
TRAIN = {"epochs": EPOCHS, "batch_size": 4096, "lr": 0.01, "device": "auto", "num_threads": 2}


def auc(scores: np.ndarray, positives: sp.csr_matrix, excluded: sp.csr_matrix) -> float:
    """Mean over users with positives of P(score(i) > score(j)), i a positive, j neither a
    positive nor excluded (ties count half). scores: (U, I); positives, excluded: (U, I) binary."""
    out = []
    for u in np.flatnonzero(np.diff(positives.indptr)):
        pos = positives.indices[positives.indptr[u] : positives.indptr[u + 1]]
        mask = np.ones(scores.shape[1], bool)
        mask[excluded.indices[excluded.indptr[u] : excluded.indptr[u + 1]]] = False
        mask[pos] = False
        if not mask.any():
            continue
        neg = np.sort(scores[u, mask])
        s = scores[u, pos]
        below = np.searchsorted(neg, s, side="left")
        ties = np.searchsorted(neg, s, side="right") - below
        out.append(float(((below + 0.5 * ties) / len(neg)).mean()))
    return float(np.mean(out))


def csr(frame: pd.DataFrame, n_users: int, n_items: int, item_col: str = "item_idx") -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(len(frame), np.float32), (frame["user_idx"], frame[item_col])), shape=(n_users, n_items))
    m.data[:] = 1.0
    return m


def fit(family: str, train: InteractionData, seed: int, vectors: torch.Tensor | None) -> tuple[Recommender, float]:
    """Same dims, epochs and steps for both: batches of 4096, or n/32 on small data (at least 32
    steps an epoch)."""
    model = {"dim": DIM, "l2": 1e-5} if family == "bpr" else {"dim": DIM, "visual_dim": DIM, "l2": 1e-5}
    batch = int(min(4096, max(16, len(train) // 32)))
    rec = Recommender(family, model, {**TRAIN, "batch_size": batch, "seed": seed})
    start = time.perf_counter()
    rec.fit(train, item_vectors=vectors)
    return rec, time.perf_counter() - start


def compare(name: str, split: dict, tables: dict[str, pd.DataFrame]) -> list[dict]:
    """BPR-MF and VBPR (one row per content table) on one split: warm AUC and, where the test
    split has cold items, cold-item AUC."""
    user_map, item_map = split["user_map"], split["item_map"]
    n_users, n_items = len(user_map), len(item_map)
    train = InteractionData.from_frame(split["train"], n_users, n_items, name="train")
    held = pd.concat([split["train"], split.get("valid", split["train"].iloc[:0])])
    test = split["test"]
    warm = test[(test["user_idx"] >= 0) & (test["item_idx"] >= 0)]
    warm_pos = csr(warm, n_users, n_items)
    warm_excl = csr(held[(held["user_idx"] >= 0) & (held["item_idx"] >= 0)], n_users, n_items)
    cold_map = cold_item_map(test, item_map)
    cold = test[(test["user_idx"] >= 0) & (test["item_idx"] < 0)].copy()
    cold["cold_idx"] = pd.Index(cold_map["item_id"]).get_indexer(cold["item_id"].astype("string"))
    rows = []
    for label, table in [("BPR-MF", None), *[(f"VBPR ({t})", tables[t]) for t in tables]]:
        family = "bpr" if table is None else "vbpr"
        vectors = None if table is None else align_item_vectors(table, item_map)
        cold_vectors = None if table is None or not len(cold_map) else align_item_vectors(table, cold_map)
        warm_auc, cold_auc, seconds = [], [], []
        for seed in SEEDS:
            rec, s = fit(family, train, seed, vectors)
            seconds.append(s)
            users = torch.arange(n_users)
            scores = rec.score(np.arange(n_users))  # (U, I)
            warm_auc.append(auc(scores, warm_pos, warm_excl))
            if cold_vectors is not None and len(cold):
                net = rec.network.cpu().eval()
                with torch.no_grad():
                    cs = net.score_cold_items(users, cold_vectors).numpy()  # (U, C)
                cold_pos = csr(cold, n_users, len(cold_map), "cold_idx")
                cold_auc.append(auc(cs, cold_pos, sp.csr_matrix((n_users, len(cold_map)))))
        rows.append({
            "data": name, "model": label, "warm_auc": float(np.mean(warm_auc)), "warm_auc_std": float(np.std(warm_auc)),
            "cold_auc": float(np.mean(cold_auc)) if cold_auc else None,
            "cold_auc_std": float(np.std(cold_auc)) if cold_auc else None,
            "fit_s": float(np.mean(seconds)), "n_users": n_users, "n_items": n_items,
            "n_cold_items": int(len(cold_map)), "n_test_warm": int(len(warm)), "n_test_cold": int(len(cold)),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def shop_split(data: Path) -> tuple[dict, dict]:
    mi = data / "05_model_input"
    split = {k: pd.read_parquet(mi / f"{k}.parquet") for k in ("train", "valid", "test", "user_map", "item_map")}
    tables = {}
    for t in ("image", "text", "audio"):
        path = data / "04_feature" / t / "vectors.parquet"
        if path.is_file() and len(table := pd.read_parquet(path)):
            tables[t] = table
    return split, tables


def amazon_split(folder: Path) -> tuple[dict, dict]:
    """Leave-last-out per user (the paper's protocol) of a 5-core review file; item content = TF-IDF
    + truncated SVD (64-d) of each item's train reviews (summary + text)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    from recforge.data.amazon import AmazonConfig, read_reviews
    from recforge.data.filters import filter_interactions
    from recforge.data.splits import SplitConfig, split_interactions

    path = next(p for p in sorted(folder.iterdir()) if p.name.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz")))
    reviews = read_reviews(path, AmazonConfig(raw_dir=folder, metadata=False, keep_review_text=True))
    config = SplitConfig(strategy="leave_last_out", min_user_interactions=3, min_item_interactions=1, dedupe=True)
    s = split_interactions(filter_interactions(reviews, config), None, config)
    item_map = s.item_map.to_frame()
    train_keys = s.train[["user_id", "item_id", "timestamp"]].astype({"user_id": "string", "item_id": "string"})
    text = reviews.astype({"user_id": "string", "item_id": "string"}).merge(train_keys, on=["user_id", "item_id", "timestamp"])
    text["text"] = text["summary"].fillna("") + " " + text["review_text"].fillna("")
    docs = text.groupby("item_id")["text"].apply(" ".join)
    tfidf = TfidfVectorizer(min_df=2, max_features=20000, sublinear_tf=True).fit_transform(docs.to_numpy())
    k = min(64, tfidf.shape[1] - 1, len(docs) - 1)
    vectors = TruncatedSVD(k, random_state=0).fit_transform(tfidf)
    table = vector_table(docs.index.to_numpy(), vectors)
    split = {"train": s.train, "valid": s.valid, "test": s.test, "user_map": s.user_map.to_frame(), "item_map": item_map}
    return split, {"text": table}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shop", type=Path)
    ap.add_argument("--amazon", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    if args.shop:
        rows += compare("shop (default)", *shop_split(args.shop))
    if args.amazon:
        rows += compare(f"Amazon {args.amazon.name}", *amazon_split(args.amazon))
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    lines = [f"# VBPR vs BPR-MF (dim {DIM}, {EPOCHS} epochs, seeds {list(SEEDS)}; {machine})", "",
             "| data | model | warm AUC | cold-item AUC | fit s | users x items | cold items |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        cold = f"{r['cold_auc']:.4f} ± {r['cold_auc_std']:.4f}" if r["cold_auc"] is not None else "–"
        lines.append(f"| {r['data']} | {r['model']} | {r['warm_auc']:.4f} ± {r['warm_auc_std']:.4f} | {cold} | "
                     f"{r['fit_s']:.1f} | {r['n_users']} x {r['n_items']} | {r['n_cold_items']} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "content.md").write_text("\n".join(lines) + "\n")
    (args.out / "content.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
