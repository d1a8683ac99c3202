"""Tag recommendation: precision, recall and F1 at K of the tags predicted for items, against the
items' true tags, and the tag-popularity baseline (every item gets the most frequent tags of
the training items) — the metrics of Gong & Zhang 2016 ("Hashtag Recommendation Using
Attention-Based Convolutional Neural Network").

Per item: P@K = |top-K ∩ true| / K, R@K = |top-K ∩ true| / |true|; both are averaged over the
items that have at least one tag, and F1@K = 2·P·R / (P + R) of the averages. A true tag the
model never saw in training still counts in |true| (no model can predict it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from recforge.data.errors import DataError


def tag_metrics(
    scores: torch.Tensor, truth: torch.Tensor, n_true: torch.Tensor, ks: Sequence[int]
) -> dict[str, float]:
    """(N, T) tag scores, (N, T) 0/1 true tags over the same vocabulary, (N,) number of true tags
    of each item (≥ truth's row sums: tags outside the vocabulary count) -> P/R/F1@k."""
    if scores.shape != truth.shape or len(n_true) != len(scores):
        raise ValueError(f"tag scores {tuple(scores.shape)}, truth {tuple(truth.shape)} and n_true "
                         f"({len(n_true)},) must describe the same items")  # fmt: skip
    keep = n_true > 0
    scores, truth, n_true = scores[keep].float(), truth[keep].float(), n_true[keep].float()
    out: dict[str, float] = {}
    for k in ks:
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        kk = min(k, scores.shape[1])
        if len(scores) == 0 or kk == 0:
            p = r = 0.0
        else:
            top = scores.topk(kk, dim=1).indices  # (N, k)
            hits = truth.gather(1, top).sum(1)  # (N,)
            p, r = float((hits / k).mean()), float((hits / n_true).mean())
        out[f"precision@{k}"], out[f"recall@{k}"] = p, r
        out[f"f1@{k}"] = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return out


def evaluate_tags(
    model, items: pd.DataFrame, item_ids: Sequence[str], ks: Sequence[int] = (1, 3, 5)
) -> dict[str, float]:
    """Tag P/R/F1@k of a trained `tag_attention_cnn` (a `Recommender` or its network) on the
    items `item_ids` of the `items` table (e.g. items held out of training, the cold-start
    point), next to the tag-popularity baseline (`tag_popularity_*`) built from the model's
    training items; `n_items` counts the items with at least one tag."""
    from recforge.models.content.tag_attention_cnn import TagAttentionCNN, item_content, item_tag_lists

    network = getattr(model, "network", model)
    if not isinstance(network, TagAttentionCNN):
        raise TypeError(f"evaluate_tags needs a trained tag_attention_cnn, got {type(network).__name__}")
    ids = pd.Series(list(item_ids), dtype="string")
    unknown = ~ids.isin(items["item_id"].astype("string"))
    if unknown.any():
        raise DataError(f"{int(unknown.sum())} item id(s) not in the items table: {ids[unknown].tolist()[:5]}",
                        source="items", column="item_id", rows=np.flatnonzero(unknown.to_numpy()).tolist())  # fmt: skip
    content = item_content(items, pd.DataFrame({"item_id": ids, "item_idx": np.arange(len(ids))}))
    tag_lists = item_tag_lists(items, ids)
    index = {t: k for k, t in enumerate(network.vocabulary)}
    truth = torch.zeros(len(ids), len(index))
    for r, tags in enumerate(tag_lists):
        truth[r, [index[t] for t in tags if t in index]] = 1.0
    n_true = torch.tensor([len(t) for t in tag_lists], dtype=torch.float32)
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            scores = network.predict_tags(content.tokens).cpu()  # (N, T)
    finally:
        network.train(was_training)
    popularity = network.tags.sum(0).cpu().expand(len(ids), -1)  # (N, T): the same ranking for every item
    out = {"n_items": float((n_true > 0).sum())}
    out |= tag_metrics(scores, truth, n_true, ks)
    out |= {f"tag_popularity_{k}": v for k, v in tag_metrics(popularity, truth, n_true, ks).items()}
    return out
