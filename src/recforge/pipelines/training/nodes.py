"""Training nodes: split tables in, a fitted `Recommender` out.

Each family's node is made by `make_fit_model(family)` so that its parameters are annotated with
that family's own config class: Kedro validates `params:<family>.model` and
`params:<family>.training` against them before any node runs.
"""

# No `from __future__ import annotations`: the annotations below must be real classes, evaluated
# when each family's function is made, for Kedro's parameter validation to see them.
import logging
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from recforge.data.interactions import InteractionData
from recforge.models.registry import get_family
from recforge.training.config import TrainConfig
from recforge.training.inputs import item_side
from recforge.training.recommender import Recommender, uses_ratings

logger = logging.getLogger(__name__)

RATING_EVENTS = ("rating",)


def fit_inputs(
    family: str,
    config: Any,
    uses_ratings: bool,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    user_map: pd.DataFrame,
    item_map: pd.DataFrame,
    upstream: Sequence[pd.DataFrame | Recommender],
    vector_tables: Sequence[str] = (),
) -> dict[str, Any]:
    """The split tables and a family's upstream inputs as `Recommender.fit`'s arguments:
    {train, valid, seen, item_vectors, warm_start} (also what a tuning trial fits with).

    `upstream`, positionally: the family's item side (`training.inputs.item_side`: the vector
    tables named `vector_tables`, else a field-aware family's three feature tables, else the
    datasets of `Family.content_inputs`), then the trained models the family warm-starts from
    (`Family.warm_start_from`, in that order). `config`: the family's validated model config
    (its `vectors` picks among the vector tables).
    """
    fam = get_family(family)
    n_users, n_items = len(user_map), len(item_map)
    events = RATING_EVENTS if uses_ratings else None
    item_vectors, models = item_side(fam, config, upstream, item_map, vector_tables)
    return {
        "train": InteractionData.from_frame(train, n_users, n_items, name="train", events=events),
        "valid": InteractionData.from_frame(valid, n_users, n_items, name="valid"),
        "seen": InteractionData.from_frame(train, n_users, n_items, name="train").csr,
        "item_vectors": item_vectors,
        "warm_start": dict(zip(fam.warm_start_from, models, strict=True)) or None,
    }


def fit_recommender(
    family: str,
    model: Any,
    training: TrainConfig,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    user_map: pd.DataFrame,
    item_map: pd.DataFrame,
    upstream: Sequence[pd.DataFrame | Recommender] = (),
    vector_tables: Sequence[str] = (),
) -> Recommender:
    """Fit `family` with these configs on the train split, early-stopping on valid when
    configured."""
    rec = Recommender(family, model, training)
    inputs = fit_inputs(family, rec.config, rec.uses_ratings, train, valid, user_map, item_map, upstream, vector_tables)
    rec.fit(**inputs)
    logger.info("%s: trained on %d interactions in %.1f s", family, len(inputs["train"]), rec.fit_seconds)
    return rec


def make_fit_model(family: str, vector_tables: Sequence[str] = ()) -> Callable[..., Recommender]:
    """The `fit_model` node function of one family, typed with the family's config class.

    After the split tables and the two parameter blocks come the family's upstream inputs
    (see `fit_inputs`).
    """
    config_cls = get_family(family).config

    def fit_model(
        train: pd.DataFrame,
        valid: pd.DataFrame,
        user_map: pd.DataFrame,
        item_map: pd.DataFrame,
        model: config_cls,  # type: ignore[valid-type]
        training: TrainConfig,
        *upstream: pd.DataFrame | Recommender,
    ) -> Recommender:
        """Fit `family` on the train split, early-stopping on valid when configured."""
        return fit_recommender(family, model, training, train, valid, user_map, item_map, upstream, vector_tables)

    fit_model.__qualname__ = "fit_model"
    return fit_model


__all__ = ["fit_inputs", "fit_recommender", "make_fit_model", "uses_ratings"]
