"""The torch word2vec engine shared by prod2vec, meta-prod2vec, user2vec and `prod2vec_topk`.

Skip-gram with negative sampling (Mikolov, Sutskever, Chen, Corrado & Dean 2013, "Distributed
representations of words and phrases and their compositionality"), and CBOW as an option
(Mikolov, Chen, Corrado & Dean 2013, "Efficient estimation of word representations in vector
space"). Two tables: `input` (the vectors we keep) and `output` (the context vectors). For an
example with input vector h, positive output vector o and noise vectors q_1..q_N:

    loss = -w · [ log σ(h·o) + (K / N) Σ_n log σ(-h·q_n) ]

Noise items are drawn ∝ count^0.75 and SHARED by a group of S examples (`negative_group`): the
S·N noise scores of a group are one matrix product (S, D) @ (D, N) instead of a gather of S·K
rows, which is what makes large CPU batches fast. Weighting them by K / N keeps the expected
gradient of word2vec's K per-example draws; keeping groups small (S / N <= ~64) keeps each noise
item's summed update as small as word2vec's spread-out ones. `w` is an optional per-example
weight (meta-prod2vec's λ).

Training runs through THE fit loop with batches of examples generated per epoch (vectorised, see
`encoders.sequences`). Two ways to update:
- `fused_sgd` (default): the loss function applies word2vec's plain SGD step itself — gradients
  written by hand, scattered into the tables with `index_add_` — and returns a loss that needs no
  backward (the loop's contract for self-updating families). The learning rate decays linearly
  within each epoch between the loop's per-epoch values (`TrainConfig.lr`, `lr_schedule`), as
  word2vec decays alpha; it travels in the batch as `lr`.
- `optimizer`: the same loss by autograd, stepped by the loop's optimiser (sparse embeddings for
  `sparse_adam`, `sgd`, `adagrad`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from recforge.encoders.sequences import gather
from recforge.models.base import Batch
from recforge.training.callbacks import Callback
from recforge.training.config import TrainConfig
from recforge.training.device import resolve_device
from recforge.training.loop import History, fit, lr_at

logger = logging.getLogger(__name__)

Examples = dict[str, torch.Tensor]
SPARSE_OPTIMIZERS = ("sparse_adam", "sgd", "adagrad")
LOSS_ROWS = 512


class Word2VecConfig(BaseModel):
    """Hyper-parameters of the skip-gram / CBOW engine (word2vec's names where it has one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dim: int = Field(64, gt=0)
    window: int = Field(5, ge=1)
    negative: int = Field(5, ge=1, description="noise draws per example (their total weight)")
    shared_negatives: int = Field(16, ge=1, description="noise items drawn per group of examples")
    negative_group: int = Field(1024, ge=1, description="examples sharing one draw of noise items")
    sample: float = Field(1e-3, ge=0, description="frequent-item subsampling threshold, 0 = off")
    ns_exponent: float = Field(0.75, ge=0)
    architecture: Literal["skipgram", "cbow"] = "skipgram"
    update: Literal["fused_sgd", "optimizer"] = "fused_sgd"
    workers: int = Field(2, ge=1, description="CPU threads: gensim's workers, or the fused step's")
    min_batches: int = Field(64, ge=1, description="batches per epoch at least (caps the batch size)")
    row_cap: int | None = Field(None, ge=1, description="fused step: most summed updates of one row per batch")


@dataclass(frozen=True)
class EmbeddingResult:
    """What an encoder learned: vectors of the entities seen in training + a JSON-ready report.

    `index` holds their positions in the id map (item_idx or user_idx); entities never seen in
    a training sequence get no vector (consumers fill them, see `align_item_vectors`).
    """

    index: np.ndarray  # (n,) int64
    vectors: np.ndarray  # (n, D) float32
    report: dict[str, Any] = field(default_factory=dict)
    users: EmbeddingResult | None = None  # user2vec: the user vectors


class SkipGram(nn.Module):
    """word2vec's two tables; `input` rows are the vectors an encoder publishes."""

    def __init__(
        self, n_input: int, n_output: int, dim: int, *, sparse: bool = False, seed: int | None = 0
    ) -> None:
        super().__init__()
        self.input = nn.Embedding(n_input, dim, sparse=sparse)
        self.output = nn.Embedding(n_output, dim, sparse=sparse)
        # seed None: torch's global generator (families are seeded by the estimator before build)
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        with torch.no_grad():
            # word2vec's init: small uniform inputs, zero outputs
            self.input.weight.copy_((torch.rand(n_input, dim, generator=generator) - 0.5) / dim)
            self.output.weight.zero_()

    def hidden(self, batch: Batch) -> torch.Tensor:
        """(B, D) the example's input vector: one row (skip-gram) or the mean of its bag (CBOW)."""
        if "bag" in batch:
            mask = batch["bag_mask"].to(self.input.weight.dtype)  # (B, C)
            rows = self.input(batch["bag"])  # (B, C, D)
            return (rows * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)
        return self.input(batch["input"])


def noise_distribution(counts: np.ndarray, exponent: float = 0.75) -> torch.Tensor:
    """(n,) float64 noise probabilities ∝ count^exponent (unseen tokens: 0)."""
    w = np.asarray(counts, dtype=np.float64) ** exponent
    w[np.asarray(counts) <= 0] = 0.0
    if w.sum() <= 0:
        raise ValueError("no token has a positive count: nothing to sample noise from")
    return torch.from_numpy(w / w.sum())


def sgns_loss(
    pos: torch.Tensor, neg: torch.Tensor, negative: int, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Skip-gram negative-sampling loss (Mikolov et al. 2013), -[log σ(pos) + K/N Σ log σ(-neg)].

    `pos` (B,) scores the true contexts, `neg` (B, N) the N noise items each example shares with
    its group; K = `negative` rescales them to word2vec's K draws. With `weight` (B,) it is the
    weighted mean.
    """
    pos, neg = pos.float(), neg.float()
    per = -(F.logsigmoid(pos) + (negative / neg.shape[-1]) * F.logsigmoid(-neg).sum(-1))  # (B,)
    if weight is None:
        return per.mean()
    w = weight.float()
    return (per * w).sum() / w.sum().clamp_min(1e-12)


def _grouped(h: torch.Tensor, groups: int) -> torch.Tensor:
    return h.view(groups, h.shape[0] // groups, h.shape[1])  # (G, S, D)


def skipgram_loss(network: SkipGram, batch: Batch, negative: int) -> torch.Tensor:
    """The differentiable SGNS loss of a batch (the `optimizer` update)."""
    noise = batch["negative"]  # (G, N)
    h = network.hidden(batch)  # (B, D)
    o = network.output(batch["target"])  # (B, D)
    q = network.output(noise)  # (G, N, D)
    neg = torch.bmm(_grouped(h, noise.shape[0]), q.transpose(1, 2)).reshape(h.shape[0], -1)  # (B, N)
    return sgns_loss((h * o).sum(-1), neg, negative, batch.get("weight"))


@torch.no_grad()
def _sgns_gradients(w_in: torch.Tensor, w_out: torch.Tensor, part: Batch, negative: int) -> dict[str, torch.Tensor]:
    """The fused step's scaled gradients for one slice of a batch (whole groups), reading only."""
    target, noise, lr = part["target"], part["negative"], part["lr"]
    groups, n_noise = noise.shape
    d = w_in.shape[1]
    if "bag" in part:
        bag, mask = part["bag"], part["bag_mask"].to(w_in.dtype)  # (B, C)
        rows = w_in.index_select(0, bag.reshape(-1)).view(*bag.shape, d)  # (B, C, D)
        h = (rows * mask[..., None]).sum(1).div_(mask.sum(1, keepdim=True).clamp_min(1.0))  # (B, D)
    else:
        h = w_in.index_select(0, part["input"])  # (B, D)
    b = h.shape[0]
    hg = h.view(groups, -1, d)  # (G, S, D)
    o = w_out.index_select(0, target)  # (B, D), a copy: reused in place below
    q = w_out.index_select(0, noise.reshape(-1)).view(groups, n_noise, d)  # (G, N, D)
    pos = torch.linalg.vecdot(h, o)  # (B,)
    sig_neg = torch.bmm(hg, q.transpose(1, 2)).sigmoid_()  # (G, S, N)
    ratio = negative / n_noise
    w = part.get("weight")  # (B,) or None
    # The reported loss is estimated on the slice's first LOSS_ROWS examples (batches are in
    # random order): exact on every row it would cost as much as the step's B x N sigmoids.
    r = slice(0, LOSS_ROWS)
    per = -(F.logsigmoid(pos[r]) + ratio * torch.log1p(-sig_neg.view(b, n_noise)[r].clamp_max(1 - 1e-7)).sum(-1))
    loss_sum, loss_weight = (per.sum(), torch.tensor(float(len(per)))) if w is None else ((per * w[r]).sum(), w[r].sum())
    # d log σ(pos) / d pos = 1 - σ(pos), and -d log σ(-neg) / d neg = σ(neg); both times the step
    g_pos = pos.neg().sigmoid_().mul_(lr if w is None else lr * w)  # (B,) σ(-pos) = 1 - σ(pos)
    g_neg = sig_neg.mul_(lr * ratio if w is None else (lr * ratio * w).view(groups, -1, 1))  # (G, S, N)
    # in place where a tensor is dead: fewer (B, D) allocations and copies per step
    d_h = o.mul_(g_pos[:, None]).view(groups, -1, d).baddbmm_(g_neg, q, alpha=-1.0).view(b, d)  # (B, D)
    d_noise = torch.bmm(g_neg.transpose(1, 2), hg).view(-1, d)  # (G·N, D)
    if "input_scale" in part:
        d_h.mul_(part["input_scale"][:, None])
        g_pos = g_pos * part["target_scale"]
    return {
        "d_h": d_h, "d_noise": d_noise, "d_target": h.mul_(g_pos[:, None]),
        "loss_sum": loss_sum, "loss_weight": loss_weight,
    }


def _apply_input(w_in: torch.Tensor, part: Batch, grads: dict[str, torch.Tensor]) -> None:
    d_h = grads["d_h"]
    if "bag" in part:
        mask = part["bag_mask"]
        # word2vec gives every context word of a CBOW window the full hidden-layer error
        w_in.index_add_(0, part["bag"][mask], d_h[:, None, :].expand(-1, mask.shape[1], -1)[mask])
    else:
        w_in.index_add_(0, part["input"], d_h)


def _apply_output(w_out: torch.Tensor, part: Batch, grads: dict[str, torch.Tensor]) -> None:
    w_out.index_add_(0, part["negative"].reshape(-1), grads["d_noise"], alpha=-1.0)
    w_out.index_add_(0, part["target"], grads["d_target"])


def row_scales(batch: Batch, n_input: int, n_output: int, cap: int) -> Batch:
    """`batch` with per-example update scales min(1, cap / n_r), n_r the examples of the batch
    that update row r: a row's summed step is then at most `cap` examples' worth.

    Sequential SGD lets a row's repeated updates saturate one after another; a batched step adds
    them all at once, and for rows much more frequent than the rest (meta-prod2vec's category and
    brand tokens) that sum overshoots and diverges. Counted over the whole batch, so the scales
    do not depend on how the step is split among workers.
    """
    rows = batch["bag"][batch["bag_mask"]] if "bag" in batch else batch["input"]
    n_in = torch.bincount(rows, minlength=n_input).clamp_min(1).float()  # (V_in,)
    n_out = torch.bincount(batch["target"], minlength=n_output).clamp_min(1).float()  # (V_out,)
    if "bag" in batch:
        # a bag's error reaches all its words: scale by its most-shared word
        per_word = (cap / gather(n_in, batch["bag"])).clamp(max=1.0).masked_fill(~batch["bag_mask"], 1.0)
        input_scale = per_word.min(dim=1).values
    else:
        input_scale = (cap / gather(n_in, batch["input"])).clamp(max=1.0)
    return {**batch, "input_scale": input_scale, "target_scale": (cap / gather(n_out, batch["target"])).clamp(max=1.0)}


def split_batch(batch: Batch, parts: int) -> list[Batch]:
    """`batch` cut into at most `parts` slices of whole noise groups (all share `lr`)."""
    groups = batch["negative"].shape[0]
    per = math.ceil(groups / max(1, min(parts, groups)))
    size = per * (len(batch["target"]) // groups)
    out: list[Batch] = []
    for start in range(0, groups, per):
        rows = slice(start * size // per, (start + per) * size // per)
        part = {k: (v if k == "lr" else v[start:start + per] if k == "negative" else v[rows]) for k, v in batch.items()}
        out.append(part)
    return out


@torch.no_grad()
def fused_sgd_step(
    network: SkipGram, batch: Batch, negative: int, pool: ThreadPoolExecutor | None = None, workers: int = 1,
    row_cap: int | None = None,
) -> torch.Tensor:
    """One word2vec SGD step on a batch, gradients by hand; returns the batch's (detached) loss.

    Every gradient is computed from the parameters before the step, then scattered with
    `index_add_` (repeated rows accumulate, as in word2vec's Hogwild threads). fp32 throughout,
    also under the loop's autocast, since the tables are fp32.

    With a `pool` of `workers` = W threads the batch is cut into W slices whose gradients are computed
    concurrently (torch releases the GIL), then the input and the output table are updated by
    two threads at once, each table in a fixed order. So W single-threaded workers keep both CPU
    cores busy without OpenMP's per-operation barriers — which stall whenever the machine is
    oversubscribed — and the result is the same for any W: no update races with another.
    """
    w_in, w_out = network.input.weight, network.output.weight
    if row_cap is not None:
        batch = row_scales(batch, len(w_in), len(w_out), row_cap)
    with torch.autocast(device_type=w_in.device.type, enabled=False):
        if pool is None:
            parts = [batch]
            grads = [_sgns_gradients(w_in, w_out, batch, negative)]
        else:
            parts = split_batch(batch, workers)
            grads = list(pool.map(lambda p: _sgns_gradients(w_in, w_out, p, negative), parts))

        def update_input() -> None:
            for part, g in zip(parts, grads, strict=True):
                _apply_input(w_in, part, g)

        if pool is None:
            update_input()
        else:
            pending = pool.submit(update_input)
        for part, g in zip(parts, grads, strict=True):
            _apply_output(w_out, part, g)
        if pool is not None:
            pending.result()
        loss_sum = torch.stack([g["loss_sum"] for g in grads]).sum()
        return loss_sum / torch.stack([g["loss_weight"] for g in grads]).sum().clamp_min(1e-12)


def epoch_batches(
    examples: Examples, noise: torch.Tensor, batch_size: int, config: Word2VecConfig,
    generator: torch.Generator, lr: tuple[float, float] | None = None,
) -> list[Batch]:
    """One epoch's examples shuffled and cut into batches.

    Each batch gets (G, N) noise items, one draw per group of `negative_group` examples, and, for
    the fused update, its learning rate interpolated linearly from `lr[0]` to `lr[1]`. The last
    batch is padded to whole groups with weight-0 examples.
    """
    n = len(examples["target"])
    if n == 0:
        return []
    # Summed SGD steps overshoot when a batch repeats a frequent pair too often, which is what a
    # batch that is large for the corpus does: keep at least `min_batches` steps per epoch.
    batch_size = min(batch_size, max(config.negative_group, math.ceil(n / config.min_batches)))
    group = min(config.negative_group, batch_size)
    batch_size -= batch_size % group
    perm = torch.randperm(n, generator=generator)  # (E,)
    shuffled = {k: v.index_select(0, perm) for k, v in examples.items()}  # faster than v[perm] on CPU
    tail = -n % group  # padding examples that make the last group whole
    if tail:
        shuffled = {k: torch.cat([v, torch.zeros((tail, *v.shape[1:]), dtype=v.dtype)]) for k, v in shuffled.items()}
    n_batches = math.ceil(n / batch_size)
    groups = math.ceil((n + tail) / group)
    draws = torch.multinomial(noise, groups * config.shared_negatives, replacement=True, generator=generator)
    draws = draws.view(groups, config.shared_negatives).split(batch_size // group)  # nb x (G, N)
    parts = {k: v.split(batch_size) for k, v in shuffled.items()}
    out = []
    for b in range(n_batches):
        batch: Batch = {"target": parts["target"][b]}  # first key: the loop counts its rows
        batch.update({k: v[b] for k, v in parts.items() if k != "target"})
        batch["negative"] = draws[b]
        if tail and b == n_batches - 1 and "weight" not in batch:
            # weight 0 makes the padding change nothing; other batches keep the unweighted path
            batch["weight"] = (torch.arange(len(batch["target"])) < len(batch["target"]) - tail).float()
        if lr is not None:
            batch["lr"] = torch.tensor(lr[0] + (lr[1] - lr[0]) * b / n_batches, dtype=torch.float32)
        out.append(batch)
    return out


def train_word2vec(
    network: SkipGram,
    epoch_examples: Callable[[torch.Generator], Examples],
    noise: torch.Tensor,
    config: Word2VecConfig,
    train_config: TrainConfig,
    callbacks: Sequence[Callback] = (),
) -> History:
    """Fit `network` with THE fit loop; `epoch_examples(generator)` draws one epoch's examples
    (`target` (E,) and `input` (E,) or `bag`/`bag_mask` (E, C), optional `weight` (E,))."""
    fused = config.update == "fused_sgd"
    if not fused and any(m.sparse for m in (network.input, network.output)) and (
        train_config.optimizer not in SPARSE_OPTIMIZERS
    ):
        raise ValueError(f"sparse tables need optimizer in {SPARSE_OPTIMIZERS}, got {train_config.optimizer!r}")
    # the fused step updates the tables itself: no optimiser may touch them
    network.requires_grad_(not fused)
    k = config.negative
    on_cpu = resolve_device(train_config.device).type == "cpu"
    workers = config.workers if fused and on_cpu else 1

    def batches(epoch: int, generator: torch.Generator) -> list[Batch]:
        lr = (lr_at(epoch, train_config), lr_at(epoch + 1, train_config)) if fused else None
        return epoch_batches(
            epoch_examples(generator), noise, train_config.batch_size, config, generator, lr
        )

    with contextlib.ExitStack() as stack:
        pool = None
        if workers > 1:
            pool = stack.enter_context(ThreadPoolExecutor(workers, thread_name_prefix="word2vec"))
            stack.enter_context(_intra_op_threads(1))

        def loss_fn(net: nn.Module, batch: Batch) -> torch.Tensor:
            if fused:
                return fused_sgd_step(net, batch, k, pool, workers, config.row_cap)
            return skipgram_loss(net, batch, k)

        history = fit(network, batches, loss_fn, train_config, callbacks=callbacks)
    network.requires_grad_(True)
    return history


@contextlib.contextmanager
def _intra_op_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_network(
    n_input: int, n_output: int, config: Word2VecConfig, train_config: TrainConfig
) -> SkipGram:
    """A `SkipGram` sized for the vocabularies, sparse when an optimiser will update it sparsely."""
    sparse = config.update == "optimizer" and train_config.optimizer in SPARSE_OPTIMIZERS
    return SkipGram(n_input, n_output, config.dim, sparse=sparse, seed=train_config.seed)


def throughput(words_per_epoch: int, history: History, cpu_seconds: float) -> dict[str, float]:
    """Words (corpus tokens, before subsampling: gensim's raw words) and examples per second of
    wall time, and words per CPU-second (all threads; robust to other jobs on the machine)."""
    seconds = float(sum(history.seconds))
    words = words_per_epoch * history.epochs
    return {
        "epochs": history.epochs,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "words_per_s": round(words / seconds, 1) if seconds > 0 else 0.0,
        "words_per_cpu_s": round(words / cpu_seconds, 1) if cpu_seconds > 0 else 0.0,
        "examples_per_s": round(sum(history.samples) / seconds, 1) if seconds > 0 else 0.0,
        "final_loss": float(history.loss[-1]) if history.loss else float("nan"),
    }
