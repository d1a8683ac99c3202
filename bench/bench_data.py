"""Wall time and peak memory of ingestion -> validation -> splitting for a synthetic preset.

Runs `kedro run` in a throw-away copy of the project (so the repo's data/ is untouched), one
pipeline at a time, and reads each child's peak RSS from getrusage.

    .venv/bin/python bench/bench_data.py --preset default
    .venv/bin/python bench/bench_data.py --preset large
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def copy_project(dest: Path, preset: str) -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    for rel in files.stdout.splitlines():
        if rel.startswith("data/") and not rel.endswith(".gitkeep"):
            continue
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    params = yaml.safe_load((ROOT / "conf/base/parameters_ingestion.yml").read_text())
    params["ingestion"]["synthetic"]["preset"] = preset
    (dest / "conf/local").mkdir(parents=True, exist_ok=True)
    (dest / "conf/local/parameters_ingestion.yml").write_text(yaml.safe_dump(params))


def peak_rss_mb_of(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Run `cmd` in a fresh process whose only child is it, so RUSAGE_CHILDREN is its peak."""
    probe = (
        "import resource,subprocess,sys,time;t=time.perf_counter();"
        f"r=subprocess.run({cmd!r},cwd={str(cwd)!r});"
        "w=time.perf_counter()-t;m=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024;"
        "print(w,m);sys.exit(r.returncode)"
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    wall, rss = out.stdout.strip().splitlines()[-1].split()
    return float(wall), float(rss)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="default", choices=["tiny", "default", "large"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proj = Path(tmp)
        copy_project(proj, args.preset)
        rows = {}
        for pipeline in ("ingestion", "validation", "splitting"):
            wall, rss = peak_rss_mb_of([str(BIN / "kedro"), "run", "--pipelines", pipeline], proj)
            rows[pipeline] = {"wall_s": round(wall, 1), "peak_rss_mb": round(rss)}
        summary = json.loads((proj / "data/08_reporting/split_summary.json").read_text())
        import pandas as pd

        n = len(pd.read_parquet(proj / "data/03_primary/interactions.parquet"))
    result = {
        "preset": args.preset,
        "interactions": n,
        "train": summary["splits"]["train"]["interactions"],
        "pipelines": rows,
        "total_wall_s": round(sum(r["wall_s"] for r in rows.values()), 1),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
