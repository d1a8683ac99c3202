"""`neumf`: Neural Matrix Factorization — GMF and MLP with separate embeddings, fused by one
output layer (He, Liao, Zhang, Nie, Hu & Chua 2017, "Neural Collaborative Filtering", §3.4).

φ_GMF = p^G_u ⊙ q^G_i,   φ_MLP = tower([p^M_u; q^M_i]),   ŷ(u, i) = σ(hᵀ [φ_GMF; φ_MLP] + b)

Separate embeddings let each half pick its own size; sharing them would tie the dot-product and
the tower to one representation (§3.4). σ is applied by the loss; with `objective="mse"` the
output is the rating.

Pretraining (§3.4.1): with `pretrain: true`, `Recommender.fit(..., warm_start={"gmf": gmf,
"mlp": mlp})` (the `training` pipeline passes the trained `gmf.model` and `mlp.model`) builds the
network with `neumf_from_pretrained`: every weight is copied and the output layer becomes h ← [α·h_GMF; (1-α)·h_MLP],
b ← α·b_GMF + (1-α)·b_MLP, so at initialisation NeuMF scores exactly α·GMF + (1-α)·MLP (the
paper's code uses 0.5·(b_GMF + b_MLP), the same at α = 0.5). The paper then trains NeuMF with
plain SGD without momentum — `TrainConfig(optimizer="sgd", momentum=0.0)` — because the pretrained
models hand over their weights but not Adam's moment estimates, and a cold momentum optimiser
moves the pretrained weights too far in its first steps.
"""

from __future__ import annotations

import logging
import torch
from pydantic import Field
from torch import nn

from recforge.models.base import Family, RecommenderNetwork
from recforge.models.cf.gmf import GMF
from recforge.models.layers import init_embedding_from_vectors
from recforge.models.cf.mlp import MLP
from recforge.models.cf.ncf import (
    Tower,
    TowerConfig,
    init_embeddings,
    init_output,
    lookup,
    pointwise_batches,
    pointwise_loss,
)

logger = logging.getLogger(__name__)


class NeuMFConfig(TowerConfig):
    dim: int = Field(32, gt=0)  # GMF factors
    mlp_dim: int = Field(32, gt=0)  # MLP embedding size per side
    alpha: float = Field(0.5, ge=0, le=1)
    pretrain: bool = Field(False, description="start from trained gmf and mlp networks (§3.4.1)")


class NeuMF(RecommenderNetwork):
    def __init__(
        self, n_users: int, n_items: int, dim: int, mlp_dim: int, layers: tuple[int, ...], dropout: float
    ) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.gmf_user = nn.Embedding(n_users, dim)
        self.gmf_item = nn.Embedding(n_items, dim)
        self.mlp_user = nn.Embedding(n_users, mlp_dim)
        self.mlp_item = nn.Embedding(n_items, mlp_dim)
        self.tower = Tower(mlp_dim, layers, dropout)
        self.predict = nn.Linear(dim + self.tower.out_dim, 1)
        init_embeddings(self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        g = lookup(self.gmf_user, user) * lookup(self.gmf_item, item)  # (B, Dg)
        m = self.tower(self.mlp_user, self.mlp_item, user, item)  # (B, L)
        h_gmf, h_mlp = self._output_halves()
        # hᵀ[g; m] = h_gmfᵀ g + h_mlpᵀ m, without building the (B, Dg + L) concatenation
        return g @ h_gmf + m @ h_mlp + self.predict.bias  # (B,)

    def _output_halves(self) -> tuple[torch.Tensor, torch.Tensor]:
        dg = self.gmf_user.embedding_dim
        return self.predict.weight[0, :dg], self.predict.weight[0, dg:]  # (Dg,), (L,)

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        h_gmf, h_mlp = self._output_halves()
        gmf = (self.gmf_user(user) * h_gmf) @ self.gmf_item.weight.T  # (B, I)
        mlp = self.tower.cross(self.mlp_user(user), self.mlp_item.weight, h_mlp)  # (B, I)
        return gmf + mlp + self.predict.bias

    def item_embeddings(self) -> torch.Tensor:
        return torch.cat([self.gmf_item.weight, self.mlp_item.weight], dim=1)  # (I, Dg + Dm)


def neumf_from_pretrained(gmf: GMF, mlp: MLP, alpha: float = 0.5) -> NeuMF:
    """A NeuMF initialised from trained GMF and MLP networks (§3.4.1): all weights copied, output
    layer [α·h_GMF; (1-α)·h_MLP] with bias α·b_GMF + (1-α)·b_MLP, so that its scores equal
    α·gmf(u, i) + (1-α)·mlp(u, i) before training. Train it with SGD without momentum."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if (gmf.n_users, gmf.n_items) != (mlp.n_users, mlp.n_items):
        raise ValueError(
            f"gmf is {gmf.n_users}x{gmf.n_items} users x items, mlp is {mlp.n_users}x{mlp.n_items}"
        )
    layers = tuple(layer.out_features for layer in mlp.tower.layers)
    net = NeuMF(
        gmf.n_users, gmf.n_items, gmf.user.embedding_dim, mlp.user.embedding_dim, layers,
        mlp.tower.dropout.p,
    ).to(gmf.predict.weight.device)
    pairs = [
        (net.gmf_user, gmf.user), (net.gmf_item, gmf.item),
        (net.mlp_user, mlp.user), (net.mlp_item, mlp.item),
    ]
    with torch.no_grad():
        for dst, src in pairs:
            dst.weight.copy_(src.weight)
            dst.weight.requires_grad_(src.weight.requires_grad)  # keeps frozen item vectors frozen
        net.tower.load_state_dict(mlp.tower.state_dict())
        net.predict.weight.copy_(torch.cat([alpha * gmf.predict.weight, (1 - alpha) * mlp.predict.weight], 1))
        net.predict.bias.copy_(alpha * gmf.predict.bias + (1 - alpha) * mlp.predict.bias)
    return net


def build(config: NeuMFConfig, train, item_vectors=None) -> NeuMF:
    """A randomly initialised NeuMF (also the shell `Recommender.load` fills, pretrained or not)."""
    net = NeuMF(train.n_users, train.n_items, config.dim, config.mlp_dim, config.layers, config.dropout)
    init_output(net.predict, config, train)
    if item_vectors is not None:
        for emb in (net.gmf_item, net.mlp_item):
            init_embedding_from_vectors(emb, item_vectors, freeze=config.freeze_item_vectors)
    return net


def warm_start(config: NeuMFConfig, train, item_vectors, networks: dict[str, RecommenderNetwork]) -> NeuMF:
    """NeuMF from trained `gmf` and `mlp` networks when `config.pretrain`, else `build`."""
    if not config.pretrain:
        logger.info("neumf: pretrain is false, the given gmf and mlp models are not used")
        return build(config, train, item_vectors)
    gmf, mlp = networks["gmf"], networks["mlp"]
    for name, net, cls in (("gmf", gmf, GMF), ("mlp", mlp, MLP)):
        if not isinstance(net, cls):
            raise ValueError(f"neumf: the {name!r} model is a {type(net).__name__}, not a {cls.__name__}")
    net = neumf_from_pretrained(gmf, mlp, config.alpha)
    found = (net.n_users, net.n_items, net.gmf_user.embedding_dim, net.mlp_user.embedding_dim,
             tuple(layer.out_features for layer in net.tower.layers))
    wanted = (train.n_users, train.n_items, config.dim, config.mlp_dim, config.layers)
    if found != wanted:
        raise ValueError(
            "the pretrained gmf and mlp models do not match neumf's config: (n_users, n_items, dim, "
            f"mlp_dim, layers) is {found} in the pretrained models, {wanted} in neumf's parameters"
        )
    net.tower.dropout.p = config.dropout  # a training choice of NeuMF, not a pretrained weight
    if item_vectors is not None:
        logger.info("neumf: item_vectors ignored, the pretrained embeddings initialise the items")
    return net


def batches(network, train, config, batch_size, generator):
    return pointwise_batches(train, config, batch_size, generator)


def loss(network: NeuMF, batch, config: NeuMFConfig) -> torch.Tensor:
    return pointwise_loss(network(batch["user"], batch["item"]), batch, config)


FAMILY = Family(
    name="neumf", config=NeuMFConfig, build=build, batches=batches, loss=loss,
    paper="He et al. 2017 (NCF: NeuMF)", warm_start_from=("gmf", "mlp"), warm_start=warm_start,
)
