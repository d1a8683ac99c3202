"""Training speed and memory of the content and hybrid families (issue #12) on a big shop.

    .venv/bin/python bench/bench_content_speed.py --preset large --epochs 2

Generates the shop (`large`: 40,000 users x 8,000 items, > 1M interactions, with its photos and
sounds), splits it in time (80/10/10), and trains each family with its `conf/base` parameters for
`--epochs` epochs (no early stopping: speed, not quality; the quality figures come from the
default `kedro run`) in a fresh process, so each peak RSS is the family's own. Content comes in
the way the training pipeline hands it over (`training.inputs.item_side`): the items table for
the text families, the media for deep_content_audio, and for the vector-table families
stand-ins of the encoders' tables (64-d noisy read-outs of the shop's hidden factors — the real
encoders would add their own pretraining time, see "Pretraining encoders"). deep_content_audio
fits its own WMF factors (`pretrain: false`), as it needs no trained als then.
Writes bench/results/content_speed_<preset>.{md,json} (`--families` subsets add their names).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

FAMILIES = ("popularity", "item_knn", "bpr", "vbpr", "hybrid", "content2vec", "text_cnn", "cdssm", "mv_dnn",
            "tag_attention_cnn", "deep_content_audio")  # fmt: skip
TABLES = ("image", "text", "audio", "prod2vec", "meta_prod2vec", "content2vec")


def prepare(preset: str, work: Path) -> dict:
    """The shop, its temporal split and the stand-in tables, written to `work` for the workers."""
    from recforge.data.filters import filter_interactions
    from recforge.data.splits import SplitConfig, split_interactions
    from recforge.data.synthetic import ShopConfig, generate_shop
    from recforge.encoders.vectors import vector_table

    start = time.perf_counter()
    shop = generate_shop(ShopConfig(preset=preset, impression_rows=0))
    config = SplitConfig(strategy="temporal", valid_fraction=0.1, test_fraction=0.1)
    s = split_interactions(filter_interactions(shop.interactions, config), None, config)
    work.mkdir(parents=True, exist_ok=True)
    s.train.to_parquet(work / "train.parquet")
    s.user_map.to_frame().to_parquet(work / "user_map.parquet")
    s.item_map.to_frame().to_parquet(work / "item_map.parquet")
    shop.items.to_parquet(work / "items.parquet")
    media = work / "media"
    media.mkdir(exist_ok=True)
    for key, data in shop.media.items():
        (media / key).parent.mkdir(parents=True, exist_ok=True)
        (media / key).write_bytes(data)
    truth = shop.ground_truth_items
    factors = truth[[c for c in truth.columns if c.startswith("f")]].to_numpy(np.float32)
    rng = np.random.default_rng(0)
    for name in TABLES:
        vectors = factors @ rng.normal(size=(factors.shape[1], 64)) + 0.3 * rng.normal(size=(len(factors), 64))
        vector_table(truth["item_id"].to_numpy(), vectors).to_parquet(work / f"{name}.parquet")
    return {"n_users": len(s.user_map), "n_items": len(s.item_map), "n_train": len(s.train),
            "prepare_s": time.perf_counter() - start}  # fmt: skip


def worker(family: str, work: Path, epochs: int) -> dict:
    """Fit one family as the training node would, report its fit time and this process's peak RSS."""
    import torch

    from recforge.data.interactions import InteractionData
    from recforge.models.registry import get_family
    from recforge.pipelines.training.pipeline import ITEM_VECTORS, upstream
    from recforge.training.inputs import item_side
    from recforge.training.recommender import Recommender

    params = yaml.safe_load((ROOT / "conf/base/parameters_training.yml").read_text())[family]
    model = dict(params["model"])
    if family == "deep_content_audio":
        model["pretrain"] = False  # its own WMF factors: no trained als needed
    training = {**params["training"], "epochs": epochs, "early_stopping_metric": None, "device": "auto",
                "num_threads": 2}  # fmt: skip
    train_frame = pd.read_parquet(work / "train.parquet")
    user_map, item_map = pd.read_parquet(work / "user_map.parquet"), pd.read_parquet(work / "item_map.parquet")
    items = pd.read_parquet(work / "items.parquet")
    media_root = work / "media"
    media = {str(p.relative_to(media_root)): p.read_bytes for p in media_root.rglob("*") if p.is_file()}
    datasets = {"items": items, "media": media, **{f"{t}.vectors": pd.read_parquet(work / f"{t}.parquet") for t in TABLES}}
    fam = get_family(family)
    rec = Recommender(family, model, training)
    names = [d for k, d in upstream(family).items() if not k.endswith("_model")]
    side, _ = item_side(fam, rec.config, [datasets[d] for d in names], item_map, ITEM_VECTORS.get(family, ()))
    train = InteractionData.from_frame(train_frame, len(user_map), len(item_map), name="train")
    torch.manual_seed(0)
    start = time.perf_counter()
    rec.fit(train, item_vectors=side)
    fit_s = time.perf_counter() - start
    h = rec.history.to_dict() if rec.history is not None else {}
    return {
        "family": family, "fit_s": fit_s, "epochs": len(h.get("loss", [])),
        "epoch_s": float(np.median(h["seconds"])) if h.get("seconds") else None,
        "samples_per_s": float(np.median(h["samples_per_s"])) if h.get("samples_per_s") else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="large")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--families", nargs="*", default=list(FAMILIES))
    ap.add_argument("--work", type=Path, default=Path("/tmp/recforge_content_speed"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results")
    ap.add_argument("--worker")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.work, args.epochs)))
        return
    data = prepare(args.preset, args.work)
    print(json.dumps(data), flush=True)
    rows = []
    for family in args.families:
        cmd = [sys.executable, __file__, "--worker", family, "--work", str(args.work), "--epochs", str(args.epochs)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            rows.append({"family": family, "error": out.stderr.strip().splitlines()[-1]})
        else:
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    machine = f"{platform.machine()}, {platform.python_version()}, 2 torch threads"
    lines = [f"# Content families on the `{args.preset}` shop: {data['n_users']:,} users x {data['n_items']:,} items, "
             f"{data['n_train']:,} train interactions; {args.epochs} epochs ({machine})", "",
             "| family | fit s | s / epoch | samples/s | peak RSS MB |", "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['family']} | failed: {r['error']} | | | |")
            continue
        fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
        lines.append(f"| {r['family']} | {r['fit_s']:.1f} | {fmt(r['epoch_s'], '.1f')} | "
                     f"{fmt(r['samples_per_s'], ',.0f')} | {r['peak_rss_mb']:,.0f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"content_speed_{args.preset}" + ("" if args.families == list(FAMILIES) else "_" + "_".join(args.families))
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    (args.out / f"{name}.json").write_text(json.dumps({"data": data, "rows": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
