"""Our torch skip-gram against gensim's Word2Vec, side by side on the same item sequences.

Same settings for both: skip-gram, negative=5, window=5 (dynamic), dim 64, sample=1e-3,
ns_exponent 0.75, alpha 0.025, 5 epochs, 2 threads (gensim `workers=2`, torch
`set_num_threads(2)`). Figures:
- words/s: corpus tokens (raw words, before subsampling) x epochs / training seconds (gensim:
  `train()`; torch: the fit loop's epochs, pair generation included);
- words per CPU-second: the same words / the process's CPU time over training (all threads) —
  what each engine gets out of the cores it is given, whatever else runs on the machine;
- next-item HR@10: each user's last event is held out; the query is the user's last TRAIN item,
  every item is ranked by cosine of the vectors, the user's training items masked. Users whose
  held-out item is among their training items (it cannot be hit) are left out.

Datasets: MovieLens 100K user histories by time (/work/shared/data/movielens-100k/u.data) and the
synthetic `large` shop's sessions (repeats within a session collapsed).

    .venv/bin/python bench/bench_word2vec.py [--datasets ml100k shop_large] [--repeats 3]
        [--batch-size 4096] [--shared-negatives 64] [--out bench/results/word2vec.md]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recforge.data.interactions import InteractionData
from recforge.encoders.prod2vec import Prod2VecConfig, fit_prod2vec
from recforge.encoders.sequences import SequenceConfig, build_corpus
from recforge.training.config import TrainConfig

logger = logging.getLogger("bench_word2vec")

ML100K = Path("/work/shared/data/movielens-100k/u.data")


def _split_last(frame: pd.DataFrame, name: str) -> tuple[InteractionData, np.ndarray, np.ndarray]:
    """Hold out each user's last event (time order, repeats collapsed): (train, users, targets)."""
    frame = frame.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)
    repeat = (frame["user"].diff() == 0) & (frame["item"].diff() == 0)
    frame = frame.loc[~repeat].reset_index(drop=True)
    last = frame.groupby("user").cumcount(ascending=False) == 0
    multi = frame.groupby("user")["item"].transform("size") > 1
    test = frame.loc[last & multi]
    train = frame.loc[~(last & multi)]
    n_users, n_items = int(frame["user"].max()) + 1, int(frame["item"].max()) + 1
    data = InteractionData(
        user_idx=train["user"].to_numpy(np.int64), item_idx=train["item"].to_numpy(np.int64),
        value=np.ones(len(train), np.float32), timestamp=train["timestamp"].to_numpy(np.int64),
        n_users=n_users, n_items=n_items,
        session=None if "session" not in train else train["session"].to_numpy(np.int64),
    )
    logger.info("%s: %d train events, %d test users, %d items", name, len(train), len(test), n_items)
    return data, test["user"].to_numpy(np.int64), test["item"].to_numpy(np.int64)


def load_ml100k() -> tuple[InteractionData, np.ndarray, np.ndarray, str]:
    raw = pd.read_csv(ML100K, sep="\t", names=["u", "i", "r", "timestamp"])
    frame = pd.DataFrame({
        "user": pd.factorize(raw["u"], sort=True)[0], "item": pd.factorize(raw["i"], sort=True)[0],
        "timestamp": raw["timestamp"],
    })
    return (*_split_last(frame, "ml100k"), "user")


def load_shop_large() -> tuple[InteractionData, np.ndarray, np.ndarray, str]:
    from recforge.data.synthetic import ShopConfig, generate_shop

    shop = generate_shop(ShopConfig(preset="large", with_media=False))
    it = shop.interactions
    frame = pd.DataFrame({
        "user": pd.factorize(it["user_id"], sort=True)[0], "item": pd.factorize(it["item_id"], sort=True)[0],
        "timestamp": it["timestamp"].to_numpy(), "session": pd.factorize(it["session_id"])[0],
    })
    return (*_split_last(frame, "shop_large"), "session")


def hit_rate(index: np.ndarray, vectors: np.ndarray, train: InteractionData, users: np.ndarray,
             targets: np.ndarray, k: int = 10) -> float:
    """Next-item HR@k from the last train item by cosine, training items masked."""
    table = torch.zeros(train.n_items, vectors.shape[1])
    table[torch.from_numpy(index)] = torch.from_numpy(vectors)
    table = torch.nn.functional.normalize(table, dim=1)
    order = np.lexsort((np.arange(len(train)), train.timestamp, train.user_idx))
    last = np.full(train.n_users, -1)
    last[train.user_idx[order]] = train.item_idx[order]  # the last write per user wins
    csr = train.csr
    possible = np.asarray(csr[users, targets]).ravel() == 0
    users, targets = users[possible], targets[possible]
    hits = 0
    for start in range(0, len(users), 2048):
        u = users[start:start + 2048]
        sims = table[torch.from_numpy(last[u])] @ table.T  # (B, I)
        rows = csr[u]
        r = np.repeat(np.arange(len(u)), np.diff(rows.indptr))
        sims[torch.from_numpy(r), torch.from_numpy(rows.indices.astype(np.int64))] = -torch.inf
        top = torch.topk(sims, k, dim=1).indices.numpy()
        hits += int((top == targets[start:start + 2048, None]).any(1).sum())
    return hits / max(len(users), 1)


def run(dataset: str, engine: str, seed: int, args) -> dict[str, object]:
    train, users, targets, by = DATA[dataset]
    corpus = build_corpus(train, SequenceConfig(by=by, min_length=2))
    config = Prod2VecConfig(
        engine=engine, dim=64, window=5, negative=5, sample=1e-3, workers=args.threads,
        shared_negatives=args.shared_negatives, negative_group=args.negative_group,
        sequences=SequenceConfig(by=by),
    )
    train_config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=0.025, lr_schedule="cosine", seed=seed, device="cpu",
    )
    t0 = time.perf_counter()
    result = fit_prod2vec(corpus, config, train_config)
    wall = time.perf_counter() - t0
    hr = hit_rate(result.index, result.vectors, train, users, targets)
    row = {"dataset": dataset, "engine": engine, "seed": seed, "words": len(corpus),
           "words_per_s": result.report["words_per_s"], "words_per_cpu_s": result.report["words_per_cpu_s"],
           "train_s": result.report["seconds"],
           "wall_s": round(wall, 2), "hr@10": round(hr, 4)}
    logger.info(json.dumps(row))
    return row


DATA: dict[str, tuple] = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["ml100k", "shop_large"])
    parser.add_argument("--engines", nargs="+", default=["gensim", "torch"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--shared-negatives", type=int, default=16)
    parser.add_argument("--negative-group", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=None, help="append a markdown table here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    loaders = {"ml100k": load_ml100k, "shop_large": load_shop_large}
    rows = []
    load_before = os.getloadavg()
    for name in args.datasets:
        DATA[name] = loaders[name]()
        for seed in range(args.repeats):  # engines alternate, so machine load hits both alike
            for engine in args.engines:
                rows.append(run(name, engine, seed, args))
    table = summarise(rows, args, load_before, os.getloadavg())
    logger.info("\n%s", table)
    if args.out is not None:
        with args.out.open("a") as fh:
            fh.write(table + "\n")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def summarise(rows: list[dict[str, object]], args, load_before, load_after) -> str:
    """A markdown table: median words/s and mean ± std HR@10 per dataset and engine."""
    import gensim

    lines = [
        f"- machine: {_cpu()}, {os.cpu_count()} CPUs visible; torch {torch.__version__}, gensim "
        f"{gensim.__version__}; {args.threads} threads each (gensim workers / torch fused-step workers)",
        f"- load average (1, 5, 15 min) before {tuple(round(x, 1) for x in load_before)}, after "
        f"{tuple(round(x, 1) for x in load_after)} (other jobs share the cores)",
        f"- torch: batch_size {args.batch_size} (capped to >= 64 steps per epoch), "
        f"{args.shared_negatives} noise items per group of {args.negative_group} examples; "
        f"{args.epochs} epochs; {args.repeats} runs per engine, engines alternating",
        "",
        "| dataset | engine | words | words/s (median) | words/s (runs) | words per CPU-s (median) "
        "| HR@10 (mean ± std) |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    df = pd.DataFrame(rows)
    for (dataset, engine), g in df.groupby(["dataset", "engine"], sort=False):
        wps = g["words_per_s"].astype(float)
        cpu = g["words_per_cpu_s"].astype(float)
        hr = g["hr@10"].astype(float)
        lines.append(
            f"| {dataset} | {engine} | {int(g['words'].iloc[0]):,} | {statistics.median(wps):,.0f} | "
            f"{', '.join(f'{w:,.0f}' for w in wps)} | {statistics.median(cpu):,.0f} | "
            f"{hr.mean():.4f} ± {hr.std(ddof=0):.4f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
