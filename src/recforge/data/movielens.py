"""MovieLens 100K (GroupLens): `u.data`, `u.item`, `u.user` -> canonical tables.

F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens Datasets: History and Context.
ACM TiiS 5, 4, Article 19.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from recforge.data.download import DownloadError, download_file, extract_zip
from recforge.data.errors import DataError
from recforge.data.schema import STRING, coerce_interactions, coerce_items, coerce_users

logger = logging.getLogger(__name__)

OFFICIAL_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
OFFICIAL_SHA256 = "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c9a9b2d"
REQUIRED_FILES = ("u.data", "u.item", "u.user")

# The order of the 19 genre flags in u.item (u.genre in the archive).
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
_ITEM_HEAD = ["item_id", "title", "release_date", "video_release_date", "imdb_url"]


class MovieLensConfig(BaseModel):
    """Where MovieLens 100K lives and how to fetch it when it is not there."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    raw_dir: Path = Path("data/01_raw/ml-100k")
    download: bool = True
    url: str = OFFICIAL_URL
    sha256: str | None = Field(default=OFFICIAL_SHA256, pattern=r"^[0-9a-fA-F]{64}$")
    timeout_s: float = Field(default=60.0, gt=0)
    retries: int = Field(default=3, ge=0, le=10)
    backoff_s: float = Field(default=2.0, ge=0)


def _how_to_get(raw_dir: Path) -> str:
    files = ", ".join(str(raw_dir / f) for f in REQUIRED_FILES)
    return (
        f"Put the MovieLens 100K files at {files}: download {OFFICIAL_URL} "
        f"(sha256 {OFFICIAL_SHA256}) and unzip it so that its ml-100k/ folder becomes {raw_dir}; "
        "or set `ingestion.movielens100k.download: true` on a machine with network access"
    )


def _missing(raw_dir: Path) -> list[str]:
    return [f for f in REQUIRED_FILES if not (raw_dir / f).is_file()]


def ensure_movielens100k(config: MovieLensConfig) -> Path:
    """The folder holding u.data, u.item and u.user, downloading the official zip if needed.

    Files already present are never touched; only missing ones are placed, each with an atomic
    rename, after the whole archive has been downloaded, checksum-verified and extracted.
    """
    raw_dir = Path(config.raw_dir)
    missing = _missing(raw_dir)
    if not missing:
        return raw_dir
    if not config.download:
        raise DataError(
            f"MovieLens 100K file(s) {missing} not found in {raw_dir} and download is off",
            source=str(raw_dir),
            hint=_how_to_get(raw_dir),
        )
    raw_dir.parent.mkdir(parents=True, exist_ok=True)
    # Working space beside raw_dir, so the final os.replace stays on one filesystem.
    work = Path(tempfile.mkdtemp(dir=raw_dir.parent, prefix=f".{raw_dir.name}-download-"))
    try:
        try:
            archive = download_file(
                config.url,
                work / "ml-100k.zip",
                sha256=config.sha256,
                timeout_s=config.timeout_s,
                retries=config.retries,
                backoff_s=config.backoff_s,
            )
            extract_zip(archive, work / "extracted")
        except DownloadError as exc:
            raise DataError(
                f"MovieLens 100K file(s) {missing} not found in {raw_dir} and the download failed: {exc}",
                source=str(raw_dir),
                hint=_how_to_get(raw_dir),
            ) from exc
        found = list((work / "extracted").rglob("u.data"))
        if not found:
            raise DataError(
                f"the archive from {config.url} has no u.data", source=config.url, hint=_how_to_get(raw_dir)
            )
        src_dir = found[0].parent
        absent = [f for f in REQUIRED_FILES if not (src_dir / f).is_file()]
        if absent:
            raise DataError(f"the archive from {config.url} lacks {absent}", source=config.url)
        raw_dir.mkdir(parents=True, exist_ok=True)
        for src in sorted(p for p in src_dir.rglob("*") if p.is_file()):
            target = raw_dir / src.relative_to(src_dir)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, target)
        logger.info("MovieLens 100K placed in %s", raw_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return raw_dir


def _read_table(path: Path, sep: str, names: list[str], encoding: str) -> pd.DataFrame:
    source = str(path)
    try:
        # No `names` here: pandas would silently drop surplus fields of the first line.
        df = pd.read_csv(
            path, sep=sep, header=None, dtype=str, encoding=encoding, keep_default_na=False, na_values=[""]
        )
    except pd.errors.EmptyDataError as exc:
        raise DataError("empty file", source=source) from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"not {encoding} text: {exc}", source=source) from exc
    except pd.errors.ParserError as exc:
        problem = f"malformed file (expected {len(names)} fields per line): {str(exc).strip()}"
        raise DataError(problem, source=source) from exc
    if len(df) == 0:
        raise DataError("empty file", source=source)
    if df.shape[1] != len(names):
        extra = df.iloc[:, len(names) :].notna().any(axis=1) if df.shape[1] > len(names) else df.notna().all(axis=1)
        raise DataError(
            f"lines with {df.shape[1]} fields, expected {len(names)} separated by {sep!r}",
            source=source,
            column=names[min(df.shape[1], len(names)) - 1],
            rows=np.flatnonzero(extra.to_numpy()).tolist(),
        )
    df.columns = names
    return df


def _int_column(df: pd.DataFrame, column: str, source: str) -> pd.Series:
    num = pd.to_numeric(df[column], errors="coerce")
    bad = num.isna() | (num != np.floor(num))
    if bad.any():
        raise DataError(
            "values that are not integers", source=source, column=column, rows=np.flatnonzero(bad.to_numpy()).tolist()
        )
    return num.astype("int64")


def read_ratings(path: Path) -> pd.DataFrame:
    """Canonical interactions from u.data (tab-separated: user, item, rating 1-5, unix seconds)."""
    source = str(path)
    df = _read_table(path, "\t", ["user_id", "item_id", "rating", "timestamp"], "ascii")
    rating = _int_column(df, "rating", source)
    out_of_range = (rating < 1) | (rating > 5)
    if out_of_range.any():
        rows = np.flatnonzero(out_of_range.to_numpy()).tolist()
        raise DataError("ratings outside 1..5", source=source, column="rating", rows=rows)
    seconds = _int_column(df, "timestamp", source)
    frame = pd.DataFrame(
        {
            "user_id": df["user_id"],
            "item_id": df["item_id"],
            # u.data documents its unit (unix seconds, 1997-98), so hand over datetimes: the
            # schema's plausibility window (>= 2000) guards against unit mix-ups that cannot occur here.
            "timestamp": pd.to_datetime(seconds, unit="s", utc=True),
            "event": "rating",
            "value": rating.astype("float64"),
        }
    )
    return coerce_interactions(frame, source=source)


def read_items(path: Path) -> pd.DataFrame:
    """Canonical items from u.item (pipe-separated, latin-1: id, title, dates, IMDb URL, 19 genre flags).

    category is `movie/<first genre>`, text is the title followed by all genres, `genres` keeps
    every genre joined by `|` for feature-aware models.
    """
    source = str(path)
    df = _read_table(path, "|", _ITEM_HEAD + list(GENRES), "latin-1")
    flags = np.column_stack([_int_column(df, g, source).to_numpy() for g in GENRES])  # (I, 19)
    not_flag = ~np.isin(flags, (0, 1))
    if not_flag.any():
        rows, cols = np.nonzero(not_flag)
        raise DataError("genre flags other than 0/1", source=source, column=GENRES[cols[0]], rows=rows.tolist())
    # Loop over the 19 genre columns, each step vectorised over all items.
    joined = pd.Series("", index=df.index, dtype=object)
    for j, genre in enumerate(GENRES):
        joined = joined + np.where(flags[:, j] == 1, genre + "|", "")
    genres = joined.str.rstrip("|").astype(STRING)
    genres = genres.mask(genres == "", "unknown")
    first = genres.str.split("|").str[0]
    title = df["title"].astype(STRING)
    frame = pd.DataFrame(
        {
            "item_id": df["item_id"],
            "title": title,
            "text": title + ". Genres: " + genres.str.replace("|", ", ", regex=False),
            "category": "movie/" + first,
            "genres": genres,
            "release_date": df["release_date"].astype(STRING),
            "imdb_url": df["imdb_url"].astype(STRING),
        }
    )
    return coerce_items(frame, source=source)


def read_users(path: Path) -> pd.DataFrame:
    """Canonical users from u.user (pipe-separated: id, age, gender, occupation, zip code)."""
    source = str(path)
    df = _read_table(path, "|", ["user_id", "age", "gender", "occupation", "zip_code"], "latin-1")
    frame = pd.DataFrame(
        {
            "user_id": df["user_id"],
            "age": _int_column(df, "age", source),
            "gender": df["gender"].astype(STRING),
            "occupation": df["occupation"].astype(STRING),
            # Some zip codes are Canadian (letters), so they stay strings.
            "zip_code": df["zip_code"].astype(STRING),
        }
    )
    return coerce_users(frame, source=source)


def load_movielens100k(config: MovieLensConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(interactions, items, users) of MovieLens 100K, downloading it first if allowed and needed."""
    raw_dir = ensure_movielens100k(config)
    interactions = read_ratings(raw_dir / "u.data")
    items = read_items(raw_dir / "u.item")
    users = read_users(raw_dir / "u.user")
    for kind, table, path in (("item", items, "u.item"), ("user", users, "u.user")):
        unknown = ~interactions[f"{kind}_id"].isin(table[f"{kind}_id"])
        if unknown.any():
            raise DataError(
                f"{kind} ids missing from {raw_dir / path}",
                source=str(raw_dir / "u.data"),
                column=f"{kind}_id",
                rows=np.flatnonzero(unknown.to_numpy()).tolist(),
            )
    logger.info(
        "MovieLens 100K: %d ratings, %d items, %d users", len(interactions), len(items), len(users)
    )
    return interactions, items, users
