"""Session benchmark adapters on small fixtures written in exactly the published formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recforge.data.errors import DataError
from recforge.data.schema import INTERACTION_COLUMNS, ITEM_COLUMNS
from recforge.data.session_sources import (
    DigineticaConfig,
    RetailRocketConfig,
    YooChooseConfig,
    load_diginetica,
    load_retailrocket,
    load_yoochoose,
    sessionise,
)
from recforge.data.sources import IngestionParams, ingest

# yoochoose-clicks.dat: session,timestamp,item,category (no header). Session 2's rows are out of
# order in the file and two of them fall in the same second; session 11 has one click.
CLICKS = """1,2014-04-07T10:51:09.277Z,214536502,0
1,2014-04-07T10:54:09.868Z,214536500,0
1,2014-04-07T10:54:46.998Z,214536506,0
1,2014-04-07T10:57:00.306Z,214577561,0
2,2014-04-07T13:57:00.519Z,214662742,0
2,2014-04-07T13:56:37.614Z,214662742,0
2,2014-04-07T13:56:37.102Z,214825110,S
2,2014-04-07T13:58:20.374Z,214757390,0
2,2014-04-07T14:00:38.247Z,214757407,0
3,2014-04-02T13:17:46.940Z,214717089,2
3,2014-04-02T13:26:02.515Z,214826705,2
3,2014-04-02T13:30:12.318Z,214826705,2
11,2014-04-03T10:44:35.672Z,214821371,1
11,2014-04-03T10:45:01.674Z,214821371,1
420374,2014-04-06T18:44:58.314Z,214537888,0
420374,2014-04-06T18:44:58.325Z,214537850,2053587262
420374,2014-04-06T18:45:56.470Z,214537850,0
"""
BUYS = """420374,2014-04-06T18:46:47.412Z,214537888,12462,1
420374,2014-04-06T18:46:47.475Z,214537850,10471,1
11,2014-04-03T10:46:12.162Z,214821371,1046,0
"""

# train-item-views.csv: ";"-separated with a header; userId mostly empty; timeframe in ms.
VIEWS = """sessionId;userId;itemId;timeframe;eventdate
1;;81766;526309;2016-05-09
1;;31331;1031018;2016-05-09
1;;32118;243569;2016-05-09
1;;9654;75848;2016-05-09
2;;100747;10000;2016-05-09
2;;9654;3000;2016-05-09
3;278;59470;0;2016-05-10
3;278;59470;1500;2016-05-10
3;278;12345;1200;2016-05-10
4;278;9654;900;2016-05-11
"""
PRODUCTS = """itemId;pricelog2;product.name.tokens
81766;8;4,5,6
9654;10;7,8
"""
PRODUCT_CATEGORIES = """itemId;categoryId
81766;1094
9654;1128
59470;1094
"""

# events.csv: unix milliseconds; visitor 257597 comes back after 2 hours (a second session).
EVENTS = """timestamp,visitorid,event,itemid,transactionid
1433221332117,257597,view,355908,
1433224214164,992329,view,248676,
1433221999827,257597,view,248676,
1433221955914,257597,addtocart,248676,
1433229332117,257597,view,355908,
1433229402117,257597,transaction,355908,4000
1433224800000,992329,view,111016,
"""
ITEM_PROPERTIES_1 = """timestamp,itemid,property,value
1435460400000,355908,categoryid,1338
1441508400000,355908,categoryid,1339
1439089200000,248676,available,1
"""
ITEM_PROPERTIES_2 = """timestamp,itemid,property,value
1431226800000,248676,categoryid,491
1431226800000,111016,790,n12345.000
"""
CATEGORY_TREE = """categoryid,parentid
1339,250
250,
491,1679
1679,
"""


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def by_session(df: pd.DataFrame) -> dict[str, list[str]]:
    return {s: g["item_id"].tolist() for s, g in df.groupby("session_id", sort=True)}


# ------------------------------------------------------------------------------ YooChoose
@pytest.fixture
def yoochoose(tmp_path: Path) -> YooChooseConfig:
    raw = write(tmp_path / "yoochoose", {"yoochoose-clicks.dat": CLICKS, "yoochoose-buys.dat": BUYS})
    return YooChooseConfig(raw_dir=raw)


def test_yoochoose_clicks_and_buys(yoochoose: YooChooseConfig) -> None:
    data = load_yoochoose(yoochoose)
    df = data.interactions
    assert list(df.columns) == list(INTERACTION_COLUMNS) and len(df) == 20
    assert (df["user_id"] == df["session_id"]).all()  # no users: each session is its own user
    assert df["event"].value_counts().to_dict() == {"view": 17, "purchase": 3, "click": 0, "add_to_cart": 0,
                                                    "rating": 0}
    # ISO-8601 with Z -> unix seconds (2014-04-07T10:51:09Z)
    assert df.loc[df["session_id"] == "1", "timestamp"].iloc[0] == 1396867869
    # Rows in true time order: the 13:56:37.102 click comes before the .614 one in the same second.
    assert by_session(df)["2"] == ["214825110", "214662742", "214662742", "214757390", "214757407"]
    assert (np.diff(df["timestamp"].to_numpy()) >= 0).all()
    buys = df[df["event"] == "purchase"]
    assert buys["value"].tolist() == [1.0, 1.0, 1.0]  # quantity 0 still is one purchase
    items = data.items.set_index("item_id")
    assert set(ITEM_COLUMNS) <= set(data.items.columns) and len(items) == df["item_id"].nunique()
    assert items.loc["214825110", "category"] == "S"
    assert items.loc["214537850", "category"] == "2053587262"  # "0" (unknown) never overrides
    assert pd.isna(items.loc["214536502", "category"])
    assert items.loc["214537888", "price"] == 12462.0
    assert sorted(data.users["user_id"]) == sorted(df["session_id"].unique())


def test_yoochoose_missing_files_say_where_to_put_them(tmp_path: Path) -> None:
    raw = write(tmp_path / "yc", {"yoochoose-clicks.dat": CLICKS})
    with pytest.raises(DataError) as err:
        load_yoochoose(YooChooseConfig(raw_dir=raw))
    msg = str(err.value)
    assert "yoochoose-buys.dat" in msg and str(raw / "yoochoose-buys.dat") in msg and "login" in msg
    assert len(load_yoochoose(YooChooseConfig(raw_dir=raw, buys_file=None)).interactions) == 17


def test_yoochoose_bad_timestamp_names_file_column_and_row(tmp_path: Path) -> None:
    bad = CLICKS.replace("2014-04-07T10:54:09.868Z", "yesterday")
    raw = write(tmp_path / "yc", {"yoochoose-clicks.dat": bad})
    with pytest.raises(DataError, match=r"yoochoose-clicks.dat.*'timestamp'.*rows: 1\]"):
        load_yoochoose(YooChooseConfig(raw_dir=raw, buys_file=None))


# ----------------------------------------------------------------------------- Diginetica
@pytest.fixture
def diginetica(tmp_path: Path) -> DigineticaConfig:
    raw = write(tmp_path / "diginetica", {"train-item-views.csv": VIEWS, "products.csv": PRODUCTS,
                                          "product-categories.csv": PRODUCT_CATEGORIES})  # fmt: skip
    return DigineticaConfig(raw_dir=raw)


def test_diginetica_views_with_empty_user_ids(diginetica: DigineticaConfig) -> None:
    data = load_diginetica(diginetica)
    df = data.interactions
    assert len(df) == 10 and set(df["event"].astype(str)) == {"view"}
    users = df.groupby("session_id")["user_id"].first().to_dict()
    assert users == {"1": "session:1", "2": "session:2", "3": "278", "4": "278"}
    # eventdate (the session's day) + timeframe (ms into the session), ordered by timeframe.
    assert by_session(df)["1"] == ["9654", "32118", "81766", "31331"]
    assert by_session(df)["3"] == ["59470", "12345", "59470"]
    s1 = df[df["session_id"] == "1"]["timestamp"].tolist()
    assert s1 == [1462752000 + 75, 1462752000 + 243, 1462752000 + 526, 1462752000 + 1031]
    items = data.items.set_index("item_id")
    assert items.loc["81766", "price"] == 256.0 and items.loc["81766", "category"] == "1094"
    assert items.loc["81766", "text"] == "4,5,6" and pd.isna(items.loc["100747", "price"])


def test_diginetica_metadata_is_optional_and_views_are_not(tmp_path: Path) -> None:
    raw = write(tmp_path / "d", {"train-item-views.csv": VIEWS})
    assert len(load_diginetica(DigineticaConfig(raw_dir=raw)).items) == 7
    with pytest.raises(DataError, match=r"train-item-views.csv.*not found.*login"):
        load_diginetica(DigineticaConfig(raw_dir=tmp_path / "nowhere"))


def test_diginetica_missing_column_is_named(tmp_path: Path) -> None:
    raw = write(tmp_path / "d", {"train-item-views.csv": VIEWS.replace("timeframe", "time")})
    with pytest.raises(DataError, match="'timeframe'"):
        load_diginetica(DigineticaConfig(raw_dir=raw))


# --------------------------------------------------------------------------- RetailRocket
@pytest.fixture
def retailrocket(tmp_path: Path) -> RetailRocketConfig:
    raw = write(tmp_path / "retailrocket", {"events.csv": EVENTS, "item_properties_part1.csv": ITEM_PROPERTIES_1,
                                            "item_properties_part2.csv": ITEM_PROPERTIES_2,
                                            "category_tree.csv": CATEGORY_TREE})  # fmt: skip
    return RetailRocketConfig(raw_dir=raw)


def test_retailrocket_events_ms_and_gap_sessions(retailrocket: RetailRocketConfig) -> None:
    data = load_retailrocket(retailrocket)
    df = data.interactions
    assert len(df) == 7
    assert df["timestamp"].min() == 1433221332  # milliseconds -> seconds
    assert set(df["event"].astype(str)) == {"view", "add_to_cart", "purchase"}
    sessions = by_session(df)
    # 257597: three events within 11 minutes, then two after a 2-hour gap.
    assert sessions == {"257597:0": ["355908", "248676", "248676"], "257597:1": ["355908", "355908"],
                        "992329:0": ["248676", "111016"]}  # fmt: skip
    assert df.loc[df["session_id"] == "257597:1", "event"].astype(str).tolist() == ["view", "purchase"]
    items = data.items.set_index("item_id")
    assert items.loc["355908", "category"] == "250/1339"  # the latest categoryid, as a tree path
    assert items.loc["248676", "category"] == "1679/491" and pd.isna(items.loc["111016", "category"])


def test_retailrocket_gap_is_a_parameter(retailrocket: RetailRocketConfig) -> None:
    long_gap = retailrocket.model_copy(update={"session_gap_s": 3 * 3600})
    assert load_retailrocket(long_gap).interactions["session_id"].nunique() == 2


def test_retailrocket_rejects_second_timestamps_and_unknown_events(tmp_path: Path) -> None:
    raw = write(tmp_path / "a", {"events.csv": EVENTS.replace("1433224214164", "1433224214")})
    with pytest.raises(DataError, match=r"milliseconds.*rows: 1\]"):
        load_retailrocket(RetailRocketConfig(raw_dir=raw))
    raw = write(tmp_path / "b", {"events.csv": EVENTS.replace("addtocart", "wishlist")})
    with pytest.raises(DataError, match=r"'event'.*wishlist.*rows: 3\]"):
        load_retailrocket(RetailRocketConfig(raw_dir=raw))


def test_sessionise_is_per_visitor_and_order_free() -> None:
    visitor = np.array([1, 0, 1, 0, 1, 1])
    ms = np.array([0, 5_000, 10_000, 10_000_000, 4_000_000, 3_990_000])
    assert sessionise(visitor, ms, gap_ms=1_800_000).tolist() == [0, 0, 0, 1, 1, 1]


# --------------------------------------------------------------------------- dispatcher
def test_ingest_dispatches_to_session_sources(yoochoose: YooChooseConfig, tmp_path: Path) -> None:
    params = IngestionParams.model_validate({"source": "yoochoose", "yoochoose": {"raw_dir": str(yoochoose.raw_dir)}})
    out = ingest(params)
    assert len(out.interactions) == 20 and out.heldout_interactions.empty and out.ground_truth_items.empty
    missing = IngestionParams.model_validate({"source": "retailrocket", "retailrocket": {"raw_dir": str(tmp_path)}})
    with pytest.raises(DataError, match=r"events.csv.*kaggle"):
        ingest(missing)


@pytest.mark.parametrize("env", ["yoochoose", "diginetica", "retailrocket"])
def test_env_parameters_validate(env: str) -> None:
    from kedro.config import OmegaConfigLoader

    from recforge.data.splits import SplitConfig

    root = Path(__file__).resolve().parents[2]
    loader = OmegaConfigLoader(conf_source=str(root / "conf"), base_env="base", default_run_env=env)
    params = IngestionParams.model_validate(loader["parameters"]["ingestion"])
    assert params.source == env and str(getattr(params, env).raw_dir) == f"data/01_raw/{env}"
    splitting = SplitConfig.model_validate(loader["parameters"]["splitting"])
    assert splitting.strategy == "last_days" and splitting.min_session_length == 2
