"""`hybrid`: the six ways deck 003 combines collaborative filtering and content, as one family
with a `strategy` parameter. The CF part is BPR-MF (x̂ = γ_u·γ_i + β_i); the content part maps an
item's content vector f_i (the tables `vectors` names, as for vbpr) through g (a linear layer,
or an MLP with `hidden`) into the same D dimensions. All six train with BPR on (u, i, j) triples.

- `weighting`: two recommenders, each with its own BPR loss — CF and content (θ_u·g(f_i)) — and
  the score their blend  w·x̂_cf + (1 − w)·x̂_content  with w = `weight` (tuned on validation);
  an item with no CF opinion (a cold item) gets the content score alone, the weights
  renormalised over the recommenders that can score it (as P-Tango does, Claypool et al. 1999).
- `switching`: the same two parts; an item with fewer than `switch_threshold` training
  interactions is scored by content, the others by CF (Burke 2002's switching hybrid).
- `initialising`: γ_i starts from content, γ_i ← P f_i (P: the top-D principal directions of
  the content table, scaled to the CF init), then plain BPR-MF; a new item's γ is P f.
- `joint`: one item representation v_i = γ_i + g(f_i) serves the BPR objective while a decoder
  reconstructs the content from it, λ‖h(v_i) − f_i‖² (both objectives shape v; CKE-like).
- `regularising`: BPR-MF with a penalty λ‖γ_i − g(f_i)‖² pulling each item's CF factors towards
  what its content predicts, g learnt alongside (collaborative topic regression's idea).
- `mapping`: BPR-MF, and g learns content → CF factors with MSE on the (detached) γ_i, as
  deep_content_audio does for sounds, here for any modality.

Every strategy scores cold items from content alone (the CF factors of a new item are unknown:
the content estimate g(f) or P f takes their place, β_i = 0), and cold users by folding in their
history: the user vector is the mean of the history items' vectors.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from recforge.models.base import Family, ModelConfig, RecommenderNetwork
from recforge.models.cf.bpr import batches
from recforge.models.layers import lookup
from recforge.training.losses import bpr as bpr_loss

logger = logging.getLogger(__name__)

Strategy = Literal["weighting", "switching", "initialising", "joint", "regularising", "mapping"]


class HybridConfig(ModelConfig):
    strategy: Strategy = "weighting"
    dim: int = Field(32, gt=0)
    hidden: int | None = Field(None, gt=0)  # g: linear (None) or one ReLU layer of this width
    l2: float = Field(1e-5, ge=0)
    weight: float = Field(0.5, ge=0.0, le=1.0)  # weighting: w of the CF score
    switch_threshold: int = Field(5, ge=1)  # switching: fewer training interactions -> content
    content_weight: float = Field(1.0, ge=0.0)  # λ of the joint / regularising / mapping terms
    vectors: tuple[Literal["image", "text", "audio", "content2vec"], ...] = Field(("image",), min_length=1)


class Hybrid(RecommenderNetwork):
    def __init__(self, n_users: int, n_items: int, features: torch.Tensor, counts: torch.Tensor,
                 config: HybridConfig) -> None:  # fmt: skip
        super().__init__()
        self.n_users, self.n_items, self.strategy = n_users, n_items, config.strategy
        f, d = features.shape[1], config.dim
        self.register_buffer("features", features.float())  # (I, F)
        self.register_buffer("counts", counts.float())  # (I,) training interactions per item
        self.weight = config.weight
        self.switch_threshold = config.switch_threshold
        self.user = nn.Embedding(n_users, d)
        self.item = nn.Embedding(n_items, d)
        self.item_bias = nn.Embedding(n_items, 1)
        nn.init.normal_(self.user.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)
        nn.init.zeros_(self.item_bias.weight)
        if config.hidden is None:
            self.content = nn.Linear(f, d)  # g
        else:
            self.content = nn.Sequential(nn.Linear(f, config.hidden), nn.ReLU(), nn.Linear(config.hidden, d))
        if self.strategy in ("weighting", "switching"):
            self.user_content = nn.Embedding(n_users, d)  # θ_u of the content recommender
            nn.init.normal_(self.user_content.weight, std=0.1)
        if self.strategy == "joint":
            self.decoder = nn.Linear(d, f)  # h
        if self.strategy == "initialising":
            self.register_buffer("init_projection", _principal_projection(self.features, d))  # (F, D)
            with torch.no_grad():
                self.item.weight.copy_(self.features @ self.init_projection)

    # --- item vectors: what the CF score reads for items of the training map, and for new ones
    def content_vectors(self, features: torch.Tensor) -> torch.Tensor:
        """(N, F) -> (N, D): the content estimate of an item's factors."""
        if self.strategy == "initialising":
            return features @ self.init_projection
        return self.content(features)

    def item_vectors(self, item: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) (or every item) -> (B, D) the vectors the CF score uses."""
        gi = self.item.weight if item is None else lookup(self.item, item)
        if self.strategy == "joint":
            f = self.features if item is None else self.features[item]
            gi = gi + self.content(f)
        return gi

    def _blend(self, cf: torch.Tensor, content: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        if self.strategy == "weighting":
            return self.weight * cf + (1.0 - self.weight) * content
        return torch.where(counts < self.switch_threshold, content, cf)  # switching

    def parts(self, user: torch.Tensor, item: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B,), (B,) -> the CF score, the content score (two-part strategies) and the factors the
        regularisers read."""
        gu, gi = lookup(self.user, user), self.item_vectors(item)  # (B, D)
        out = {"cf": (gu * gi).sum(-1) + lookup(self.item_bias, item).squeeze(-1), "gu": gu, "gi": gi}
        if self.strategy in ("weighting", "switching"):
            out["content"] = (lookup(self.user_content, user) * self.content(self.features[item])).sum(-1)
        return out

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        p = self.parts(user, item)
        if "content" in p:
            return self._blend(p["cf"], p["content"], self.counts[item])
        return p["cf"]

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        cf = self.user(user) @ self.item_vectors().T + self.item_bias.weight.T  # (B, I)
        if self.strategy not in ("weighting", "switching"):
            return cf
        content = self.user_content(user) @ self.content(self.features).T  # (B, I)
        return self._blend(cf, content, self.counts.expand_as(cf))

    def score_cold_items(self, user: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        """(B,), (C, F) -> (B, C): a new item has no γ_i, β_i or interactions — its content
        estimate takes the factors' place (weighting and switching: the content recommender)."""
        if self.features.shape[1] == 0:
            return super().score_cold_items(user, content)  # trained without content: cannot
        if content.shape[1] != self.features.shape[1]:
            raise ValueError(f"hybrid: cold items have {content.shape[1]}-d content, the model was trained "
                             f"on {self.features.shape[1]}-d vectors")
        content = content.to(self.features)
        if self.strategy in ("weighting", "switching"):  # no CF opinion: the content part alone
            return self.user_content(user) @ self.content(content).T
        return self.user(user) @ self.content_vectors(content).T  # (B, C)

    def score_cold_users(self, history: torch.Tensor) -> torch.Tensor:
        """(B, I) fold-in histories -> (B, I): the user vector is the mean of the history items'
        vectors (θ likewise from their content vectors for the two-part strategies)."""
        weights = history / history.sum(1, keepdim=True).clamp_min(1.0)  # (B, I)
        items = self.item_vectors()  # (I, D)
        cf = (weights @ items) @ items.T + self.item_bias.weight.T
        if self.strategy not in ("weighting", "switching"):
            return cf
        c = self.content(self.features)  # (I, D)
        return self._blend(cf, (weights @ c) @ c.T, self.counts.expand_as(cf))

    def item_embeddings(self) -> torch.Tensor:
        return self.item_vectors()


def _principal_projection(features: torch.Tensor, dim: int) -> torch.Tensor:
    """(F, D): the content table's top principal directions (zero-padded past rank), scaled so the
    projected vectors have the CF init's spread (std 0.1)."""
    f = features.shape[1]
    if f == 0:
        return torch.zeros(0, dim)
    centred = features - features.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)  # v: (min(I, F), F)
    proj = torch.zeros(f, dim)
    k = min(dim, v.shape[0])
    proj[:, :k] = v[:k].T
    spread = (centred @ proj).std().clamp_min(1e-8)
    return proj * (0.1 / spread)


def build(config: HybridConfig, train, item_vectors: torch.Tensor | None = None) -> Hybrid:
    """`item_vectors`: the (n_items, F) content vectors. Without any (the source has none of the
    tables `vectors` names) the content part has nothing to read: g sees zero-width vectors, so
    the hybrid is BPR-MF (plus a constant) and cannot score cold items."""
    if item_vectors is None:
        logger.warning("hybrid: no content vectors; training the CF part alone")
        item_vectors = torch.zeros(train.n_items, 0)
    if item_vectors.shape[0] != train.n_items:
        raise ValueError(f"hybrid: {item_vectors.shape[0]} content vectors for {train.n_items} items")
    counts = torch.bincount(torch.as_tensor(train.item_idx, dtype=torch.long), minlength=train.n_items)
    return Hybrid(train.n_users, train.n_items, item_vectors, counts, config)


def from_state(state: dict[str, torch.Tensor]) -> torch.Tensor:
    """The content vectors a saved hybrid was trained with (`Recommender.load`)."""
    return state["features"]


def loss(network: Hybrid, batch, config: HybridConfig) -> torch.Tensor:
    u, i, j = batch["user"], batch["item"], batch["negative"]
    pi, pj = network.parts(u, i), network.parts(u, j)
    out = bpr_loss(pi["cf"], pj["cf"])
    if "content" in pi:  # weighting, switching: the content recommender learns on its own
        out = out + bpr_loss(pi["content"], pj["content"])
    b = len(u)
    out = out + config.l2 * (pi["gu"].square().sum() + pi["gi"].square().sum() + pj["gi"].square().sum()) / b
    lam = config.content_weight
    if config.strategy == "joint":
        items = torch.cat([i, j])
        v = network.item_vectors(items)
        out = out + lam * (network.decoder(v) - network.features[items]).square().sum(-1).mean()
    elif config.strategy in ("regularising", "mapping"):
        items = torch.cat([i, j])
        gi = lookup(network.item, items)
        if config.strategy == "mapping":
            gi = gi.detach()  # g follows the CF factors, never the other way round
        out = out + lam * (gi - network.content(network.features[items])).square().sum(-1).mean()
    return out


FAMILY = Family(
    name="hybrid", config=HybridConfig, build=build, batches=batches, loss=loss,
    paper="deck 003's six CF + content hybrids (weighting, switching, initialising, joint, regularising, mapping)",
    inputs_from_state=from_state,
)
