"""MovieLens 100K and 1M (GroupLens) -> canonical tables.

- **100K**: `u.data` (tab-separated), `u.item` and `u.user` (`|`-separated, latin-1).
- **1M**: `ratings.dat` (UserID::MovieID::Rating::Timestamp), `users.dat`
  (UserID::Gender::Age::Occupation::Zip-code, age and occupation as codes) and `movies.dat`
  (MovieID::Title::Genres, genres `|`-separated), all `::`-separated latin-1.

Both are fetched by the same code: the official zip is downloaded (timeout, bounded retries,
sha256 check), extracted beside the raw folder and only then moved into place file by file.

F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens Datasets: History and Context.
ACM TiiS 5, 4, Article 19.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from itertools import repeat
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

ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
# GroupLens publishes only an md5 (ml-1m.zip.md5: c4d9eecfca2ab87c1945afe126590906); this is the
# sha256 of that same archive, as pinned by several independent projects.
ML1M_SHA256 = "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20"
ML1M_FILES = ("ratings.dat", "movies.dat", "users.dat")

# The order of the 19 genre flags in u.item (u.genre in the archive).
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
_ITEM_HEAD = ["item_id", "title", "release_date", "video_release_date", "imdb_url"]


class _ArchiveConfig(BaseModel):
    """Where a GroupLens release lives and how to fetch it when it is not there."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    raw_dir: Path
    download: bool = True
    url: str
    sha256: str | None = Field(pattern=r"^[0-9a-fA-F]{64}$")
    timeout_s: float = Field(default=60.0, gt=0)
    retries: int = Field(default=3, ge=0, le=10)
    backoff_s: float = Field(default=2.0, ge=0)


class MovieLensConfig(_ArchiveConfig):
    """Where MovieLens 100K lives and how to fetch it when it is not there."""

    raw_dir: Path = Path("data/01_raw/ml-100k")
    url: str = OFFICIAL_URL
    sha256: str | None = Field(default=OFFICIAL_SHA256, pattern=r"^[0-9a-fA-F]{64}$")


class MovieLens1MConfig(_ArchiveConfig):
    """Where MovieLens 1M lives and how to fetch it (`ingestion.movielens1m`)."""

    raw_dir: Path = Path("data/01_raw/ml-1m")
    url: str = ML1M_URL
    sha256: str | None = Field(default=ML1M_SHA256, pattern=r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class _Release:
    name: str  # as in messages: "MovieLens 100K"
    key: str  # the `ingestion.<key>` parameter block
    # (ratings, items, users); the first one locates the release's folder inside the archive.
    files: tuple[str, str, str]
    url: str
    sha256: str
    folder: str  # the archive's top folder, which becomes raw_dir


ML100K = _Release("MovieLens 100K", "movielens100k", REQUIRED_FILES, OFFICIAL_URL, OFFICIAL_SHA256, "ml-100k")
ML1M = _Release("MovieLens 1M", "movielens1m", ML1M_FILES, ML1M_URL, ML1M_SHA256, "ml-1m")


def _how_to_get(release: _Release, raw_dir: Path) -> str:
    files = ", ".join(str(raw_dir / f) for f in release.files)
    return (
        f"Put the {release.name} files at {files}: download {release.url} "
        f"(sha256 {release.sha256}) and unzip it so that its {release.folder}/ folder becomes {raw_dir}; "
        f"or set `ingestion.{release.key}.download: true` on a machine with network access"
    )


def _ensure_release(release: _Release, config: _ArchiveConfig) -> Path:
    raw_dir = Path(config.raw_dir)
    missing = [f for f in release.files if not (raw_dir / f).is_file()]
    if not missing:
        return raw_dir
    if not config.download:
        raise DataError(
            f"{release.name} file(s) {missing} not found in {raw_dir} and download is off",
            source=str(raw_dir),
            hint=_how_to_get(release, raw_dir),
        )
    raw_dir.parent.mkdir(parents=True, exist_ok=True)
    # Working space beside raw_dir, so the final os.replace stays on one filesystem.
    work = Path(tempfile.mkdtemp(dir=raw_dir.parent, prefix=f".{raw_dir.name}-download-"))
    try:
        try:
            archive = download_file(
                config.url,
                work / f"{release.folder}.zip",
                sha256=config.sha256,
                timeout_s=config.timeout_s,
                retries=config.retries,
                backoff_s=config.backoff_s,
            )
            extract_zip(archive, work / "extracted")
        except DownloadError as exc:
            raise DataError(
                f"{release.name} file(s) {missing} not found in {raw_dir} and the download failed: {exc}",
                source=str(raw_dir),
                hint=_how_to_get(release, raw_dir),
            ) from exc
        found = list((work / "extracted").rglob(release.files[0]))
        if not found:
            raise DataError(
                f"the archive from {config.url} has no {release.files[0]}",
                source=config.url,
                hint=_how_to_get(release, raw_dir),
            )
        src_dir = found[0].parent
        absent = [f for f in release.files if not (src_dir / f).is_file()]
        if absent:
            raise DataError(f"the archive from {config.url} lacks {absent}", source=config.url)
        raw_dir.mkdir(parents=True, exist_ok=True)
        for src in sorted(p for p in src_dir.rglob("*") if p.is_file()):
            target = raw_dir / src.relative_to(src_dir)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, target)
        logger.info("%s placed in %s", release.name, raw_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return raw_dir


def ensure_movielens100k(config: MovieLensConfig) -> Path:
    """The folder holding u.data, u.item and u.user, downloading the official zip if needed.

    Files already present are never touched; only missing ones are placed, each with an atomic
    rename, after the whole archive has been downloaded, checksum-verified and extracted.
    """
    return _ensure_release(ML100K, config)


def ensure_movielens1m(config: MovieLens1MConfig) -> Path:
    """The folder holding ratings.dat, users.dat and movies.dat; as `ensure_movielens100k`."""
    return _ensure_release(ML1M, config)


def read_delimited(
    path: Path, sep: str, names: list[str], encoding: str, quoting: int = csv.QUOTE_MINIMAL
) -> pd.DataFrame:
    """Every cell of a header-less delimited file as a string (empty cells NA), columns `names`.

    The formats read with it never quote a separator, so a line's field count is its separator
    count + 1. A line with another count (a blank line included) raises `DataError` naming the
    file, the column where the first such line stops matching and the offending rows; so does a
    byte that is not `encoding`. Rows count the file's lines from 0.
    """
    source = str(path)
    raw = Path(path).read_bytes()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        problem = f"not {encoding} text ({exc.reason} at byte {exc.start})"
        raise DataError(problem, source=source, rows=[raw.count(b"\n", 0, exc.start)]) from exc
    # Not str.splitlines: it also breaks at characters such as "\x85", which latin-1 text may hold.
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataError("empty file", source=source)
    fields = np.fromiter(map(str.count, lines, repeat(sep)), np.int64, len(lines)) + 1
    wrong = np.flatnonzero(fields != len(names))
    if len(wrong):
        first = int(fields[wrong[0]])
        raise DataError(
            f"lines with the wrong number of fields (expected {len(names)} separated by {sep!r}; "
            f"the first has {first})",
            source=source,
            column=names[min(first, len(names) - 1)],
            rows=wrong.tolist(),
        )
    if len(sep) > 1:
        # pandas parses separators longer than one character (MovieLens 1M's "::") with its slow
        # python engine. Every line holds exactly len(names) - 1 of them, counted as str.replace
        # finds them, so a one-character stand-in parses the same with the C engine.
        stand_in = "\x1f"
        held = np.flatnonzero([stand_in in line for line in lines]) if stand_in in text else []
        if len(held):
            raise DataError("lines holding the control character \\x1f", source=source, rows=list(held))
        text, sep = text.replace(sep, stand_in), stand_in
    df = pd.read_csv(
        io.StringIO(text),
        sep=sep,
        header=None,
        names=names,
        dtype=str,
        keep_default_na=False,
        na_values=[""],
        quoting=quoting,
        skip_blank_lines=False,
    )
    if len(df) != len(lines):
        raise DataError(f"{len(lines)} lines parsed into {len(df)} rows: a quoted line break?", source=source)
    return df


def int_column(df: pd.DataFrame, column: str, source: str) -> pd.Series:
    """`df[column]` as int64, or `DataError` naming the rows that are not integers."""
    num = pd.to_numeric(df[column], errors="coerce")
    bad = num.isna() | (num != np.floor(num))
    if bad.any():
        raise DataError(
            "values that are not integers", source=source, column=column, rows=np.flatnonzero(bad.to_numpy()).tolist()
        )
    return num.astype("int64")


def _ratings(df: pd.DataFrame, source: str) -> pd.DataFrame:
    rating = int_column(df, "rating", source)
    out_of_range = (rating < 1) | (rating > 5)
    if out_of_range.any():
        rows = np.flatnonzero(out_of_range.to_numpy()).tolist()
        raise DataError("ratings outside 1..5", source=source, column="rating", rows=rows)
    seconds = int_column(df, "timestamp", source)
    frame = pd.DataFrame(
        {
            "user_id": df["user_id"],
            "item_id": df["item_id"],
            # Both releases document their unit (unix seconds, 1997-2003), so hand over datetimes: the
            # schema's plausibility window guards against unit mix-ups that cannot occur here.
            "timestamp": pd.to_datetime(seconds, unit="s", utc=True),
            "event": "rating",
            "value": rating.astype("float64"),
        }
    )
    return coerce_interactions(frame, source=source)


def read_ratings(path: Path) -> pd.DataFrame:
    """Canonical interactions from u.data (tab-separated: user, item, rating 1-5, unix seconds)."""
    return _ratings(read_delimited(path, "\t", ["user_id", "item_id", "rating", "timestamp"], "ascii"), str(path))


def read_items(path: Path) -> pd.DataFrame:
    """Canonical items from u.item (pipe-separated, latin-1: id, title, dates, IMDb URL, 19 genre flags).

    category is `movie/<first genre>`, text is the title followed by all genres, `genres` keeps
    every genre joined by `|` for feature-aware models.
    """
    source = str(path)
    df = read_delimited(path, "|", _ITEM_HEAD + list(GENRES), "latin-1")
    flags = np.column_stack([int_column(df, g, source).to_numpy() for g in GENRES])  # (I, 19)
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
    df = read_delimited(path, "|", ["user_id", "age", "gender", "occupation", "zip_code"], "latin-1")
    frame = pd.DataFrame(
        {
            "user_id": df["user_id"],
            "age": int_column(df, "age", source),
            "gender": df["gender"].astype(STRING),
            "occupation": df["occupation"].astype(STRING),
            # Some zip codes are Canadian (letters), so they stay strings.
            "zip_code": df["zip_code"].astype(STRING),
        }
    )
    return coerce_users(frame, source=source)


def _check_ids(
    interactions: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame, raw_dir: Path, release: _Release
) -> None:
    ratings_file, items_file, users_file = release.files
    for kind, table, path in (("item", items, items_file), ("user", users, users_file)):
        unknown = ~interactions[f"{kind}_id"].isin(table[f"{kind}_id"])
        if unknown.any():
            raise DataError(
                f"{kind} ids missing from {raw_dir / path}",
                source=str(raw_dir / ratings_file),
                column=f"{kind}_id",
                rows=np.flatnonzero(unknown.to_numpy()).tolist(),
            )
    logger.info("%s: %d ratings, %d items, %d users", release.name, len(interactions), len(items), len(users))


def load_movielens100k(config: MovieLensConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(interactions, items, users) of MovieLens 100K, downloading it first if allowed and needed."""
    raw_dir = ensure_movielens100k(config)
    interactions = read_ratings(raw_dir / "u.data")
    items = read_items(raw_dir / "u.item")
    users = read_users(raw_dir / "u.user")
    _check_ids(interactions, items, users, raw_dir, ML100K)
    return interactions, items, users


# ------------------------------------------------------------------------------- MovieLens 1M
# The README of ml-1m: users.dat stores the age bucket's lower bound and an occupation code.
ML1M_AGE_GROUPS = {1: "Under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
ML1M_OCCUPATIONS = (
    "other or not specified", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist", "self-employed",
    "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip
ML1M_GENRES = GENRES[1:]  # the 100K list without "unknown"
_YEAR = r"\((\d{4})\)\s*$"


def _read_dat(path: Path, names: list[str]) -> pd.DataFrame:
    # The .dat files never quote: a title starting with '"' is part of the title.
    return read_delimited(path, "::", names, "latin-1", quoting=csv.QUOTE_NONE)


def _not_in(column: str, values: pd.Series, allowed: object, source: str, what: str) -> None:
    bad = ~values.isin(allowed)
    if bad.any():
        raise DataError(what, source=source, column=column, rows=np.flatnonzero(bad.to_numpy()).tolist())


def read_ratings_1m(path: Path) -> pd.DataFrame:
    """Canonical interactions from ratings.dat (UserID::MovieID::Rating::Timestamp, unix seconds)."""
    return _ratings(_read_dat(path, ["user_id", "item_id", "rating", "timestamp"]), str(path))


def read_movies_1m(path: Path) -> pd.DataFrame:
    """Canonical items from movies.dat (MovieID::Title::Genres).

    As for 100K: category is `movie/<first genre>`, text the title followed by the genres, `genres`
    keeps them all joined by `|`; `year` (nullable int) is the release year at the end of the title.
    """
    source = str(path)
    df = _read_dat(path, ["item_id", "title", "genres"])
    genres = df["genres"].astype(STRING)
    listed = genres.str.split("|")
    known = listed.map(lambda gs: isinstance(gs, list) and all(g in ML1M_GENRES for g in gs))
    if not known.all():
        rows = np.flatnonzero(~known.to_numpy()).tolist()
        raise DataError(f"genres outside {list(ML1M_GENRES)}", source=source, column="genres", rows=rows)
    title = df["title"].astype(STRING)
    frame = pd.DataFrame(
        {
            "item_id": df["item_id"],
            "title": title,
            "text": title + ". Genres: " + genres.str.replace("|", ", ", regex=False),
            "category": "movie/" + listed.str[0].astype(STRING),
            "genres": genres,
            "year": pd.to_numeric(title.str.extract(_YEAR, expand=False)).astype("Int64"),
        }
    )
    return coerce_items(frame, source=source)


def read_users_1m(path: Path) -> pd.DataFrame:
    """Canonical users from users.dat (UserID::Gender::Age::Occupation::Zip-code).

    `age` is the file's bucket code (the bucket's lower bound: 1, 18, 25, ...), `age_group` its
    label; `occupation` is the occupation's name and `occupation_id` its code; zip codes stay strings.
    """
    source = str(path)
    df = _read_dat(path, ["user_id", "gender", "age", "occupation", "zip_code"])
    age = int_column(df, "age", source)
    _not_in("age", age, list(ML1M_AGE_GROUPS), source, f"age codes other than {list(ML1M_AGE_GROUPS)}")
    occupation = int_column(df, "occupation", source)
    _not_in("occupation", occupation, list(range(len(ML1M_OCCUPATIONS))), source, "occupation codes outside 0..20")
    gender = df["gender"].astype(STRING)
    _not_in("gender", gender, ["M", "F"], source, "genders other than M/F")
    frame = pd.DataFrame(
        {
            "user_id": df["user_id"],
            "age": age,
            "age_group": age.map(ML1M_AGE_GROUPS).astype(STRING),
            "gender": gender,
            "occupation": occupation.map(dict(enumerate(ML1M_OCCUPATIONS))).astype(STRING),
            "occupation_id": occupation,
            "zip_code": df["zip_code"].astype(STRING),
        }
    )
    return coerce_users(frame, source=source)


def load_movielens1m(config: MovieLens1MConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(interactions, items, users) of MovieLens 1M, downloading it first if allowed and needed."""
    raw_dir = ensure_movielens1m(config)
    interactions = read_ratings_1m(raw_dir / "ratings.dat")
    items = read_movies_1m(raw_dir / "movies.dat")
    users = read_users_1m(raw_dir / "users.dat")
    _check_ids(interactions, items, users, raw_dir, ML1M)
    return interactions, items, users
