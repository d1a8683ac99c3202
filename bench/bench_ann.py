"""faiss (flat, IVF, HNSW through `recforge.encoders.ann.AnnIndex`) against the random-hyperplane
LSH recforge used before (`bench/lsh_baseline.py`), side by side on one synthetic catalogue.

Catalogue: `--n-items` vectors of `--dim` float32 drawn from a Gaussian mixture shaped like an
item-embedding table: `--centres` centres ~ N(0, I); cluster sizes ∝ rank^-0.7 (a few large
categories, a long tail); a point is its centre + s_c · B_c z + 0.3 · N(0, I), with B_c a random
(dim, 8) basis per cluster (entries N(0, 1/8)), z ~ N(0, I_8) and a spread s_c ~ U(0.3, 0.8) per
cluster, so each cluster is a noisy 8-d patch (embedding tables have a low intrinsic dimension).
Queries: `--queries` further points of the same mixture, not in the catalogue.

For each metric (cosine: similar items; ip: user · item scores) the exact flat search is the
ground truth; recall@k is |approx top-k ∩ exact top-k| / k averaged over queries. Each built index
runs in its OWN subprocess (this script with `--worker`), so ru_maxrss is that index's peak; the
search parameters (IVF nprobe, HNSW ef_search) are swept on the one built index, as they change no
memory. A `data` worker that only loads the catalogue and the queries gives the RSS of the data
(plus the imports) alone. Queries/s: one batched `AnnIndex.search` over all queries (faiss on
`faiss.omp_get_max_threads()` threads); the LSH, which is cosine only and materialises every
(query, candidate) pair, runs on the first `--lsh-queries` queries in batches of `--lsh-batch`.

    OMP_WAIT_POLICY=PASSIVE flock /tmp/briefs/bench.lock .venv/bin/python bench/bench_ann.py \\
        [--n-items 1000000] [--dim 64] [--queries 10000] [--metrics cosine ip] [--out bench/results/ann]
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
import tempfile
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("bench_ann")

IVF_NPROBE = [4, 16, 64]
HNSW_EF_SEARCH = [32, 128, 512]
LSH_SETTINGS = [(12, 8), (16, 16)]  # (n_bits, n_tables); (12, 8) was recforge's default


def make_catalogue(n: int, dim: int, n_centres: int, seed: int, rank: int = 8) -> np.ndarray:
    """(n, dim) float32 points of the clustered mixture described in the module docstring."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_centres, dim)).astype(np.float32)
    sizes = 1.0 / np.arange(1, n_centres + 1) ** 0.7
    labels = rng.choice(n_centres, size=n, p=sizes / sizes.sum())
    spread = rng.uniform(0.3, 0.8, n_centres).astype(np.float32)
    bases = (rng.standard_normal((n_centres, dim, rank)) / np.sqrt(rank)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # (chunk, dim, rank) gathers stay ~200 MB
        lab = labels[start:start + 100_000]
        z = rng.standard_normal((len(lab), rank)).astype(np.float32)
        local = np.einsum("ndr,nr->nd", bases[lab], z)  # (chunk, dim)
        noise = rng.standard_normal((len(lab), dim)).astype(np.float32)
        out[start:start + len(lab)] = centres[lab] + spread[lab, None] * local + 0.3 * noise
    return out


def _rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_worker(spec: dict, workdir: Path) -> dict:
    """One configuration: load the data, build the index, search, measure; the result as a dict."""
    import faiss
    import torch

    from recforge.encoders.ann import AnnConfig, AnnIndex, recall_at_k

    items = np.load(workdir / "items.npy")
    queries = np.load(workdir / "queries.npy")
    k = spec["k"]
    res = {**spec, "faiss_threads": faiss.omp_get_max_threads(), "torch_threads": torch.get_num_threads(),
           "rss_after_data_mb": _rss_mb()}
    if spec["kind"] == "data":
        res["peak_rss_mb"] = _peak_mb()
        return res
    metric = spec.get("metric", "cosine")
    truth_path = workdir / f"truth_{metric}.npy"
    rows: list[dict] = []
    if spec["kind"] == "lsh":
        sys.path.insert(0, str(Path(__file__).parent))
        from lsh_baseline import RandomHyperplaneLSH

        q = queries[:spec["n_queries"]]
        t0 = time.perf_counter()
        lsh = RandomHyperplaneLSH(items, n_bits=spec["n_bits"], n_tables=spec["n_tables"], seed=0)
        res["build_s"] = time.perf_counter() - t0
        lsh.query(q[:spec["batch"]], k)  # warm-up, as for faiss
        t0 = time.perf_counter()
        idx = np.concatenate([lsh.query(q[s:s + spec["batch"]], k)[0] for s in range(0, len(q), spec["batch"])])
        seconds = time.perf_counter() - t0
        truth = np.load(truth_path)[:len(q)]
        rows.append({"setting": f"bits={spec['n_bits']}, tables={spec['n_tables']}, multiprobe",
                     "queries": len(q), "search_s": seconds, "qps": len(q) / seconds,
                     "recall": recall_at_k(idx, truth)})
    else:
        config = AnnConfig(kind=spec["kind"], metric=metric, seed=0)
        t0 = time.perf_counter()
        ann = AnnIndex(items, config, what="synthetic catalogue")
        res["build_s"] = time.perf_counter() - t0
        if spec["kind"] == "ivf":
            res["nlist"] = ann.nlist
            sweep = [("nprobe", v) for v in IVF_NPROBE]
        elif spec["kind"] == "hnsw":
            sweep = [("ef_search", v) for v in HNSW_EF_SEARCH]
            res["hnsw_m"], res["ef_construction"] = config.hnsw_m, config.ef_construction
        else:
            sweep = [("exact", None)]
        for name, value in sweep:
            if name == "nprobe":
                ann.index.nprobe = value
            elif name == "ef_search":
                ann.index.hnsw.efSearch = value
            ann.search(queries[:32], k)  # warm-up: first-call allocations stay out of the timing
            t0 = time.perf_counter()
            idx, _ = ann.search(queries, k)
            seconds = time.perf_counter() - t0
            if spec["kind"] == "flat":
                np.save(truth_path, idx)
                recall = 1.0
            else:
                recall = recall_at_k(idx, np.load(truth_path))
            rows.append({"setting": name if value is None else f"{name}={value}", "queries": len(queries),
                         "search_s": seconds, "qps": len(queries) / seconds, "recall": recall})
            logger.info("%s %s %s: recall@%d %.4f, %.0f q/s", spec["kind"], metric, rows[-1]["setting"], k,
                        recall, rows[-1]["qps"])
    res["rows"] = rows
    res["peak_rss_mb"] = _peak_mb()
    return res


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    return {"cpu": model, "nproc": os.cpu_count(), "arch": platform.machine(), "ram_gb": round(mem / 2**20, 1),
            "loadavg_at_start": os.getloadavg()}


def specs(args: argparse.Namespace) -> list[dict]:
    out: list[dict] = [{"kind": "data"}]
    for metric in args.metrics:
        out += [{"kind": "flat", "metric": metric}, {"kind": "ivf", "metric": metric},
                {"kind": "hnsw", "metric": metric}]
        if metric == "cosine":
            out += [{"kind": "lsh", "metric": "cosine", "n_bits": b, "n_tables": t,
                     "n_queries": min(args.lsh_queries, args.queries), "batch": args.lsh_batch}
                    for b, t in LSH_SETTINGS]
    return [{**s, "k": args.k} for s in out]


def table(results: list[dict], k: int) -> str:
    lines = [f"| metric | index | setting | queries | recall@{k} | queries/s | build s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r["kind"] == "data":
            continue
        label = {"flat": "faiss flat (exact)", "ivf": f"faiss IVF (nlist={r.get('nlist')})",
                 "hnsw": f"faiss HNSW (M={r.get('hnsw_m')}, efC={r.get('ef_construction')})",
                 "lsh": "recforge LSH (old)"}[r["kind"]]
        for row in r["rows"]:
            lines.append(f"| {r['metric']} | {label} | {row['setting']} | {row['queries']:,} | {row['recall']:.4f} | "
                         f"{row['qps']:,.0f} | {r['build_s']:.1f} | {r['peak_rss_mb']:,.0f} |")
    return "\n".join(lines)


def write_report(args: argparse.Namespace, results: list[dict], info: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**info, "results": results}, indent=2))
    data = next((r for r in results if r["kind"] == "data"), None)
    m = info["machine"]
    md = [
        "# ANN retrieval: faiss against the old LSH", "",
        f"    {info['command']}", "",
        f"Machine: {m['cpu']}, {m['nproc']} cores ({m['arch']}), {m['ram_gb']} GB RAM, no GPU; load average at "
        f"start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}. faiss {info['faiss_version']} "
        f"({info['faiss_compile_options'].strip()}), "
        f"faiss.omp_get_max_threads() = {info['faiss_threads']}.", "",
        f"Catalogue: {args.n_items:,} x {args.dim} float32, {args.centres:,}-centre clustered mixture "
        f"(see bench/bench_ann.py), seed {args.seed}; {args.queries:,} held-out queries; k = {args.k}. "
        f"Wall time {info.get('wall_s', 0):.0f} s.", "",
    ]
    if data:
        md += [f"RSS of the data alone (imports + catalogue + queries, the `data` worker): "
               f"{data['peak_rss_mb']:,.0f} MB peak.", ""]
    md += [table(results, args.k), "",
           "- recall@k: against the exact flat search of the same metric, over the queries of the row.",
           "- One subprocess per built index: its build seconds and peak RSS (ru_maxrss, data included) "
           "hold for every search setting of its rows, which are swept on that one index.",
           "- queries/s: faiss, one batched `AnnIndex.search` of all queries after a 32-query warm-up, on "
           f"{info['faiss_threads']} OpenMP threads. The old LSH (numpy, essentially one thread) runs on "
           f"the first {args.lsh_queries:,} queries in batches of {args.lsh_batch}, since each batch "
           "materialises every (query, candidate) pair and both their vectors; its peak RSS covers build "
           "and queries (the build's (tables, items, bits) int64 sign codes alone are tables x bits x 8 "
           "bytes per item: 2 GiB at 16 x 16 on 1M items). It hashes angles, so it has no ip rows.",
           ""]
    out.with_suffix(".md").write_text("\n".join(md))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--centres", type=int, default=4096)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--metrics", nargs="+", choices=["cosine", "ip"], default=["cosine", "ip"])
    parser.add_argument("--lsh-queries", type=int, default=1000)
    parser.add_argument("--lsh-batch", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/ann"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a JSON spec: run one configuration
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its probing of per-ISA modules
    if args.worker:
        spec = json.loads(args.worker)
        result = run_worker(spec, args.workdir)
        (args.workdir / f"result_{spec['i']}.json").write_text(json.dumps(result))
        return
    for name, value in [("--n-items", args.n_items), ("--dim", args.dim), ("--queries", args.queries),
                        ("--centres", args.centres), ("--k", args.k)]:
        if value < 1:
            parser.error(f"{name} must be >= 1, got {value}")
    if args.centres > args.n_items:
        parser.error(f"--centres ({args.centres}) must not exceed --n-items ({args.n_items})")
    import faiss

    start = time.perf_counter()
    info = {"command": " ".join(["OMP_WAIT_POLICY=" + os.environ.get("OMP_WAIT_POLICY", "(unset)"),
                                 ".venv/bin/python", *sys.argv]),
            "machine": machine(), "faiss_version": faiss.__version__,
            "faiss_compile_options": faiss.get_compile_options(), "faiss_threads": faiss.omp_get_max_threads()}
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_ann_") as tmp:
        workdir = Path(tmp)
        points = make_catalogue(args.n_items + args.queries, args.dim, args.centres, args.seed)
        np.save(workdir / "items.npy", points[:args.n_items])
        np.save(workdir / "queries.npy", points[args.n_items:])
        del points
        logger.info("catalogue %d x %d and %d queries in %s (%.0f s)", args.n_items, args.dim, args.queries, tmp,
                    time.perf_counter() - start)
        for i, spec in enumerate(specs(args)):
            spec["i"] = i
            logger.info("worker %s", spec)
            subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec), "--workdir", tmp], check=True)
            results.append(json.loads((workdir / f"result_{i}.json").read_text()))
            info["wall_s"] = time.perf_counter() - start
            write_report(args, results, info, args.out)  # after every worker: a cut-off run keeps its figures
    logger.info("wrote %s.json and %s.md", args.out, args.out)


if __name__ == "__main__":
    main()
