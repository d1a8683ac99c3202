"""Stand-ins for the pretraining content tables of the synthetic shop, for tests of content
families: what the image / text / audio encoders approximate, without running them.

Importable from any test module (`from shop_content import content_tables`): tests/ is on the
import path through its conftest.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recforge.encoders.vectors import vector_table
from recforge.pipelines.training.pipeline import CONTENT_TABLES


def content_tables(
    shop, item_map: pd.DataFrame | None = None, *, dim: int = 16, noise: float = 0.3, seed: int = 7,
    names: tuple[str, ...] = CONTENT_TABLES,
) -> dict[str, pd.DataFrame]:
    """{name: vector table over every item of the shop} for `names` (default: image, text and
    audio; behaviour tables such as prod2vec work the same way): each a different noisy
    linear read-out (`dim` columns) of the shop's hidden item factors (`ground_truth_items`), as
    the real encoders approximate them. Every item gets a row whatever `item_map` holds (it is
    accepted for tests/models/test_contract.py's call): cold items included, as the encoders see
    the whole catalogue."""
    truth = shop.ground_truth_items
    factors = truth[[c for c in truth.columns if c.startswith("f")]].to_numpy(np.float32)  # (I, K)
    rng = np.random.default_rng(seed)
    tables = {}
    for name in names:
        vectors = factors @ rng.normal(size=(factors.shape[1], dim)) + noise * rng.normal(size=(len(factors), dim))
        tables[name] = vector_table(truth["item_id"].to_numpy(), vectors)
    return tables
