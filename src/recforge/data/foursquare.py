"""Foursquare check-ins, NYC and Tokyo (TSMC2014) -> canonical tables.

Dingqi Yang, Daqing Zhang, Vincent W. Zheng and Zhiyong Yu. 2015. Modeling User Activity
Preference by Leveraging User Spatial Temporal Characteristics in LBSNs. IEEE Trans. on Systems,
Man, and Cybernetics: Systems 45, 1, 129-142.

`dataset_TSMC2014_NYC.txt` / `dataset_TSMC2014_TKY.txt`: tab-separated, no header, columns
userId, venueId, venueCategoryId, venueCategory, latitude, longitude, timezoneOffset (minutes
from UTC) and utcTimestamp (`Tue Apr 03 18:00:09 +0000 2012`). The published files are latin-1
(`Caf\xe9`); a category name that is valid UTF-8 is decoded as UTF-8, any other byte as latin-1,
so no byte ever fails to decode.

Each line becomes one interaction at its UTC time. The schema's event vocabulary has no
"checkin", so a check-in is a `view` (an implicit visit, value 1.0); the interactions keep
`local_time` (the wall-clock time at the venue, UTC + offset, tz-naive) and
`timezone_offset_min` for context features such as hour of day. Items are the venues: `category`
is the venue category (a "/" in a name becomes "-", so it stays one level of the "a/b" path),
`category_name` the name as written, `category_id` its id, `latitude` / `longitude` the venue's
position, all taken from the venue's first check-in. The site needs a login,
so nothing is downloaded: a missing file raises a `DataError` saying where to put it.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from recforge.data.errors import DataError
from recforge.data.movielens import int_column, read_delimited
from recforge.data.schema import STRING, coerce_interactions, coerce_items, users_from_interactions

logger = logging.getLogger(__name__)

FOURSQUARE_URL = "https://sites.google.com/site/yangdingqi/home/foursquare-dataset"
CHECKIN_EVENT = "view"
COLUMNS = [
    "userId", "venueId", "venueCategoryId", "venueCategory", "latitude", "longitude", "timezoneOffset", "utcTimestamp",
]  # fmt: skip
_UTC_FORMAT = "%a %b %d %H:%M:%S %z %Y"


class FoursquareConfig(BaseModel):
    """Which TSMC2014 city file to read and where it is (`ingestion.foursquare`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    raw_dir: Path = Path("data/01_raw/foursquare")
    city: Literal["NYC", "TKY"] = "NYC"

    @property
    def path(self) -> Path:
        """The city's check-in file."""
        return Path(self.raw_dir) / f"dataset_TSMC2014_{self.city}.txt"


@dataclass(frozen=True)
class FoursquareData:
    """Canonical tables of one city's check-ins."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame


def _float_column(df: pd.DataFrame, column: str, source: str, low: float, high: float) -> pd.Series:
    num = pd.to_numeric(df[column], errors="coerce")
    bad = num.isna() | (num < low) | (num > high)
    if bad.any():
        problem = f"values that are not numbers in [{low:g}, {high:g}]"
        raise DataError(problem, source=source, column=column, rows=np.flatnonzero(bad.to_numpy()).tolist())
    return num.astype("float64")


def _utf8_or_latin1(text: str) -> str:
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return text


def read_checkins(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(interactions, items) from one TSMC2014 file; errors name the file, column and rows.

    Rows in errors count the file's lines from 0.
    """
    source = str(path)
    # latin-1 maps every byte to a character, so stray bytes in category names never fail decoding.
    df = read_delimited(path, "\t", COLUMNS, "latin-1", quoting=csv.QUOTE_NONE)
    utc = pd.to_datetime(df["utcTimestamp"], format=_UTC_FORMAT, errors="coerce", utc=True)
    if utc.isna().any():
        rows = np.flatnonzero(utc.isna().to_numpy()).tolist()
        raise DataError(
            "unparsable times (expected like 'Tue Apr 03 18:00:09 +0000 2012')",
            source=source,
            column="utcTimestamp",
            rows=rows,
        )
    offset = int_column(df, "timezoneOffset", source)
    latitude = _float_column(df, "latitude", source, -90.0, 90.0)
    longitude = _float_column(df, "longitude", source, -180.0, 180.0)
    interactions = coerce_interactions(
        pd.DataFrame({"user_id": df["userId"], "item_id": df["venueId"], "timestamp": utc, "event": CHECKIN_EVENT}),
        source=source,
    )
    interactions["local_time"] = (utc + pd.to_timedelta(offset, unit="min")).dt.tz_localize(None).to_numpy()
    interactions["timezone_offset_min"] = offset.to_numpy()

    first = ~df["venueId"].duplicated()
    # A few hundred distinct names: decode each once, not every row.
    names = df["venueCategory"].dropna().unique()
    category = df["venueCategory"].map(dict(zip(names, map(_utf8_or_latin1, names), strict=True))).astype(STRING)
    items = coerce_items(
        pd.DataFrame(
            {
                "item_id": df["venueId"],
                "text": category,
                "category": category.str.replace("/", "-", regex=False),
                "category_id": df["venueCategoryId"].astype(STRING),
                "category_name": category,
                "latitude": latitude,
                "longitude": longitude,
            }
        )[first.to_numpy()],
        source=source,
    )
    return interactions, items


def load_foursquare(config: FoursquareConfig) -> FoursquareData:
    """Canonical tables of the configured city's check-ins; the file must already be in place."""
    path = config.path
    if not path.is_file():
        raise DataError(
            f"Foursquare check-in file {path.name} not found in {config.raw_dir}",
            source=str(path),
            hint=(
                f"The Foursquare dataset site needs a login, so recforge cannot download it: get the TSMC2014 "
                f"NYC/Tokyo check-ins from {FOURSQUARE_URL}, unzip them and put {path.name} at {path} "
                "(or set `ingestion.foursquare.raw_dir` / `city` to where it is)"
            ),
        )
    interactions, items = read_checkins(path)
    users = users_from_interactions(interactions)
    logger.info(
        "Foursquare %s: %d check-ins, %d venues, %d users", config.city, len(interactions), len(items), len(users)
    )
    return FoursquareData(interactions, items, users)
