"""`vbpr`: Visual Bayesian Personalized Ranking (He & McAuley 2016, "VBPR: Visual Bayesian
Personalized Ranking from Implicit Feedback").

    x̂(u, i) = α + β_u + β_i + γ_u · γ_i + θ_u · (E f_i) + β' · f_i

where f_i is the item's content vector (the `image` encoder's by default: `ITEM_VECTORS` in
pipelines/training/pipeline.py maps vbpr to a pretraining namespace; any vector table works),
E (F -> K') projects it into a visual taste space that θ_u reads, and β' is a visual bias. The
content term scores an item with no interactions at all, the model's point for cold items.
α and β_u cancel in BPR's difference and are left out. Trained with BPR on (u, i, j) triples.
"""

from __future__ import annotations

import torch
from typing import Literal

from pydantic import Field
from torch import nn

from recforge.models.base import Family, ModelConfig, RecommenderNetwork
from recforge.models.cf.bpr import batches
from recforge.models.layers import lookup
from recforge.training.losses import bpr as bpr_loss


class VBPRConfig(ModelConfig):
    dim: int = Field(32, gt=0)  # K: the latent factors γ
    visual_dim: int = Field(32, gt=0)  # K': the projected content space θ_u · E f_i
    l2: float = Field(1e-5, ge=0)
    l2_visual: float = Field(1e-6, ge=0)  # on E and β'
    # which content tables f_i is made of, side by side (pipelines/training: ITEM_VECTORS)
    vectors: tuple[Literal["image", "text", "audio", "content2vec"], ...] = Field(("image",), min_length=1)


class VBPR(RecommenderNetwork):
    def __init__(self, n_users: int, n_items: int, features: torch.Tensor, config: VBPRConfig) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.register_buffer("features", features.float())  # (I, F), F = 0 without content
        f = features.shape[1]
        self.user = nn.Embedding(n_users, config.dim)
        self.item = nn.Embedding(n_items, config.dim)
        self.item_bias = nn.Embedding(n_items, 1)
        self.user_visual = nn.Embedding(n_users, config.visual_dim)  # θ_u
        self.projection = nn.Linear(f, config.visual_dim, bias=False)  # E
        self.visual_bias = nn.Linear(f, 1, bias=False)  # β'
        for emb in (self.user, self.item, self.user_visual):
            nn.init.normal_(emb.weight, std=0.1)
        nn.init.zeros_(self.item_bias.weight)
        nn.init.normal_(self.projection.weight, std=0.01)
        nn.init.zeros_(self.visual_bias.weight)

    def parts(self, user: torch.Tensor, item: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B,), (B,) -> the score (B,) and the factors it used, for the L2 terms."""
        gu, gi, tu = lookup(self.user, user), lookup(self.item, item), lookup(self.user_visual, user)
        f = self.features[item]  # (B, F)
        score = (gu * gi).sum(-1) + lookup(self.item_bias, item).squeeze(-1)
        score = score + (tu * self.projection(f)).sum(-1) + self.visual_bias(f).squeeze(-1)
        return score, gu, gi, tu

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return self.parts(user, item)[0]

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        visual = self.projection(self.features)  # (I, K')
        return (
            self.user(user) @ self.item.weight.T + self.item_bias.weight.T
            + self.user_visual(user) @ visual.T + self.visual_bias(self.features).T
        )  # fmt: skip

    def score_cold_items(self, user: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        """(B,), (C, F) content of items unseen in training -> (B, C): their γ_i and β_i are
        unknown (zero, as the paper scores new items), the content terms remain."""
        if content.shape[1] != self.features.shape[1]:
            raise ValueError(f"vbpr: cold items have {content.shape[1]}-d content, the model was trained "
                             f"on {self.features.shape[1]}-d vectors")
        if content.shape[1] == 0:
            return super().score_cold_items(user, content)  # trained without content: cannot
        content = content.to(self.features)
        return self.user_visual(user) @ self.projection(content).T + self.visual_bias(content).T

    def item_embeddings(self) -> torch.Tensor:
        return torch.cat([self.item.weight, self.projection(self.features)], dim=1)


def build(config: VBPRConfig, train, item_vectors: torch.Tensor | None = None) -> VBPR:
    """`item_vectors`: the (n_items, F) content vectors f_i (None: no content, plain BPR-MF with
    item biases)."""
    features = item_vectors if item_vectors is not None else torch.zeros(train.n_items, 0)
    if features.shape[0] != train.n_items:
        raise ValueError(f"vbpr: {features.shape[0]} content vectors for {train.n_items} items")
    return VBPR(train.n_users, train.n_items, features, config)


def features_from_state(state: dict[str, torch.Tensor]) -> torch.Tensor:
    """The content vectors a saved VBPR was trained with (`Recommender.load`)."""
    return state["features"]


def loss(network: VBPR, batch, config: VBPRConfig) -> torch.Tensor:
    u, i, j = batch["user"], batch["item"], batch["negative"]
    xi, gu, gi, tu = network.parts(u, i)
    xj, _, gj, _ = network.parts(u, j)
    b = len(u)
    out = bpr_loss(xi - xj, torch.zeros_like(xi))
    out = out + config.l2 * (gu.square().sum() + gi.square().sum() + gj.square().sum() + tu.square().sum()) / b
    if config.l2_visual:
        out = out + config.l2_visual * (network.projection.weight.square().sum() + network.visual_bias.weight.square().sum())
    return out


FAMILY = Family(
    name="vbpr", config=VBPRConfig, build=build, batches=batches, loss=loss,
    paper="He & McAuley 2016 (VBPR)", inputs_from_state=features_from_state,
)
