"""CTR on the synthetic shop's impression log: AUC / log loss per family, samples/s, peak RSS,
and the same models in DeepCTR-Torch on the same rows, fields, dims, epochs and batch size.

    .venv/bin/python bench/bench_ctr.py --rows 1000000 10000000 --deepctr /tmp/deepctr/bin/python

Each run is a fresh child process (peak RSS: its VmHWM). The impression log is generated once
per size with the `large` preset (parquet in a temp folder), split by time 80/10/10; our models read
it back as a `RowSource` of parquet row groups encoded on the fly, so memory is bounded by a row
group, not by the log (the test rows are scored by row group as well). DeepCTR-Torch (installed into its own venv with torch pinned to the same
version) gets the same encoded fields as per-field label columns in memory, its own loader.
Writes bench/results/ctr.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# single-slot fields only, so DeepCTR-Torch gets exactly the same columns (one SparseFeat each)
FIELDS = [
    {"name": "user_id", "kind": "hashed", "column": "user_id", "buckets": 65536},
    {"name": "item_id", "kind": "hashed", "column": "item_id", "buckets": 16384},
    {"name": "age_group", "kind": "categorical", "column": "user_age_group"},
    {"name": "country", "kind": "categorical", "column": "user_country"},
    {"name": "category", "kind": "categorical", "column": "item_category"},
    {"name": "brand", "kind": "categorical", "column": "item_brand"},
    {"name": "price", "kind": "bucketised", "column": "item_price", "buckets": 10},
    {"name": "page", "kind": "categorical", "column": "page"},
    {"name": "device", "kind": "categorical", "column": "device"},
    {"name": "position", "kind": "categorical", "column": "position"},
    {"name": "hour", "kind": "context", "column": "timestamp", "part": "hour"},
    {"name": "weekday", "kind": "context", "column": "timestamp", "part": "weekday"},
]
FAMILIES = {  # ours -> (config, DeepCTR-Torch model and kwargs)
    "fm": ({"dim": 16}, "DeepFM", {"dnn_hidden_units": ()}),
    "deepfm": ({"dim": 16, "layers": [128, 64], "dropout": 0.0}, "DeepFM", {"dnn_hidden_units": (128, 64)}),
    "wide_deep": ({"dim": 16, "layers": [128, 64], "dropout": 0.0}, "WDL", {"dnn_hidden_units": (128, 64)}),
    "lr": ({}, None, {}),
}
EPOCHS, BATCH, LR = 1, 4096, 0.002


def make_log(rows: int, folder: Path) -> dict[str, str]:
    """The shop's impressions with attributes, split by time, as three parquet files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recforge.data.synthetic import ShopConfig, generate_shop
    from recforge.features.impressions import CTRData, impression_table, split_by_time

    shop = generate_shop(ShopConfig(preset="large", with_media=False, impression_rows=rows))
    table = impression_table(shop.impressions, shop.users, shop.items, {f["column"] for f in FIELDS})
    parts = split_by_time(table, CTRData(fields={"fields": FIELDS}, valid_fraction=0.1, test_fraction=0.1))
    out = {}
    for name, part in zip(("train", "valid", "test"), parts, strict=True):
        out[name] = str(folder / f"{name}.parquet")
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), out[name], row_group_size=500_000)
    return out


def ours(paths: dict[str, str], family: str, threads: int) -> dict:
    import pyarrow.parquet as pq
    import torch

    from recforge.features import FeatureEncoder
    from recforge.training.ctr import CTRModel, encode_rows

    torch.set_num_threads(threads)
    columns = sorted({f["column"] for f in FIELDS} | {"label"})
    first = pq.ParquetFile(paths["train"]).read_row_group(0, columns=columns).to_pandas()
    encoder = FeatureEncoder({"fields": FIELDS}).fit(first, table="train")  # vocabularies of row group 0

    def source(split: str):
        def chunks():
            f = pq.ParquetFile(paths[split])
            for g in range(f.num_row_groups):
                yield encode_rows(encoder, f.read_row_group(g, columns=columns).to_pandas(), table=split)

        return chunks

    config, _, _ = FAMILIES[family]
    model = CTRModel(family, config, {"epochs": EPOCHS, "batch_size": BATCH, "lr": LR, "device": "cpu", "seed": 0,
                                      "num_threads": threads})  # fmt: skip
    t = time.perf_counter()
    model.fit(source("train"), None, encoder)
    seconds = time.perf_counter() - t
    m = model.evaluate(source("test"))  # streamed too: memory bounded by a row group
    n = sum(model.history.samples)
    return {"impl": "recforge", "family": family, "auc": m["auc"], "logloss": m["logloss"], "train_rows": n,
            "fit_seconds": seconds, "samples_per_s": n / sum(model.history.seconds), "n_test": m["n"]}  # fmt: skip


def deepctr(paths: dict[str, str], family: str, threads: int) -> dict:
    import numpy as np
    import pandas as pd
    import torch
    from deepctr_torch.inputs import SparseFeat, get_feature_names
    from deepctr_torch import models
    from sklearn.metrics import log_loss, roc_auc_score

    from recforge.features import FeatureEncoder

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    columns = sorted({f["column"] for f in FIELDS} | {"label"})
    train = pd.read_parquet(paths["train"], columns=columns)
    test = pd.read_parquet(paths["test"], columns=columns)
    import pyarrow.parquet as pq

    first = pq.ParquetFile(paths["train"]).read_row_group(0, columns=columns).to_pandas()
    encoder = FeatureEncoder({"fields": FIELDS}).fit(first, table="train")
    state = encoder.state()["fitted"]

    def label_columns(frame):  # the same encoded fields, as per-field local ids
        batch = encoder.encode(frame)
        out = {}
        for f in FIELDS:
            s = batch.slots[f["name"]]
            out[f["name"]] = (batch.index[:, s.start] - state[f["name"]]["offset"]).numpy()
        return out

    x_train, x_test = label_columns(train), label_columns(test)
    feats = [SparseFeat(f["name"], vocabulary_size=int(state[f["name"]]["size"]), embedding_dim=16) for f in FIELDS]
    _, name, kwargs = FAMILIES[family]
    model = getattr(models, name)(feats, feats, task="binary", device="cpu", l2_reg_linear=0, l2_reg_embedding=0,
                                  init_std=0.01, seed=0, **kwargs)  # fmt: skip
    model.compile(torch.optim.Adam(model.parameters(), lr=LR), "binary_crossentropy", metrics=[])
    names = get_feature_names(feats)
    t = time.perf_counter()
    model.fit({k: x_train[k] for k in names}, train["label"].to_numpy(np.float32), batch_size=BATCH, epochs=EPOCHS,
              verbose=0, shuffle=True)  # fmt: skip
    seconds = time.perf_counter() - t
    p = model.predict({k: x_test[k] for k in names}, batch_size=65536).reshape(-1)
    y = test["label"].to_numpy()
    return {"impl": "deepctr-torch", "family": family, "auc": float(roc_auc_score(y, p)),
            "logloss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7))), "train_rows": len(train) * EPOCHS,
            "fit_seconds": seconds, "samples_per_s": len(train) * EPOCHS / seconds, "n_test": len(y)}  # fmt: skip


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not getrusage's ru_maxrss: Linux carries the
    forking parent's high-water mark across exec into it (the parent holds the whole log)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> None:
    paths = json.loads(args.paths)
    fn = ours if args.impl == "recforge" else deepctr
    out = fn(paths, args.family, args.threads)
    out["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(out), flush=True)


def run_child(python: str, impl: str, family: str, paths: dict, threads: int) -> dict:
    cmd = [python, __file__, "--child", "--impl", impl, "--family", family, "--paths", json.dumps(paths),
           "--threads", str(threads)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((l for l in res.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{impl} {family} failed:\n{res.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--deepctr", help="python of a venv with deepctr-torch (torch pinned to ours)")
    ap.add_argument("--deepctr-rows", type=int, help="the size at which to compare against DeepCTR-Torch (default: the first)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--impl"), ap.add_argument("--family"), ap.add_argument("--paths")
    args = ap.parse_args()
    if args.child:
        return child(args)
    results = []
    compare_at = args.deepctr_rows or args.rows[0]
    for rows in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            paths = make_log(rows, Path(tmp))
            print(f"{rows:,} impressions generated and split in {time.perf_counter() - t:.0f} s", flush=True)
            for family in args.families:
                r = run_child(sys.executable, "recforge", family, paths, args.threads)
                results.append({"rows": rows, **r})
                print(json.dumps(results[-1]), flush=True)
                if args.deepctr and rows == compare_at and FAMILIES[family][1]:
                    r = run_child(args.deepctr, "deepctr-torch", family, paths, args.threads)
                    results.append({"rows": rows, **r})
                    print(json.dumps(results[-1]), flush=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads"
    lines = ["# CTR on the shop's impression log", "",
             f"`.venv/bin/python bench/bench_ctr.py --rows {' '.join(map(str, args.rows))}"
             + (f" --deepctr {args.deepctr}`" if args.deepctr else "`") + f" on {machine}.",
             f"Time split 80/10/10, {EPOCHS} epoch(s), batch {BATCH}, Adam lr {LR}, embedding dim 16, towers [128, 64], "
             "no dropout or L2; the same 12 single-slot fields for both implementations (bench/bench_ctr.py FIELDS).", "",
             "| rows | impl | family | test AUC | test log loss | samples/s | fit s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        lines.append(f"| {r['rows']:,} | {r['impl']} | {r['family']} | {r['auc']:.4f} | {r['logloss']:.4f} | "
                     f"{r['samples_per_s']:,.0f} | {r['fit_seconds']:.1f} | {r['peak_rss_mb']:,.0f} |")  # fmt: skip
    out = ROOT / "bench/results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ctr.md").write_text("\n".join(lines) + "\n")
    (out / "ctr.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
