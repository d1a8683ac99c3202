"""Context-aware top-K (deck 002 Assignment II): Recall, MAP@5/10, nDCG@5/20 of `nfm` and `fm`
with the event's hour and weekday against popularity in the event's hour, on Foursquare check-ins
when the file is present, else the shop's context set.

    .venv/bin/python bench/bench_context.py [--foursquare data/01_raw/foursquare/dataset_TSMC2014_NYC.txt]

The shop's context set: the clicks of the default shop's impression log (a click is an event of
a user, an item and a time; the shop's click probability has hour-band x department effects, so
context carries signal there), each user's last 10% of events by time as test (temporal split
per user; items or users unseen in train are dropped). Every test event ranks all items in its
own context; items met in train stay in the ranking (revisits count). Writes
bench/results/context.{md,json}.
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
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from recforge.data.interactions import InteractionData  # noqa: E402
from recforge.evaluation.context import context_ranking, model_context_fn, popularity_in_context  # noqa: E402
from recforge.features.tables import build_field_tables  # noqa: E402
from recforge.training.recommender import Recommender  # noqa: E402

COLUMNS = ("recall@5", "recall@10", "map@5", "map@10", "ndcg@5", "ndcg@20")


def shop_events() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, str]:
    from recforge.data.synthetic import ShopConfig, generate_shop

    shop = generate_shop(ShopConfig(preset="default", with_media=False))
    clicks = shop.impressions[shop.impressions["label"] == 1]
    events = pd.DataFrame({"user_id": clicks["user_id"].astype(str), "item_id": clicks["item_id"].astype(str),
                           "timestamp": clicks["timestamp"].to_numpy()})  # fmt: skip
    return events, shop.items[["item_id", "category", "brand"]], shop.users[["user_id"]], "the shop's impression clicks"


def foursquare_events(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, str]:
    from recforge.data.foursquare import read_checkins

    interactions, items = read_checkins(path)
    events = interactions[["user_id", "item_id", "timestamp"]].astype({"user_id": str, "item_id": str})
    return events, items[["item_id", "category"]], pd.DataFrame({"user_id": events["user_id"].unique()}), path.name


def split(events: pd.DataFrame):
    events = events.sort_values("timestamp", kind="stable")
    rank = events.groupby("user_id").cumcount()
    size = events.groupby("user_id")["item_id"].transform("size")
    test_mask = rank >= np.ceil(size * 0.9)
    train, test = events[~test_mask], events[test_mask]
    users = pd.Index(train["user_id"].unique())
    items = pd.Index(train["item_id"].unique())
    test = test[test["user_id"].isin(users) & test["item_id"].isin(items)]

    def data(frame):
        return InteractionData(users.get_indexer(frame["user_id"]).astype(np.int64), items.get_indexer(frame["item_id"]).astype(np.int64),
                               np.ones(len(frame), np.float32), frame["timestamp"].to_numpy(np.int64), len(users), len(items))  # fmt: skip

    umap = pd.DataFrame({"user_id": users, "user_idx": np.arange(len(users))})
    imap = pd.DataFrame({"item_id": items, "item_idx": np.arange(len(items))})
    return data(train), data(test), umap, imap


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--foursquare", type=Path, default=ROOT / "data/01_raw/foursquare/dataset_TSMC2014_NYC.txt")
    args = ap.parse_args()
    events, items, users, name = foursquare_events(args.foursquare) if args.foursquare.is_file() else shop_events()
    train, test, umap, imap = split(events)
    rows = []
    for part in ("hour", "weekday"):
        rows.append({"model": f"popularity in {part}", **context_ranking(popularity_in_context(train, part), test), "seconds": 0.0})
    counts = torch.as_tensor(np.bincount(train.item_idx, minlength=train.n_items), dtype=torch.float32)
    rows.append({"model": "popularity", **context_ranking(lambda u, t: counts.expand(len(u), -1), test), "seconds": 0.0})
    item_fields = [{"name": "category", "kind": "categorical", "column": "category"}]
    for family, model in (("fm", {"dim": 32}), ("nfm", {"dim": 32, "layers": [64], "orders": [1, 2, 3]})):
        for context in (["hour", "weekday"], []):
            tables = build_field_tables(users, items, umap, imap, {"item": {"fields": item_fields}, "context": context})
            rec = Recommender(family, {**model, "objective": "bpr"},
                              {"epochs": 10, "batch_size": 2048, "lr": 0.005, "device": "auto", "seed": 0})  # fmt: skip
            t = time.perf_counter()
            rec.fit(train, item_vectors=tables)
            secs = time.perf_counter() - t
            scorer = model_context_fn(rec)
            if scorer is None:
                net = rec.network

                def scorer(u, t, net=net):
                    return net.score_all(u, None)

            label = f"{family} + hour, weekday" if context else f"{family} (no context)"
            rows.append({"model": label, **context_ranking(scorer, test), "seconds": round(secs, 1)})
            print(json.dumps(rows[-1]), flush=True)
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    lines = [f"# Context-aware top-K: {name}", "",
             f"`.venv/bin/python bench/bench_context.py` on {machine}. {train.n_users:,} users, {train.n_items:,} items, "
             f"{len(train):,} train and {len(test):,} test events (each user's last 10% by time). fm / nfm: dim 32, "
             "BPR, 10 epochs, item category as the item field; every test event ranks all items in its own context.", "",
             "| model | " + " | ".join(COLUMNS) + " | fit s |", "|---" * (len(COLUMNS) + 2) + "|"]  # fmt: skip
    for r in sorted(rows, key=lambda r: -r["ndcg@20"]):
        lines.append(f"| {r['model']} | " + " | ".join(f"{r[c]:.4f}" for c in COLUMNS) + f" | {r['seconds']} |")
    out = ROOT / "bench/results"
    (out / "context.md").write_text("\n".join(lines) + "\n")
    (out / "context.json").write_text(json.dumps({"dataset": name, "machine": machine, "rows": rows}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
