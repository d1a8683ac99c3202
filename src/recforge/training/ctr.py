"""Click-through-rate prediction: a field-aware family's core on impression rows.

`CTRModel(family, config, train_config).fit(train, valid)` builds the family's core
(`Family.fields`) over the layout of one fitted `FeatureEncoder` and trains it with THE fit loop on
log loss; `predict` returns click probabilities; `save`/`load` write the state_dict, the configs and
the encoder's JSON state (no pickle), so serving encodes new impressions exactly as training did.

Rows come as `Rows` (a `FieldBatch` plus 0/1 labels) or, for tables larger than memory, as a
`RowSource`: any callable that yields one epoch's `Rows` chunks (e.g. parquet row groups encoded
on the fly), so memory stays bounded by the chunk, not the table.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from recforge.data.errors import DataError
from recforge.evaluation.metrics import auc, log_loss
from recforge.features.encoder import FeatureEncoder, FieldBatch
from recforge.models.base import ModelConfig
from recforge.models.features.field_layers import layout_from_encoder
from recforge.models.registry import get_family
from recforge.training.config import TrainConfig
from recforge.training.device import resolve_device
from recforge.training.loop import History, fit
from recforge.training.losses import bce

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Rows:
    """Encoded impression rows and their click labels (N,) float32 in {0, 1}."""

    batch: FieldBatch
    label: torch.Tensor

    def __len__(self) -> int:
        return len(self.label)


RowSource = Callable[[], Iterable[Rows]]


def labels(frame: pd.DataFrame, column: str = "label", table: str = "impressions") -> torch.Tensor:
    """The 0/1 label column as float32; anything else names the rows."""
    if column not in frame.columns:
        raise DataError(f"no label column {column!r}", source=table, column=column)
    y = pd.to_numeric(frame[column], errors="coerce")
    bad = ~y.isin([0, 1])
    if bad.any():
        shown = ", ".join(repr(v) for v in frame.loc[bad, column].head(3))
        raise DataError(f"labels must be 0 or 1; found {shown}", source=table, column=column,
                        rows=frame.index[bad.to_numpy()].tolist())  # fmt: skip
    return torch.as_tensor(y.to_numpy(np.float32))


def encode_rows(encoder: FeatureEncoder, frame: pd.DataFrame, label: str = "label", table: str = "impressions") -> Rows:
    return Rows(encoder.encode(frame, table=table), labels(frame, label, table))


def ctr_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC and log loss of click probabilities `p` against labels `y`, with the click rate."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if not 0 < y.sum() < len(y):
        raise ValueError("AUC needs both clicks and non-clicks among the rows")
    return {"auc": auc(p[y == 1], p[y == 0]), "logloss": log_loss(y, p), "ctr": float(y.mean()), "n": int(len(y))}


def relative_improvement(model_auc: float, base_auc: float) -> float:
    """RelaImpr in % (Yan et al. 2014, as the DIN and DeepFM papers report it): how much more of
    the AUC above random the model has than the base, ((AUC − 0.5) / (AUC_base − 0.5) − 1) · 100."""
    return ((model_auc - 0.5) / (base_auc - 0.5) - 1.0) * 100.0


def _chunks(rows: Rows | RowSource) -> Iterable[Rows]:
    return (rows,) if isinstance(rows, Rows) else rows()


class CTRModel:
    """A field-aware family's core trained on impressions (see the module docstring)."""

    def __init__(
        self,
        family: str,
        config: ModelConfig | dict[str, Any] | None = None,
        train_config: TrainConfig | dict[str, Any] | None = None,
    ) -> None:
        self.family = get_family(family)
        if self.family.fields is None:
            raise ValueError(f"{family} is not a field-aware family; CTR needs one of those with `fields`")
        self.config = config if isinstance(config, ModelConfig) else self.family.config.model_validate(config or {})
        self.train_config = (
            train_config if isinstance(train_config, TrainConfig) else TrainConfig.model_validate(train_config or {})
        )
        self.encoder_state: dict[str, Any] | None = None
        self.sides: dict[str, str] = {}
        self.network: torch.nn.Module | None = None
        self.history: History | None = None
        self.fit_seconds: float | None = None
        self.samples_per_s: float | None = None

    @property
    def name(self) -> str:
        return self.family.name

    def _build(self) -> torch.nn.Module:
        layout = layout_from_encoder(self.encoder_state, self.sides)
        return self.family.fields(self.config, layout)

    def fit(
        self,
        train: Rows | RowSource,
        valid: Rows | None,
        encoder: FeatureEncoder,
        *,
        sides: dict[str, str] | None = None,
        callbacks: Sequence[Any] = (),
        checkpoint_dir: Path | None = None,
    ) -> History:
        """Fit on `train` (rows, or a source of row chunks per epoch) with log loss; with `valid`,
        AUC and log loss are logged every epoch and early stopping may use either."""
        started = time.perf_counter()
        torch.manual_seed(self.train_config.seed)
        self.encoder_state, self.sides = encoder.state(), dict(sides or {})
        self.network = self._build()
        self.network.to(resolve_device(self.train_config.device))
        bs = self.train_config.batch_size

        def batches(epoch: int, generator: torch.Generator) -> Iterator[dict[str, torch.Tensor]]:
            for chunk in _chunks(train):
                order = torch.randperm(len(chunk), generator=generator)
                for b in range(0, len(chunk), bs):
                    sel = order[b : b + bs]
                    yield {"index": chunk.batch.index[sel], "value": chunk.batch.value[sel], "label": chunk.label[sel]}

        def loss_fn(network, batch):
            return bce(network(batch["index"], batch["value"]), batch["label"])

        validate = None
        if valid is not None and len(valid):
            def validate(network):  # noqa: E306
                p = self._predict_with(network, valid)
                return {k: v for k, v in ctr_metrics(valid.label.numpy(), p).items() if k in ("auc", "logloss")}

        self.history = fit(self.network, batches, loss_fn, self.train_config, validate=validate,
                           callbacks=callbacks, checkpoint_dir=checkpoint_dir)  # fmt: skip
        self.network.eval()
        self.fit_seconds = time.perf_counter() - started
        seconds, samples = sum(self.history.seconds), sum(self.history.samples)
        self.samples_per_s = samples / seconds if seconds > 0 else None
        return self.history

    def _require(self) -> torch.nn.Module:
        if self.network is None:
            raise RuntimeError(f"{self.name}: call fit() or load() first")
        return self.network

    @torch.no_grad()
    def _predict_with(self, network: torch.nn.Module, rows: Rows, batch_size: int = 65536) -> np.ndarray:
        was_training = network.training
        network.eval()
        dev = next(network.parameters()).device
        out = []
        for b in range(0, len(rows), batch_size):
            idx = rows.batch.index[b : b + batch_size].to(dev)
            val = rows.batch.value[b : b + batch_size].to(dev)
            out.append(torch.sigmoid(network(idx, val).float()).cpu())
        network.train(was_training)
        return torch.cat(out).numpy() if out else np.zeros(0, np.float32)

    def predict(self, rows: Rows | FieldBatch) -> np.ndarray:
        """Click probabilities (N,)."""
        if isinstance(rows, FieldBatch):
            rows = Rows(rows, torch.zeros(len(rows)))
        p = self._predict_with(self._require(), rows)
        if not np.isfinite(p).all():
            raise FloatingPointError(f"{self.name} produced {int((~np.isfinite(p)).sum())} non-finite click probabilities")
        return p

    def evaluate(self, rows: Rows | RowSource) -> dict[str, float]:
        """`ctr_metrics` on rows, or on a source of row chunks (predicted chunk by chunk, so only
        the labels and probabilities of the whole set are held)."""
        labels_, probs = [], []
        for chunk in _chunks(rows):
            labels_.append(chunk.label.numpy())
            probs.append(self.predict(chunk))
        return ctr_metrics(np.concatenate(labels_), np.concatenate(probs))

    def encoder(self) -> FeatureEncoder:
        """The training encoder, to encode new impressions for serving."""
        if self.encoder_state is None:
            raise RuntimeError(f"{self.name}: call fit() or load() first")
        return FeatureEncoder.from_state(self.encoder_state)

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> None:
        """`model.pt` (state_dict) and `config.json` (configs, encoder state, history) into the folder
        `path`, atomically."""
        net = self._require()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
        try:
            torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, tmp / "model.pt")
            meta = {
                "format_version": _FORMAT_VERSION, "kind": "ctr", "family": self.name,
                "config": self.config.model_dump(mode="json"),
                "train_config": self.train_config.model_dump(mode="json"),
                "encoder": self.encoder_state, "sides": self.sides, "torch": torch.__version__,
                "fit_seconds": self.fit_seconds, "samples_per_s": self.samples_per_s,
                "history": self.history.to_dict() if self.history is not None else None,
            }  # fmt: skip
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
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> CTRModel:
        path = Path(path)
        meta = json.loads((path / "config.json").read_text())
        model = cls(meta["family"], meta["config"], meta["train_config"])
        model.encoder_state, model.sides = meta["encoder"], meta["sides"]
        model.network = model._build()
        model.network.load_state_dict(torch.load(path / "model.pt", map_location=map_location, weights_only=True))
        model.network.to(map_location).eval()
        model.fit_seconds, model.samples_per_s = meta.get("fit_seconds"), meta.get("samples_per_s")
        if meta.get("history") is not None:
            model.history = History.from_dict(meta["history"])
        return model


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
