"""youtube_candidates with and without §3.3's side inputs (the words of the history items' titles
and texts, the users table's attributes), on the synthetic shop (`default`) and MovieLens 100K.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_youtube_candidates.py \
        --ml100k ../shared/data/movielens-100k --seeds 0 1

Temporal split 80/10/10 (k-core 3), the family's parameters from conf/base/parameters_training.yml
(early stopping on valid NDCG@10), full-ranking NDCG@10 / HR@10 on test with the training items
masked; bpr with its parameters as the reference. Writes bench/results/youtube_candidates.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from recforge.data.filters import filter_interactions  # noqa: E402
from recforge.data.interactions import InteractionData  # noqa: E402
from recforge.data.movielens import MovieLensConfig, load_movielens100k  # noqa: E402
from recforge.data.splits import SplitConfig, split_interactions  # noqa: E402
from recforge.data.synthetic import ShopConfig, generate_shop  # noqa: E402
from recforge.evaluation.protocols import full_ranking  # noqa: E402
from recforge.models.cf import youtube_candidates as yc  # noqa: E402
from recforge.training.recommender import Recommender  # noqa: E402

VARIANTS = {  # name: (model overrides, side inputs used)
    "ids + example age": ({}, False),
    "+ words": ({"demographics": False}, True),
    "+ demographics": ({"text_words": 0}, True),
    "+ words + demographics": ({}, True),
}


def load(name: str, args):
    if name == "shop":
        shop = generate_shop(ShopConfig(preset="default", with_media=False))
        return shop.interactions, shop.items, shop.users
    return load_movielens100k(MovieLensConfig(raw_dir=args.ml100k, download=False))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["shop", "ml100k"])
    ap.add_argument("--ml100k", type=Path, default=ROOT.parent / "shared/data/movielens-100k")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/youtube_candidates")
    args = ap.parse_args()
    params = yaml.safe_load((ROOT / "conf/base/parameters_training.yml").read_text())
    rows = []
    for dataset in args.datasets:
        interactions, items, users = load(dataset, args)
        cfg = SplitConfig(strategy="temporal", valid_fraction=0.1, test_fraction=0.1,
                          min_user_interactions=3, min_item_interactions=3)  # fmt: skip
        s = split_interactions(filter_interactions(interactions, cfg), None, cfg)
        nu, ni = len(s.user_map), len(s.item_map)
        train, valid, test = (InteractionData.from_frame(f, nu, ni) for f in (s.train, s.valid, s.test))
        side = yc.item_content(items, users, s.user_map.to_frame(), s.item_map.to_frame())
        runs = [("bpr", "bpr", {}, False)] + [("youtube_candidates", v, o, u) for v, (o, u) in VARIANTS.items()]
        for family, variant, overrides, use_side in runs:
            for seed in args.seeds:
                rec = Recommender(family, {**params[family]["model"], **overrides},
                                  {**params[family]["training"], "device": "auto", "seed": seed})  # fmt: skip
                started = time.perf_counter()
                rec.fit(train, valid, item_vectors=side if use_side else None)
                seconds = time.perf_counter() - started
                m = full_ranking(rec.score_fn(), train.csr, test, ks=(10,))
                rows.append({"dataset": dataset, "family": family, "variant": variant, "seed": seed,
                             "ndcg@10": m["ndcg@10"], "hr@10": m["hr@10"], "fit_seconds": seconds,
                             "epochs": len(rec.history.loss), "users": nu, "items": ni,
                             "demographic_columns": int(side.demographics.shape[1])})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    lines = ["# youtube_candidates: §3.3's side inputs", "",
             "    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_youtube_candidates.py "
             + " ".join(sys.argv[1:]), "",
             f"Machine: {platform.processor() or platform.machine()}, CPU only. Temporal split 80/10/10, "
             "k-core 3; parameters of conf/base/parameters_training.yml, early stopping on valid NDCG@10; "
             f"mean (min–max) over seeds {args.seeds}.", "",
             "| dataset | model | NDCG@10 | HR@10 | fit s | epochs |", "|---|---|---|---|---|---|"]
    for dataset in args.datasets:
        for variant in ["bpr", *VARIANTS]:
            r = [x for x in rows if x["dataset"] == dataset and x["variant"] == variant]
            nd, hr = np.array([x["ndcg@10"] for x in r]), np.array([x["hr@10"] for x in r])
            label = "bpr (reference)" if variant == "bpr" else f"youtube_candidates {variant}"
            lines.append(f"| {dataset} ({r[0]['users']} users, {r[0]['items']} items, {r[0]['demographic_columns']} "
                         f"users columns) | {label} | {nd.mean():.4f} ({nd.min():.4f}–{nd.max():.4f}) | "
                         f"{hr.mean():.4f} | {np.mean([x['fit_seconds'] for x in r]):.1f} | "
                         f"{np.mean([x['epochs'] for x in r]):.1f} |")  # fmt: skip
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
