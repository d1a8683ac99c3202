"""CTR nodes: impressions in, one `CTRModel` per family, a leaderboard with LR as the baseline.

Each family's fit node is made by `make_fit_ctr(family)` so that its parameters are annotated
with the family's own config class (Kedro validates them before any node runs).
"""

# No `from __future__ import annotations`: Kedro's parameter validation reads the annotations.
import logging
from collections.abc import Callable
from typing import Any

import pandas as pd

from recforge.features.encoder import FeatureEncoder
from recforge.features.impressions import CTRData, impression_table, split_by_time
from recforge.models.registry import get_family
from recforge.training.config import TrainConfig
from recforge.training.ctr import CTRModel, encode_rows, relative_improvement

logger = logging.getLogger(__name__)

BASELINE = "lr"


def prepare_impressions(
    impressions: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame, data: CTRData
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Attributes joined on, then train / valid / test by time."""
    train, valid, test = split_by_time(impression_table(impressions, users, items, data.fields.columns()), data)
    logger.info("impressions: %d train, %d valid, %d test rows (click rate %.3f)", len(train), len(valid),
                len(test), float(train[data.label].mean()))  # fmt: skip
    return train, valid, test


def fit_feature_encoder(train: pd.DataFrame, data: CTRData) -> dict[str, Any]:
    """The row encoder, fitted on the train impressions only."""
    return FeatureEncoder(data.fields).fit(train, table="ctr_train").state()


def make_fit_ctr(family: str) -> Callable[..., CTRModel]:
    config_cls = get_family(family).config

    def fit_ctr(
        train: pd.DataFrame,
        valid: pd.DataFrame,
        encoder: dict,
        data: CTRData,
        model: config_cls,  # type: ignore[valid-type]
        training: TrainConfig,
    ) -> CTRModel:
        """Fit `family`'s core on the train impressions, validating on valid each epoch."""
        enc = FeatureEncoder.from_state(encoder)
        ctr = CTRModel(family, model, training)
        ctr.fit(encode_rows(enc, train, data.label, "ctr_train"), encode_rows(enc, valid, data.label, "ctr_valid"),
                enc, sides=data.sides)  # fmt: skip
        logger.info("%s (ctr): %d rows in %.1f s, %.0f samples/s", family, len(train), ctr.fit_seconds,
                    ctr.samples_per_s or 0.0)  # fmt: skip
        return ctr

    fit_ctr.__qualname__ = "fit_ctr"
    return fit_ctr


def evaluate_ctr_model(model: CTRModel, test: pd.DataFrame, encoder: dict, data: CTRData) -> dict[str, Any]:
    """One family on the test impressions: AUC, log loss, click rate, fit time and samples/s."""
    rows = encode_rows(FeatureEncoder.from_state(encoder), test, data.label, "ctr_test")
    unknown = {k: v for k, v in rows.batch.unknown.items() if v}
    return {**model.evaluate(rows), "fit_seconds": model.fit_seconds, "samples_per_s": model.samples_per_s,
            "epochs": model.history.epochs if model.history else None, "unknown_values": unknown}  # fmt: skip


def report_ctr(**metrics: dict[str, Any] | None) -> tuple[pd.DataFrame, str]:
    """The CTR leaderboard of the families evaluated (a family never trained is None and left
    out), best AUC first, with RelaImpr over `lr` when lr is among them."""
    metrics = {f: m for f, m in metrics.items() if m}
    base = metrics.get(BASELINE, {}).get("auc")
    rows = []
    for family, m in metrics.items():
        rela = relative_improvement(m["auc"], base) if base is not None else None
        rows.append({"family": family, **{k: v for k, v in m.items() if k != "unknown_values"}, "rela_impr": rela})
    cols = ["family", "auc", "logloss", "ctr", "n", "fit_seconds", "samples_per_s", "epochs", "rela_impr"]
    board = pd.DataFrame(rows, columns=cols).sort_values("auc", ascending=False).reset_index(drop=True)
    unknown = next((m["unknown_values"] for m in metrics.values() if m.get("unknown_values")), {})
    return board, ctr_markdown(board, unknown)


def ctr_markdown(board: pd.DataFrame, unknown: dict[str, int]) -> str:
    lines = [
        "# CTR leaderboard", "",
        "Test impressions are the latest ones (a time split). RelaImpr = ((AUC − 0.5) / (AUC_lr − 0.5) − 1) · 100, "
        "the DeepFM paper's measure against logistic regression.", "",
        "| family | AUC | log loss | RelaImpr % | samples/s | fit s | epochs |", "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for _, r in board.iterrows():
        rel = "–" if r["rela_impr"] is None or pd.isna(r["rela_impr"]) else f"{r['rela_impr']:+.2f}"
        sps = "–" if r["samples_per_s"] is None or pd.isna(r["samples_per_s"]) else f"{r['samples_per_s']:,.0f}"
        lines.append(f"| {r['family']} | {r['auc']:.4f} | {r['logloss']:.4f} | {rel} | {sps} | "
                     f"{r['fit_seconds']:.1f} | {r['epochs']} |")  # fmt: skip
    if unknown:
        lines += ["", f"Values unseen in train, mapped to the unknown index: {unknown}."]
    return "\n".join(lines) + "\n"
