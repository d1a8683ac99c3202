"""deep_content_audio on real recordings: the Free Spoken Digit Dataset as a catalogue of sounds.

    .venv/bin/python bench/bench_content_audio.py --fsdd ../shared/data/fsdd-audio

FSDD has sounds but no listeners, so the listeners are simulated and only the audio is real:
3,000 recordings (`{digit}_{speaker}_{index}.wav`, 8 kHz) are the items; each of 800 listeners
likes two digits and one speaker, and draws 30 recordings with probability ∝ exp(2·[digit liked]
+ 1.5·[speaker liked]). A seeded 20% of the recordings are cold: none of their interactions is
in training. deep_content_audio (its own WMF factors, `pretrain: false`, then the audio CNN
regressing them) is trained on the warm recordings and scores the cold ones from their sound
alone; the metric is, per listener with cold recordings, the AUC and NDCG@10 of those among all
cold recordings (random: AUC 0.5). Popularity and BPR cannot rank cold items. A digit oracle
(score = [digit liked]·2 + [speaker liked]·1.5, the simulation's own utility) is the ceiling.
Writes bench/results/content_audio.{md,json}.
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
from recforge.models.content.deep_content_audio import item_content  # noqa: E402
from recforge.training.recommender import Recommender  # noqa: E402

N_USERS, PER_USER, COLD_SHARE, SEED = 800, 30, 0.2, 0


def catalogue(folder: Path) -> tuple[pd.DataFrame, dict]:
    files = sorted(folder.glob("*.wav")) or sorted(folder.glob("recordings/*.wav"))  # the archive's layout
    if not files:
        raise SystemExit(f"no .wav files in {folder}")
    parts = [f.stem.split("_") for f in files]
    items = pd.DataFrame({
        "item_id": [f.stem for f in files], "audio_path": [f.name for f in files],  # relative to the media root
        "digit": [int(p[0]) for p in parts], "speaker": [p[1] for p in parts],
    })  # fmt: skip
    items["category"] = "digit/" + items["digit"].astype(str)
    media = {f.name: f.read_bytes for f in files}
    return items, media


def listeners(items: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    """(interactions, utility (U, I)) of simulated listeners over the recordings."""
    speakers = np.array(sorted(items["speaker"].unique()))
    digit = items["digit"].to_numpy()
    speaker = pd.Index(speakers).get_indexer(items["speaker"])
    utility = np.zeros((N_USERS, len(items)))
    rows = []
    for u in range(N_USERS):
        liked_digits = rng.choice(10, size=2, replace=False)
        liked_speaker = rng.integers(len(speakers))
        utility[u] = 2.0 * np.isin(digit, liked_digits) + 1.5 * (speaker == liked_speaker)
        p = np.exp(utility[u])
        chosen = rng.choice(len(items), size=PER_USER, replace=False, p=p / p.sum())
        rows.append(pd.DataFrame({"user_idx": u, "item": chosen, "timestamp": rng.integers(0, 10**6, PER_USER)}))
    return pd.concat(rows, ignore_index=True), utility


def cold_metrics(scores: np.ndarray, liked: np.ndarray) -> tuple[float, float]:
    """Mean AUC and NDCG@10 over users of their liked cold items among all cold items."""
    aucs, ndcgs = [], []
    discount = 1.0 / np.log2(np.arange(2, 12))
    for s, pos in zip(scores, liked, strict=True):
        if not pos.any() or pos.all():
            continue
        aucs.append(float((s[pos][:, None] > s[~pos][None, :]).mean() + 0.5 * (s[pos][:, None] == s[~pos][None, :]).mean()))
        top = np.argsort(-s, kind="stable")[:10]
        ideal = discount[: min(10, int(pos.sum()))].sum()
        ndcgs.append(float((pos[top] * discount[: len(top)]).sum() / ideal))
    return float(np.mean(aucs)), float(np.mean(ndcgs))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fsdd", type=Path, default=ROOT.parent / "shared/data/fsdd-audio")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(SEED)
    items, media = catalogue(args.fsdd)
    frame, utility = listeners(items, rng)
    cold = rng.random(len(items)) < COLD_SHARE
    warm_ids = np.flatnonzero(~cold)
    warm_index = pd.Series(np.arange(len(warm_ids)), index=warm_ids)
    train = frame[~cold[frame["item"]]].assign(item_idx=lambda f: warm_index[f["item"]].to_numpy())
    item_map = pd.DataFrame({"item_id": items["item_id"].to_numpy()[warm_ids], "item_idx": np.arange(len(warm_ids))})
    cold_map = pd.DataFrame({"item_id": items["item_id"].to_numpy()[cold], "item_idx": np.arange(int(cold.sum()))})
    data = InteractionData.from_frame(train.assign(value=1.0, event="play"), N_USERS, len(warm_ids), name="train")

    start = time.perf_counter()
    content = item_content(items, media, item_map)  # (I_warm, mels, frames)
    cold_content = item_content(items, media, cold_map)
    decode_s = time.perf_counter() - start
    rec = Recommender("deep_content_audio", {"pretrain": False, "factors": 32},
                      {"epochs": args.epochs, "batch_size": 64, "lr": 0.001, "device": "auto", "seed": SEED})
    start = time.perf_counter()
    rec.fit(data, item_vectors=content)
    fit_s = time.perf_counter() - start
    net = rec.network.cpu().eval()
    with torch.no_grad():
        scores = net.score_cold_items(torch.arange(N_USERS), cold_content).numpy()  # (U, C)
    liked = np.zeros((N_USERS, int(cold.sum())), bool)
    cold_pos = pd.Series(np.arange(int(cold.sum())), index=np.flatnonzero(cold))
    test = frame[cold[frame["item"]]]
    liked[test["user_idx"].to_numpy(), cold_pos[test["item"]].to_numpy()] = True
    model_auc, model_ndcg = cold_metrics(scores, liked)
    rand_auc, rand_ndcg = cold_metrics(np.random.default_rng(1).random(scores.shape), liked)
    oracle_auc, oracle_ndcg = cold_metrics(utility[:, cold] + 1e-6 * np.random.default_rng(2).random(scores.shape), liked)
    rows = [
        {"model": "deep_content_audio (sound only)", "cold_auc": model_auc, "cold_ndcg@10": model_ndcg},
        {"model": "random", "cold_auc": rand_auc, "cold_ndcg@10": rand_ndcg},
        {"model": "oracle (the simulated utility)", "cold_auc": oracle_auc, "cold_ndcg@10": oracle_ndcg},
    ]
    info = {"items": len(items), "cold_items": int(cold.sum()), "users": N_USERS, "train_interactions": len(train),
            "test_interactions": len(test), "decode_s": decode_s, "fit_s": fit_s, "epochs": args.epochs,
            "machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"}  # fmt: skip
    lines = [f"# deep_content_audio on FSDD recordings ({info['items']} items, {info['cold_items']} cold; "
             f"{N_USERS} simulated listeners; {args.epochs} epochs, fit {fit_s:.0f} s, decoding {decode_s:.0f} s; "
             f"{info['machine']})", "", "| model | cold-item AUC | cold-item NDCG@10 |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {r['model']} | {r['cold_auc']:.4f} | {r['cold_ndcg@10']:.4f} |" for r in rows]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "content_audio.md").write_text("\n".join(lines) + "\n")
    (args.out / "content_audio.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
