"""Diagnostics of any vector table (behaviour or content encoders): do the vectors mean anything?

- `sample_neighbours`: the nearest neighbours of a few seeded sample items, with titles and
  categories, for a human to read;
- `category_purity`: the mean share of each item's k nearest neighbours that share its category
  (full "top/leaf" path and top level), against the chance rate — the share a random set of
  other items would have, (n_c - 1) / (n - 1) for an item of a category with n_c of n items;
- `projection_figure`: a 2-D PCA or t-SNE map of the vectors coloured by top category.

All take the vector table (`item_id` + vectors, see `encoders.vectors`) and the `items` table
(`item_id`, `title`, `category`); items without a category are left out of the purity.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict, Field

from recforge.data.schema import STRING
from recforge.encoders.ann import Method, nearest_neighbours
from recforge.encoders.vectors import table_vectors

logger = logging.getLogger(__name__)


class DiagnosticsConfig(BaseModel):
    """What the reports of a vector table show."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sample_items: int = Field(8, ge=1)
    neighbours: int = Field(5, ge=1, description="neighbours listed per sample item")
    purity_k: int = Field(10, ge=1)
    projection: Literal["pca", "tsne"] = "pca"
    max_points: int = Field(3000, ge=10, description="items drawn in the projection")
    index: Method = "auto"
    seed: int = Field(0, ge=0)


def _item_info(ids: np.ndarray, items: pd.DataFrame) -> pd.DataFrame:
    """title and category of each id (NA where the items table lacks it), in `ids` order."""
    info = items.drop_duplicates("item_id").assign(item_id=lambda f: f["item_id"].astype(STRING))
    info = info.set_index("item_id").reindex(pd.Index(pd.array(ids, dtype=STRING)))
    out = pd.DataFrame(index=range(len(ids)))
    for col in ("title", "category"):
        out[col] = info[col].astype(STRING).to_numpy() if col in info else pd.array([pd.NA] * len(ids), dtype=STRING)
    out["top_category"] = out["category"].str.split("/").str[0]
    return out


def sample_neighbours(table: pd.DataFrame, items: pd.DataFrame, config: DiagnosticsConfig) -> pd.DataFrame:
    """One row per (sample item, neighbour rank): ids, titles, categories and the cosine."""
    ids, vectors = table_vectors(table)
    if len(ids) < 2:
        raise ValueError("need at least two vectors to list neighbours")
    rng = np.random.default_rng(config.seed)
    sample = np.sort(rng.choice(len(ids), size=min(config.sample_items, len(ids)), replace=False))
    idx, sim = nearest_neighbours(vectors, config.neighbours, config.index, config.seed, queries=sample)
    info = _item_info(ids, items)
    q = np.repeat(sample, idx.shape[1])
    n = idx.reshape(-1)
    return pd.DataFrame({
        "item_id": pd.array(ids[q], dtype=STRING),
        "title": info["title"].to_numpy()[q],
        "category": info["category"].to_numpy()[q],
        "rank": np.tile(np.arange(1, idx.shape[1] + 1), len(sample)),
        "neighbour_id": pd.array(ids[n], dtype=STRING),
        "neighbour_title": info["title"].to_numpy()[n],
        "neighbour_category": info["category"].to_numpy()[n],
        "cosine": sim.reshape(-1).astype(np.float64).round(4),
    })


def neighbour_purity(neighbours: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(mean share of neighbours with the query's label, chance share) over labelled queries.

    `neighbours` (n, k) indexes rows of `labels` (n,) object; NA labels neither query nor match.
    """
    known = pd.notna(labels)
    codes, _ = pd.factorize(pd.Series(labels))
    codes = np.where(known, codes, -1)
    same = (codes[neighbours] == codes[:, None]) & (codes[:, None] >= 0)  # (n, k)
    queries = np.flatnonzero(known)
    if not len(queries):
        return float("nan"), float("nan")
    sizes = np.bincount(codes[known])
    chance = (sizes[codes[queries]] - 1) / max(len(queries) - 1, 1)
    return float(same[queries].mean()), float(chance.mean())


def category_purity(table: pd.DataFrame, items: pd.DataFrame, config: DiagnosticsConfig) -> dict[str, Any]:
    """Category purity of the `purity_k` nearest neighbours, full path and top level, vs chance."""
    ids, vectors = table_vectors(table)
    info = _item_info(ids, items)
    k = min(config.purity_k, len(ids) - 1)
    idx, _ = nearest_neighbours(vectors, k, config.index, config.seed)
    out: dict[str, Any] = {"k": int(k), "n_items": int(len(ids)), "dim": int(vectors.shape[1]),
                           "n_with_category": int(info["category"].notna().sum())}
    for level, column in (("category", "category"), ("top_category", "top_category")):
        purity, chance = neighbour_purity(idx, info[column].to_numpy(dtype=object, na_value=None))
        out[level] = {
            "purity": round(purity, 4), "chance": round(chance, 4),
            "lift": round(purity / chance, 3) if chance > 0 else None,
        }
    logger.info("purity@%d: category %.3f (chance %.3f), top %.3f (chance %.3f)", k,
                out["category"]["purity"], out["category"]["chance"],
                out["top_category"]["purity"], out["top_category"]["chance"])
    return out


def projection_figure(table: pd.DataFrame, items: pd.DataFrame, config: DiagnosticsConfig,
                      title: str = "") -> Figure:
    """A 2-D PCA / t-SNE scatter of (a seeded sample of) the vectors, coloured by top category."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    ids, vectors = table_vectors(table)
    rng = np.random.default_rng(config.seed)
    rows = np.sort(rng.choice(len(ids), size=min(config.max_points, len(ids)), replace=False))
    v = vectors[rows]
    if config.projection == "tsne" and len(v) > 3:
        xy = TSNE(2, init="pca", random_state=config.seed, perplexity=min(30.0, (len(v) - 1) / 3)).fit_transform(v)
    else:
        xy = PCA(2, random_state=config.seed).fit_transform(v) if len(v) > 1 else np.zeros((len(v), 2))
    top = _item_info(ids[rows], items)["top_category"].fillna("(none)").to_numpy(dtype=object)
    fig = Figure(figsize=(7, 6), dpi=100)
    ax = fig.add_subplot()
    for name in sorted(set(top)):
        m = top == name
        ax.scatter(xy[m, 0], xy[m, 1], s=8, alpha=0.7, label=str(name))
    ax.set_title(title or f"{config.projection.upper()} of {len(rows)} of {len(ids)} item vectors")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(title="top category", fontsize=8, markerscale=2, loc="best")
    fig.tight_layout()
    return fig
