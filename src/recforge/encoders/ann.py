"""Top-k retrieval by inner product or cosine through faiss (Johnson, Douze & Jégou 2019,
"Billion-scale similarity search with GPUs"; faiss-cpu from the package registry).

`AnnIndex` holds one of three faiss indexes over a table of vectors (n, D):

- `flat` (the default): exact search, every vector scored (`IndexFlatIP`);
- `ivf`: an inverted file (Jégou et al. 2011): k-means cells (`nlist`, by default about 4·√n),
  a query scanning the `nprobe` nearest cells;
- `hnsw`: a hierarchical navigable small-world graph (Malkov & Yashunin 2018), `hnsw_m` links
  per node, `ef_construction` / `ef_search` the beam widths of building and searching.

`metric: cosine` normalises the vectors and the queries, so the inner product is the cosine.
`search(queries, k, exclude)` skips, per query, one row (the query item itself) or the rows of a
sparse matrix (a user's seen items): it asks faiss for k plus the most any query excludes and
drops those; a query left short by an approximate index is searched again exactly. `k` is
clipped to the catalogue; a query with fewer than k eligible rows is padded with index -1 and
score -inf. Vectors or queries with NaN or infinite entries are refused, naming the rows.
`recall_at_k` measures an approximate index against the exact one.

Used by `nearest_neighbours` (the embedding diagnostics), `Recommender.similar_items` and, for
the families whose scores factor as a user vector · an item vector, `Recommender.recommend`
with an index (export, the two-stage retriever), and by prod2vec_topk's `index: ivf | hnsw`.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import faiss
import numpy as np
import scipy.sparse as sp
import torch
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)

Kind = Literal["flat", "ivf", "hnsw"]
Method = Literal["auto", "flat", "ivf", "hnsw"]
AUTO_EXACT_MAX = 50_000  # `auto`: an exact flat search up to this many rows, HNSW above
_SHOWN = 20  # rows named in an error


class AnnConfig(BaseModel):
    """Which faiss index to build and how to search it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Kind = "flat"
    metric: Literal["ip", "cosine"] = "ip"
    nlist: int | None = Field(None, ge=1)  # ivf cells; None: about 4·√n, at least 39 rows a cell
    nprobe: int = Field(16, ge=1)  # ivf cells scanned per query
    hnsw_m: int = Field(32, ge=2)  # hnsw links per node
    ef_construction: int = Field(80, ge=1)
    ef_search: int = Field(128, ge=1)
    seed: int = 0  # ivf k-means


class NonFiniteVectorsError(ValueError):
    """Vectors (or queries) with NaN or infinite entries: no index can rank them."""


def as_float32(vectors: np.ndarray | torch.Tensor) -> np.ndarray:
    """A C-contiguous float32 (n, D) array of `vectors` (a tensor is detached and moved to CPU)."""
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().float().cpu().numpy()
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError(f"expected a 2-d (rows, dim) array of vectors, got shape {v.shape}")
    return v


def check_finite(vectors: np.ndarray, what: str = "vectors") -> None:
    """Raise `NonFiniteVectorsError` naming the rows of `vectors` with NaN or inf entries."""
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if len(bad):
        more = f" (and {len(bad) - _SHOWN} more)" if len(bad) > _SHOWN else ""
        raise NonFiniteVectorsError(
            f"{what}: {len(bad)} of {len(vectors)} row(s) hold NaN or infinite values, rows "
            f"{bad[:_SHOWN].tolist()}{more}; a diverged model or a broken vector table?"
        )


def normalise(vectors: np.ndarray | torch.Tensor) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32."""
    v = as_float32(vectors)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def default_nlist(n: int) -> int:
    """About 4·√n cells, with at least 39 training rows per cell (faiss's own floor)."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


class AnnIndex:
    """A faiss index over `vectors` (n, D) built as `config` says; `search` returns the top k."""

    def __init__(self, vectors: np.ndarray | torch.Tensor, config: AnnConfig | None = None,
                 what: str = "vectors") -> None:  # fmt: skip
        self.config = config or AnnConfig()
        v = as_float32(vectors)
        check_finite(v, what)
        if len(v) == 0:
            raise ValueError(f"{what}: cannot index an empty table")
        self.what = what
        self.vectors = normalise(v) if self.config.metric == "cosine" else v  # kept for exact re-search
        self.n, self.dim = self.vectors.shape
        self.index = self._build()

    def __len__(self) -> int:
        return self.n

    def _build(self) -> faiss.Index:
        c, d = self.config, self.dim
        if c.kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif c.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, c.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = c.ef_construction
            index.hnsw.efSearch = c.ef_search
        else:
            nlist = min(c.nlist or default_nlist(self.n), self.n)
            self.nlist = nlist
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = c.seed
            index.train(self.vectors)
            index.nprobe = min(c.nprobe, nlist)
        index.add(self.vectors)
        return index

    def search(
        self, queries: np.ndarray | torch.Tensor, k: int,
        exclude: np.ndarray | sp.spmatrix | sp.sparray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices (Q, k'), scores (Q, k')) best first, k' = min(k, n); -1 / -inf pad a query
        with fewer eligible rows. `exclude`: (Q,) one row per query (-1: none), or a sparse
        (Q, n) matrix whose stored entries are the rows to skip for each query."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = as_float32(queries)
        check_finite(q, f"queries against {self.what}")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have {q.shape[1]} dims but {self.what} has {self.dim}")
        if self.config.metric == "cosine":
            q = normalise(q)
        k = min(k, self.n)
        skip = _exclusions(exclude, len(q), self.n)
        extra = int(np.diff(skip.indptr).max()) if skip is not None and len(q) else 0
        ask = min(k + extra, self.n)
        scores, idx = self.index.search(q, ask) if len(q) else (np.zeros((0, ask), np.float32), np.zeros((0, ask), np.int64))
        idx, scores = _drop_excluded(idx.astype(np.int64), scores, skip, k)
        if self.config.kind != "flat" and len(q):
            eligible = self.n - (np.diff(skip.indptr) if skip is not None else 0)
            short = np.flatnonzero((idx >= 0).sum(axis=1) < np.minimum(k, eligible))
            if len(short):  # the graph / the probed cells held too few: search those exactly
                e, i = faiss.knn(q[short], self.vectors, ask, metric=faiss.METRIC_INNER_PRODUCT)
                sub = skip[short] if skip is not None else None
                idx[short], scores[short] = _drop_excluded(i.astype(np.int64), e, sub, k)
        return idx, scores


def _exclusions(exclude, n_queries: int, n: int) -> sp.csr_matrix | None:
    """`exclude` as a (Q, n) CSR matrix of rows to skip (None when nothing is)."""
    if exclude is None:
        return None
    if sp.issparse(exclude):
        m = sp.csr_matrix(exclude)
        if m.shape != (n_queries, n):
            raise ValueError(f"exclude has shape {m.shape}, expected (queries, rows) = ({n_queries}, {n})")
        m = m.copy()
        m.sum_duplicates()  # a repeated entry would count twice in the per-query exclusion counts
        m.eliminate_zeros()  # a stored zero excludes nothing
        m.data[:] = 1
        return m
    rows = np.asarray(exclude, dtype=np.int64)
    if rows.shape != (n_queries,):
        raise ValueError(f"exclude has shape {rows.shape}, expected one row per query ({n_queries},)")
    outside = np.flatnonzero(rows >= n)
    if len(outside):
        raise ValueError(
            f"exclude names rows outside the {n} rows indexed, for queries {outside[:_SHOWN].tolist()} "
            f"(rows {rows[outside[:_SHOWN]].tolist()})"
        )
    keep = rows >= 0
    return sp.csr_matrix((np.ones(keep.sum(), np.int8), (np.flatnonzero(keep), rows[keep])), shape=(n_queries, n))


def _drop_excluded(idx: np.ndarray, scores: np.ndarray, skip: sp.csr_matrix | None, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first k results per query that are found (idx >= 0) and not excluded, -1 / -inf padded."""
    ok = idx >= 0
    if skip is not None and skip.nnz:
        n = skip.shape[1]
        skipped = np.repeat(np.arange(skip.shape[0], dtype=np.int64), np.diff(skip.indptr)) * n + skip.indices
        keys = np.arange(len(idx), dtype=np.int64)[:, None] * n + idx  # (Q, k): query row * n + result
        ok &= ~np.isin(keys, skipped)
    rank = np.cumsum(ok, axis=1) - 1  # position among the kept results
    keep = ok & (rank < k)
    out_i = np.full((len(idx), k), -1, dtype=np.int64)
    out_s = np.full((len(idx), k), -np.inf, dtype=np.float32)
    r, c = np.nonzero(keep)
    out_i[r, rank[r, c]] = idx[r, c]
    out_s[r, rank[r, c]] = scores[r, c]
    return out_i, out_s


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |approx ∩ exact| / |exact|, on (Q, k) index arrays (-1 = no result)."""
    approx, exact = np.asarray(approx), np.asarray(exact)
    if approx.shape[0] != exact.shape[0]:
        raise ValueError(f"approx has {approx.shape[0]} queries, exact {exact.shape[0]}")
    found = [len(np.intersect1d(a[a >= 0], e[e >= 0])) / max((e >= 0).sum(), 1) for a, e in zip(approx, exact)]
    return float(np.mean(found)) if found else float("nan")


def nearest_neighbours(
    vectors: np.ndarray | torch.Tensor, k: int, method: Method = "auto", seed: int = 0,
    queries: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(indices (Q, k), cosines (Q, k)) of each query row's k nearest rows of `vectors`, the row
    itself excluded; queries (row indices) default to every row. `auto` is an exact flat search
    up to AUTO_EXACT_MAX rows and HNSW above."""
    v = as_float32(vectors)
    queries = np.arange(len(v)) if queries is None else np.asarray(queries, dtype=np.int64)
    kind: Kind = ("flat" if len(v) <= AUTO_EXACT_MAX else "hnsw") if method == "auto" else method
    index = AnnIndex(v, AnnConfig(kind=kind, metric="cosine", seed=seed))
    return index.search(index.vectors[queries], min(k, len(v) - 1), exclude=queries)
