"""One tuning worker as its own process, for the shared-storage tests (`test_postgres.py`).

    python tuning_worker.py URL STUDY --worker A [--family bpr] --n-trials 2 --seed 0 --heartbeat 1 --epochs 2 [--wait]

Tunes a family (`bpr` unless told) on a tiny synthetic shop with `recforge.tuning.study.tune` and prints one JSON line,
`{"worker": ..., "trials": [...], "run_trials": [...], ...}`. `tune` does not say which worker
ran a trial, so the worker wraps the objective to set the trial's `worker` user attribute before
it fits; `trials` are the numbers of the trials this process ran.

With `--wait` the worker gets everything ready (imports, data, torch's lazily imported optimizer
machinery when it trains), prints `ready` on stderr and starts tuning only when a line arrives on stdin: the
test starts its workers together, or one at the moment it chooses, without paying the imports.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import scipy.sparse as sp
import torch
import yaml

import recforge.tuning.study as study_module
from recforge.data.filters import filter_interactions
from recforge.data.interactions import InteractionData
from recforge.data.splits import SplitConfig, split_interactions
from recforge.data.synthetic import ShopConfig, generate_shop

ROOT = Path(__file__).resolve().parents[2]


def tiny_splits() -> tuple[InteractionData, InteractionData, sp.csr_matrix]:
    """Train and valid splits of a small synthetic shop (the same in every worker)."""
    shop = generate_shop(ShopConfig(preset="tiny", n_users=200, n_items=100, n_sessions=1200, with_media=False))
    config = SplitConfig(
        strategy="random", valid_fraction=0.1, test_fraction=0.15, seed=0,
        min_user_interactions=3, min_item_interactions=3,
    )  # fmt: skip
    splits = split_interactions(filter_interactions(shop.interactions, config), None, config)
    n_users, n_items = len(splits.user_map), len(splits.item_map)
    train = InteractionData.from_frame(splits.train, n_users, n_items)
    valid = InteractionData.from_frame(splits.valid, n_users, n_items)
    return train, valid, train.csr


def tag_trials(worker: str, ran: list[int]) -> None:
    """Wrap `make_objective` so every trial of this process carries `worker` and is noted in `ran`."""
    make_objective = study_module.make_objective

    def tagged(*args, **kwargs):
        objective = make_objective(*args, **kwargs)

        def run(trial):
            trial.set_user_attr("worker", worker)
            ran.append(trial.number)
            return objective(trial)

        return run

    study_module.make_objective = tagged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("study")
    parser.add_argument("--worker", required=True)
    parser.add_argument("--family", default="bpr", help="item_knn fits without an optimizer: the cheapest")
    parser.add_argument("--n-trials", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heartbeat", type=int, default=1)
    parser.add_argument("--epochs", type=int, help="epochs of every trial, none stopped early (default: the family's)")
    parser.add_argument("--wait", action="store_true", help="get ready, then wait for a line on stdin")
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [worker {args.worker} pid {os.getpid()}] %(name)s: %(message)s")
    torch.set_num_threads(1)
    params = yaml.safe_load((ROOT / "conf/base/parameters_training.yml").read_text())[args.family]
    tuning = yaml.safe_load((ROOT / "conf/base/parameters_tuning.yml").read_text())["tuning"][args.family]
    tuning.update(
        n_trials=args.n_trials, seed=args.seed, heartbeat_seconds=args.heartbeat, sampler="random",
        pruner="none", timeout=None, max_trials=None,
    )  # fmt: skip
    training = dict(params["training"])
    if args.epochs is not None:
        training["epochs"] = args.epochs
        tuning["patience"] = max(args.epochs, 1)
    plan = study_module.plan_study(args.family, params["model"], training, tuning)
    train, valid, seen = tiny_splits()
    ran: list[int] = []
    tag_trials(args.worker, ran)
    if args.wait:
        if training.get("epochs"):  # a first optimizer imports torch._dynamo (~3 s): not on the clock
            torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
        print("ready", file=sys.stderr, flush=True)
        sys.stdin.readline()
    result = study_module.tune(plan, train, valid, args.url, name=args.study, seen=seen)
    print(json.dumps({"worker": args.worker, "trials": ran, "run_trials": result.run_trials,
                      "storage": result.storage_url, "best_params": result.best_params()}))  # fmt: skip


if __name__ == "__main__":
    main()
