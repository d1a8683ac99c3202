"""Foursquare TSMC2014 check-ins from fixture files in the real format (tab-separated, no header,
latin-1 with the odd UTF-8 name; no download: the site needs a login)."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
from kedro.config import OmegaConfigLoader

from recforge.data.errors import DataError
from recforge.data.foursquare import FoursquareConfig, load_foursquare, read_checkins
from recforge.data.schema import INTERACTION_COLUMNS, ITEM_COLUMNS
from recforge.data.sources import IngestionParams, ingest
from recforge.data.validation import ValidationParams, hard_failures, validate_canonical_tables

ROOT = Path(__file__).resolve().parents[2]

# As in dataset_TSMC2014_NYC.txt: userId, venueId, venueCategoryId, venueCategory, latitude,
# longitude, timezoneOffset (minutes), utcTimestamp. Line 3 revisits line 0's venue.
NYC_LINES = [
    "470\t49bbd6c0f964a520f4531fe3\t4bf58dd8d48988d127951735\tArts & Crafts Store\t40.719810375488535\t-74.00258103213994\t-240\tTue Apr 03 18:00:09 +0000 2012",
    "979\t4a43c0aef964a520c6a61fe3\t4bf58dd8d48988d1df941735\tBridge\t40.60679958140643\t-74.04416981025437\t-240\tTue Apr 03 18:00:25 +0000 2012",
    "69\t4c5cc7b485a1e21e00d35711\t4bf58dd8d48988d1d1941735\tRamen /  Noodle House\t40.71637762003898\t-73.98825716972351\t-240\tWed Apr 04 02:02:24 +0000 2012",
    "470\t49bbd6c0f964a520f4531fe3\t4bf58dd8d48988d127951735\tArts & Crafts Store\t40.71981037548853\t-74.00258103213994\t-300\tSat Nov 10 03:15:00 +0000 2012",
]  # fmt: skip
# latin-1 "Café" (the published files) and a UTF-8 "Crêperie" in the same file.
ODD_BYTES = [
    b"979\t4b5f1c2ef964a520a2a829e3\t4bf58dd8d48988d16d941735\tCaf\xe9\t40.74\t-73.99\t-240\tThu Apr 05 12:30:00 +0000 2012",
    "69\t4d2b3fa1c4d1a1b2c3d4e5f6\t4bf58dd8d48988d14a941735\tCrêperie\t40.73\t-74.0\t-240\tThu Apr 05 13:00:00 +0000 2012".encode(),
]
TKY_LINE = "1541\t4f0fd5a8e4b03856eeb6c8cb\t4bf58dd8d48988d10c951735\tCosmetics Shop\t35.70510109\t139.61959003\t540\tTue Apr 03 18:17:18 +0000 2012"  # fmt: skip


def write_checkins(path: Path, lines: list[str], extra: list[bytes] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join([line.encode("latin-1") + b"\r\n" for line in lines] + [b + b"\r\n" for b in extra]))
    return path


@pytest.fixture
def raw_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "01_raw" / "foursquare"
    write_checkins(folder / "dataset_TSMC2014_NYC.txt", NYC_LINES, ODD_BYTES)
    write_checkins(folder / "dataset_TSMC2014_TKY.txt", [TKY_LINE])
    return folder


def test_checkins_become_view_events_with_local_time(raw_dir: Path) -> None:
    data = load_foursquare(FoursquareConfig(raw_dir=raw_dir))
    it = data.interactions
    assert list(it.columns) == [*INTERACTION_COLUMNS, "local_time", "timezone_offset_min"]
    assert it["user_id"].tolist() == ["470", "979", "69", "470", "979", "69"]
    assert it["item_id"][3] == "49bbd6c0f964a520f4531fe3" and set(it["event"]) == {"view"}
    assert (it["value"] == 1.0).all() and it["session_id"].isna().all()
    assert it["timestamp"][0] == int(pd.Timestamp("2012-04-03 18:00:09", tz="UTC").timestamp())
    # Local wall-clock time: 18:00 UTC at -240 min is 14:00 in New York; 02:02 UTC is 22:02 the day before.
    assert it["local_time"][0] == pd.Timestamp("2012-04-03 14:00:09")
    assert it["local_time"][2] == pd.Timestamp("2012-04-03 22:02:24")
    assert it["local_time"].dt.hour.tolist()[:4] == [14, 14, 22, 22]  # -300 min after the DST change
    assert it["timezone_offset_min"].tolist()[:4] == [-240, -240, -240, -300]
    assert sorted(data.users["user_id"]) == ["470", "69", "979"]


def test_venues_become_items_with_category_and_position(raw_dir: Path) -> None:
    items = load_foursquare(FoursquareConfig(raw_dir=raw_dir)).items
    assert set(ITEM_COLUMNS) <= set(items.columns) and len(items) == 5  # one row per venue
    by_id = items.set_index("item_id")
    arts = by_id.loc["49bbd6c0f964a520f4531fe3"]
    assert arts["category"] == "Arts & Crafts Store" and arts["category_id"] == "4bf58dd8d48988d127951735"
    assert arts["latitude"] == pytest.approx(40.719810375488535)  # the first check-in's position
    assert arts["longitude"] == pytest.approx(-74.00258103213994)
    ramen = by_id.loc["4c5cc7b485a1e21e00d35711"]
    assert ramen["category"] == "Ramen -  Noodle House"  # one level of the "a/b" category path
    assert ramen["category_name"] == "Ramen /  Noodle House" and ramen["text"] == "Ramen /  Noodle House"
    # latin-1 and UTF-8 names both decode to what they say.
    assert by_id.loc["4b5f1c2ef964a520a2a829e3", "category"] == "Café"
    assert by_id.loc["4d2b3fa1c4d1a1b2c3d4e5f6", "category"] == "Crêperie"


def test_tables_pass_validation(raw_dir: Path) -> None:
    data = load_foursquare(FoursquareConfig(raw_dir=raw_dir))
    params = ValidationParams(min_user_interactions=1, min_item_interactions=1)
    report = validate_canonical_tables(data.interactions, data.items, data.users, params, now=1_700_000_000)
    assert report["passed"], hard_failures(report)


def test_missing_file_says_where_to_get_it_and_where_to_put_it(tmp_path: Path) -> None:
    config = FoursquareConfig(raw_dir=tmp_path / "foursquare", city="TKY")
    with pytest.raises(DataError, match="dataset_TSMC2014_TKY.txt not found") as err:
        load_foursquare(config)
    msg = str(err.value)
    assert "sites.google.com/site/yangdingqi" in msg and "login" in msg
    assert str(tmp_path / "foursquare" / "dataset_TSMC2014_TKY.txt") in msg
    assert "ingestion.foursquare.raw_dir" in msg


def _broken(raw_dir: Path, line: int, column: int, value: str | None) -> Path:
    """The NYC fixture with one field of one line replaced (None: the field removed)."""
    lines = [ln.split("\t") for ln in NYC_LINES]
    if value is None:
        del lines[line][column]
    else:
        lines[line][column] = value
    return write_checkins(raw_dir / "dataset_TSMC2014_NYC.txt", ["\t".join(ln) for ln in lines])


@pytest.mark.parametrize(
    ("line", "column", "value", "name", "match"),
    [
        (1, 7, "2012-04-03 18:00:25", "utcTimestamp", "unparsable times"),
        (2, 4, "north", "latitude", "not numbers"),
        (3, 5, "-200.5", "longitude", "not numbers in"),
        (1, 6, "-4h", "timezoneOffset", "not integers"),
        (2, 0, "", "user_id", "null or empty ids"),
        (3, 7, None, "utcTimestamp", "wrong number of fields"),  # a line without its last field
        (0, 3, "Bar\tPub", "utcTimestamp", "wrong number of fields"),  # a tab inside a name
    ],
)
def test_malformed_rows_name_file_column_and_rows(
    raw_dir: Path, line: int, column: int, value: str | None, name: str, match: str
) -> None:
    path = _broken(raw_dir, line, column, value)
    with pytest.raises(DataError, match=match) as err:
        read_checkins(path)
    assert err.value.source == str(path) and err.value.column == name and err.value.rows == [line]
    assert "dataset_TSMC2014_NYC.txt" in str(err.value) and f"[rows: {line}]" in str(err.value)


def test_ingest_selects_foursquare_and_its_city(raw_dir: Path) -> None:
    for city, n in (("NYC", 6), ("TKY", 1)):
        params = IngestionParams.model_validate(
            {"source": "foursquare", "foursquare": {"raw_dir": str(raw_dir), "city": city}}
        )
        result = ingest(params)
        assert len(result.interactions) == n and "local_time" in result.interactions.columns
        assert "category_id" in result.items.columns and len(result.heldout_interactions) == 0
    assert result.interactions["local_time"][0] == pd.Timestamp("2012-04-04 03:17:18")  # Tokyo, +540 min
    with pytest.raises(ValueError, match="city"):
        IngestionParams.model_validate({"source": "foursquare", "foursquare": {"city": "LDN"}})


def test_foursquare_env_parameters_ingest(raw_dir: Path) -> None:
    """`kedro run --env foursquare`'s parameters, pointed at the fixture, ingest it."""
    loader = OmegaConfigLoader(conf_source=str(ROOT / "conf"), base_env="base", default_run_env="foursquare")
    raw = copy.deepcopy(loader["parameters"]["ingestion"])
    assert raw["source"] == "foursquare" and raw["foursquare"]["raw_dir"] == "data/01_raw/foursquare"
    raw["foursquare"]["raw_dir"] = str(raw_dir)
    assert len(ingest(IngestionParams.model_validate(raw)).interactions) == 6
