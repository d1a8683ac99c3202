"""Criteo ingestion: wall time, rows/s and peak RSS of `convert_criteo` as the file grows.

Generates a synthetic file in the Kaggle `train.txt` layout (tab-separated, no header; 13
integer counts with the sample's missing rates and heavy tails, 26 hex categoricals drawn from
Zipf-like vocabularies of realistic sizes, some fields mostly empty), converts it in a fresh child
process per run and reads the child's peak RSS from getrusage. Peak RSS should stay flat as rows
grow: memory is bounded by `chunk_rows`, not by the file.

    .venv/bin/python bench/bench_criteo.py --rows 1000000 5000000 --sample ../shared/data/criteo-sample/criteo_sample.txt

Measured (`--rows 1000000 3000000`, chunk_rows 250,000; 2-core AMD EPYC shared with other jobs):
1M rows (230 MiB) in 6.0 s, 167k rows/s, peak RSS 617 MiB; 3M rows (689 MiB) in 11.8 s, 254k
rows/s, peak RSS 631 MiB; 428 MiB of each is the interpreter after imports. Parquet is ~20% of the
text. At these rates the 45M-row train.txt takes 3-5 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from recforge.data.criteo import COLUMNS  # noqa: E402

# Missing rates of I1..I13 and C1..C26 as in the 200-row Criteo sample (rounded).
INT_MISSING = [0.45, 0.0, 0.17, 0.18, 0.03, 0.25, 0.05, 0.0, 0.05, 0.45, 0.05, 0.78, 0.18]
CAT_MISSING = [0, 0, 0.04, 0.04, 0, 0.16, 0, 0, 0, 0, 0, 0.04, 0, 0, 0, 0.04, 0, 0, 0.41, 0.41, 0.04, 0.8, 0, 0.04, 0.41, 0.41]
# Vocabulary sizes per field, Criteo-like (a few tiny fields, several huge ones; capped at 1M).
CAT_VOCAB = [
    1460, 583, 1_000_000, 800_000, 305, 24, 12517, 633, 3, 93145, 5683, 1_000_000, 3194, 27, 14992, 1_000_000, 10,
    5652, 2173, 4, 1_000_000, 18, 15, 286181, 105, 142572,
]  # fmt: skip
GEN_CHUNK = 250_000


def generate_tsv(path: Path, rows: int, seed: int = 0) -> None:
    """A synthetic `train.txt` of `rows` lines, written chunk by chunk."""
    rng = np.random.default_rng(seed)
    vocabs = [pa.array([f"{v:08x}" for v in rng.integers(0, 2**32, size, dtype=np.uint64)]) for size in CAT_VOCAB]
    opts = pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    schema = pa.schema([(c, pa.int64() if c != "label" and c[0] == "I" else pa.string()) for c in COLUMNS])
    schema = schema.set(0, pa.field("label", pa.int8()))
    with pa_csv.CSVWriter(path, schema, write_options=opts) as writer:
        for start in range(0, rows, GEN_CHUNK):
            n = min(GEN_CHUNK, rows - start)
            cols: list[pa.Array] = [pa.array((rng.random(n) < 0.26).astype(np.int8))]
            for miss in INT_MISSING:
                vals = np.floor(rng.lognormal(1.5, 2.0, n)).astype(np.int64) - (rng.random(n) < 0.02)
                cols.append(pa.array(vals, mask=rng.random(n) < miss))
            for miss, vocab in zip(CAT_MISSING, vocabs, strict=True):
                idx = np.minimum(rng.zipf(1.3, n) - 1, len(vocab) - 1)
                vals = vocab.take(pa.array(idx))
                cols.append(pa.compute.if_else(pa.array(rng.random(n) < miss), pa.scalar(None, pa.string()), vals))
            writer.write_table(pa.table(cols, schema=schema))


def measure(raw: Path, out: Path, chunk_rows: int) -> dict:
    """Convert in a child process; the child reports its own wall time and peak RSS."""
    probe = (
        "import json,resource,sys,time\n"
        "from recforge.data.criteo import convert_criteo\n"
        "base=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024\n"
        "t=time.perf_counter()\n"
        f"r=convert_criteo({str(raw)!r},{str(out)!r},chunk_rows={chunk_rows})\n"
        "w=time.perf_counter()-t\n"
        "print(json.dumps({'rows':r.rows,'wall_s':w,'peak_rss_mb':resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024,"
        "'import_rss_mb':base}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    res = json.loads(done.stdout.strip().splitlines()[-1])
    res["rows_per_s"] = res["rows"] / res["wall_s"]
    res["input_mb"] = raw.stat().st_size / 2**20
    res["parquet_mb"] = out.stat().st_size / 2**20
    return res


def machine() -> str:
    model = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor(),
    )
    return f"nproc {os.cpu_count()}, {model}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    ap.add_argument("--chunk-rows", type=int, default=250_000)
    ap.add_argument("--sample", type=Path, default=None, help="also convert this real file (e.g. the Criteo sample)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    results = []
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="bench_criteo_") as tmp:
        tmp_dir = Path(tmp)
        inputs: list[tuple[str, Path]] = []
        if args.sample is not None:
            inputs.append(("sample", args.sample))
        for n in args.rows:
            raw = tmp_dir / f"train_{n}.txt"
            t = time.perf_counter()
            generate_tsv(raw, n)
            print(f"generated {n} rows ({raw.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.1f} s")
            inputs.append((f"synthetic {n:,}", raw))
        for name, raw in inputs:
            res = measure(raw, tmp_dir / "criteo.parquet", args.chunk_rows)
            res.update(input=name)
            results.append(res)
            print(
                f"{name:>20} | rows {res['rows']:>10,} | {res['wall_s']:7.2f} s | "
                f"{res['rows_per_s']:>10,.0f} rows/s | peak RSS {res['peak_rss_mb']:6.0f} MiB "
                f"(after import {res['import_rss_mb']:.0f}) | {res['input_mb']:.0f} -> {res['parquet_mb']:.0f} MiB"
            )
            if raw.parent == tmp_dir:
                raw.unlink()
    print(f"machine after: {machine()}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "chunk_rows": args.chunk_rows, "results": results}, indent=1))


if __name__ == "__main__":
    main()
