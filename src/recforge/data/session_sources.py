"""Session benchmarks in their published formats -> canonical tables.

- **YooChoose** (RecSys Challenge 2015; Ben-Shimon et al. 2015, "RecSys Challenge 2015 and the
  YOOCHOOSE Dataset"): `yoochoose-clicks.dat` ("session,timestamp,item,category", ISO-8601 UTC
  with milliseconds and a `Z`) and `yoochoose-buys.dat` ("session,timestamp,item,price,quantity"),
  no header. Clicks become `view`, buys `purchase` (value = quantity, at least 1). The data has no
  users: **user_id is the session id**, so every session is its own user.
- **Diginetica** (CIKM Cup 2016, track 2): `train-item-views.csv`, ";"-separated with a header
  "sessionId;userId;itemId;timeframe;eventdate". The time of a view is its `eventdate` (the
  session's day, UTC) plus `timeframe` (ms since the session began). userId is often empty: such
  sessions get user_id "session:<sessionId>" (prefixed so they never collide with a real userId).
  Optional `products.csv` ("itemId;pricelog2;product.name.tokens": price = 2^pricelog2, text =
  the hashed name tokens) and `product-categories.csv` ("itemId;categoryId").
- **RetailRocket** (Kaggle "Retailrocket recommender system dataset"): `events.csv`
  ("timestamp,visitorid,event,itemid,transactionid", timestamps in unix **milliseconds**; events
  view / addtocart / transaction -> view / add_to_cart / purchase). It has no sessions: a
  visitor's events are cut into sessions wherever `session_gap_s` (30 min) passes without an
  event; session ids are "<visitorid>:<n>". The optional `item_properties_part1/2.csv`
  ("timestamp,itemid,property,value") give each item's latest `categoryid` as its category,
  written as a root-to-leaf path when the optional `category_tree.csv` is there.

Times are ordered at their full precision (ms) before being truncated to the canonical unix
seconds, so rows come out in true time order and later stable sorts keep within-second order.
All three sites need a login: missing files raise a `DataError` saying where to put which file.
Rows in errors count data rows from 0 (a header line is not a row).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from recforge.data.errors import DataError
from recforge.data.schema import (
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    STRING,
    coerce_interactions,
    coerce_items,
    require_columns,
    users_from_interactions,
)

logger = logging.getLogger(__name__)

YOOCHOOSE_URL = "https://recsys.acm.org/recsys15/challenge/ (archive yoochoose-data.7z)"
DIGINETICA_URL = (
    "https://competitions.codalab.org/competitions/11161 (CIKM Cup 2016 track 2, dataset-train-diginetica.zip)"
)
RETAILROCKET_URL = "https://www.kaggle.com/datasets/retailrocket/ecommerce-dataset"
_ROWS_HINT = "Rows count data rows from 0; a header line is not a row"


class YooChooseConfig(BaseModel):
    """Where the YooChoose files are (`ingestion.yoochoose`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    raw_dir: Path = Path("data/01_raw/yoochoose")
    clicks_file: str = "yoochoose-clicks.dat"
    buys_file: str | None = Field("yoochoose-buys.dat", description="null: clicks only")


class DigineticaConfig(BaseModel):
    """Where the Diginetica files are (`ingestion.diginetica`); metadata files are read if present."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    raw_dir: Path = Path("data/01_raw/diginetica")
    views_file: str = "train-item-views.csv"
    products_file: str | None = "products.csv"
    categories_file: str | None = "product-categories.csv"


class RetailRocketConfig(BaseModel):
    """Where the RetailRocket files are and how visits are cut into sessions (`ingestion.retailrocket`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    raw_dir: Path = Path("data/01_raw/retailrocket")
    events_file: str = "events.csv"
    item_properties_files: tuple[str, ...] = ("item_properties_part1.csv", "item_properties_part2.csv")
    category_tree_file: str | None = "category_tree.csv"
    session_gap_s: int = Field(1800, gt=0, description="inactivity that starts a new session")


@dataclass(frozen=True)
class SessionSourceData:
    """Canonical tables of a session benchmark."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame


# --------------------------------------------------------------------------------- helpers
def _rows(mask: pd.Series | np.ndarray) -> list[int]:
    return np.flatnonzero(np.asarray(mask)).tolist()


def _require_files(raw_dir: Path, files: list[str], dataset: str, url: str) -> None:
    missing = [f for f in files if not (raw_dir / f).is_file()]
    if missing:
        raise DataError(
            f"{dataset} file(s) {missing} not found in {raw_dir}",
            source=str(raw_dir),
            hint=(
                f"The {dataset} site needs a login, so recforge cannot download it: get it from {url} "
                f"and put {', '.join(str(raw_dir / f) for f in files)} there (unpacked, names as shown)"
            ),
        )


def _optional(raw_dir: Path, name: str | None) -> Path | None:
    if name is None:
        return None
    path = raw_dir / name
    if not path.is_file():
        logger.info("optional file %s not found: skipped", path)
        return None
    return path


def _read(path: Path, sep: str = ",", names: list[str] | None = None) -> pd.DataFrame:
    """Every cell as a string (ids never turn into floats); empty cells are NA."""
    try:
        return pd.read_csv(path, sep=sep, header=None if names else "infer", names=names, dtype=str)
    except pd.errors.EmptyDataError as exc:
        raise DataError("empty file", source=str(path)) from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot parse: {exc}", source=str(path), hint=f"Expected {sep!r}-separated text") from exc


def _require_raw_columns(df: pd.DataFrame, columns: list[str], path: Path) -> None:
    require_columns(df, columns, str(path), hint="The file must keep the dataset's original header")


def _require_filled(df: pd.DataFrame, columns: list[str], path: Path) -> None:
    for col in columns:
        empty = df[col].isna() | (df[col].str.strip() == "")
        if empty.any():
            raise DataError("empty values", source=str(path), column=col, rows=_rows(empty), hint=_ROWS_HINT)
    if df.empty:
        raise DataError("no rows", source=str(path))


def _integers(s: pd.Series, path: Path, column: str) -> np.ndarray:
    num = pd.to_numeric(s, errors="coerce")
    bad = num.isna() | (num != np.floor(num))
    if bad.any():
        raise DataError("values that are not integers", source=str(path), column=column, rows=_rows(bad),
                        hint=_ROWS_HINT)  # fmt: skip
    return num.to_numpy(dtype=np.int64)


def _iso_ms(s: pd.Series, path: Path, column: str) -> np.ndarray:
    """Unix milliseconds from ISO-8601 strings (a trailing Z means UTC)."""
    parsed = pd.to_datetime(s, format="ISO8601", utc=True, errors="coerce")
    if parsed.isna().any():
        raise DataError("unparsable ISO-8601 timestamps", source=str(path), column=column,
                        rows=_rows(parsed.isna()), hint=_ROWS_HINT)  # fmt: skip
    return parsed.astype("datetime64[ms, UTC]").astype("int64").to_numpy()


def _check_ms(ms: np.ndarray, path: Path, column: str) -> None:
    sec = ms // 1000
    bad = (sec < MIN_TIMESTAMP) | (sec > MAX_TIMESTAMP)
    if bad.any():
        raise DataError("timestamps outside 1990..2100 when read as unix milliseconds", source=str(path),
                        column=column, rows=_rows(bad), hint=_ROWS_HINT)  # fmt: skip


def _canonical(frame: pd.DataFrame, ms: np.ndarray, source: str) -> pd.DataFrame:
    """Rows in true (ms) time order, ties by file position, with unix-second timestamps."""
    order = np.argsort(ms, kind="stable")
    out = frame.iloc[order].reset_index(drop=True)
    out["timestamp"] = ms[order] // 1000
    return coerce_interactions(out, source=source)


def _items(interactions: pd.DataFrame, meta: pd.DataFrame | None, source: str) -> pd.DataFrame:
    """Every interacted item, with metadata where `meta` (keyed by item_id) has it."""
    ids = pd.DataFrame({"item_id": pd.array(sorted(pd.unique(interactions["item_id"])), dtype=STRING)})
    if meta is None:
        return coerce_items(ids, source=source)
    meta = meta.astype({"item_id": STRING})
    unused = int((~meta["item_id"].isin(ids["item_id"])).sum())
    if unused:
        logger.info("%s: %d items have metadata but no interactions: left out", source, unused)
    return coerce_items(ids.merge(meta, on="item_id", how="left"), source=source)


def _unique_meta(df: pd.DataFrame, key: str, path: Path) -> pd.DataFrame:
    dup = df[key].duplicated(keep=False)
    if dup.any():
        raise DataError("duplicate item ids", source=str(path), column=key, rows=_rows(dup), hint=_ROWS_HINT)
    return df


# -------------------------------------------------------------------------------- YooChoose
def load_yoochoose(config: YooChooseConfig) -> SessionSourceData:
    """Clicks (and buys) -> canonical tables; user_id = session id (the data has no users)."""
    raw = Path(config.raw_dir)
    _require_files(raw, [config.clicks_file] + ([config.buys_file] if config.buys_file else []),
                   "YooChoose", YOOCHOOSE_URL)  # fmt: skip
    path = raw / config.clicks_file
    clicks = _read(path, names=["session", "timestamp", "item", "category"])
    _require_filled(clicks, ["session", "timestamp", "item"], path)
    _integers(clicks["session"], path, "session")
    parts = [pd.DataFrame({"session_id": clicks["session"], "item_id": clicks["item"], "event": "view",
                           "value": 1.0})]  # fmt: skip
    times = [_iso_ms(clicks["timestamp"], path, "timestamp")]
    _check_ms(times[0], path, "timestamp")
    prices = None
    if config.buys_file:
        bpath = raw / config.buys_file
        buys = _read(bpath, names=["session", "timestamp", "item", "price", "quantity"])
        _require_filled(buys, ["session", "timestamp", "item"], bpath)
        _integers(buys["session"], bpath, "session")
        qty = pd.to_numeric(buys["quantity"], errors="coerce").fillna(0.0)
        # Quantity 0 marks a buy whose amount was not recorded: it still is one purchase.
        parts.append(pd.DataFrame({"session_id": buys["session"], "item_id": buys["item"], "event": "purchase",
                                   "value": np.maximum(qty.to_numpy(dtype=np.float64), 1.0)}))  # fmt: skip
        times.append(_iso_ms(buys["timestamp"], bpath, "timestamp"))
        _check_ms(times[1], bpath, "timestamp")
        price = pd.to_numeric(buys["price"], errors="coerce")
        prices = pd.DataFrame({"item_id": buys["item"], "price": price, "t": times[1]})[price > 0]
    frame = pd.concat(parts, ignore_index=True)
    frame["user_id"] = frame["session_id"]
    interactions = _canonical(frame, np.concatenate(times), source=str(path))

    # An item's category is its latest known one: "0" means unknown, "S" a special offer,
    # 1-12 a category, longer numbers a brand.
    cat = pd.DataFrame({"item_id": clicks["item"], "category": clicks["category"], "t": times[0]})
    cat = cat[cat["category"].notna() & (cat["category"] != "0")].sort_values("t", kind="stable")
    meta = cat.drop_duplicates("item_id", keep="last")[["item_id", "category"]]
    if prices is not None:
        p = prices.sort_values("t", kind="stable").drop_duplicates("item_id", keep="last")[["item_id", "price"]]
        meta = meta.merge(p, on="item_id", how="outer")
    items = _items(interactions, meta, str(path))
    logger.info("yoochoose: %d events in %d sessions, %d items", len(interactions),
                interactions["session_id"].nunique(), len(items))  # fmt: skip
    return SessionSourceData(interactions, items, users_from_interactions(interactions))


# ------------------------------------------------------------------------------- Diginetica
def load_diginetica(config: DigineticaConfig) -> SessionSourceData:
    """Item views -> canonical tables; anonymous sessions get user_id "session:<sessionId>"."""
    raw = Path(config.raw_dir)
    _require_files(raw, [config.views_file], "Diginetica", DIGINETICA_URL)
    path = raw / config.views_file
    views = _read(path, sep=";")
    _require_raw_columns(views, ["sessionId", "userId", "itemId", "timeframe", "eventdate"], path)
    _require_filled(views, ["sessionId", "itemId", "timeframe", "eventdate"], path)
    day = pd.to_datetime(views["eventdate"], format="%Y-%m-%d", utc=True, errors="coerce")
    if day.isna().any():
        raise DataError("dates that are not YYYY-MM-DD", source=str(path), column="eventdate",
                        rows=_rows(day.isna()), hint=_ROWS_HINT)  # fmt: skip
    offset = _integers(views["timeframe"], path, "timeframe")  # ms since the session began
    ms = day.astype("datetime64[ms, UTC]").astype("int64").to_numpy() + offset
    _check_ms(ms, path, "eventdate")
    user = views["userId"].astype(STRING).str.strip()
    anonymous = user.isna() | (user == "")
    frame = pd.DataFrame(
        {
            "user_id": user.where(~anonymous, "session:" + views["sessionId"].astype(STRING)),
            "item_id": views["itemId"],
            "session_id": views["sessionId"],
            "event": "view",
            "value": 1.0,
        }
    )
    interactions = _canonical(frame, ms, source=str(path))

    meta = None
    products = _optional(raw, config.products_file)
    if products is not None:
        p = _read(products, sep=";")
        _require_raw_columns(p, ["itemId", "pricelog2"], products)
        p = _unique_meta(p, "itemId", products)
        price = np.exp2(pd.to_numeric(p["pricelog2"], errors="coerce"))
        meta = pd.DataFrame({"item_id": p["itemId"], "price": price})
        if "product.name.tokens" in p.columns:
            meta["text"] = p["product.name.tokens"].to_numpy()
    categories = _optional(raw, config.categories_file)
    if categories is not None:
        c = _read(categories, sep=";")
        _require_raw_columns(c, ["itemId", "categoryId"], categories)
        c = _unique_meta(c, "itemId", categories)
        c = pd.DataFrame({"item_id": c["itemId"], "category": c["categoryId"]})
        meta = c if meta is None else meta.merge(c, on="item_id", how="outer")
    items = _items(interactions, meta, str(path))
    logger.info("diginetica: %d views in %d sessions (%.0f%% anonymous), %d items", len(interactions),
                interactions["session_id"].nunique(), 100 * anonymous.mean(), len(items))  # fmt: skip
    return SessionSourceData(interactions, items, users_from_interactions(interactions))


# ----------------------------------------------------------------------------- RetailRocket
RETAILROCKET_EVENTS = {"view": "view", "addtocart": "add_to_cart", "transaction": "purchase"}


def sessionise(visitor: np.ndarray, ms: np.ndarray, gap_ms: int) -> np.ndarray:
    """(N,) session number within each visitor (0, 1, ...): a new session starts after a gap
    longer than `gap_ms` since the visitor's previous event."""
    order = np.lexsort((np.arange(len(ms)), ms, visitor))  # visitor, then time, then position
    v, t = visitor[order], ms[order]
    new_visitor = np.r_[True, v[1:] != v[:-1]]
    new_session = new_visitor | np.r_[True, np.diff(t) > gap_ms]
    running = np.cumsum(new_session) - 1  # (N,) global session number in sorted order
    first = np.maximum.accumulate(np.where(new_visitor, running, 0))  # the visitor's first session
    out = np.empty(len(ms), dtype=np.int64)
    out[order] = running - first
    return out


def _category_paths(leaf: pd.Series, tree_path: Path | None) -> pd.Series:
    """"root/.../leaf" paths of category ids, walking `category_tree.csv` (categoryid,parentid)."""
    if tree_path is None:
        return leaf
    tree = _read(tree_path)
    _require_raw_columns(tree, ["categoryid", "parentid"], tree_path)
    parent = tree.dropna(subset=["parentid"]).drop_duplicates("categoryid").set_index("categoryid")["parentid"]
    path, current = leaf.astype(object), leaf.astype(object)
    for _ in range(32):  # depth bound: a malformed tree with a cycle must still end
        up = current.map(parent)
        if up.isna().all():
            break
        path = path.where(up.isna(), up.astype(object) + "/" + path)
        current = up
    return path


def _retailrocket_categories(raw: Path, config: RetailRocketConfig) -> pd.DataFrame | None:
    files = [p for p in (_optional(raw, f) for f in config.item_properties_files) if p is not None]
    if not files:
        return None
    found = []
    for path in files:
        # The property files hold ~20M rows, almost all other properties: keep memory flat.
        for chunk in pd.read_csv(path, dtype=str, chunksize=2_000_000):
            _require_raw_columns(chunk, ["timestamp", "itemid", "property", "value"], path)
            found.append(chunk.loc[chunk["property"] == "categoryid", ["timestamp", "itemid", "value"]])
    props = pd.concat(found, ignore_index=True)
    props["t"] = pd.to_numeric(props["timestamp"], errors="coerce")
    latest = props.sort_values("t", kind="stable").drop_duplicates("itemid", keep="last")
    tree = _optional(raw, config.category_tree_file)
    return pd.DataFrame(
        {"item_id": latest["itemid"].to_numpy(), "category": _category_paths(latest["value"], tree).to_numpy()}
    )


def load_retailrocket(config: RetailRocketConfig) -> SessionSourceData:
    """Events -> canonical tables, sessionised by `session_gap_s` of inactivity per visitor."""
    raw = Path(config.raw_dir)
    _require_files(raw, [config.events_file], "RetailRocket", RETAILROCKET_URL)
    path = raw / config.events_file
    events = _read(path)
    _require_raw_columns(events, ["timestamp", "visitorid", "event", "itemid"], path)
    _require_filled(events, ["timestamp", "visitorid", "event", "itemid"], path)
    ms = _integers(events["timestamp"], path, "timestamp")
    _check_ms(ms, path, "timestamp")
    kind = events["event"].str.strip().str.lower()
    unknown = ~kind.isin(list(RETAILROCKET_EVENTS))
    if unknown.any():
        raise DataError(f"unknown events {sorted(set(kind[unknown]))[:5]}; expected {list(RETAILROCKET_EVENTS)}",
                        source=str(path), column="event", rows=_rows(unknown), hint=_ROWS_HINT)  # fmt: skip
    visitor = events["visitorid"].astype(STRING)
    codes = pd.factorize(visitor)[0]
    number = sessionise(codes, ms, config.session_gap_s * 1000)
    frame = pd.DataFrame(
        {
            "user_id": visitor,
            "item_id": events["itemid"],
            "session_id": visitor + ":" + pd.Series(number, index=events.index).astype(STRING),
            "event": kind.map(RETAILROCKET_EVENTS),
            "value": 1.0,
        }
    )
    interactions = _canonical(frame, ms, source=str(path))
    items = _items(interactions, _retailrocket_categories(raw, config), str(path))
    logger.info("retailrocket: %d events, %d visitors, %d sessions (gap %ds), %d items", len(interactions),
                interactions["user_id"].nunique(), interactions["session_id"].nunique(), config.session_gap_s,
                len(items))  # fmt: skip
    return SessionSourceData(interactions, items, users_from_interactions(interactions))
