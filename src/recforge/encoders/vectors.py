"""Vector tables: the one format every encoder writes to 04_feature and every consumer reads.

A table is `item_id` (or `user_id`) + `v0..v{D-1}` float32 columns, one row per entity; the same
layout as the content encoders' tables (`encoders.proxy.vectors_frame`). Readers also accept a
single list-valued `vector` column, so a table written by other tools loads the same way.
`align_item_vectors` turns a table into the (n_items, D) tensor a family's `build` takes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from recforge.data.errors import DataError
from recforge.data.schema import STRING

logger = logging.getLogger(__name__)

_WIDE = re.compile(r"^v(\d+)$")


def vector_table(ids: Sequence[str] | np.ndarray, vectors: np.ndarray, id_column: str = "item_id") -> pd.DataFrame:
    """`id_column` + `v0..v{D-1}` (float32), one row per id, in the given order."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise ValueError(f"{len(ids)} ids for vectors of shape {vectors.shape}")
    frame = pd.DataFrame(vectors, columns=[f"v{j}" for j in range(vectors.shape[1])])
    frame.insert(0, id_column, pd.array(np.asarray(ids, dtype=object), dtype=STRING))
    return frame


def table_vectors(table: pd.DataFrame, id_column: str = "item_id") -> tuple[np.ndarray, np.ndarray]:
    """(ids (n,) object, vectors (n, D) float32) of a vector table, wide or list-column layout."""
    if id_column not in table.columns:
        raise DataError(f"vector table has no {id_column!r} column", column=id_column)
    ids = table[id_column].astype(STRING).to_numpy(dtype=object)
    wide = sorted(
        ((int(m.group(1)), c) for c in table.columns if (m := _WIDE.match(str(c)))), key=lambda t: t[0]
    )
    if wide:
        if [j for j, _ in wide] != list(range(len(wide))):
            raise DataError("vector columns must be v0..v{D-1} without gaps", column=wide[-1][1])
        vectors = table[[c for _, c in wide]].to_numpy(dtype=np.float32)
    elif "vector" in table.columns:
        vectors = np.stack([np.asarray(v, dtype=np.float32) for v in table["vector"]]) if len(table) else (
            np.zeros((0, 0), np.float32)
        )
    else:
        raise DataError("vector table has neither v0..v{D-1} columns nor a 'vector' column")
    bad = ~np.isfinite(vectors).all(axis=1) if vectors.size else np.zeros(len(vectors), bool)
    if bad.any():
        shown = ", ".join(map(str, ids[bad][:5])) + (" ..." if bad.sum() > 5 else "")
        raise DataError(
            f"vector table has {int(bad.sum())} rows with NaN or infinite values ({id_column} {shown})",
            column=id_column, rows=list(np.flatnonzero(bad)[:5]),
            hint="re-run the encoder that wrote it; a vector table must be finite",
        )
    return ids, vectors


def align_item_vectors(table: pd.DataFrame, item_map: pd.DataFrame, name: str = "vector table") -> torch.Tensor:
    """(n_items, D) float32 vectors in `item_map` order (row i = item_idx i).

    Items of the map missing from the table (e.g. never in a training sequence, no content) get the
    mean vector of the map's items that have one, so they start at the centre of the space rather than at an arbitrary
    point; their count is logged. Table rows for items outside the map are ignored. A row with a
    NaN or infinite component is an error naming its item ids (`name` names the table).
    """
    if len(table) == 0:
        raise DataError(f"the {name} is empty: nothing to align", source=name, column="item_id")
    try:
        ids, vectors = table_vectors(table, "item_id")
    except DataError as error:
        raise DataError(f"the {name}: {error.problem}", source=name, column=error.column, rows=error.rows,
                        hint=error.hint) from None
    order = item_map.sort_values("item_idx")
    map_ids = pd.Index(order["item_id"].astype(STRING))
    pos = pd.Index(pd.array(ids, dtype=STRING)).get_indexer(map_ids)  # (n_items,) row in table or -1
    out = np.empty((len(map_ids), vectors.shape[1]), dtype=np.float32)
    found = pos >= 0
    out[found] = vectors[pos[found]]
    out[~found] = (out[found] if found.any() else vectors).mean(axis=0)
    missing = int((~found).sum())
    if missing:
        logger.info("align_item_vectors: %d of %d items have no vector in the %s; they get the mean vector",
                    missing, len(map_ids), name)
    return torch.from_numpy(out)
