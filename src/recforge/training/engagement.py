"""Engagement-weighted logistic regression (Covington, Adams & Sargin 2016, "Deep Neural Networks
for YouTube Recommendations", §4.2): the per-event engagement weights and the loss they weight.

Each observed event is a positive weighted by its engagement (YouTube uses watch time; we use the
event's weight, purchase > add_to_cart > click > view, or the rating), negatives weigh 1, so the
odds e^logit learned estimate the expected engagement of an impression. Shared by the
`youtube_ranking` family and the two-stage rankers (`training.two_stage`).

- `DEFAULT_EVENT_WEIGHTS`, `EventWeights` (the validated `event_weights` parameter type);
- `engagement_weights`: (N,) positive weights of a split's events;
- `weighted_logistic_loss`: Σ w·ℓ / Σ w of the log loss ℓ.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated

import numpy as np
import torch
from pydantic import AfterValidator, ConfigDict, TypeAdapter

from recforge.data.errors import DataError
from recforge.data.interactions import InteractionData
from recforge.data.schema import EVENTS
from recforge.training.losses import bce

if TYPE_CHECKING:  # the family's config holds an `EventWeights` field; it imports this module
    from recforge.models.features.youtube_ranking import YouTubeRankingConfig

DEFAULT_EVENT_WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0}
# rating rows are weighted by their rating, not by a per-event weight
WEIGHTED_EVENTS = tuple(e for e in EVENTS if e != "rating")


def check_event_weights(weights: dict[str, float]) -> dict[str, float]:
    """`weights` over the known events, each finite and > 0, completed with the defaults; a
    ValueError naming the offending events otherwise."""
    unknown = sorted(set(weights) - set(WEIGHTED_EVENTS))
    if unknown:
        raise ValueError(f"youtube_ranking: event_weights has unknown events {unknown}; "
                         f"allowed {list(WEIGHTED_EVENTS)} (rating rows are weighted by the rating)")  # fmt: skip
    bad = {k: v for k, v in weights.items() if not (np.isfinite(v) and v > 0)}
    if bad:
        raise ValueError(f"youtube_ranking: event_weights must be finite and > 0, got {bad}")
    return {**DEFAULT_EVENT_WEIGHTS, **weights}


# the `event_weights` parameter: a pydantic field of this type is checked by `check_event_weights`
EventWeights = Annotated[dict[str, float], AfterValidator(check_event_weights)]
_EVENT_WEIGHTS = TypeAdapter(EventWeights, config=ConfigDict(title="event_weights"))


def engagement_weights(
    data: InteractionData, config: YouTubeRankingConfig | Mapping[str, float] | None = None
) -> np.ndarray:
    """(N,) float32 engagement of each event, the positive weights of weighted logistic
    regression (Covington et al. 2016 §4.2, where it is watch time): `config.event_weights[event]`
    (defaults view 1 < click 2 < add_to_cart 4 < purchase 8), the rating for `rating` rows, and
    `value` when the split carries no event column. A weight that is not finite and > 0 (a zero
    rating, an event with no weight) is a `DataError` naming the rows."""
    if config is None:
        weights = dict(DEFAULT_EVENT_WEIGHTS)
    elif isinstance(config, Mapping):
        weights = _EVENT_WEIGHTS.validate_python(dict(config))
    else:
        weights = config.event_weights
    value = np.asarray(data.value, dtype=np.float32)
    if data.event is None:
        out = value.copy()
    else:
        table = np.full(len(EVENTS) + 1, np.nan, dtype=np.float32)  # last slot: code -1 (unknown)
        for name, w in weights.items():
            table[EVENTS.index(name)] = w
        codes = np.asarray(data.event, dtype=np.int64)
        out = table[codes]
        is_rating = codes == EVENTS.index("rating")
        out[is_rating] = value[is_rating]
    bad = ~(np.isfinite(out) & (out > 0))
    if bad.any():
        rows = np.flatnonzero(bad)
        raise DataError(f"youtube_ranking: {len(rows)} event(s) have no positive engagement weight "
                        "(a rating <= 0, or an unknown event)", column="event" if data.event is not None else "value",
                        rows=rows[:10].tolist())  # fmt: skip
    return out


def weighted_logistic_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted logistic regression of Covington, Adams & Sargin 2016 §4.2: Σ w·ℓ / Σ w with
    ℓ = -y·log σ(z) - (1-y)·log(1-σ(z)), positives weighted by engagement and negatives by 1, so
    the odds e^z learned estimate the expected engagement (Σ T_i / (N - k) ≈ E[T] for a small
    click rate). It is `losses.bce` with the engagement as the weight. (B,), (B,), (B,) -> scalar."""
    return bce(logits, labels, weights)
