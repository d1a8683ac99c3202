"""Two-stage chains (issue #13 §4): retriever -> ranker on the synthetic `large` shop and MovieLens 100K.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_two_stage.py
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_two_stage.py --datasets ml100k --retrievers bpr \
        --rankers gmf --ns 50 100 --epochs bpr=5 gmf=2 large:bpr=2

Per dataset (a fresh child process each, so its peak RSS is its own): the split of
conf/base/parameters_splitting.yml (temporal 80/10/10, 3-core; the validation rows are unused;
`ml100k-random` is bench_families.py's random split instead, where every user is a test user),
every retriever fitted once on the training period, then for every chain {retriever} x {ranker}
and every N what `recforge.training.two_stage` reports (the library the `two_stage` pipeline
calls, wired as its nodes wire it): a head-refitted copy of the retriever proposes the
top-max(N) candidates for the training tail (label_fraction 0.2), the ranker is trained on the
top-N of them with weighted logistic regression (`fit_ranker(..., serve=train)`), and
`evaluate_chain` gives candidate recall@N, reranked and retriever-alone NDCG@10 / HR@10 on the
same test users and the latency per 1,000 test users. Besides: fit seconds of each retriever,
head refit and ranker, `export_recommendations` top-10 for every user per retriever, the wall
time of a whole chain for every user (top-N retrieval + rerank + top-10 table), and peak RSS.

Model and training configs are conf/base/parameters_training.yml's (neumf with `pretrain: false`,
as in conf/base/parameters_two_stage.yml), without early stopping (no validation candidates
for a ranker, and a retriever with an early-stopping metric cannot be refitted on the head:
see `--epochs` for the fixed epochs). Writes bench/results/two_stage.{json,md}.
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
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

logger = logging.getLogger("bench_two_stage")

# ml100k: the project's temporal split; ml100k-random: bench_families.py's random one
DATASETS = ("large", "ml100k", "ml100k-random")
RETRIEVERS = ("bpr", "als", "youtube_candidates")
RANKERS = ("youtube_ranking", "neumf", "gmf")
CHAIN_MODEL = {"neumf": {"pretrain": False}}  # conf/base/parameters_two_stage.yml's chain overrides
EXPORT_K = 10


# ------------------------------------------------------------------------------------- data
def load(dataset: str, ml100k: Path):
    """(train, test InteractionData, user_map, item_map frames, {items, users, impressions}
    tables) under the project's split (conf/base/parameters_splitting.yml)."""
    import yaml

    from recforge.data.filters import filter_interactions
    from recforge.data.interactions import InteractionData
    from recforge.data.splits import SplitConfig, split_interactions

    if dataset in ("ml100k", "ml100k-random"):
        from recforge.data.movielens import MovieLensConfig, load_movielens100k

        import pandas as pd

        interactions, items, users = load_movielens100k(MovieLensConfig(raw_dir=ml100k, download=False))
        impressions = pd.DataFrame()  # MovieLens has no impression log
    elif dataset == "large":
        from recforge.data.synthetic import ShopConfig, generate_shop

        shop = generate_shop(ShopConfig(preset="large", with_media=False))
        interactions, items, users, impressions = shop.interactions, shop.items, shop.users, shop.impressions
    else:
        raise ValueError(f"--datasets: unknown dataset {dataset!r}; choose from {list(DATASETS)}")
    if dataset == "ml100k-random":  # bench_families.py's split of ML-100K: every user is a test user
        config = SplitConfig(strategy="random", valid_fraction=0.1, test_fraction=0.1, seed=2020)
    else:
        params = yaml.safe_load((ROOT / "conf/base/parameters_splitting.yml").read_text())["splitting"]
        config = SplitConfig.model_validate(params)
    s = split_interactions(filter_interactions(interactions, config), None, config)
    nu, ni = len(s.user_map), len(s.item_map)
    train = InteractionData.from_frame(s.train, nu, ni, name="train")
    test = InteractionData.from_frame(s.test, nu, ni, name="test")
    tables = {"items": items, "users": users, "impressions": impressions, "user_map": s.user_map.to_frame()}
    return train, test, s.user_map.to_frame(), s.item_map.to_frame(), tables, config


def family_params(family: str, epochs: dict[str, int]) -> tuple[dict, dict]:
    """conf/base/parameters_training.yml's (model, training) of `family`, early stopping off,
    the chain's model overrides on, epochs from `--epochs` where given."""
    import yaml

    params = yaml.safe_load((ROOT / "conf/base/parameters_training.yml").read_text())
    if family not in params:
        raise ValueError(f"conf/base/parameters_training.yml has no block for family {family!r}")
    model = {**params[family].get("model", {}), **CHAIN_MODEL.get(family, {})}
    training = {k: v for k, v in params[family].get("training", {}).items()
                if k not in ("early_stopping_metric", "patience")}
    if family in epochs:
        training["epochs"] = epochs[family]
    return model, training


# ---------------------------------------------------------------------------------- timings
def chain_export(retriever, ranker, user_map, item_map, n: int) -> tuple[float, int]:
    """Wall seconds of a chain's top-10 for every user: the retriever's top-`n` unseen items,
    reranked, cut to 10 and written as a raw-id table like `export_recommendations`'s; and its rows."""
    import pandas as pd

    from recforge.training import two_stage as ts

    started = time.perf_counter()
    users = np.arange(len(user_map), dtype=np.int64)
    cands = ts.generate_candidates(retriever, users, n)
    scores = ts.rerank(ranker, cands)
    top = ts.top_lists(cands, users, scores, EXPORT_K)  # (U, 10), -1 padded
    row, col = np.nonzero(top >= 0)
    user_ids = user_map.sort_values("user_idx")["user_id"].to_numpy(dtype=object)
    item_ids = item_map.sort_values("item_idx")["item_id"].to_numpy(dtype=object)
    table = pd.DataFrame({"user_id": user_ids[row], "rank": col + 1, "item_id": item_ids[top[row, col]]})
    table = table.astype({"user_id": "string", "rank": "int64", "item_id": "string"})
    return time.perf_counter() - started, len(table)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_dataset(args) -> dict[str, Any]:
    """Everything for one dataset, in this process."""
    import torch

    from recforge.evaluation.export import export_recommendations
    from recforge.models.registry import get_family
    from recforge.training import two_stage as ts
    from recforge.training.inputs import item_side
    from recforge.training.recommender import Recommender

    torch.set_num_threads(args.threads)
    epochs = parse_epochs(args.epochs, args.dataset)
    t = time.perf_counter()
    train, test, user_map, item_map, tables, split = load(args.dataset, args.ml100k)

    def side(family: str, model: dict) -> Any:  # the item side the training pipeline hands `family`
        fam = get_family(family)
        datasets = [tables[d] for d in fam.content_inputs] if fam.item_content else []
        return item_side(fam, fam.config.model_validate(model), datasets, item_map)[0]

    out: dict[str, Any] = {
        "dataset": args.dataset, "split": split.model_dump(), "load_s": time.perf_counter() - t,
        "n_users": train.n_users, "n_items": train.n_items, "train_rows": len(train), "test_rows": len(test),
        "test_users": int(len(np.unique(test.user_idx))), "load_before": os.getloadavg()[0],
        "retrievers": [], "rankers": [], "chains": [],
    }
    logger.info("%s: %d users x %d items, %d train / %d test rows", args.dataset, train.n_users, train.n_items,
                len(train), len(test))
    conf = ts.TwoStageConfig()  # label_fraction 0.2, engagement weights, as conf/base/parameters_two_stage.yml
    n_max = max(args.ns)
    train_ns = sorted(set(args.train_ns or args.ns))
    for r_name in args.retrievers:
        model, training = family_params(r_name, epochs)
        retriever = Recommender(r_name, model, {**training, "device": "cpu", "seed": 0})
        r_side = side(r_name, model)
        retriever.fit(train, item_vectors=r_side)
        export = export_recommendations(retriever, user_map, item_map, EXPORT_K)
        t = time.perf_counter()
        labelled, head = ts.training_candidates(retriever, train, n_max, conf, r_side)
        head_s = time.perf_counter() - t
        served = {n: ts.candidates_for(retriever, test, n, conf.batch_size) for n in args.ns}
        row = {"retriever": r_name, "model": model, "training": training, "epochs": retriever.history.epochs,
               "fit_s": retriever.fit_seconds, "export_top10_s": export.summary.seconds,
               "export_rows": export.summary.n_rows, "head_refit_and_candidates_s": head_s,
               "train_candidates": len(labelled), "train_candidate_positive_rate": float(labelled["label"].mean()),
               "head_rows": len(head)}  # fmt: skip
        out["retrievers"].append(row)
        logger.info("%s", json.dumps(row))
        for k_name in args.rankers:
            fam = get_family(k_name)
            k_model, k_training = family_params(k_name, epochs)
            vectors = side(k_name, k_model)
            rankers = {}
            for n in train_ns:
                t = time.perf_counter()
                ranker = ts.fit_ranker(k_name, k_model, {**k_training, "device": "cpu", "seed": 0}, head,
                                       labelled[labelled["rank"] <= n], vectors, serve=train)  # fmt: skip
                rankers[n] = ranker
                fit = {"retriever": r_name, "ranker": k_name, "trained_at_n": n, "fit_s": ranker.fit_seconds,
                       "fit_and_refresh_s": time.perf_counter() - t, "epochs": ranker.history.epochs,
                       "loss_first": ranker.history.loss[0], "loss_last": ranker.history.loss[-1],
                       "training": k_training, "model": k_model}  # fmt: skip
                out["rankers"].append(fit)
                logger.info("%s", json.dumps(fit))
            for n in args.ns:
                trained_at = n if n in rankers else min(train_ns, key=lambda m: (abs(m - n), m))
                cands, seconds = served[n]
                m = ts.evaluate_chain(cands, rankers[trained_at], test, n, (10,), seconds)
                chain = {"chain": f"{r_name}__{k_name}", "retriever": r_name, "ranker": k_name,
                         "trained_at_n": trained_at, **m}
                if n in args.export_ns and n == trained_at:
                    chain["chain_export_top10_s"], chain["chain_export_rows"] = chain_export(
                        retriever, rankers[trained_at], user_map, item_map, n)
                out["chains"].append(chain)
                logger.info("%s", json.dumps(chain))
    out["load_after"] = os.getloadavg()[0]
    out["peak_rss_mb"] = peak_rss_mb()
    out["torch_threads"] = torch.get_num_threads()
    return out


# ------------------------------------------------------------------------------------ report
def parse_epochs(pairs: list[str], dataset: str | None = None) -> dict[str, int]:
    """`--epochs` as {family: epochs} for `dataset`: `FAMILY=E` for every dataset,
    `DATASET:FAMILY=E` for one (it wins over the former)."""
    every, own = {}, {}
    for p in pairs:
        key, _, value = p.partition("=")
        where, _, name = key.rpartition(":")
        if not value.isdigit() or not name or (where and where not in DATASETS):
            raise ValueError(f"--epochs: expected [DATASET:]FAMILY=EPOCHS (e.g. bpr=10, large:gmf=3) with DATASET "
                             f"in {list(DATASETS)}, got {p!r}")
        (own if where else every)[name] = int(value)
        if where and where != dataset:
            del own[name]
    return {**every, **own}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), platform.machine())
    import torch

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, nproc {os.cpu_count()}, {ram:.0f} GiB RAM, no GPU used (device cpu), torch {torch.__version__}"


def fmt(v: float | None, spec: str = ".4f") -> str:
    return "–" if v is None else format(v, spec)


def markdown(results: list[dict], command: str, host: str, started: str, ended: str) -> str:
    lines = ["# Two-stage chains (issue #13 §4)", "",
             f"Command (from the repo root, {started} – {ended} UTC): `{command}`", "",
             f"Machine: {host}. Each dataset in a fresh process; torch threads {results[0]['torch_threads']}"
             " (`num_threads` of the training configs applies during fits); `OMP_WAIT_POLICY=PASSIVE`.", "",
             "Split: `large` and `ml100k` conf/base/parameters_splitting.yml's, `ml100k-random` bench_families.py's "
             "(the validation rows unused); ranker labels from the last 20% of the training period (conf/base/parameters_two_stage.yml). "
             "Configs: conf/base/parameters_training.yml without early stopping (neumf `pretrain: false`); the "
             "epochs are in the tables. Test metrics: the test users' test items, their training items masked "
             "(repeat test events on training items can't be hit by either list).", ""]
    for r in results:
        sp = r["split"]
        lines += [f"## {r['dataset']}", "",
                  f"Split {sp['strategy']} {1 - sp['valid_fraction'] - sp['test_fraction']:.0%}/{sp['valid_fraction']:.0%}/"
                  f"{sp['test_fraction']:.0%} (seed {sp['seed']}, k-core {sp['min_user_interactions']}): "
                  f"{r['n_users']:,} users x {r['n_items']:,} items, {r['train_rows']:,} training rows, "
                  f"{r['test_users']:,} test users ({r['test_rows']:,} rows). Load average {r['load_before']:.1f} "
                  f"before, {r['load_after']:.1f} after. Peak RSS {r['peak_rss_mb']:,.0f} MB.", "",
                  "| retriever | epochs | fit s | head refit + train candidates s | export top-10 all users s | "
                  "train candidates (max N) | positive share |", "|---|---|---|---|---|---|---|"]
        for x in r["retrievers"]:
            lines.append(f"| {x['retriever']} | {x['epochs']} | {x['fit_s']:.1f} | {x['head_refit_and_candidates_s']:.1f} | "
                         f"{x['export_top10_s']:.2f} | {x['train_candidates']:,} | {x['train_candidate_positive_rate']:.4f} |")
        lines += ["", "| retriever | ranker | trained at N | epochs | fit s (incl. refresh) | loss first → last |",
                  "|---|---|---|---|---|---|"]
        for x in r["rankers"]:
            lines.append(f"| {x['retriever']} | {x['ranker']} | {x['trained_at_n']} | {x['epochs']} | "
                         f"{x['fit_and_refresh_s']:.1f} | {x['loss_first']:.4f} → {x['loss_last']:.4f} |")
        lines += ["", "| chain | N | ranker trained at N | candidate recall@N | NDCG@10 reranked | NDCG@10 retriever "
                  "| HR@10 reranked | HR@10 retriever | ms per 1k test users | chain top-10 all users s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for c in r["chains"]:
            recall = c.get("candidate_recall@" + str(c["n"]))
            lines.append(
                f"| {c['chain']} | {c['n']} | {c['trained_at_n']} | {fmt(recall)} | "
                f"{fmt(c['reranked']['ndcg@10'])} | {fmt(c['retriever']['ndcg@10'])} | {fmt(c['reranked']['hr@10'])} | "
                f"{fmt(c['retriever']['hr@10'])} | {c['latency_ms_per_1k_users']:.0f} | "
                f"{fmt(c.get('chain_export_top10_s'), '.1f')} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--retrievers", nargs="+", default=list(RETRIEVERS))
    ap.add_argument("--rankers", nargs="+", default=list(RANKERS))
    ap.add_argument("--ns", nargs="+", type=int, default=[50, 100, 200], help="candidates per user")
    ap.add_argument("--train-ns", nargs="+", type=int,
                    help="N at which rankers are trained (default: every --ns); another N is reranked by "
                         "the ranker trained at the nearest of these")
    ap.add_argument("--export-ns", nargs="+", type=int, default=[100],
                    help="N at which a whole chain's top-10 for every user is timed")
    ap.add_argument("--epochs", nargs="*", default=[], metavar="[DATASET:]FAMILY=EPOCHS",
                    help="fixed epochs per family, on every dataset or on one (default: "
                         "conf/base/parameters_training.yml's)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads of each dataset's process")
    ap.add_argument("--ml100k", type=Path, default=ROOT.parent / "shared/data/movielens-100k")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results")
    ap.add_argument("--dataset", help=argparse.SUPPRESS)  # internal: run one dataset in this process
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for n in args.ns:
        if n < 1:
            raise ValueError(f"--ns: N must be >= 1, got {n}")
    if args.dataset:
        print("RESULT " + json.dumps(run_dataset(args)), flush=True)
        return
    parse_epochs(args.epochs)  # fail before any child starts
    started = time.strftime("%H:%M", time.gmtime())
    results = []
    for dataset in args.datasets:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--dataset", dataset]
        res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT ")), None)
        if res.returncode or line is None:
            raise RuntimeError(f"bench_two_stage: dataset {dataset!r} failed (exit {res.returncode}); see its log above")
        results.append(json.loads(line[len("RESULT "):]))
    command = "OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_two_stage.py " + " ".join(sys.argv[1:])
    host = machine()
    ended = time.strftime("%H:%M", time.gmtime())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "two_stage.json").write_text(json.dumps(
        {"command": command, "machine": host, "started": started, "ended": ended, "results": results}, indent=2))
    text = markdown(results, command.strip(), host, started, ended)
    (args.out / "two_stage.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
