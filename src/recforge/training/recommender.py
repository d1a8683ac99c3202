"""The one estimator: any registered family behind implicit's small interface.

`Recommender(family).fit(train, valid)` builds the family's network and runs THE fit loop;
`recommend`, `similar_items`, `score`, `predict` answer queries by index; `save`/`load` write a
state_dict, the validated configs and the training matrix — no pickle.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recforge.data.errors import DataError, UnknownIdError
from recforge.data.interactions import InteractionData
from recforge.encoders.ann import AnnConfig, AnnIndex, NonFiniteVectorsError, as_float32
from recforge.models.base import Family, ModelConfig, RecommenderNetwork
from recforge.models.registry import get_family
from recforge.training.config import TrainConfig
from recforge.training.device import resolve_device
from recforge.training.loop import History, fit

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1


def uses_ratings(family: Family, config: ModelConfig) -> bool:
    """Whether the family trains on explicit ratings (rating rows only) rather than all events."""
    return family.task == "rating" or getattr(config, "objective", None) == "mse"


class Recommender:
    """A family's network with fit / recommend / similar_items / save / load."""

    def __init__(
        self,
        family: str,
        config: ModelConfig | dict[str, Any] | None = None,
        train_config: TrainConfig | dict[str, Any] | None = None,
    ) -> None:
        self.family = get_family(family)
        self.config = (
            config if isinstance(config, ModelConfig) else self.family.config.model_validate(config or {})
        )
        self.train_config = (
            train_config
            if isinstance(train_config, TrainConfig)
            else TrainConfig.model_validate(train_config or {})
        )
        self.network: RecommenderNetwork | None = None
        self.history: History | None = None
        self.fit_seconds: float | None = None  # wall time of `fit`: build, pretraining and epochs
        self._seen: sp.csr_matrix | None = None
        self._ann_cache: dict[str, tuple[tuple, AnnIndex]] = {}  # faiss indexes of the trained vectors

    @property
    def name(self) -> str:
        return self.family.name

    @property
    def uses_ratings(self) -> bool:
        return uses_ratings(self.family, self.config)

    # ---------------------------------------------------------------- fitting
    def fit(
        self,
        train: InteractionData,
        valid: InteractionData | None = None,
        *,
        seen: sp.csr_matrix | None = None,
        item_vectors: torch.Tensor | None = None,
        warm_start: Mapping[str, Recommender | RecommenderNetwork] | None = None,
        callbacks: Sequence[Any] = (),
        checkpoint_dir: Path | None = None,
        metrics: Sequence[str] = (),
        batches: Any = None,
        loss: Any = None,
    ) -> History:
        """Build the network on `train` and fit it; `seen` (default: train's matrix) is what
        `recommend` filters and what history-based networks read. `warm_start` hands the trained
        models a family starts from (`Family.warm_start_from`, e.g. neumf from gmf and mlp).
        `metrics` are validation metrics (`evaluation.selection` names) logged every epoch beside
        the early-stopping one, e.g. for a tuning study's second objective. `batches` and
        `loss` (the `Family.batches` / `Family.loss` signatures) replace the family's own: a
        ranker trained on a retriever's candidates (`training.two_stage`)."""
        if len(train) == 0:
            raise DataError("the training split is empty", source="train")
        started = time.perf_counter()
        torch.manual_seed(self.train_config.seed)
        self._seen = (seen if seen is not None else train.csr).tocsr().astype(np.float32)
        self.network = self._build(train, item_vectors, warm_start)
        device = resolve_device(self.train_config.device)
        self.network.to(device)
        if self.family.pretrain is not None:
            self.family.pretrain(self.network, train, self.config, self.train_config)
        validate = None
        if valid is not None and len(valid) and (self.train_config.early_stopping_metric or metrics):
            validate = self._validator(valid, metrics)
        epochs = self.train_config.epochs if self.family.trainable else 0
        cfg = self.train_config.model_copy(update={"epochs": epochs})
        family, config = self.family, self.config
        make_batches = batches or family.batches
        family_loss = loss or family.loss

        def epoch_batches(epoch: int, generator: torch.Generator):
            return make_batches(self.network, train, config, cfg.batch_size, generator)

        def loss_fn(network, batch):
            return family_loss(network, batch, config)

        self.history = fit(
            self.network, epoch_batches, loss_fn, cfg, validate=validate, callbacks=callbacks,
            checkpoint_dir=checkpoint_dir,
        )
        self.network.eval()
        self.fit_seconds = time.perf_counter() - started
        return self.history

    def _build(
        self,
        train: InteractionData,
        item_vectors: torch.Tensor | None,
        warm_start: Mapping[str, Recommender | RecommenderNetwork] | None,
    ) -> RecommenderNetwork:
        family, wanted = self.family, self.family.warm_start_from
        if not warm_start:
            if wanted and getattr(self.config, "pretrain", False):
                raise ValueError(
                    f"{self.name} has pretrain=true: pass the trained {' and '.join(wanted)} models, "
                    f"fit(..., warm_start={{{', '.join(repr(w) + ': ...' for w in wanted)}}})"
                )
            return family.build(self.config, train, item_vectors)
        if not wanted:
            raise ValueError(f"{self.name} does not start from other models; warm_start must be empty")
        missing = sorted(set(wanted) - set(warm_start))
        if missing:
            raise ValueError(f"{self.name}: warm_start lacks the trained {missing} model(s)")
        networks = {}
        for name in wanted:
            given = warm_start[name]
            if isinstance(given, Recommender):
                if given.name != name:
                    raise ValueError(f"{self.name}: warm_start[{name!r}] holds a {given.name!r} model")
                given = given._require_fitted()
            networks[name] = given
        return family.warm_start(self.config, train, item_vectors, networks)

    def _validator(self, valid: InteractionData, metrics: Sequence[str] = ()):
        """The fit loop's `validate`: the early-stopping metric and `metrics` on valid, each by its
        name in `evaluation.selection` (ranking, rating or next-item)."""
        from recforge.evaluation.selection import check_metric, make_validator

        names = list(dict.fromkeys([m for m in (self.train_config.early_stopping_metric, *metrics) if m]))
        parsed = [check_metric(m, self.family, self.uses_ratings) for m in names]
        return make_validator(self, valid, parsed)

    # ---------------------------------------------------------------- queries
    def _require_fitted(self) -> RecommenderNetwork:
        if self.network is None or self._seen is None:
            raise RuntimeError(f"{self.name}: call fit() or load() first")
        return self.network

    def _device(self) -> torch.device:
        net = self._require_fitted()
        for t in list(net.parameters()) + list(net.buffers()):
            return t.device
        return torch.device("cpu")

    def _check_users(self, user_idx: np.ndarray) -> np.ndarray:
        u = np.asarray(user_idx, dtype=np.int64).reshape(-1)
        bad = (u < 0) | (u >= self._seen.shape[0])
        if bad.any():
            raise UnknownIdError("user index", u[bad].tolist())
        return u

    def _check_items(self, item_idx: np.ndarray) -> np.ndarray:
        i = np.asarray(item_idx, dtype=np.int64).reshape(-1)
        bad = (i < 0) | (i >= self._seen.shape[1])
        if bad.any():
            raise UnknownIdError("item index", i[bad].tolist())
        return i

    def history_rows(self, user_idx: np.ndarray) -> torch.Tensor:
        """Dense (B, n_items) training rows of these users, on the model's device."""
        rows = self._seen[np.asarray(user_idx)].toarray()
        return torch.as_tensor(rows, dtype=torch.float32, device=self._device())

    def score_fn(self):
        """`(user (B,), history (B, I)) -> (B, I)` for the evaluation protocols."""
        return self._score_fn()

    def pair_score_fn(self):
        """`(user (N,), item (N,)) -> (N,)`; families that only score from a history (item_knn,
        autoencoders) score each distinct user once and pick the pairs out."""
        net = self._require_fitted()

        @torch.no_grad()
        def score(user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
            dev = self._device()
            user, item = user.to(dev), item.to(dev)
            try:
                return net(user, item).float()
            except NotImplementedError:
                uniq, inverse = torch.unique(user, return_inverse=True)
                full = net.score_all(uniq, self.history_rows(uniq.cpu().numpy())).float()  # (U, I)
                return full[inverse, item]

        return score

    def cold_item_score_fn(self, content: Any):
        """`(user (B,)) -> (B, C)` for the cold-start protocols: the network's scores of C items
        unseen in training from their `content` (what `training.inputs.item_side` builds for a map
        of those items), moved to the model's device once. Calling it raises
        `models.base.ColdStartUnsupported` when the family cannot score such items."""
        net = self._require_fitted()
        dev = self._device()
        content = _to_device(content, dev)

        @torch.no_grad()
        def score(user: torch.Tensor) -> torch.Tensor:
            return net.score_cold_items(user.to(dev), content).float()

        return score

    def cold_user_score_fn(self):
        """`(history (B, n_items)) -> (B, n_items)` for the cold-start protocols: scores of users
        unseen in training from fold-in histories over the training items. Calling it raises
        `models.base.ColdStartUnsupported` when the family cannot."""
        net = self._require_fitted()
        dev = self._device()

        @torch.no_grad()
        def score(history: torch.Tensor) -> torch.Tensor:
            return net.score_cold_users(history.to(dev)).float()

        return score

    def _score_fn(self):
        net = self._require_fitted()

        @torch.no_grad()
        def score(user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
            dev = self._device()
            return net.score_all(user.to(dev), history.to(dev)).float()

        return score

    @torch.no_grad()
    def score(self, user_idx: np.ndarray) -> np.ndarray:
        """Scores of every item for these users: (B, n_items)."""
        net = self._require_fitted()
        u = self._check_users(user_idx)
        user = torch.as_tensor(u, device=self._device())
        return net.score_all(user, self.history_rows(u)).float().cpu().numpy()

    @torch.no_grad()
    def predict(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """Score of each (user, item) pair: (N,). Unknown indices raise `UnknownIdError`."""
        u, i = self._check_users(user_idx), self._check_items(item_idx)
        net = self._require_fitted()
        dev = self._device()
        try:
            out = net(torch.as_tensor(u, device=dev), torch.as_tensor(i, device=dev))
        except NotImplementedError:
            out = net.score_all(torch.as_tensor(u, device=dev), self.history_rows(u))
            out = out.gather(1, torch.as_tensor(i, device=dev)[:, None]).squeeze(1)
        return out.float().cpu().numpy()

    @torch.no_grad()
    def recommend(
        self, user_idx: np.ndarray, k: int = 10, filter_already_liked_items: bool = True,
        index: AnnConfig | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and scores per user: ((B, k), (B, k)).

        With `index` (an `encoders.ann.AnnConfig`, inner product) and a family whose scores
        factor (`retrieval_items()` is not None: bpr, mf, als, gmf, youtube_candidates and the causal
        next-item families sasrec, narm, tcn, cnn3d), the top k
        come from a faiss index over the item factors, seen items skipped inside the search, so
        the catalogue is never scored densely; -1 / -inf pad a user with fewer unseen items.
        Other families score every item, as without `index`. Non-finite factors (a diverged fit)
        give NaN scores, as the dense path does, for the caller to refuse."""
        u = self._check_users(user_idx)
        net = self._require_fitted()
        if index is not None:
            try:
                ann = self._ann_index("retrieval_items", index)
            except NonFiniteVectorsError:  # every user's scores involve the broken items
                return _nan_lists(len(u), min(k, net.n_items))
            if ann is not None:
                users = as_float32(net.retrieval_users(torch.as_tensor(u, device=self._device())))
                bad = ~np.isfinite(users).all(axis=1)
                users[bad] = 0.0
                seen = self._seen[u] if filter_already_liked_items else None
                idx, scores = ann.search(users, k, exclude=seen)
                idx[bad], scores[bad] = -1, np.nan
                return idx, scores
        history = self.history_rows(u)
        scores = net.score_all(torch.as_tensor(u, device=self._device()), history).float()  # (B, I)
        if filter_already_liked_items:
            scores = scores.masked_fill(history > 0, float("-inf"))
        top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        return top.indices.cpu().numpy(), top.values.cpu().numpy()

    @torch.no_grad()
    def similar_items(
        self, item_idx: np.ndarray, k: int = 10, index: AnnConfig | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Most similar items by cosine of the family's item vectors, excluding the item itself:
        ((B, k'), (B, k')), k' = min(k, n_items - 1). The search runs in a faiss index over the
        normalised vectors (`index`: an `encoders.ann.AnnConfig`; default an exact flat index),
        built once per set of trained weights."""
        i = self._check_items(item_idx)
        try:
            ann = self._ann_index("item_embeddings", (index or AnnConfig()).model_copy(update={"metric": "cosine"}))
        except NonFiniteVectorsError:  # NaN vectors: NaN similarities, for the caller to refuse
            return _nan_lists(len(i), min(k, self._seen.shape[1] - 1))
        if ann is None:
            raise NotImplementedError(f"{self.name} has no item vectors for similar_items")
        return ann.search(ann.vectors[i], min(k, len(ann) - 1), exclude=i)

    def _ann_index(self, side: str, config: AnnConfig) -> AnnIndex | None:
        """The faiss index over the network's `side` ("item_embeddings" / "retrieval_items"), or None
        when the family has none; cached until a parameter or buffer changes or the config does."""
        net = self._require_fitted()
        key = (side, config, id(net), tuple((t.data_ptr(), t._version) for t in [*net.parameters(), *net.buffers()]))
        cached = self._ann_cache.get(side)
        if cached is not None and cached[0] == key:
            return cached[1]
        vectors = getattr(net, side)()
        if vectors is None:
            return None
        ann = AnnIndex(vectors, config, what=f"{self.name} {side.replace('_', ' ')}")
        self._ann_cache[side] = (key, ann)
        return ann

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> None:
        """Write `model.pt` (state_dict), `config.json` and `seen.npz` into the folder `path`,
        atomically: a crash leaves the previous model (or nothing), never a mix."""
        net = self._require_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
        try:
            state = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in net.state_dict().items()}
            torch.save(state, tmp / "model.pt")  # a module's extra state (plain containers) as is
            sp.save_npz(tmp / "seen.npz", self._seen, compressed=True)
            meta = {
                "format_version": _FORMAT_VERSION,
                "family": self.name,
                "config": self.config.model_dump(mode="json"),
                "train_config": self.train_config.model_dump(mode="json"),
                "n_users": int(self._seen.shape[0]),
                "n_items": int(self._seen.shape[1]),
                "torch": torch.__version__,
                "fit_seconds": self.fit_seconds,
                "history": self.history.to_dict() if self.history is not None else None,
            }
            (tmp / "config.json").write_text(json.dumps(meta, indent=2))
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                os.replace(path, old)
                os.replace(tmp, path)
                _rmtree(old)
            else:
                os.replace(tmp, path)
        except BaseException:
            _rmtree(tmp)
            raise

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> Recommender:
        """Rebuild the network from `config.json` and load its state_dict (weights_only=True)."""
        path = Path(path)
        meta = json.loads((path / "config.json").read_text())
        rec = cls(meta["family"], meta["config"], meta["train_config"])
        seen = sp.load_npz(path / "seen.npz").tocsr()
        state = torch.load(path / "model.pt", map_location=map_location, weights_only=True)
        shell = _shell_data(seen)
        inputs = rec.family.inputs_from_state(state) if rec.family.inputs_from_state is not None else None
        rec.network = rec.family.build(rec.config, shell, inputs)
        rec.network.load_state_dict(state)
        rec.network.to(map_location).eval()
        rec._seen = seen
        if meta.get("history") is not None:
            rec.history = History.from_dict(meta["history"])
        rec.fit_seconds = meta.get("fit_seconds")
        return rec


def _nan_lists(n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(-1 indices, NaN scores) of shape (n_queries, k): the lists of a model with broken vectors."""
    return np.full((n_queries, k), -1, dtype=np.int64), np.full((n_queries, k), np.nan, dtype=np.float32)


def _to_device(content: Any, device: torch.device) -> Any:
    """Tensors (also inside dicts, lists, tuples and dataclasses) moved to `device`; anything
    else as is."""
    if isinstance(content, torch.Tensor):
        return content.to(device)
    if isinstance(content, dict):
        return {k: _to_device(v, device) for k, v in content.items()}
    if isinstance(content, list):
        return [_to_device(v, device) for v in content]
    if isinstance(content, tuple):
        moved = [_to_device(v, device) for v in content]
        return type(content)(*moved) if hasattr(content, "_fields") else tuple(moved)
    if dataclasses.is_dataclass(content) and not isinstance(content, type):
        fields = [f.name for f in dataclasses.fields(content) if f.init]
        return dataclasses.replace(content, **{f: _to_device(getattr(content, f), device) for f in fields})
    return content


def _shell_data(seen: sp.csr_matrix) -> InteractionData:
    """Training data rebuilt from the saved matrix, so `build` can size the network on load."""
    coo = seen.tocoo()
    return InteractionData(
        user_idx=coo.row.astype(np.int64),
        item_idx=coo.col.astype(np.int64),
        value=coo.data.astype(np.float32),
        timestamp=np.zeros(len(coo.row), dtype=np.int64),
        n_users=seen.shape[0],
        n_items=seen.shape[1],
    )


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
