"""Nodes of the `pretraining` pipeline: thin wrappers over `recforge.encoders`.

Encoder nodes take the TRAIN split (never valid/test: no leakage), the id maps and their typed
parameters, and return the vector table (`item_id` + v0..v{D-1}) plus a JSON record of the
config and the training report. Diagnostic nodes take any vector table and the items table.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from recforge.data.idmap import IdMap
from recforge.data.interactions import InteractionData
from recforge.encoders import diagnostics, meta_prod2vec, prod2vec, user2vec
from recforge.encoders.diagnostics import DiagnosticsConfig
from recforge.encoders.meta_prod2vec import MetaProd2VecConfig
from recforge.encoders.prod2vec import Prod2VecConfig
from recforge.encoders.sequences import Corpus, SequenceConfig, build_corpus
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


def list_neighbours(vectors: pd.DataFrame, items: pd.DataFrame, diagnostics_config: DiagnosticsConfig) -> pd.DataFrame:
    """Nearest neighbours of seeded sample items, with titles and categories."""
    return diagnostics.sample_neighbours(vectors, items, diagnostics_config)


def measure_purity(vectors: pd.DataFrame, items: pd.DataFrame, diagnostics_config: DiagnosticsConfig) -> dict[str, Any]:
    """Category purity of the k nearest neighbours against the chance rate."""
    return diagnostics.category_purity(vectors, items, diagnostics_config)


def plot_projection(vectors: pd.DataFrame, items: pd.DataFrame, diagnostics_config: DiagnosticsConfig) -> Figure:
    """2-D projection of the vectors coloured by top category."""
    return diagnostics.projection_figure(vectors, items, diagnostics_config)
