"""Nodes of the `pretraining` pipeline: thin wrappers over `recforge.encoders`.

Behaviour encoder nodes take the TRAIN split (never valid/test: no leakage), the id maps and their
typed parameters; content encoder nodes take the `items` table (and the `media` root) and theirs.
Both return the vector table (`item_id` + v0..v{D-1}, raw item ids) plus a JSON record of the
config and the training report. Diagnostic nodes take any vector table and the items table.

A content encoder whose source has none of its content (no `image_path` / `audio_path` at all, no
text besides the item ids) or fewer than two proxy labels is skipped: it logs a warning and writes
an empty vector table and a record whose `skipped` says why, and the diagnostics of an empty table
say so too. Content that is there but unreadable is an error (or, with `on_bad_media: skip`,
listed under `report.skipped`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from recforge.data.idmap import IdMap
from recforge.data.interactions import InteractionData
from recforge.data.schema import STRING
from recforge.encoders import audio, diagnostics, image, meta_prod2vec, prod2vec, text, user2vec
from recforge.encoders.audio import AudioEncoderConfig
from recforge.encoders.diagnostics import DiagnosticsConfig
from recforge.encoders.image import ImageEncoderConfig
from recforge.encoders.media_io import MediaSource
from recforge.encoders.meta_prod2vec import MetaProd2VecConfig
from recforge.encoders.prod2vec import Prod2VecConfig
from recforge.encoders.proxy import ContentEncoderConfig, EncoderResult
from recforge.encoders.sequences import Corpus, SequenceConfig, build_corpus
from recforge.encoders.text import TextEncoderConfig
from recforge.encoders.user2vec import User2VecConfig
from recforge.encoders.vectors import vector_table
from recforge.encoders.word2vec import EmbeddingResult
from recforge.training.callbacks import LoggingCallback
from recforge.training.config import TrainConfig

logger = logging.getLogger(__name__)


def _corpus(train: pd.DataFrame, user_map: pd.DataFrame, item_map: pd.DataFrame, config: SequenceConfig) -> Corpus:
    data = InteractionData.from_frame(train, len(user_map), len(item_map), name="train")
    return build_corpus(data, config)


def _record(name: str, encoder: Any, training: TrainConfig, result: EmbeddingResult) -> dict[str, Any]:
    return {
        "encoder": name,
        "config": encoder.model_dump(mode="json"),
        "training": training.model_dump(mode="json"),
        "report": result.report,
        "torch": torch.__version__,
    }


def _items_table(result: EmbeddingResult, item_map: pd.DataFrame) -> pd.DataFrame:
    return vector_table(IdMap.from_frame(item_map, "item").to_id(result.index), result.vectors)


def fit_prod2vec(
    train: pd.DataFrame, user_map: pd.DataFrame, item_map: pd.DataFrame,
    encoder: Prod2VecConfig, training: TrainConfig,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """prod2vec item vectors from the train split's sequences, and their config record."""
    corpus = _corpus(train, user_map, item_map, encoder.sequences)
    result = prod2vec.fit_prod2vec(corpus, encoder, training, callbacks=[LoggingCallback()])
    return _items_table(result, item_map), _record("prod2vec", encoder, training, result)


def fit_meta_prod2vec(
    train: pd.DataFrame, user_map: pd.DataFrame, item_map: pd.DataFrame, items: pd.DataFrame,
    encoder: MetaProd2VecConfig, training: TrainConfig,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """meta-prod2vec item vectors (metadata columns of `items` as side information)."""
    corpus = _corpus(train, user_map, item_map, encoder.sequences)
    ids = IdMap.from_frame(item_map, "item").ids
    meta, names = meta_prod2vec.item_metadata(items, ids, encoder.metadata)
    result = meta_prod2vec.fit_meta_prod2vec(corpus, meta, len(names), encoder, training, [LoggingCallback()])
    return _items_table(result, item_map), _record("meta_prod2vec", encoder, training, result)


def fit_user2vec(
    train: pd.DataFrame, user_map: pd.DataFrame, item_map: pd.DataFrame,
    encoder: User2VecConfig, training: TrainConfig,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """user2vec item vectors, user vectors (`user_id` + v0..) and their config record."""
    corpus = _corpus(train, user_map, item_map, encoder.sequences)
    result = user2vec.fit_user2vec(corpus, encoder, training, callbacks=[LoggingCallback()])
    users = result.users
    user_ids = IdMap.from_frame(user_map, "user").to_id(users.index)
    user_table = vector_table(user_ids, users.vectors, id_column="user_id")
    return _items_table(result, item_map), user_table, _record("user2vec", encoder, training, result)


# ----------------------------------------------------------------------------- content encoders
def _content_config(name: str, encoder: ContentEncoderConfig, training: TrainConfig) -> ContentEncoderConfig:
    # one place for the fit loop's settings, as in every namespace: `training:`, not `encoder.train`
    if "train" in encoder.model_fields_set:
        raise ValueError(f"set the fit loop's settings under `{name}.training`, not `{name}.encoder.train`")
    return encoder.model_copy(update={"train": training})


def _has_values(items: pd.DataFrame, column: str) -> pd.Series:
    """(N,) bool: the item has a non-empty value in `column` that is not its own id (sources
    without titles get the id as title, which is no content)."""
    if column not in items.columns:
        return pd.Series(False, index=items.index)
    values = items[column].astype(STRING).str.strip()
    return (values.notna() & (values != "") & (values != items["item_id"].astype(STRING))).fillna(False)


def _missing_content(items: pd.DataFrame, columns: tuple[str, ...], config: ContentEncoderConfig) -> str | None:
    """Why this source gives the encoder nothing to learn from, or None when it does."""
    if not any(_has_values(items, c).any() for c in columns):
        return f"no item has a value in {list(columns)}: the source has no such content"
    label = config.label_column
    if label in items.columns and items[label].dropna().nunique() < 2:
        return f"the proxy task needs at least two distinct {label!r} labels, the items have fewer"
    return None


def _content_record(name: str, encoder: ContentEncoderConfig, training: TrainConfig,
                    report: dict[str, Any]) -> dict[str, Any]:
    return {
        "encoder": name,
        "config": encoder.model_dump(mode="json", exclude={"train"}),
        "training": training.model_dump(mode="json"),
        "report": report,
        "torch": torch.__version__,
    }


def _skipped(name: str, reason: str, encoder: ContentEncoderConfig,
             training: TrainConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    logger.warning("%s encoder skipped: %s; it writes an empty vector table", name, reason)
    record = _content_record(name, encoder, training, {"encoder": name, "n_vectors": 0})
    record["skipped"] = reason
    return vector_table(np.empty(0, dtype=object), np.empty((0, 0), dtype=np.float32)), record


def _content_result(name: str, result: EncoderResult, encoder: ContentEncoderConfig,
                    training: TrainConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    report, proxy = result.report, result.report["proxy"]
    heldout = "n/a" if proxy["heldout_accuracy"] is None else f"{proxy['heldout_accuracy']:.3f}"
    logger.info("%s encoder: %d vectors, held-out proxy accuracy %s (chance %.3f), %d skipped, %.1f items/s",
                name, report["n_vectors"], heldout, proxy["chance_accuracy"], report["n_skipped"],
                report["timings"]["items_per_s"])
    return result.vectors, _content_record(name, encoder, training, report)


def _encode(name: str, fit: Callable[..., EncoderResult], columns: Sequence[str], items: pd.DataFrame,
            encoder: ContentEncoderConfig, training: TrainConfig, *media: Mapping[str, MediaSource],
            ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One content encoder's node body: skip with a report when no item has the content, else fit."""
    config = _content_config(name, encoder, training)
    if reason := _missing_content(items, columns, config):
        return _skipped(name, reason, encoder, training)
    result = fit(items, *media, config, callbacks=[LoggingCallback()])
    return _content_result(name, result, encoder, training)


def encode_images(
    items: pd.DataFrame, media: Mapping[str, MediaSource], encoder: ImageEncoderConfig, training: TrainConfig,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Image vectors of every item with a readable photo (`items.image_path` in the media root)."""
    return _encode("image", image.fit_image_encoder, ("image_path",), items, encoder, training, media)


def encode_texts(
    items: pd.DataFrame, encoder: TextEncoderConfig, training: TrainConfig,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Text vectors of every item with text in `encoder.fields` (title, description)."""
    return _encode("text", text.fit_text_encoder, encoder.fields, items, encoder, training)


def encode_audio(
    items: pd.DataFrame, media: Mapping[str, MediaSource], encoder: AudioEncoderConfig, training: TrainConfig,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Audio vectors of every item with a readable sound (`items.audio_path` in the media root)."""
    return _encode("audio", audio.fit_audio_encoder, ("audio_path",), items, encoder, training, media)


# ----------------------------------------------------------------------------- diagnostics
NO_VECTORS = "no vectors (the encoder was skipped: see its encoder_config)"
NEIGHBOUR_COLUMNS = ["item_id", "title", "category", "rank", "neighbour_id", "neighbour_title",
                     "neighbour_category", "cosine"]


def list_neighbours(vectors: pd.DataFrame, items: pd.DataFrame, diagnostics_config: DiagnosticsConfig) -> pd.DataFrame:
    """Nearest neighbours of seeded sample items, with titles and categories."""
    if vectors.empty:
        return pd.DataFrame(columns=NEIGHBOUR_COLUMNS)
    return diagnostics.sample_neighbours(vectors, items, diagnostics_config)


def measure_purity(vectors: pd.DataFrame, items: pd.DataFrame, diagnostics_config: DiagnosticsConfig) -> dict[str, Any]:
    """Category purity of the k nearest neighbours against the chance rate."""
    if vectors.empty:
        return {"n_items": 0, "skipped": NO_VECTORS}
    return diagnostics.category_purity(vectors, items, diagnostics_config)


def plot_projection(vectors: pd.DataFrame, items: pd.DataFrame, diagnostics_config: DiagnosticsConfig) -> Figure:
    """2-D projection of the vectors coloured by top category."""
    if vectors.empty:
        fig = Figure(figsize=(7, 6), dpi=100)
        fig.text(0.5, 0.5, NO_VECTORS, ha="center", va="center")
        return fig
    return diagnostics.projection_figure(vectors, items, diagnostics_config)
