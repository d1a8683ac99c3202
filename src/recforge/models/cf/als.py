"""`als`: alternating least squares for implicit feedback (Hu, Koren & Volinsky 2008,
"Collaborative Filtering for Implicit Feedback Datasets"), with the weighted-λ regularisation of
ALS-WR (Zhou, Wilkinson, Schreiber & Pan 2008, "Large-scale Parallel Collaborative Filtering for
the Netflix Prize") as an option.

With r_ui the summed `value` of user u's events on item i (counts, weights or ratings),

    p_ui = 1[r_ui > 0]          c_ui = 1 + α |r_ui|
    L = Σ_{u,i} c_ui (p_ui − x_uᵀ y_i)² + Σ_u λ_u ‖x_u‖² + Σ_i λ_i ‖y_i‖²

over *every* (u, i) cell, with λ_u = λ (or λ·n_u, n_u the user's number of interactions, for
`weighted_reg`). Fixing Y, each x_u solves (YᵀC_uY + λ_u I) x_u = YᵀC_u p_u, and the paper's trick
YᵀC_uY = YᵀY + Yᵀ(C_u − I)Y makes that cost O(n_u D²): YᵀY is shared, C_u − I is zero off u's
row. Negative values mean "disliked": p = 0 with confidence 1 + α|r|, as in `implicit`.

Two solvers, both batched over all users (items) at once — never a Python loop per user:

- exact (`use_cg=False`): A_u built with one bmm per chunk of users padded to similar lengths,
  then a batched Cholesky solve;
- conjugate gradient (`use_cg=True`, the default, as in `implicit`): `cg_steps` CG steps warm-
  started from the current factors (Takács, Pilászy & Tikk 2011, "Applications of the Conjugate
  Gradient Method for Implicit Feedback Collaborative Filtering"). A·v for every row at once is
  v YᵀY + λ v + S Y, with S = (C − 1) ∘ (v Yᵀ) sampled on the observed cells (SDDMM) and S Y a
  sparse-dense product, so a step costs O(nnz·D + U·D²).

Training goes through the one fit loop: an epoch is one batch (the whole matrix in both
orientations) and its loss does the two half-steps under no_grad and returns the weighted loss L
divided by Σ c_ui (the number `implicit.cpu._als.calculate_loss` reports). A loss that does not
require grad tells the loop to skip backward. `TrainConfig.epochs` is the number of iterations.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import nn

from recforge.data.interactions import InteractionData
from recforge.models.base import Batch, Family, ModelConfig, RecommenderNetwork
from recforge.models.layers import init_embedding_from_vectors

# Per chunk of the exact solver: padded gathered rows (B·L·D floats) stay under this budget
_CHUNK_ELEMS = 2**23
# CG stops for a row whose squared residual falls below this (`implicit` uses the same bound)
_CG_TOL = 1e-20


class ALSConfig(ModelConfig):
    factors: int = Field(64, gt=0)
    # > 0 keeps every A_u positive definite, so the batched Cholesky never meets a singular system
    regularization: float = Field(0.01, gt=0)
    alpha: float = Field(1.0, ge=0)
    weighted_reg: bool = False
    use_cg: bool = True
    cg_steps: int = Field(3, ge=1)


class ALS(RecommenderNetwork):
    """User factors X (U, D) and item factors Y (I, D); the score is x_uᵀ y_i."""

    def __init__(self, n_users: int, n_items: int, factors: int) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.user = nn.Embedding(n_users, factors)
        self.item = nn.Embedding(n_items, factors)
        # (weak reference to train, its `interaction_matrices`), kept by `batches` between
        # epochs; a cache, not state: no state_dict entry
        self.matrices: tuple[weakref.ref, Batch] | None = None
        for emb in (self.user, self.item):
            nn.init.normal_(emb.weight, std=0.01)
            # the closed-form solves write the factors; no optimiser may touch them
            emb.weight.requires_grad_(False)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return (self.user(user) * self.item(item)).sum(-1)  # (B,)

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.user(user) @ self.item.weight.T  # (B, I)

    def item_embeddings(self) -> torch.Tensor:
        return self.item.weight

    def retrieval_items(self) -> torch.Tensor:
        return self.item.weight

    def retrieval_users(self, user: torch.Tensor) -> torch.Tensor:
        return self.user(user)


# ------------------------------------------------------------------------------ the solves
def csr_tensor(indptr: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    """A torch sparse CSR matrix from its three arrays (no invariant checks: they come from scipy)."""
    with warnings.catch_warnings():
        # torch warns once per process that sparse CSR is "beta"; the ops used here are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(indptr, indices, values, shape, check_invariants=False)


def _with_values(m: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return csr_tensor(m.crow_indices(), m.col_indices(), values, m.shape)


def regularization_per_row(r: torch.Tensor, config: ALSConfig) -> torch.Tensor:
    """λ_u for each row of the CSR matrix `r`: λ, or λ·n_u for ALS-WR, (U,)."""
    counts = r.crow_indices().diff().to(r.values().dtype)  # (U,)
    if not config.weighted_reg:
        return torch.full_like(counts, config.regularization)
    # a row without interactions keeps λ, so its system stays positive definite
    return config.regularization * counts.clamp_min(1)


def _weights(values: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_ui − 1, c_ui p_ui) of the stored cells, each (nnz,)."""
    extra = alpha * values.abs()
    return extra, torch.where(values > 0, 1 + extra, torch.zeros_like(extra))


def solve_factors(r: torch.Tensor, y: torch.Tensor, x: torch.Tensor, config: ALSConfig) -> torch.Tensor:
    """One half-step: the rows' factors (U, D) minimising L with the other side's `y` (I, D) fixed.

    `r` is the (U, I) sparse CSR matrix of r_ui; `x` (U, D) is the current value, the warm start
    of the CG solver (the exact solver ignores it).
    """
    extra, target = _weights(r.values(), config.alpha)
    lam = regularization_per_row(r, config)  # (U,)
    gram = y.T @ y  # (D, D) YᵀY, shared by every row
    b = _with_values(r, target) @ y  # (U, D) YᵀC_u p_u
    if config.use_cg:
        # a row without interactions has b = 0, so its exact answer is 0 (as `implicit` sets it)
        start = torch.where(r.crow_indices().diff()[:, None] > 0, x, 0.0)  # (U, D)
        return _conjugate_gradient(
            _with_values(r, extra), y, gram, lam, b, start, config.cg_steps, config.weighted_reg
        )
    return _exact(r, extra, y, gram, lam, b)


def _conjugate_gradient(
    extra: torch.Tensor, y: torch.Tensor, gram: torch.Tensor, lam: torch.Tensor, b: torch.Tensor,
    x: torch.Tensor, steps: int, weighted: bool,
) -> torch.Tensor:
    """`steps` CG steps on A_u x_u = b_u for all rows at once, from `x` (U, D), updated in place."""
    yt = y.T
    tiny = torch.finfo(x.dtype).tiny
    # one λ for all rows folds into YᵀY, saving an elementwise pass per matvec
    if not weighted:
        gram = gram + lam[0] * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    lam_col = lam[:, None] if weighted else None

    def matvec(v: torch.Tensor) -> torch.Tensor:  # (U, D) -> (U, D): A_u v_u for every u
        dots = torch.sparse.sampled_addmm(extra, v, yt, beta=0.0).values()  # (nnz,) v_uᵀ y_i
        out = _with_values(extra, dots.mul_(extra.values())) @ y  # (U, D) Yᵀ(C_u − I)Y v_u
        out.addmm_(v, gram)
        if lam_col is not None:
            out.addcmul_(lam_col, v)
        return out

    res = matvec(x).neg_().add_(b)  # (U, D) b − A x
    p = res.clone()
    rs = res.square().sum(1)  # (U,)
    active = rs >= _CG_TOL
    for _ in range(steps):
        ap = matvec(p)  # (U, D)
        step = torch.where(active, rs / (p * ap).sum(1).clamp_min(tiny), 0.0)[:, None]  # (U, 1)
        x.addcmul_(step, p)
        res.addcmul_(step, ap, value=-1.0)
        rs_new = res.square().sum(1)
        active &= rs_new >= _CG_TOL
        p.mul_(torch.where(active, rs_new / rs.clamp_min(tiny), 0.0)[:, None]).add_(res)
        rs = rs_new
    return x


def _exact(
    r: torch.Tensor, extra: torch.Tensor, y: torch.Tensor, gram: torch.Tensor, lam: torch.Tensor,
    b: torch.Tensor,
) -> torch.Tensor:
    """Cholesky solves of A_u = YᵀY + λ_u I + Σ_i (c_ui − 1) y_i y_iᵀ, in chunks of rows."""
    n_rows, d = b.shape
    indptr, indices = r.crow_indices(), r.col_indices()
    counts = indptr.diff()  # (U,)
    # rows sorted by length, so each chunk pads its rows to nearly the same length
    order = torch.argsort(counts)
    sorted_counts = counts[order].cpu().numpy()
    root = extra.sqrt()  # (nnz,) Σ (c − 1) y yᵀ = GᵀG with G's rows √(c − 1) y
    out = torch.empty_like(b)
    failed = torch.zeros((), dtype=torch.bool, device=y.device)
    start = 0
    while start < n_rows:
        end = _chunk_end(sorted_counts, start, d)
        rows = order[start:end]  # (B,)
        length = int(sorted_counts[end - 1])
        offsets = torch.arange(length, device=y.device)  # (L,)
        mask = offsets < counts[rows, None]  # (B, L)
        pos = torch.where(mask, indptr[rows, None] + offsets, 0)  # (B, L) positions in r
        g = y[indices[pos]] * (root[pos] * mask)[..., None]  # (B, L, D)
        a = g.transpose(1, 2) @ g  # (B, D, D)
        a += gram
        a.diagonal(dim1=1, dim2=2).add_(lam[rows, None])
        # a is symmetric, so its transposed view is the same matrix already in LAPACK's
        # column-major order: the factorisation then skips a copy of the batch
        chol, info = torch.linalg.cholesky_ex(a.mT, upper=True)
        failed |= (info != 0).any()
        out[rows] = torch.cholesky_solve(b[rows, :, None], chol, upper=True)[..., 0]  # (B, D)
        start = end
    if bool(failed):
        raise FloatingPointError(
            "als: a normal-equation matrix is not positive definite in float32; "
            "raise regularization or lower alpha"
        )
    return out


def _chunk_end(sorted_counts: np.ndarray, start: int, d: int) -> int:
    """End of the chunk of rows starting at `start` (rows sorted by length, ascending).

    A chunk holds rows at most ~25 % longer than its first (so padding wastes little) and as many
    as fit B·max(L, D)·D floats in the budget; always at least one row.
    """
    first = int(sorted_counts[start])
    longest = max(first * 5 // 4, first + 16)
    end = int(np.searchsorted(sorted_counts, longest, side="right"))
    width = np.maximum(sorted_counts[start:end], d).astype(np.int64)  # (n,) ascending
    size = np.arange(1, len(width) + 1) * width * d  # (n,) chunk size if it ended there
    return start + max(1, int(np.searchsorted(size, _CHUNK_ELEMS, side="right")))


def weighted_loss(r: torch.Tensor, x: torch.Tensor, y: torch.Tensor, config: ALSConfig) -> torch.Tensor:
    """L / Σ_{u,i} c_ui for the (U, I) CSR matrix `r` and factors x (U, D), y (I, D); float64.

    Σ over all cells without forming them: Σ_{u,i} s_ui² = ⟨XᵀX, YᵀY⟩, and on the observed cells
    c (p − s)² − s² = c p − 2 c p s + (c − 1) s² (p² = p) replaces their (c = 1, p = 0) term.
    """
    extra, target = _weights(r.values(), config.alpha)
    s = torch.sparse.sampled_addmm(r, x, y.T, beta=0.0).values().double()  # (nnz,) x_uᵀ y_i
    target, extra = target.double(), extra.double()
    every_cell = ((x.T @ x).double() * (y.T @ y).double()).sum()
    observed = target.sum() - 2 * torch.dot(target, s) + torch.dot(extra, s * s)
    lam_u = regularization_per_row(r, config)  # (U,)
    counts_i = torch.bincount(r.col_indices(), minlength=y.shape[0]).to(y.dtype)  # (I,)
    weights_i = counts_i.clamp_min(1) if config.weighted_reg else torch.ones_like(counts_i)
    lam_i = config.regularization * weights_i
    reg = torch.dot(lam_u, x.square().sum(1)).double() + torch.dot(lam_i, y.square().sum(1)).double()
    total_confidence = x.shape[0] * y.shape[0] + extra.sum()
    return (every_cell + observed + reg) / total_confidence


# ------------------------------------------------------------------------------ the family
def build(config: ALSConfig, train: InteractionData, item_vectors: torch.Tensor | None = None) -> ALS:
    net = ALS(train.n_users, train.n_items, config.factors)
    if item_vectors is not None:
        # the first half-step solves the users against these vectors; later ones overwrite them
        init_embedding_from_vectors(net.item, item_vectors)
        net.item.weight.requires_grad_(False)
    return net


def interaction_matrices(train: InteractionData) -> Batch:
    """The r_ui matrix as CSR arrays in both orientations: `ui_*` (U, I) and `iu_*` (I, U).

    Repeated (user, item) events add up: r_ui is a count or a total weight, as in the paper.
    """
    ui = sp.csr_matrix(
        (train.value.astype(np.float32), (train.user_idx, train.item_idx)),
        shape=(train.n_users, train.n_items),
    )
    ui.sum_duplicates()
    iu = ui.T.tocsr()
    iu.sort_indices()
    out: Batch = {}
    # `ui_value` first: the loop counts a batch's samples by its first tensor, here nnz
    for name, m in (("ui", ui), ("iu", iu)):
        out[f"{name}_value"] = torch.from_numpy(m.data.astype(np.float32))
        out[f"{name}_indices"] = torch.from_numpy(m.indices.astype(np.int64))
        out[f"{name}_indptr"] = torch.from_numpy(m.indptr.astype(np.int64))
    return out


def batches(
    network: ALS, train: InteractionData, config: ALSConfig, batch_size, generator
) -> Iterator[Batch]:
    # one batch per epoch: each half-step needs the whole matrix; batch_size does not apply.
    # Every epoch of a fit sees the same matrices, and rebuilding them costs ~15 % of an epoch on
    # MovieLens-100K: the network keeps the last ones, keyed by a weak reference to their `train`.
    cached = network.matrices
    if cached is None or cached[0]() is not train:
        network.matrices = (weakref.ref(train), interaction_matrices(train))
    yield network.matrices[1]


def loss(network: ALS, batch: Batch, config: ALSConfig) -> torch.Tensor:
    """Both half-steps (users, then items) in place, then the weighted loss; no grad."""
    n_users, n_items = network.n_users, network.n_items
    ui = csr_tensor(batch["ui_indptr"], batch["ui_indices"], batch["ui_value"], (n_users, n_items))
    iu = csr_tensor(batch["iu_indptr"], batch["iu_indices"], batch["iu_value"], (n_items, n_users))
    x, y = network.user.weight, network.item.weight
    # solves are fp32 whatever the loop's autocast: bf16 normal equations lose the small λ
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        x.copy_(solve_factors(ui, y.float(), x.float(), config))
        y.copy_(solve_factors(iu, x.float(), y.float(), config))
        return weighted_loss(ui, x.float(), y.float(), config).float()


FAMILY = Family(
    name="als", config=ALSConfig, build=build, batches=batches, loss=loss,
    paper="Hu, Koren & Volinsky 2008; Zhou et al. 2008 (ALS-WR)",
)
