"""Amazon product reviews with metadata (McAuley et al.) -> canonical tables and item images.

Two published layouts, one JSON object per line, optionally gzipped (read by their magic bytes):

- **2014** (snap.stanford.edu / jmcauley.ucsd.edu): `reviews_<Cat>_5.json` with reviewerID, asin,
  reviewerName, helpful, reviewText, overall, summary, unixReviewTime, reviewTime; and
  `meta_<Cat>.json` with asin, title, description (a string), price (a number), imUrl, related,
  salesRank, categories (a list of category paths) and brand, written as one *Python dict
  literal* per line (single quotes), so it is read with `ast.literal_eval`, never `eval`.
- **2018** (Jianmo Ni's release): `<Cat>_5.json` (or `.jsonl`) with the same review keys plus
  verified, style, vote and image; and `meta_<Cat>.json` in JSON with title, description and
  feature (lists of strings), price (text such as "$12.99" or "$5.99 - $12.99"), category (one
  path), brand, imageURL and imageURLHighRes (lists).

Every line is parsed as JSON or else as a Python literal, whichever layout it comes from; blank
lines are ignored. A line that is neither, is not a dict, or lacks a required key stops the run
with a `DataError` naming the file and the 1-based line numbers; with `on_bad_lines: skip` such
lines are left out, counted and logged. Meta lines of items that have no review are not parsed.

Reviews become `rating` events (value = overall, 1-5, at unixReviewTime, a day's resolution).
Exact repeats of (reviewer, item, time) -- the 2018 files list one review once per style variant
-- keep their first line (`drop_duplicates`). Items are every reviewed asin; `title`, `text` (the
description, list items joined), `category` (the first category path joined with "/", a "/"
inside a name becoming "-"), `categories` (every path, "|"-joined), `brand`, `price` (the lowest
price of a range; NaN when absent or not a price), `features` (2018), `image_url` and
`has_metadata`. HTML entities and tags in these texts are unescaped and removed. **An item without
metadata keeps its row**: title falls back to the asin (the schema's title is never null; the
content encoders treat such a title as no content), the other metadata columns are null and
`has_metadata` is False. Review text is opt-in: on the interactions (`keep_review_text`) and, as
an item column for text encoders (`item_review_chars`), with a caveat: an item's reviews include
those of the test split.

Item images: files named `<asin>.<jpg|png|gif|webp>` in `images.dir` become `image_path =
images/<file>` in the media root; with `images.download` the missing ones are fetched from
`image_url` first (`recforge.data.image_download`: bounded, checked, atomic; failures skipped and
written to `download_report.json` in that folder). Raw review and meta files are only read.

Julian McAuley, Christopher Targett, Qinfeng Shi and Anton van den Hengel. 2015. Image-based
Recommendations on Styles and Substitutes. SIGIR. Jianmo Ni, Jiacheng Li and Julian McAuley.
2019. Justifying Recommendations using Distantly-Labeled Reviews and Fine-Grained Aspects. EMNLP.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from recforge.data.amazon_lines import (
    LINES_HINT,
    BadLines,
    OnBadLines,
    category_paths,
    clean_text,
    image_url,
    parse_price,
    records,
)
from recforge.data.download import DownloadError, download_file
from recforge.data.errors import DataError
from recforge.data.image_download import IMAGE_SUFFIXES, ImageFetchConfig, OfflineError, download_images
from recforge.data.schema import (
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    STRING,
    coerce_interactions,
    coerce_items,
    users_from_interactions,
)

logger = logging.getLogger(__name__)

Layout = Literal["2014", "2018"]

# No checksums are published for these files and they were not fetched while writing this, so
# none is pinned: downloads are checked for completeness (Content-Length) only.
OFFICIAL_URLS: dict[str, dict[str, str]] = {
    "2014": {
        "page": "https://jmcauley.ucsd.edu/data/amazon/links.html",
        "reviews": "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/reviews_{category}{core}.json.gz",
        "meta": "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/meta_{category}.json.gz",
    },
    "2018": {
        "page": "https://nijianmo.github.io/amazon/index.html",
        "reviews": "https://jmcauley.ucsd.edu/data/amazon_v2/{folder}/{category}{core}.json.gz",
        "meta": "https://jmcauley.ucsd.edu/data/amazon_v2/metaFiles2/meta_{category}.json.gz",
    },
}
REVIEW_KEYS = ("reviewerID", "asin", "overall", "unixReviewTime")


class AmazonImagesConfig(BaseModel):
    """Where item images are cached and how missing ones are fetched (`ingestion.amazon.images`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dir: Path = Path("data/01_raw/amazon/images")
    download: bool = False
    # Metadata keys holding image URLs, in order of preference (2014: imUrl; 2018: the lists).
    url_keys: tuple[str, ...] = ("imUrl", "imageURLHighRes", "imageURL")
    max_items: int | None = Field(default=None, ge=0, description="new downloads per run (null: all)")
    timeout_s: float = Field(default=10.0, gt=0)
    retries: int = Field(default=2, ge=0, le=10)
    backoff_s: float = Field(default=1.0, ge=0)
    max_bytes: int = Field(default=5 * 1024 * 1024, gt=0)
    max_redirects: int = Field(default=5, ge=0, le=20)
    workers: int = Field(default=8, ge=1, le=64)

    def fetch_config(self) -> ImageFetchConfig:
        """The per-image limits of `recforge.data.image_download`."""
        return ImageFetchConfig(
            timeout_s=self.timeout_s,
            retries=self.retries,
            backoff_s=self.backoff_s,
            max_bytes=self.max_bytes,
            max_redirects=self.max_redirects,
            workers=self.workers,
        )


class AmazonConfig(BaseModel):
    """Which Amazon category to read, from where, and how (`ingestion.amazon`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    raw_dir: Path = Path("data/01_raw/amazon")
    category: str = Field(default="Beauty", pattern=r"^[A-Za-z0-9_]+$", description="as in the file names")
    layout: Literal["auto", "2014", "2018"] = "auto"
    five_core: bool = True  # reviews_<Cat>_5.json / <Cat>_5.json; false: the full review files
    metadata: bool = True  # read meta_<Cat>.json (required when true)
    on_bad_lines: OnBadLines = "error"
    drop_duplicates: bool = True
    keep_review_text: bool = False  # interactions gain `summary` and `review_text`
    item_review_chars: int = Field(default=0, ge=0, description="items.review_text length; 0: none")
    download: bool = False
    timeout_s: float = Field(default=120.0, gt=0)
    retries: int = Field(default=3, ge=0, le=10)
    backoff_s: float = Field(default=2.0, ge=0)
    images: AmazonImagesConfig = Field(default_factory=AmazonImagesConfig)

    @field_validator("layout", mode="before")
    @classmethod
    def _year_as_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value  # YAML reads 2014 as int

    def review_names(self, layout: Layout) -> list[str]:
        """Accepted review file names of `layout`, in the order they are looked for."""
        core = "_5" if self.five_core else ""
        stem = f"reviews_{self.category}{core}" if layout == "2014" else f"{self.category}{core}"
        suffixes = (".json", ".json.gz") if layout == "2014" else (".json", ".jsonl", ".json.gz", ".jsonl.gz")
        return [stem + s for s in suffixes]

    def meta_names(self) -> list[str]:
        """Accepted metadata file names (the same in both layouts)."""
        return [f"meta_{self.category}{s}" for s in (".json", ".jsonl", ".json.gz", ".jsonl.gz")]


@dataclass(frozen=True)
class AmazonData:
    """Canonical tables of one category, the media files and what was skipped on the way."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    media: dict[str, bytes]
    layout: Layout
    skipped_lines: dict[str, dict[str, Any]] = field(default_factory=dict)  # file -> {count, examples}
    image_failures: list[dict[str, str]] = field(default_factory=list)  # {item_id, url, reason}


# ----------------------------------------------------------------------------- files
def _find(raw_dir: Path, names: list[str]) -> Path | None:
    found = [raw_dir / n for n in names if (raw_dir / n).is_file()]
    if len(found) > 1:
        logger.warning("several files for one table: %s; reading %s", [p.name for p in found], found[0].name)
    return found[0] if found else None


def _urls(config: AmazonConfig, layout: Layout) -> dict[str, str]:
    core = "_5" if config.five_core else ""
    folder = "categoryFilesSmall" if config.five_core else "categoryFiles"
    urls = OFFICIAL_URLS[layout]
    return {
        "reviews": urls["reviews"].format(category=config.category, core=core, folder=folder),
        "meta": urls["meta"].format(category=config.category),
    }


def _gz_name(config: AmazonConfig, layout: Layout) -> str:
    """The review file's name as published (gzipped JSON lines)."""
    return next(n for n in config.review_names(layout) if n.endswith(".json.gz"))


def _how_to_get(config: AmazonConfig) -> str:
    sources = []
    for layout in ("2014", "2018"):
        urls = _urls(config, layout)
        meta = f" and {urls['meta']}" if config.metadata else ""
        sources.append(f"{layout}: {urls['reviews']}{meta}")
    meta_file = f" and meta_{config.category}.json(.gz)" if config.metadata else ""
    return (
        f"Put {_gz_name(config, '2014')} (2014) or {_gz_name(config, '2018')} (2018){meta_file} into "
        f"{config.raw_dir}, from {'; '.join(sources)} (category names differ between releases, e.g. 2014 "
        f"Beauty, 2018 All_Beauty: see {OFFICIAL_URLS['2014']['page']} and {OFFICIAL_URLS['2018']['page']}); "
        "or set `ingestion.amazon.download: true` and `layout: 2014|2018` on a machine with network access"
    )


def ensure_amazon(config: AmazonConfig) -> tuple[Layout, Path, Path | None]:
    """(layout, reviews file, meta file or None) in `raw_dir`, downloading them first if allowed.

    Files already present are never touched; a download goes to a temp file and is renamed into place.
    """
    raw = Path(config.raw_dir)
    layouts: tuple[Layout, ...] = ("2014", "2018") if config.layout == "auto" else (config.layout,)
    found = [(lay, p) for lay in layouts if (p := _find(raw, config.review_names(lay)))]
    meta = _find(raw, config.meta_names()) if config.metadata else None
    if found and (meta is not None or not config.metadata):
        layout, reviews = found[0]
        return layout, reviews, meta
    missing = [] if found else [f"reviews ({' or '.join(n for lay in layouts for n in config.review_names(lay))})"]
    if config.metadata and meta is None:
        missing.append(f"metadata ({' or '.join(config.meta_names())})")
    if not config.download or config.layout == "auto":
        why = "download is off" if not config.download else "downloading needs `layout: 2014` or `2018`"
        raise DataError(f"Amazon {config.category}: no {' and no '.join(missing)} in {raw} and {why}",
                        source=str(raw), hint=_how_to_get(config))  # fmt: skip
    layout = config.layout
    urls = _urls(config, layout)
    targets = []
    if not found:
        targets.append((urls["reviews"], raw / _gz_name(config, layout)))
    if config.metadata and meta is None:
        targets.append((urls["meta"], raw / f"meta_{config.category}.json.gz"))
    for url, dest in targets:
        try:
            download_file(url, dest, timeout_s=config.timeout_s, retries=config.retries, backoff_s=config.backoff_s)
        except DownloadError as exc:
            raise DataError(f"Amazon {config.category}: the download failed: {exc}", source=str(raw),
                            hint=_how_to_get(config)) from exc  # fmt: skip
    return ensure_amazon(config.model_copy(update={"download": False}))


# ----------------------------------------------------------------------------- tables
def read_reviews(
    path: Path, config: AmazonConfig, skipped: dict[str, dict[str, Any]] | None = None
) -> pd.DataFrame:
    """Canonical interactions (`rating` events) from a review file of either layout."""
    source = str(path)
    bad = BadLines(path, config.on_bad_lines)
    text = config.keep_review_text or config.item_review_chars > 0
    cols: dict[str, list[Any]] = {k: [] for k in ("line", "user_id", "item_id", "value", "timestamp")}
    if text:
        cols.update(summary=[], review_text=[])
    for line_no, rec in records(path, bad, REVIEW_KEYS):
        cols["line"].append(line_no)
        cols["user_id"].append(str(rec["reviewerID"]))
        cols["item_id"].append(str(rec["asin"]))
        cols["value"].append(rec["overall"])
        cols["timestamp"].append(rec["unixReviewTime"])
        if text:
            cols["summary"].append(rec.get("summary"))
            cols["review_text"].append(rec.get("reviewText"))
    bad.finish(skipped if skipped is not None else {})
    if not cols["line"]:
        raise DataError("no reviews (empty file or every line skipped)", source=source)
    lines = np.asarray(cols.pop("line"))
    frame = pd.DataFrame(cols)

    def check(mask: pd.Series, problem: str, column: str) -> None:
        if mask.any():
            rows = lines[mask.to_numpy()].tolist()
            raise DataError(problem, source=source, column=column, rows=rows, hint=LINES_HINT)

    rating = pd.to_numeric(frame["value"], errors="coerce")
    check(rating.isna() | (rating < 1) | (rating > 5), "ratings that are not numbers in 1..5", "overall")
    seconds = pd.to_numeric(frame["timestamp"], errors="coerce")
    check(seconds.isna() | (seconds != np.floor(seconds)), "times that are not integer unix seconds", "unixReviewTime")
    check((seconds < MIN_TIMESTAMP) | (seconds > MAX_TIMESTAMP), "times outside 1990..2100", "unixReviewTime")
    frame["value"], frame["timestamp"], frame["event"] = rating.astype("float64"), seconds.astype("int64"), "rating"
    if config.drop_duplicates:
        dup = frame.duplicated(["user_id", "item_id", "timestamp"], keep="first")
        if dup.any():
            logger.info("%s: dropped %d repeated (reviewer, item, time) line(s), e.g. line %d",
                        source, int(dup.sum()), int(lines[dup.to_numpy()][0]))  # fmt: skip
            frame = frame[~dup.to_numpy()]
    interactions = coerce_interactions(frame, source=source)
    if text:
        for col in ("summary", "review_text"):
            interactions[col] = pd.array(frame[col].map(clean_text, na_action="ignore").to_numpy(), dtype=STRING)
    return interactions


def read_meta(
    path: Path, wanted: set[str], config: AmazonConfig, skipped: dict[str, dict[str, Any]] | None = None
) -> pd.DataFrame:
    """One row per wanted asin found in a meta file of either layout (the first line of a repeated asin)."""
    bad = BadLines(path, config.on_bad_lines)
    rows: dict[str, dict[str, Any]] = {}
    repeats = 0
    for _, rec in records(path, bad, ("asin",), wanted):
        asin = str(rec["asin"])
        if asin not in wanted:
            continue
        if asin in rows:
            repeats += 1
            continue
        paths = category_paths(rec)
        rows[asin] = {
            "item_id": asin,
            "title": clean_text(rec.get("title")),
            "text": clean_text(rec.get("description")),
            "category": paths[0] if paths else None,
            "categories": "|".join(paths) or None,
            "brand": clean_text(rec.get("brand")),
            "price": parse_price(rec.get("price")),
            "features": clean_text(rec.get("feature")),
            "image_url": image_url(rec, config.images.url_keys),
        }
    bad.finish(skipped if skipped is not None else {})
    if repeats:
        logger.info("%s: %d repeated asin line(s) ignored (the first one is kept)", path, repeats)
    return pd.DataFrame(list(rows.values()), columns=list(META_COLUMNS))


META_COLUMNS = ("item_id", "title", "text", "category", "categories", "brand", "price", "features", "image_url")


def build_items(
    interactions: pd.DataFrame, meta: pd.DataFrame | None, config: AmazonConfig, source: str
) -> pd.DataFrame:
    """Canonical items: every reviewed asin, with its metadata where `meta` has it (null columns
    when there is no meta file)."""
    if meta is None:
        meta = pd.DataFrame({c: pd.Series(dtype=object) for c in META_COLUMNS})
    ids = pd.DataFrame({"item_id": sorted(pd.unique(interactions["item_id"].astype(object)))})
    frame = ids.merge(meta.astype({"item_id": object}), on="item_id", how="left")
    frame["price"] = frame["price"].astype("float64")
    frame["has_metadata"] = frame["item_id"].isin(meta["item_id"]).to_numpy()
    if config.item_review_chars > 0:
        # (R,) one string per review, then joined per item and cut to the configured length
        reviews = (interactions["summary"].fillna("") + " " + interactions["review_text"].fillna("")).str.strip()
        joined = reviews.groupby(interactions["item_id"].to_numpy()).agg(" ".join)
        joined = joined.str.slice(0, config.item_review_chars)
        frame["review_text"] = frame["item_id"].map(joined)
    items = coerce_items(frame, source=source)
    for col in ("categories", "brand", "features", "image_url", "review_text"):
        if col in items.columns:  # coerce_items keeps extra columns as object arrays
            items[col] = pd.array(items[col].where(items[col].notna(), None).to_numpy(), dtype=STRING)
    return items


def _cached_images(folder: Path) -> dict[str, str]:
    """item_id -> image file name of the images already in `folder`."""
    if not folder.is_dir():
        return {}
    out: dict[str, str] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        stem, suffix = os.path.splitext(entry.name)
        if entry.is_file() and not entry.name.startswith(".") and suffix.lower() in IMAGE_SUFFIXES:
            out.setdefault(stem, entry.name)
    return out


def _write_report(folder: Path, failures: list[dict[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".download_report.{secrets.token_hex(4)}.tmp"
    tmp.write_text(json.dumps(failures, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, folder / "download_report.json")


def attach_images(
    items: pd.DataFrame, config: AmazonImagesConfig
) -> tuple[pd.DataFrame, dict[str, bytes], list[dict[str, str]]]:
    """(items with `image_path`, media files, download failures): cached images, plus the missing
    ones fetched first when `config.download` is on."""
    folder = Path(config.dir)
    cached = _cached_images(folder)
    failures: list[dict[str, str]] = []
    if config.download:
        has_url = items["image_url"].notna().to_numpy() & ~items["item_id"].isin(list(cached)).to_numpy()
        todo = list(zip(items["item_id"][has_url].astype(str), items["image_url"][has_url].astype(str), strict=True))
        if config.max_items is not None:
            todo = todo[: config.max_items]
        if todo:
            logger.info("fetching %d item image(s) into %s (%d already there)", len(todo), folder, len(cached))
            try:
                result = download_images(todo, folder, config.fetch_config())
            except OfflineError as exc:
                raise DataError(
                    f"item images: {exc}",
                    source=str(folder),
                    hint=f"{len(cached)} image(s) are already in {folder}. Run again with network access, "
                    "or set `ingestion.amazon.images.download: false` to ingest with the images already there",
                ) from exc
            failures = result.failures
            _write_report(folder, failures)
            cached = _cached_images(folder)
    names = items["item_id"].astype(object).map(cached).astype(STRING)
    items = items.copy()
    items["image_path"] = "images/" + names
    media = {f"images/{name}": (folder / name).read_bytes() for name in names.dropna()}
    return items, media, failures


def load_amazon(config: AmazonConfig) -> AmazonData:
    """Canonical tables and images of the configured category; downloads first if allowed and needed."""
    layout, reviews_path, meta_path = ensure_amazon(config)
    skipped: dict[str, dict[str, Any]] = {}
    interactions = read_reviews(reviews_path, config, skipped)
    meta = None
    if meta_path is not None:
        meta = read_meta(meta_path, set(interactions["item_id"].unique()), config, skipped)
    items = build_items(interactions, meta, config, source=str(meta_path or reviews_path))
    if not config.keep_review_text:
        interactions = interactions.drop(columns=["summary", "review_text"], errors="ignore")
    items, media, failures = attach_images(items, config.images)
    users = users_from_interactions(interactions)
    logger.info(
        "Amazon %s (%s): %d reviews, %d users, %d items (%d with metadata, %d with an image)",
        config.category, layout, len(interactions), len(users), len(items),
        int(items["has_metadata"].sum()), int(items["image_path"].notna().sum()),
    )  # fmt: skip
    return AmazonData(interactions, items, users, media, layout, skipped, failures)
