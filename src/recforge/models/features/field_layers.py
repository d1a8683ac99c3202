"""What the field-aware families (fm, nfm, wide_deep, deepfm, deep_regression, neural_mf_v1/v2, lr)
share: the field layout, the (user, item) adapter and their losses and batches.

Each family file defines only its *core*: an `nn.Module` built from a `FieldLayout` whose
`forward(index (B, S), value (B, S))` returns one logit / prediction per row. A row is a set of S
slots, each a global feature id and a value (`features.FieldBatch`). The same core serves two
callers:

- `FieldRecommender` (the registry's network, `RecommenderNetwork` interface): a (user, item) pair
  becomes the row [user id, item id, the user's attribute slots, the item's attribute slots],
  looked up in the feature tables the network holds as buffers. Ranking, rating and the contract
  test go through it, so these families are ordinary families for the fit loop, evaluation,
  tuning and `Recommender.save/load`.
- `training.ctr.CTRModel`: rows of an impression log (user, item, context, position …) encoded by
  one `FeatureEncoder`, for click-through-rate prediction.

Global feature ids of the (user, item) layout, one embedding table:
[user ids | item ids | user attribute features | item attribute features]; index 0 of every
attribute field is its reserved unknown / missing / padding row (see `features.fields`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from recforge.features.tables import FieldTables, SideTable, id_only_tables
from recforge.models.base import Batch, Family, ModelConfig, RecommenderNetwork
from recforge.models.layers import lookup
from recforge.training.losses import bce, bpr, mse
from recforge.training.samplers import Positives, shuffled_chunks, uniform_negatives

Objective = Literal["bpr", "logloss", "mse"]
# Rows scored per call of the core when ranking every item: (rows, slots, dim) floats stay small.
_SCORE_ROWS = 1 << 15
_DRAW_ROWS = 1 << 16


class FieldConfig(ModelConfig):
    """What every field-aware family's config has.

    `objective`: `mse` on ratings (the rating task: RMSE / MAE), `logloss` on each positive and
    `negatives` uniform unobserved items (labels 1 / 0), or `bpr` against one unobserved item (both
    top-K). `use_ids` / `use_features`: which fields enter the row — ids only is the family without
    side information, attributes only is a pure content model (cold items and users)."""

    dim: int = Field(16, gt=0)
    objective: Objective = "bpr"
    negatives: int = Field(4, ge=1)
    use_ids: bool = True
    use_features: bool = True


@dataclass(frozen=True)
class FieldLayout:
    """The rows a core reads: S slots, each in one of F fields, over `n_features` global ids.

    `slot_field[s]` is the field of slot s; `field_kind[f]` is the declared kind ("id",
    "categorical", "cross" …) and `field_side[f]` "user", "item" or "context" (towers of
    neural_mf read one side each)."""

    n_features: int
    slot_field: tuple[int, ...]
    field_names: tuple[str, ...]
    field_kind: tuple[str, ...]
    field_side: tuple[str, ...]

    @property
    def n_slots(self) -> int:
        return len(self.slot_field)

    @property
    def n_fields(self) -> int:
        return len(self.field_names)

    def fields_of(self, side: str) -> list[int]:
        return [f for f, s in enumerate(self.field_side) if s == side]

    def check(self, index: torch.Tensor) -> None:
        if index.shape[-1] != self.n_slots:
            raise ValueError(f"rows have {index.shape[-1]} slots; the layout has {self.n_slots}")


def layout_from_encoder(state: dict[str, Any], sides: dict[str, str] | None = None) -> FieldLayout:
    """The layout of rows encoded by one `FeatureEncoder` (its `state()`): the CTR case. `sides`
    maps field names to "user" / "item" (the rest are context)."""
    sides = sides or {}
    fields = state["config"]["fields"]
    slot_field: list[int] = []
    for f, spec in enumerate(fields):
        slot_field += [f] * int(state["fitted"][spec["name"]]["slots"])
    n = sum(int(v["size"]) for v in state["fitted"].values())
    return FieldLayout(
        n, tuple(slot_field), tuple(s["name"] for s in fields), tuple(s["kind"] for s in fields),
        tuple(sides.get(s["name"], "context") for s in fields),
    )


def field_embeddings(e: torch.Tensor, layout_slot_field: torch.Tensor, n_fields: int) -> torch.Tensor:
    """Sum the (value-scaled) slot embeddings of each field: (B, S, D) -> (B, F, D). A multi-hot
    field's slots pool into one vector (their values are 1/n: the mean)."""
    out = e.new_zeros(e.shape[0], n_fields, e.shape[2])
    return out.index_add_(1, layout_slot_field, e)


def mlp(sizes: list[int], dropout: float, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear + activation (+ dropout) for each consecutive pair of `sizes`."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), act()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


# ------------------------------------------------------------------ scoring a users x items grid
# `FieldRecommender.score_all` hands a core that has `score_grid(parts)` the rows of a grid in
# parts instead of B x C assembled rows: ("user", index (B, s), value, slot positions), ("item",
# (C, s) ...), ("pair", (B, C, s) ...). Sums over slots split into sums over parts, so FM-style
# terms and a DNN's first layer cost O(B·C·D) rather than O(B·C·S·D) gathers.
GridPart = tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]


def _spread(kind: str, t: torch.Tensor) -> torch.Tensor:
    """A part's per-user (B, ...) or per-item (C, ...) result, broadcastable to (B, C, ...)."""
    return t.unsqueeze(1) if kind == "user" else t.unsqueeze(0) if kind == "item" else t


def grid_linear(weight: nn.Embedding, bias: torch.Tensor, parts: list[GridPart]) -> torch.Tensor:
    """w0 + Σ_s w_s x_s over the grid: (B, C)."""
    out = bias
    for kind, index, value, _ in parts:
        out = out + _spread(kind, (lookup(weight, index).squeeze(-1) * value).sum(-1))
    return out


def grid_power(embedding: nn.Embedding, parts: list[GridPart], order: int) -> torch.Tensor:
    """p_r = Σ_s (x_s v_s)^r over the grid: (B, C, D)."""
    out = None
    for kind, index, value, _ in parts:
        term = _spread(kind, (lookup(embedding, index) * value.unsqueeze(-1)).pow(order).sum(-2))
        out = term if out is None else out + term
    return out


def grid_first_layer(
    embedding: nn.Embedding, layer: nn.Linear, parts: list[GridPart], slot_field: torch.Tensor, fields: list[int]
) -> torch.Tensor:
    """`layer` applied to the concatenated (pooled) embeddings of `fields`, over the grid:
    W [e_f1; …; e_fm] + b = Σ_s W_{field(s)} e_s + b, a sum over parts: (B, C, H)."""
    d = embedding.embedding_dim
    w = layer.weight.view(layer.out_features, len(fields), d)  # (H, m, D)
    column = torch.full((int(slot_field.max()) + 1,), -1, dtype=torch.int64, device=w.device)
    column[torch.as_tensor(fields, device=w.device)] = torch.arange(len(fields), device=w.device)
    out = layer.bias
    for kind, index, value, positions in parts:
        cols = column[slot_field[positions]]  # (s,): the part's slots' columns, -1 = not read
        keep = cols >= 0
        if not bool(keep.any()):
            continue
        e = lookup(embedding, index[..., keep]) * value[..., keep].unsqueeze(-1)  # (..., s', D)
        out = out + _spread(kind, torch.einsum("...sd,hsd->...h", e, w[:, cols[keep], :]))
    return out


class FieldCore(nn.Module):
    """Base of the cores: one embedding table and one first-order weight per global feature."""

    def __init__(self, layout: FieldLayout, dim: int) -> None:
        super().__init__()
        self.layout = layout
        self.embedding = nn.Embedding(layout.n_features, dim)
        self.weight = nn.Embedding(layout.n_features, 1)
        self.bias = nn.Parameter(torch.zeros(()))
        nn.init.normal_(self.embedding.weight, std=0.01)
        nn.init.zeros_(self.weight.weight)
        self.register_buffer("slot_field", torch.tensor(layout.slot_field, dtype=torch.int64), persistent=False)
        # one slot per field, in field order (no multi-hot): the pooling is the identity
        self._one_slot_each = layout.slot_field == tuple(range(layout.n_fields))

    def linear(self, index: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """w0 + Σ_s w_{index_s} x_s: (B,)"""
        return self.bias + (lookup(self.weight, index).squeeze(-1) * value).sum(-1)

    def embed(self, index: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Value-scaled slot embeddings x_s · v_{index_s}: (B, S, D)."""
        return lookup(self.embedding, index) * value.unsqueeze(-1)  # index_select: a faster backward on CPU

    def fields(self, e: torch.Tensor) -> torch.Tensor:
        """(B, S, D) -> (B, F, D)."""
        if self._one_slot_each:
            return e
        return field_embeddings(e, self.slot_field, self.layout.n_fields)


# ------------------------------------------------------------------ the (user, item) adapter
def _side_rows(side: SideTable, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    return side.index + offset, side.value.float()


class FieldRecommender(RecommenderNetwork):
    """A core behind the (user, item) interface: rows assembled from the feature tables (buffers,
    so a saved model carries the encoded attributes it was trained with)."""

    def __init__(self, core: nn.Module, tables: FieldTables, rows: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        super().__init__()
        self.core = core
        self.n_users, self.n_items = tables.n_users, tables.n_items
        # saved: each side's attribute table as the features pipeline encoded it
        for kind, side in tables.sides():
            self.register_buffer(f"{kind}_attr_index", side.index.clone())
            self.register_buffer(f"{kind}_attr_value", side.value.float().clone())
        # derived (rebuilt from the above on load): the rows with global offsets and id slots
        for name, t in rows.items():
            self.register_buffer(name, t, persistent=False)
        self.meta = meta  # encoder states and slots, saved as the module's extra state

    def get_extra_state(self) -> dict[str, Any]:
        return {"meta": self.meta}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.meta = state["meta"]

    @property
    def has_context(self) -> bool:
        return bool(self.context_spec.shape[0])

    def rows(
        self, user: torch.Tensor, item: torch.Tensor, timestamp: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,), (B,)[, (B,)] -> index, value (B, S): user slots, item slots, the pair crosses, then
        the event's context slots (hour, weekday of `timestamp`; value 0 — no effect — without)."""
        index = [self.user_index[user], self.item_index[item]]
        value = [self.user_value[user], self.item_value[item]]
        if self.cross_spec.shape[0]:
            a, b, buckets, offset = self.cross_spec.unbind(1)  # (C,) each
            # a hash of the two encoded values (an unknown value is a value of its own here)
            u, i = self.user_attr_index[user][:, a], self.item_attr_index[item][:, b]  # (B, C)
            index.append((u * 1_000_003 + i) % buckets + 1 + offset)
            value.append(torch.ones_like(u, dtype=value[0].dtype))
        if self.has_context:
            period, size, offset = self.context_spec.unbind(1)  # (X,) each
            if timestamp is None:
                index.append(offset.expand(len(user), -1))
                value.append(torch.zeros(len(user), len(offset), dtype=value[0].dtype, device=user.device))
            else:
                # hour: (t // 3600) % 24; weekday: ((t // 86400) + 3) % 7, Monday = 0 (1970-01-01 was a Thursday)
                t = timestamp.to(torch.int64)[:, None] // period + torch.where(size == 7, 3, 0)
                index.append(offset + 1 + t % size)
                value.append(torch.ones(len(user), len(offset), dtype=value[0].dtype, device=user.device))
        return torch.cat(index, dim=1), torch.cat(value, dim=1)

    def forward(self, user: torch.Tensor, item: torch.Tensor, timestamp: torch.Tensor | None = None) -> torch.Tensor:
        return self.core(*self.rows(user, item, timestamp))

    @torch.no_grad()
    def score_in_context(self, user: torch.Tensor, timestamp: torch.Tensor) -> torch.Tensor:
        """(B,), (B,) -> (B, n_items): every item for each (user, event time)."""
        b, n = user.shape[0], self.n_items
        chunk = max(1, _SCORE_ROWS // max(b, 1))
        out = []
        for start in range(0, n, chunk):
            items = torch.arange(start, min(start + chunk, n), device=user.device)
            c = len(items)
            out.append(self(user.repeat_interleave(c), items.repeat(b), timestamp.repeat_interleave(c)).view(b, c))
        return torch.cat(out, dim=1)

    def grid_parts(self, user: torch.Tensor, items: torch.Tensor) -> list[GridPart]:
        """The rows of users x items in parts (see `grid_linear`); the event-context slots are
        empty (value 0) without an event, so they add nothing and are left out."""
        su, si = self.user_index.shape[1], self.item_index.shape[1]
        dev = user.device
        parts: list[GridPart] = [
            ("user", self.user_index[user], self.user_value[user], torch.arange(su, device=dev)),
            ("item", self.item_index[items], self.item_value[items], torch.arange(su, su + si, device=dev)),
        ]
        x = self.cross_spec.shape[0]
        if x:
            a, b, buckets, offset = self.cross_spec.unbind(1)
            u = self.user_attr_index[user][:, a]  # (B, X)
            i = self.item_attr_index[items][:, b]  # (C, X)
            index = (u[:, None, :] * 1_000_003 + i[None, :, :]) % buckets + 1 + offset  # (B, C, X)
            parts.append(("pair", index, torch.ones(index.shape, device=dev), torch.arange(su + si, su + si + x, device=dev)))
        return parts

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        b, n = user.shape[0], self.n_items
        grid = getattr(self.core, "score_grid", None)
        if grid is not None:
            width = max(getattr(self.core, "grid_width", 64), 1)  # floats per (user, item) pair
            chunk = max(1, (1 << 24) // max(b * width, 1))
            out = [grid(self.grid_parts(user, torch.arange(c, min(c + chunk, n), device=user.device)))
                   for c in range(0, n, chunk)]  # fmt: skip
            return torch.cat(out, dim=1)
        chunk = max(1, _SCORE_ROWS // max(b, 1))
        out = []
        for start in range(0, n, chunk):
            items = torch.arange(start, min(start + chunk, n), device=user.device)  # (C,)
            c = len(items)
            out.append(self(user.repeat_interleave(c), items.repeat(b)).view(b, c))
        return torch.cat(out, dim=1)

    def item_embeddings(self) -> torch.Tensor | None:
        """Each item's row embedded and pooled (its id and attribute slots), for similar_items."""
        emb = getattr(self.core, "embedding", None)
        if emb is None:
            return None
        e = lookup(emb, self.item_index) * self.item_value.unsqueeze(-1)  # (I, Si, D)
        return e.sum(1)


def _user_item_layout(tables: FieldTables, config: FieldConfig) -> tuple[FieldLayout, dict[str, torch.Tensor], dict]:
    """Rows of [user id, user attributes] per user and [item id, item attributes] per item, with the
    global offsets applied, and the layout of their concatenation."""
    n_users, n_items = tables.n_users, tables.n_items
    names, kinds, sides, slot_field = [], [], [], []
    parts: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"user": [], "item": []}
    offset = 0
    for kind, n in (("user", n_users), ("item", n_items)):
        if config.use_ids:
            parts[kind].append((torch.arange(n, dtype=torch.int64)[:, None] + offset, torch.ones(n, 1)))
            names.append(f"{kind}_id"), kinds.append("id"), sides.append(kind)
            slot_field.append(len(names) - 1)
            offset += n
    for kind, side in tables.sides():
        if not config.use_features or side.encoder is None:
            continue
        parts[kind].append(_side_rows(side, offset))
        fitted = side.encoder["fitted"]
        for spec in side.encoder["config"]["fields"]:
            names.append(f"{kind}.{spec['name']}"), kinds.append(spec["kind"]), sides.append(kind)
            slot_field += [len(names) - 1] * int(fitted[spec["name"]]["slots"])
        offset += side.n_features
    cross_spec = []
    if config.use_features:
        for c in tables.crosses:
            a = _single_slot(tables.user, c["user"], c["name"])
            b = _single_slot(tables.item, c["item"], c["name"])
            cross_spec.append([a, b, int(c["buckets"]), offset])
            names.append(f"cross.{c['name']}"), kinds.append("cross"), sides.append("pair")
            offset += int(c["buckets"]) + 1
    context_spec = []
    for part in tables.context:
        period, size = {"hour": (3600, 24), "weekday": (86400, 7)}[part]
        context_spec.append([period, size, offset])
        names.append(f"context.{part}"), kinds.append("context"), sides.append("context")
        offset += size + 1
    if not names:
        raise ValueError("use_ids is false and there are no attribute fields: the rows would be empty")
    # slots in row order: every user part, then every item part
    order = [f for f in slot_field if sides[f] == "user"] + [f for f in slot_field if sides[f] == "item"]
    order += [f for f, k in enumerate(sides) if k == "pair"]
    order += [f for f, k in enumerate(sides) if k == "context"]
    rows = {}
    for kind in ("user", "item"):
        n = n_users if kind == "user" else n_items
        idx = [p[0] for p in parts[kind]] or [torch.zeros(n, 0, dtype=torch.int64)]
        val = [p[1] for p in parts[kind]] or [torch.zeros(n, 0)]
        rows[f"{kind}_index"], rows[f"{kind}_value"] = torch.cat(idx, 1), torch.cat(val, 1).float()
    rows["cross_spec"] = torch.tensor(cross_spec, dtype=torch.int64).reshape(-1, 4)
    rows["context_spec"] = torch.tensor(context_spec, dtype=torch.int64).reshape(-1, 3)
    layout = FieldLayout(offset, tuple(order), tuple(names), tuple(kinds), tuple(sides))
    meta = {"user": _side_meta(tables.user), "item": _side_meta(tables.item), "crosses": list(tables.crosses),
            "context": list(tables.context)}  # fmt: skip
    return layout, rows, meta


def _single_slot(side: SideTable, field: str, cross: str) -> int:
    if field not in side.slots:
        raise ValueError(f"cross {cross!r}: field {field!r} is not in the feature tables ({sorted(side.slots)})")
    sl = side.slots[field]
    if sl.stop - sl.start != 1:
        raise ValueError(f"cross {cross!r}: field {field!r} has {sl.stop - sl.start} slots; a cross takes one")
    return sl.start


def _side_meta(side: SideTable) -> dict[str, Any]:
    return {"encoder": side.encoder, "slots": {k: [v.start, v.stop] for k, v in side.slots.items()},
            "n_features": side.n_features}  # fmt: skip


# ------------------------------------------------------------------ building, batches, losses
CoreFn = Callable[[Any, FieldLayout], nn.Module]


def make_build(core: CoreFn) -> Callable[..., FieldRecommender]:
    """The family's `build`: `item_vectors` is the `FieldTables` of the features pipeline (None:
    ids only)."""

    def build(config: FieldConfig, train, item_vectors: FieldTables | None = None) -> FieldRecommender:
        tables = item_vectors if item_vectors is not None else id_only_tables(train.n_users, train.n_items)
        if not isinstance(tables, FieldTables):
            raise TypeError("field-aware families take the FieldTables of the features pipeline, not item vectors")
        if (tables.n_users, tables.n_items) != (train.n_users, train.n_items):
            raise ValueError(
                f"the feature tables cover {tables.n_users} users and {tables.n_items} items; the id maps "
                f"have {train.n_users} and {train.n_items}: run the features pipeline again after splitting"
            )
        layout, rows, meta = _user_item_layout(tables, config)
        return FieldRecommender(core(config, layout), tables, rows, meta)

    return build


def tables_from_state(state: dict[str, Any]) -> FieldTables:
    """The `FieldTables` a saved `FieldRecommender` was built from, for `Recommender.load`: the
    attribute tables are its saved buffers, the encoders and slots its extra state."""
    meta = state["_extra_state"]["meta"]

    def side(kind: str) -> SideTable:
        m = meta[kind]
        slots = {k: slice(a, b) for k, (a, b) in m["slots"].items()}
        return SideTable(state[f"{kind}_attr_index"], state[f"{kind}_attr_value"], slots,
                         int(m["n_features"]), m["encoder"])  # fmt: skip

    return FieldTables(side("user"), side("item"), tuple(meta.get("crosses", ())), tuple(meta.get("context", ())))


def batches(network: FieldRecommender, train, config: FieldConfig, batch_size: int,
            generator: torch.Generator) -> Iterator[Batch]:  # fmt: skip
    """mse: (user, item, target) over the ratings; bpr: (user, item, negative); logloss: each
    positive and `negatives` unobserved items with labels 1 and 0."""
    user = torch.as_tensor(train.user_idx, dtype=torch.int64)  # (N,)
    item = torch.as_tensor(train.item_idx, dtype=torch.int64)  # (N,)
    when = torch.as_tensor(train.timestamp, dtype=torch.int64) if network.has_context else None
    if config.objective == "mse":
        target = torch.as_tensor(train.value, dtype=torch.float32)
        for idx in shuffled_chunks(len(user), batch_size, generator, _DRAW_ROWS):
            for b in range(0, len(idx), batch_size):
                sel = idx[b : b + batch_size]
                batch = {"user": user[sel], "item": item[sel], "target": target[sel]}
                yield batch | ({"timestamp": when[sel]} if when is not None else {})
        return
    positives = Positives(train.csr)
    k = 1 if config.objective == "bpr" else config.negatives
    for idx in shuffled_chunks(len(user), batch_size, generator, _DRAW_ROWS):
        u, i = user.index_select(0, idx), item.index_select(0, idx)  # (R,)
        t = when.index_select(0, idx) if when is not None else None
        j = uniform_negatives(u, positives, k, generator)  # (R, k)
        for b in range(0, len(idx), batch_size):
            s = slice(b, b + batch_size)
            batch = {"user": u[s], "item": i[s], "negative": j[s]}
            yield batch | ({"timestamp": t[s]} if t is not None else {})


def loss(network: FieldRecommender, batch: Batch, config: FieldConfig) -> torch.Tensor:
    u, i, t = batch["user"], batch["item"], batch.get("timestamp")
    if config.objective == "mse":
        return mse(network(u, i, t), batch["target"])
    j = batch["negative"]  # (B, k)
    b, k = j.shape
    users = torch.cat([u, u.repeat_interleave(k)])  # (B + B·k,)
    items = torch.cat([i, j.reshape(-1)])
    # a negative is scored in its positive's context (the same event, another item)
    times = torch.cat([t, t.repeat_interleave(k)]) if t is not None else None
    scores = network(users, items, times)
    pos, neg = scores[:b], scores[b:].view(b, k)
    if config.objective == "bpr":
        return bpr(pos, neg[:, 0])
    labels = torch.cat([torch.ones(b, device=pos.device), torch.zeros(b * k, device=pos.device)])
    return bce(scores, labels)


def field_family(name: str, config: type[FieldConfig], core: CoreFn, paper: str) -> Family:
    """A registry entry for a field-aware family whose core is `core(config, layout)`."""
    return Family(
        name=name, config=config, build=make_build(core), batches=batches, loss=loss, paper=paper,
        fields=core, inputs_from_state=tables_from_state,
    )
