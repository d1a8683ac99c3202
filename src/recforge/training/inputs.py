"""A family's item side: what its `build` receives as `item_vectors`, made from the tables
upstream of it for a given item map.

The training node calls it with the training item map; the cold-start slices of evaluation call
it again with a map of the items unseen in training, so a content family scores those items from
the same kind of content it was trained on (`RecommenderNetwork.score_cold_items`). No Kedro here:
the pipelines decide which tables a family reads (`ITEM_VECTORS`, `Family.fields`,
`Family.content_inputs`) and hand them over in that order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from recforge.data.errors import DataError
from recforge.encoders.vectors import align_item_vectors
from recforge.features.tables import tables_from_frames
from recforge.models.base import ContentAndVectors, Family, ModelConfig

logger = logging.getLogger(__name__)


def chosen_tables(family: Family, config: ModelConfig, names: Sequence[str]) -> tuple[str, ...]:
    """The vector tables a family uses among those it reads: its config's `vectors` list when it
    has one (vbpr: `[image]`, or `[text, audio]` concatenated), else all of them."""
    chosen = tuple(getattr(config, "vectors", None) or names)
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise ValueError(
            f"{family.name}: vectors {unknown} are not among the tables it reads {list(names)}; "
            "add them to ITEM_VECTORS in pipelines/training/pipeline.py (and dvc.yaml deps)"
        )
    return chosen


def vector_side(
    family: Family, config: ModelConfig, tables: dict[str, pd.DataFrame], item_map: pd.DataFrame
) -> torch.Tensor | dict[str, torch.Tensor] | None:
    """The chosen vector tables aligned to `item_map`: one (n_items, ΣD) tensor (tables side by
    side, in the config's order), or {name: (n_items, D)} for a `vector_blocks` family.

    A chosen table that is empty (the source has no such content: the pretraining node wrote an
    empty table, e.g. `image` on MovieLens) is left out with a warning; when none is left the
    family gets None, its documented no-content fallback (vbpr: BPR-MF with item biases)."""
    blocks: dict[str, torch.Tensor] = {}
    for name in chosen_tables(family, config, list(tables)):
        table = tables[name]
        if len(table) == 0:
            logger.warning("%s: the %r vector table is empty (no such content in this source); "
                           "training without it", family.name, name)
            continue
        blocks[name] = align_item_vectors(table, item_map, name=name)
    if not blocks:
        return None
    return blocks if family.vector_blocks else torch.cat(list(blocks.values()), dim=1)


def item_side(
    family: Family,
    config: ModelConfig,
    upstream: Sequence[Any],
    item_map: pd.DataFrame,
    vector_tables: Sequence[str] = (),
) -> tuple[Any, list[Any]]:
    """(item_vectors for `build`, the rest of `upstream`) for `family` over `item_map`.

    `upstream`, positionally: the vector tables named `vector_tables` when there are any (then,
    for a family that also reads item content, its `content_inputs` datasets: the result is a
    `ContentAndVectors`); else
    the three feature tables of a field-aware family (user_features, item_features,
    feature_meta); else the datasets of `Family.content_inputs` when the family reads item content;
    what follows (trained models to warm-start from) is returned untouched."""
    rest = list(upstream)
    if vector_tables:
        tables = {name: rest.pop(0) for name in vector_tables}
        vectors = vector_side(family, config, tables, item_map)
        if family.item_content is None:
            return vectors, rest
        datasets = [rest.pop(0) for _ in family.content_inputs]  # both: content after the tables
        return ContentAndVectors(family.item_content(*datasets, item_map), vectors), rest
    if family.fields is not None:
        user_features, item_features, meta = [rest.pop(0) for _ in range(3)]
        return tables_from_frames(user_features, item_features, meta), rest
    if family.item_content is not None:
        datasets = [rest.pop(0) for _ in family.content_inputs]
        return family.item_content(*datasets, item_map), rest
    return None, rest


def cold_item_map(test: pd.DataFrame, item_map: pd.DataFrame) -> pd.DataFrame:
    """`item_id`, `item_idx` (0..C-1) of the test items unknown to `item_map`, in first-seen order:
    the map `item_side` builds the cold items' content over."""
    if "item_id" not in test.columns:
        raise DataError("the test split has no item_id column: cold items cannot be named", column="item_id")
    known = pd.Index(item_map["item_id"].astype("string"))
    ids = pd.Series(test["item_id"].astype("string").unique())
    cold = ids[~ids.isin(known)].reset_index(drop=True)
    return pd.DataFrame({"item_id": cold, "item_idx": range(len(cold))})
