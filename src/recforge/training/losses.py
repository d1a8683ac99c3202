"""Losses as plain functions of predictions (Spotlight's style): each returns a scalar mean.

`pos` holds one score per example (B,); `neg` holds the scores of sampled negatives, (B,) or
(B, N). Scores are upcast to float32 so the losses stay stable under mixed precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _weighted_mean(loss: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return loss.mean()
    w = weight.to(loss.dtype)
    # clamp keeps an all-zero-weight batch at 0 rather than NaN
    return (loss * w).sum() / w.sum().clamp_min(torch.finfo(loss.dtype).tiny)


def _pairwise(pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pos, neg = pos.float(), neg.float()
    if neg.dim() == pos.dim() + 1:
        pos = pos.unsqueeze(-1)  # (B, 1) against (B, N)
    return pos, neg


def mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """(Weighted) mean squared error, the rating-prediction objective of matrix factorisation
    (Koren, Bell & Volinsky 2009, "Matrix factorization techniques for recommender systems").

    With `weight` it is the weighted mean sum(w·e²)/sum(w), e.g. the confidence weights of
    Hu, Koren & Volinsky 2008 ("Collaborative filtering for implicit feedback datasets").
    """
    err = (pred.float() - target.float()).pow(2)  # (B,)
    return _weighted_mean(err, weight)


def bce(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy on logits: the pointwise log loss of NCF
    (He et al. 2017, "Neural collaborative filtering"). `weight` gives a weighted mean."""
    logits = logits.float()
    loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
    return _weighted_mean(loss, weight)


def bpr(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking, -log σ(pos - neg)
    (Rendle et al. 2009, "BPR: Bayesian personalized ranking from implicit feedback")."""
    pos, neg = _pairwise(pos, neg)
    return -F.logsigmoid(pos - neg).mean()


def top1(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """TOP1, σ(neg - pos) + σ(neg²) averaged over negatives (Hidasi et al. 2016,
    "Session-based recommendations with recurrent neural networks"); the second term pushes
    negative scores towards zero."""
    pos, neg = _pairwise(pos, neg)
    return (torch.sigmoid(neg - pos) + torch.sigmoid(neg.pow(2))).mean()


def bpr_max(pos: torch.Tensor, neg: torch.Tensor, reg: float = 1.0) -> torch.Tensor:
    """BPR-max, -log Σ_j s_j σ(pos - neg_j) + reg · Σ_j s_j neg_j², with s = softmax over the
    negative scores (Hidasi & Karatzoglou 2018, "Recurrent neural networks with top-k gains for
    session-based recommendations"). `neg` is (B, N)."""
    pos, neg = _pairwise(pos, neg)
    log_s = F.log_softmax(neg, dim=-1)  # (B, N)
    # log-sum-exp form: the sum of s_j σ(·) underflows for confident rankings
    ranking = -torch.logsumexp(log_s + F.logsigmoid(pos - neg), dim=-1)  # (B,)
    penalty = (log_s.exp() * neg.pow(2)).sum(-1)  # (B,)
    return (ranking + reg * penalty).mean()


def top1_max(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """TOP1-max, Σ_j s_j (σ(neg_j - pos) + σ(neg_j²)), with s = softmax over the negative scores
    (Hidasi & Karatzoglou 2018). `neg` is (B, N)."""
    pos, neg = _pairwise(pos, neg)
    s = torch.softmax(neg, dim=-1)  # (B, N)
    return (s * (torch.sigmoid(neg - pos) + torch.sigmoid(neg.pow(2)))).sum(-1).mean()


def sampled_softmax(
    pos: torch.Tensor,
    neg: torch.Tensor,
    log_q_pos: torch.Tensor | None = None,
    log_q_neg: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of the positive against sampled negatives, with logQ correction.

    Each logit is corrected by the log-probability that the sampler drew it, which makes the
    sampled softmax an unbiased estimate of the full one (Bengio & Senécal 2008, "Adaptive
    importance sampling to accelerate training of a neural probabilistic language model";
    Yi et al. 2019, "Sampling-bias-corrected neural modeling for large corpus item
    recommendations"). `neg` is (B, N), or (N,) negatives shared by the batch (in-batch or
    mixed negatives); `log_q_*` broadcast against `pos` and `neg`.
    """
    pos, neg = pos.float(), neg.float()
    if neg.dim() == 1:
        neg = neg.unsqueeze(0).expand(pos.shape[0], -1)  # (B, N)
    if log_q_pos is not None:
        pos = pos - log_q_pos.float()
    if log_q_neg is not None:
        neg = neg - log_q_neg.float()
    logits = torch.cat([pos.unsqueeze(-1), neg], dim=-1)  # (B, 1 + N)
    return (torch.logsumexp(logits, dim=-1) - logits[:, 0]).mean()


def softmax_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Full softmax cross-entropy over the catalogue (Covington et al. 2016, "Deep neural networks
    for YouTube recommendations").

    `target` is either class indices (B,) or a multi-hot / count matrix (B, C), in which case this
    is the multinomial log-likelihood -Σ_i x_i log softmax(logits)_i of Mult-VAE
    (Liang et al. 2018, "Variational autoencoders for collaborative filtering").
    """
    logits = logits.float()
    if target.dim() == logits.dim() - 1:
        return F.cross_entropy(logits, target.long())
    return -(target.to(logits.dtype) * F.log_softmax(logits, dim=-1)).sum(-1).mean()
