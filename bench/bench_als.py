"""`als` fit time and quality against `implicit.cpu.als.AlternatingLeastSquares`.

Two matrices: MovieLens-100K (`u.data`; r_ui = the rating) and a synthetic clustered matrix
(20,000 users x 10,000 items, ~1M interactions, r_ui = 1). Both are split 80/20 at random by
interaction. For each solver (CG, exact Cholesky) both libraries fit the same objective with the
same factors / regularization / alpha / iterations and threads (`--threads`, default 2); the fit
time is the median of 3 runs, quality is full-ranking NDCG@10 and Recall@10 on the held-out 20 %.

`implicit` takes c_ui = alpha·r_ui (its matrix times alpha) while recforge follows the paper,
c_ui = 1 + alpha·r_ui; implicit is given the matrix 1 + alpha·r with alpha = 1, which is the same
objective, so the two must reach the same loss and similar quality.

    .venv/bin/python bench/bench_als.py [/work/shared/data/movielens-100k/u.data]
        [--threads 2 ...] [--repeats 3] [--omp-wait-policy PASSIVE] [--skip-synthetic]
        [--out bench/results/als.md]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from recforge.data.interactions import InteractionData
from recforge.evaluation.protocols import full_ranking
from recforge.training.recommender import Recommender

logger = logging.getLogger("bench_als")

FACTORS, REGULARIZATION, ALPHA = 64, 0.1, 1.0


def _data(user: np.ndarray, item: np.ndarray, value: np.ndarray, n_users: int, n_items: int) -> InteractionData:
    return InteractionData(
        user_idx=user.astype(np.int64), item_idx=item.astype(np.int64), value=value.astype(np.float32),
        timestamp=np.zeros(len(user), dtype=np.int64), n_users=n_users, n_items=n_items,
    )


def split(user, item, value, n_users, n_items, seed: int = 0) -> tuple[InteractionData, InteractionData]:
    """Random 80/20 split of the interactions."""
    test = np.random.default_rng(seed).random(len(user)) < 0.2
    return (
        _data(user[~test], item[~test], value[~test], n_users, n_items),
        _data(user[test], item[test], value[test], n_users, n_items),
    )


def movielens(path: Path) -> tuple[InteractionData, InteractionData]:
    """u.data (user, item, rating, time; tab-separated) with contiguous indices."""
    raw = np.loadtxt(path, dtype=np.int64)
    _, user = np.unique(raw[:, 0], return_inverse=True)
    _, item = np.unique(raw[:, 1], return_inverse=True)
    return split(user, item, raw[:, 2].astype(np.float32), int(user.max()) + 1, int(item.max()) + 1)


def synthetic(n_users: int = 20_000, n_items: int = 10_000, per_user: int = 100, clusters: int = 20,
              seed: int = 0) -> tuple[InteractionData, InteractionData]:
    """Users and items in `clusters` groups; 80 % of a user's items come from its own group, chosen
    by a Zipf popularity, the rest uniformly. Duplicate pairs are dropped."""
    rng = np.random.default_rng(seed)
    n = n_users * per_user
    user = np.repeat(np.arange(n_users), per_user)
    size = n_items // clusters
    rank = np.minimum(rng.zipf(1.3, n) - 1, size - 1)  # popularity rank inside the group
    own = (user % clusters) * size + rank
    item = np.where(rng.random(n) < 0.8, own, rng.integers(0, n_items, n))
    key = np.unique(user * n_items + item)
    user, item = key // n_items, key % n_items
    return split(user, item, np.ones(len(user), np.float32), n_users, n_items)


def fit_recforge(train: InteractionData, iterations: int, use_cg: bool) -> tuple[float, np.ndarray, np.ndarray, float]:
    rec = Recommender(
        "als",
        {"factors": FACTORS, "regularization": REGULARIZATION, "alpha": ALPHA, "use_cg": use_cg},
        {"epochs": iterations, "device": "cpu", "seed": 0},
    )
    t0 = time.perf_counter()
    history = rec.fit(train)
    seconds = time.perf_counter() - t0
    net = rec.network
    return seconds, net.user.weight.numpy().copy(), net.item.weight.numpy().copy(), history.loss[-1]


def fit_implicit(train: InteractionData, iterations: int, use_cg: bool, threads: int):
    from implicit.cpu import _als
    from implicit.cpu.als import AlternatingLeastSquares

    r = sp.csr_matrix((train.value, (train.user_idx, train.item_idx)), shape=(train.n_users, train.n_items))
    r.sum_duplicates()
    cui = r.copy()
    cui.data = 1 + ALPHA * np.abs(cui.data)  # the paper's confidence, see the module docstring
    model = AlternatingLeastSquares(
        factors=FACTORS, regularization=REGULARIZATION, alpha=1.0, iterations=iterations,
        use_cg=use_cg, num_threads=threads, random_state=0,
    )
    t0 = time.perf_counter()
    with threadpool_limits(1, "blas"):  # implicit's own advice: its threads, single-threaded BLAS
        model.fit(cui, show_progress=False)
    seconds = time.perf_counter() - t0
    loss = _als.calculate_loss(cui, model.user_factors, model.item_factors, REGULARIZATION, num_threads=threads)
    return seconds, model.user_factors, model.item_factors, float(loss)


def quality(train: InteractionData, test: InteractionData, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))

    def score(user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return xt[user] @ yt.T  # (B, I)

    return full_ranking(score, train.csr, test, ks=(10,))


def measure(job: dict) -> dict:
    """One (data, solver, library) cell: an untimed warm-up fit, `repeats` timed fits, quality."""
    torch.set_num_threads(job["threads"])
    train, test = movielens(Path(job["udata"])) if job["data"] == "MovieLens-100K" else synthetic()
    use_cg = job["solver"] == "cg"
    if job["lib"] == "recforge":
        def fit(n: int):
            return fit_recforge(train, n, use_cg)
    else:
        def fit(n: int):
            return fit_implicit(train, n, use_cg, job["threads"])
    fit(1)  # a process's first sparse products pay a one-off warm-up (thread pools, kernels)
    times, load = [], [os.getloadavg()[0]]
    for _ in range(job["repeats"]):
        seconds, x, y, loss = fit(job["iterations"])
        times.append(seconds)
    load.append(os.getloadavg()[0])
    q = quality(train, test, x, y)
    shape = f"{train.n_users} users x {train.n_items} items, {len(train)} train / {len(test)} test"
    return {**job, "fit_s": statistics.median(times), "times": times, "loss": loss, "load": load,
            "shape": shape, "ndcg@10": q["ndcg@10"], "recall@10": q["recall@10"]}


def run(data: str, iterations: dict[bool, int], args: argparse.Namespace) -> list[dict]:
    """Every (solver, threads, library) cell of one dataset, each in a fresh process: two OpenMP
    runtimes (torch's and implicit's) in one process spin against each other on a small machine."""
    rows = []
    for use_cg, threads, lib in itertools.product((True, False), args.threads, ("recforge", "implicit")):
        job = {"data": data, "solver": "cg" if use_cg else "exact", "lib": lib,
               "iterations": iterations[use_cg], "threads": threads, "repeats": args.repeats,
               "udata": args.udata}
        env = {**os.environ, "OMP_WAIT_POLICY": args.omp_wait_policy} if args.omp_wait_policy else None
        out = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(job)], check=True, capture_output=True,
            text=True, env=env,
        ).stdout
        row = json.loads(out.strip().splitlines()[-1])
        logger.info("%s", {k: row[k] for k in ("data", "solver", "threads", "lib", "fit_s", "ndcg@10", "load")})
        rows.append(row)
    return rows


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def report(rows: list[dict], command: str, repeats: int, wait_policy: str) -> str:
    lines = [
        "# `als` vs `implicit` (issue #3)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}; torch {torch.__version__}, "
        "the same number of threads for both libraries (torch.set_num_threads / implicit num_threads, BLAS 1); "
        f"OMP_WAIT_POLICY={wait_policy or '(unset)'} for both; "
        "each cell in its own process after an untimed warm-up fit. `load` is the 1-minute load "
        "average before and after the timed runs: other jobs on the machine slow the cell down.",
        "",
        f"Objective: factors={FACTORS}, regularization={REGULARIZATION}, alpha={ALPHA}, "
        "c_ui = 1 + alpha·r_ui for both (implicit gets the matrix 1 + alpha·r with alpha=1). "
        f"Fit time = median of {repeats} runs (recforge: `Recommender.fit`, i.e. the fit loop "
        "with the per-epoch batch; implicit: `model.fit`). Quality: full ranking, random 80/20 split.",
        "",
    ]
    for name in dict.fromkeys(r["data"] for r in rows):
        shape = next(r["shape"] for r in rows if r["data"] == name)
        lines += [f"## {name} ({shape})", "",
                  "| solver | iterations | threads | library | fit s (median) | runs s | ratio to implicit | loss | NDCG@10 | Recall@10 | load |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for solver in ("cg", "exact"):
            for threads in dict.fromkeys(r["threads"] for r in rows):
                sel = {r["lib"]: r for r in rows
                       if r["data"] == name and r["solver"] == solver and r["threads"] == threads}
                base = sel["implicit"]["fit_s"]
                for lib in ("recforge", "implicit"):
                    r = sel[lib]
                    runs = ", ".join(f"{t:.2f}" for t in r["times"])
                    lines.append(
                        f"| {solver} | {r['iterations']} | {threads} | {lib} | {r['fit_s']:.3f} | {runs} | "
                        f"{r['fit_s'] / base:.2f}x | {r['loss']:.5f} | {r['ndcg@10']:.4f} | {r['recall@10']:.4f} | "
                        f"{r['load'][0]:.1f} / {r['load'][1]:.1f} |"
                    )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("udata", nargs="?", default="/work/shared/data/movielens-100k/u.data")
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench/results/als.md")
    parser.add_argument("--skip-synthetic", action="store_true")
    # idle OpenMP threads sleep instead of spinning: on a shared machine a spinning thread takes
    # the core its busy team-mate needs ("" keeps the runtime's default, active spinning)
    parser.add_argument("--omp-wait-policy", default="PASSIVE")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # JSON job: run one cell, print JSON
    args = parser.parse_args()
    if args.worker:
        logging.disable(logging.INFO)
        sys.stdout.write(json.dumps(measure(json.loads(args.worker))) + "\n")
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = run("MovieLens-100K", {True: 15, False: 15}, args)
    if not args.skip_synthetic:
        rows += run("synthetic", {True: 10, False: 3}, args)
    command = (f"cd /work/main && .venv/bin/python bench/bench_als.py {args.udata} "
               f"--threads {' '.join(map(str, args.threads))} --repeats {args.repeats}"
               + (" --skip-synthetic" if args.skip_synthetic else "")
               + f" --omp-wait-policy '{args.omp_wait_policy}'")
    text = report(rows, command, args.repeats, args.omp_wait_policy)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
