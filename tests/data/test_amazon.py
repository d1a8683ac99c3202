"""Amazon reviews with metadata from fixture files in both published layouts (2014: JSON reviews and
Python-literal meta; 2018: JSON lines with lists), plain and gzipped; bad lines; the optional
download; item images from a local HTTP server; the `amazon` env end to end through Kedro."""

from __future__ import annotations

import copy
import gzip
import hashlib
import http.server
import io
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro.validation.parameter_validator import ParameterValidator
from PIL import Image

from recforge.data import amazon
from recforge.data.amazon import AmazonConfig, load_amazon
from recforge.data.amazon_lines import parse_price, parse_record
from recforge.data.errors import DataError
from recforge.data.schema import INTERACTION_COLUMNS, ITEM_COLUMNS
from recforge.data.sources import IngestionParams, ingest
from recforge.data.validation import ValidationParams, hard_failures, validate_canonical_tables
from recforge.pipelines.ingestion import create_pipeline as ingestion_pipeline
from recforge.pipelines.ingestion.nodes import OUTPUTS
from local_http import QuietHandler, serve

ROOT = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------------------------- 2014 layout
# reviews_Beauty_5.json: one JSON object per line.
REVIEWS_2014 = [
    {"reviewerID": "A1YJEY40YUW4SE", "asin": "7806397051", "reviewerName": "Andrea", "helpful": [3, 4],
     "reviewText": "Very oily and creamy. Not at all what I expected.", "overall": 1.0,
     "summary": "Don't waste your money", "unixReviewTime": 1391040000, "reviewTime": "01 30, 2014"},
    {"reviewerID": "A60XNB876KYML", "asin": "7806397051", "reviewerName": "Jessica H.", "helpful": [1, 1],
     "reviewText": "This palette was a decent price.", "overall": 3.0, "summary": "Ok Palette!",
     "unixReviewTime": 1397779200, "reviewTime": "04 18, 2014"},
    {"reviewerID": "A1YJEY40YUW4SE", "asin": "9759091062", "reviewerName": "Andrea", "helpful": [0, 0],
     "reviewText": "Smells nice &amp; works.", "overall": 5.0, "summary": "Great", "unixReviewTime": 1378425600,
     "reviewTime": "09 6, 2013"},
    {"reviewerID": "A3G6XNM240RMWA", "asin": "B00000JNVA", "reviewerName": "Cheryl", "helpful": [0, 0],
     "reviewText": "No metadata for this one.", "overall": 4.0, "summary": "Fine", "unixReviewTime": 1300000000,
     "reviewTime": "03 13, 2011"},
]  # fmt: skip
# meta_Beauty.json: one Python dict literal per line (single quotes), as the 2014 release writes it.
META_2014 = [
    {"asin": "7806397051", "description": "Lightweight palette with 16 shades.",
     "title": "Eyeshadow Palette &amp; Primer", "imUrl": "http://ecx.images-amazon.com/images/I/41.jpg",
     "salesRank": {"Beauty": 402875},
     "categories": [["Beauty", "Makeup", "Eyes", "Eye Shadow"], ["Beauty", "Tools/Brushes"]],
     "price": 12.99, "related": {"also_bought": ["B0061IOU9I"]}, "brand": "Xtreme"},
    {"asin": "9759091062", "title": "Tea Tree Shampoo", "categories": [["Beauty", "Hair Care", "Shampoos"]],
     "salesRank": {"Beauty": 100}},
    {"asin": "0000000001", "title": "An item nobody reviewed", "categories": [["Beauty"]]},
]  # fmt: skip

# ---------------------------------------------------------------------------------- 2018 layout
# AMAZON_FASHION_5.json: JSON lines with style / vote / image; a review listed once per style variant.
REVIEWS_2018 = [
    {"overall": 5.0, "verified": True, "reviewTime": "09 4, 2015", "reviewerID": "ALJ66O1Y6SLHA", "asin": "B000K2PJ4K",
     "style": {"Size:": " Big Boys", "Color:": " Blue/Orange"}, "reviewerName": "Tonya B.",
     "reviewText": "Great product and price!", "summary": "Five Stars", "unixReviewTime": 1441324800},
    {"overall": 5.0, "verified": True, "reviewTime": "09 4, 2015", "reviewerID": "ALJ66O1Y6SLHA", "asin": "B000K2PJ4K",
     "style": {"Size:": " Big Boys", "Color:": " Black / Red"}, "reviewerName": "Tonya B.",
     "reviewText": "Great product and price!", "summary": "Five Stars", "unixReviewTime": 1441324800},
    {"overall": 2.0, "vote": "3", "verified": False, "reviewTime": "01 2, 2016", "reviewerID": "A3W11493KS6Z2L",
     "asin": "B000KPIHQ4", "reviewerName": "Sam", "reviewText": "Waaay too small.", "summary": "Small",
     "unixReviewTime": 1451692800, "image": ["https://images-na.ssl-images-amazon.com/images/I/71x.jpg"]},
]  # fmt: skip
META_2018 = [
    {"category": ["Clothing, Shoes &amp; Jewelry", "Shoe Care &amp; Accessories", "Insoles/Arch Supports"],
     "tech1": "", "description": ["Cushioned insoles.", "<b>Washable</b> and durable."], "fit": "",
     "title": "Dr. Scholl&#39;s Insoles", "also_buy": [], "tech2": "", "brand": "Dr. Scholl's",
     "feature": ["Gel cushioning", "Trim to fit"], "rank": "2,112 in Clothing", "also_view": [],
     "main_cat": "Shoes", "similar_item": "", "date": "", "price": "$5.99 - $12.99", "asin": "B000K2PJ4K",
     "imageURL": ["https://images-na.ssl-images-amazon.com/images/I/41a._SS40_.jpg"],
     "imageURLHighRes": ["https://images-na.ssl-images-amazon.com/images/I/71a.jpg"]},
    {"category": [], "description": [], "title": "Kids Sneakers", "brand": "", "feature": [], "price": "",
     "asin": "B000KPIHQ4", "imageURL": [], "imageURLHighRes": []},
    {"category": [], "description": [], "title": "Kids Sneakers (repeated line)", "asin": "B000KPIHQ4"},
]  # fmt: skip


def write_lines(path: Path, lines: list[str], gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def raw_2014(folder: Path, gz: bool = False, reviews: list[str] | None = None, meta: list[str] | None = None) -> Path:
    suffix = ".json.gz" if gz else ".json"
    write_lines(folder / f"reviews_Beauty_5{suffix}", reviews or [json.dumps(r) for r in REVIEWS_2014], gz)
    write_lines(folder / f"meta_Beauty{suffix}", meta or [repr(m) for m in META_2014], gz)
    return folder


def raw_2018(folder: Path, gz: bool = False) -> Path:
    write_lines(folder / ("AMAZON_FASHION_5.json.gz" if gz else "AMAZON_FASHION_5.jsonl"),
                [json.dumps(r) for r in REVIEWS_2018], gz)  # fmt: skip
    write_lines(folder / f"meta_AMAZON_FASHION{'.json.gz' if gz else '.json'}", [json.dumps(m) for m in META_2018], gz)
    return folder


def config(raw: Path, **kw: object) -> AmazonConfig:
    images = {"dir": raw / "images", **kw.pop("images", {})}  # type: ignore[dict-item]
    return AmazonConfig.model_validate({"raw_dir": raw, "images": images, **kw})


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("gz", [False, True])
def test_2014_reviews_and_literal_meta(tmp_path: Path, gz: bool) -> None:
    raw = raw_2014(tmp_path / "amazon", gz=gz)
    before = snapshot(raw)
    data = load_amazon(config(raw, category="Beauty"))
    assert data.layout == "2014" and snapshot(raw) == before  # raw files only read

    it = data.interactions
    assert list(it.columns) == list(INTERACTION_COLUMNS)
    assert it["user_id"].tolist() == [r["reviewerID"] for r in REVIEWS_2014]
    assert it["item_id"].tolist() == [r["asin"] for r in REVIEWS_2014]
    assert set(it["event"].astype(str)) == {"rating"} and it["value"].tolist() == [1.0, 3.0, 5.0, 4.0]
    assert it["timestamp"].tolist() == [r["unixReviewTime"] for r in REVIEWS_2014]

    items = data.items.set_index("item_id")
    assert set(ITEM_COLUMNS) <= set(data.items.columns)
    assert list(items.index) == ["7806397051", "9759091062", "B00000JNVA"]  # reviewed items only
    palette = items.loc["7806397051"]
    assert palette["title"] == "Eyeshadow Palette & Primer"
    assert palette["text"] == "Lightweight palette with 16 shades."
    assert palette["category"] == "Beauty/Makeup/Eyes/Eye Shadow"  # the first path
    assert palette["categories"] == "Beauty/Makeup/Eyes/Eye Shadow|Beauty/Tools-Brushes"
    assert palette["brand"] == "Xtreme" and palette["price"] == 12.99
    assert palette["image_url"] == "http://ecx.images-amazon.com/images/I/41.jpg"
    assert bool(palette["has_metadata"]) and pd.isna(palette["image_path"])
    shampoo = items.loc["9759091062"]
    assert shampoo["category"] == "Beauty/Hair Care/Shampoos"
    assert pd.isna(shampoo["brand"]) and math.isnan(shampoo["price"])
    assert sorted(data.users["user_id"]) == ["A1YJEY40YUW4SE", "A3G6XNM240RMWA", "A60XNB876KYML"]
    assert data.media == {} and data.skipped_lines == {}


def test_item_without_metadata_keeps_its_row(tmp_path: Path) -> None:
    items = load_amazon(config(raw_2014(tmp_path), category="Beauty")).items.set_index("item_id")
    orphan = items.loc["B00000JNVA"]
    # The schema's title is never null: it falls back to the id, which the content encoders ignore.
    assert orphan["title"] == "B00000JNVA" and not bool(orphan["has_metadata"])
    for column in ("text", "category", "brand", "image_url", "image_path"):
        assert pd.isna(orphan[column]), column
    assert math.isnan(orphan["price"])


@pytest.mark.parametrize("gz", [False, True])
def test_2018_json_lines_with_lists(tmp_path: Path, gz: bool) -> None:
    data = load_amazon(config(raw_2018(tmp_path, gz=gz), category="AMAZON_FASHION"))
    assert data.layout == "2018"
    it = data.interactions
    # The second line repeats the first (another style variant): one interaction.
    assert it["item_id"].tolist() == ["B000K2PJ4K", "B000KPIHQ4"] and it["value"].tolist() == [5.0, 2.0]
    items = data.items.set_index("item_id")
    insoles = items.loc["B000K2PJ4K"]
    assert insoles["title"] == "Dr. Scholl's Insoles"
    assert insoles["text"] == "Cushioned insoles. Washable and durable."  # list joined, tags removed
    assert insoles["category"] == "Clothing, Shoes & Jewelry/Shoe Care & Accessories/Insoles-Arch Supports"
    assert insoles["brand"] == "Dr. Scholl's" and insoles["price"] == 5.99  # a range: its low end
    assert insoles["features"] == "Gel cushioning Trim to fit"
    assert insoles["image_url"] == "https://images-na.ssl-images-amazon.com/images/I/71a.jpg"  # HighRes first
    sneakers = items.loc["B000KPIHQ4"]
    assert sneakers["title"] == "Kids Sneakers"  # the first of a repeated asin
    assert pd.isna(sneakers["category"]) and pd.isna(sneakers["brand"]) and math.isnan(sneakers["price"])
    assert pd.isna(sneakers["image_url"]) and bool(sneakers["has_metadata"])


def test_layout_auto_finds_either_and_yaml_years_are_accepted(tmp_path: Path) -> None:
    raw_2018(tmp_path / "a")
    assert load_amazon(config(tmp_path / "a", category="AMAZON_FASHION", layout="auto")).layout == "2018"
    raw_2014(tmp_path / "b")
    assert load_amazon(config(tmp_path / "b", layout=2014)).layout == "2014"  # YAML's unquoted 2014
    with pytest.raises(DataError, match="no reviews"):
        load_amazon(config(tmp_path / "b", layout="2018"))


@pytest.mark.parametrize(
    ("text", "price"),
    [
        (12.99, 12.99), (0, 0.0), ("$12.99", 12.99), (" $7 ", 7.0), ("$1,299.00", 1299.0), ("12.50", 12.5),
        ("$5.99 - $12.99", 5.99), ("$12.99-$5.99", 5.99), ("$3.00 \u2013 $4.00", 3.0),
        ("", math.nan), (None, math.nan), ("Free", math.nan), ("$", math.nan), ("-3", math.nan), (-1.0, math.nan),
        (float("inf"), math.nan), (True, math.nan), ("$1 - $2 - $3", math.nan), ("$12,99", math.nan),
        (".a-box-inner{background-color:#fff}", math.nan), (["$1"], math.nan),
    ],
)  # fmt: skip
def test_parse_price(text: object, price: float) -> None:
    got = parse_price(text)
    assert (math.isnan(got) and math.isnan(price)) or got == price


# ---------------------------------------------------------------------------------- bad lines
def test_bad_json_lines_name_the_file_and_line_numbers(tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in REVIEWS_2014]
    lines.insert(1, '{"reviewerID": "A1", "asin": "B1", "overall": 5.0, "unixReviewTime": 13')  # truncated
    lines.insert(3, "")  # blank lines are not errors
    lines.insert(4, "[1, 2, 3]")  # JSON, but not an object
    raw = raw_2014(tmp_path, reviews=lines)
    with pytest.raises(DataError, match="not JSON or a Python dict literal") as err:
        load_amazon(config(raw))
    assert err.value.source == str(raw / "reviews_Beauty_5.json") and err.value.rows == [2, 5]
    assert "reviews_Beauty_5.json" in str(err.value) and "[rows: 2, 5]" in str(err.value)
    assert "1-based line numbers" in str(err.value) and "on_bad_lines: skip" in str(err.value)


def test_bad_dict_literal_in_meta_is_named(tmp_path: Path) -> None:
    meta = [repr(m) for m in META_2014]
    meta[1] = meta[1][:-5]  # cut off: neither JSON nor a literal
    meta.append("{'asin': '9759091062', 'title': 'unclosed")
    raw = raw_2014(tmp_path, meta=meta)
    with pytest.raises(DataError, match="2 not JSON or a Python dict literal") as err:
        load_amazon(config(raw))
    assert err.value.source == str(raw / "meta_Beauty.json") and err.value.rows == [2, 4]


def test_malicious_literals_are_refused_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    meta = [repr(m) for m in META_2014] + [
        f"__import__('os').system('touch {marker}')",
        f"{{'asin': '7806397051', 'title': __import__('os').system('touch {marker}')}}",
        f"{{'asin': '7806397051', 'title': (lambda: open('{marker}', 'w'))()}}",
    ]
    raw = raw_2014(tmp_path / "amazon", meta=meta)
    with pytest.raises(DataError, match="3 not JSON or a Python dict literal") as err:
        load_amazon(config(raw))
    assert err.value.rows == [4, 5, 6] and not marker.exists()
    assert parse_record("__import__('os').system('true')") is None
    assert parse_record("{'a': 1, 'b': [1, 2], 'c': {'d': None}}") == {"a": 1, "b": [1, 2], "c": {"d": None}}


def test_skip_leaves_bad_lines_out_counts_and_logs_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reviews = [json.dumps(r) for r in REVIEWS_2014]
    reviews[1] = reviews[1][:30]
    reviews.append(json.dumps({"reviewerID": "A9", "asin": "B9", "unixReviewTime": 1300000000}))  # no overall
    meta = [repr(m) for m in META_2014] + ["{'asin': '9759091062', 'title': 'oops'"]
    raw = raw_2014(tmp_path, reviews=reviews, meta=meta)
    with caplog.at_level(logging.WARNING, logger="recforge.data.amazon"):
        data = load_amazon(config(raw, on_bad_lines="skip"))
    assert len(data.interactions) == 3 and "B9" not in set(data.interactions["item_id"])
    assert data.skipped_lines[str(raw / "reviews_Beauty_5.json")]["count"] == 2
    assert data.skipped_lines[str(raw / "reviews_Beauty_5.json")]["examples"] == [2, 5]
    assert "1 without key overall" in data.skipped_lines[str(raw / "reviews_Beauty_5.json")]["reasons"]
    assert data.skipped_lines[str(raw / "meta_Beauty.json")]["count"] == 1
    assert "skipped 2 bad line(s)" in caplog.text and "skipped 1 bad line(s)" in caplog.text


def test_truncated_gzip_is_named(tmp_path: Path) -> None:
    raw = raw_2014(tmp_path, gz=True)
    whole = (raw / "meta_Beauty.json.gz").read_bytes()
    (raw / "meta_Beauty.json.gz").write_bytes(whole[: len(whole) - 12])  # the end of the stream is lost
    with pytest.raises(DataError, match="cannot read past line") as err:
        load_amazon(config(raw))
    assert err.value.source == str(raw / "meta_Beauty.json.gz") and "incomplete" in str(err.value)


def test_missing_key_names_the_column(tmp_path: Path) -> None:
    reviews = [json.dumps(r) for r in REVIEWS_2014]
    reviews[2] = json.dumps({k: v for k, v in REVIEWS_2014[2].items() if k != "reviewerID"})
    with pytest.raises(DataError, match="without key reviewerID") as err:
        load_amazon(config(raw_2014(tmp_path, reviews=reviews)))
    assert err.value.column == "reviewerID" and err.value.rows == [3]


@pytest.mark.parametrize(
    ("key", "value", "column", "match"),
    [
        ("overall", 6.0, "overall", "not numbers in 1..5"),
        ("overall", "five", "overall", "not numbers in 1..5"),
        ("unixReviewTime", 1391040000123, "unixReviewTime", "outside 1990..2100"),
        ("unixReviewTime", "01 30, 2014", "unixReviewTime", "not integer unix seconds"),
    ],
)
def test_bad_values_name_column_and_line(tmp_path: Path, key: str, value: object, column: str, match: str) -> None:
    reviews = [json.dumps(r) for r in REVIEWS_2014]
    reviews[3] = json.dumps({**REVIEWS_2014[3], key: value})
    with pytest.raises(DataError, match=match) as err:
        load_amazon(config(raw_2014(tmp_path, reviews=reviews)))
    assert err.value.column == column and err.value.rows == [4]


def test_review_text_is_opt_in(tmp_path: Path) -> None:
    raw = raw_2014(tmp_path)
    plain = load_amazon(config(raw))
    assert "review_text" not in plain.interactions.columns and "review_text" not in plain.items.columns
    data = load_amazon(config(raw, keep_review_text=True, item_review_chars=40))
    assert data.interactions["summary"][0] == "Don't waste your money"
    assert data.interactions["review_text"][2] == "Smells nice & works."
    by_id = data.items.set_index("item_id")
    assert by_id.loc["7806397051", "review_text"] == "Don't waste your money Very oily and cre"  # cut at 40


def test_tables_pass_validation(tmp_path: Path) -> None:
    data = load_amazon(config(raw_2018(tmp_path), category="AMAZON_FASHION"))
    params = ValidationParams(min_user_interactions=1, min_item_interactions=1)
    report = validate_canonical_tables(data.interactions, data.items, data.users, params, now=1_700_000_000)
    assert report["passed"], hard_failures(report)


# ---------------------------------------------------------------------------------- missing files / download
def test_missing_files_say_where_to_get_and_put_them(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="download is off") as err:
        load_amazon(config(tmp_path / "amazon", layout="2014"))
    msg = str(err.value)
    assert "reviews_Beauty_5.json.gz" in msg and "meta_Beauty.json" in msg and str(tmp_path / "amazon") in msg
    assert "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/reviews_Beauty_5.json.gz" in msg
    assert "https://jmcauley.ucsd.edu/data/amazon_v2/categoryFilesSmall/Beauty_5.json.gz" in msg
    assert "ingestion.amazon.download: true" in msg
    # Reviews there but no metadata: the same message, for the meta file only.
    write_lines(tmp_path / "amazon" / "reviews_Beauty_5.json", [json.dumps(r) for r in REVIEWS_2014])
    with pytest.raises(DataError, match=r"no metadata \(meta_Beauty.json or"):
        load_amazon(config(tmp_path / "amazon"))
    assert len(load_amazon(config(tmp_path / "amazon", metadata=False)).items) == 3


@pytest.fixture
def files_server() -> Iterator[tuple[str, dict[str, tuple[str, bytes]], dict[str, int]]]:
    """A local HTTP server: `routes` maps a path to (content type, body); `hits` counts requests."""
    routes: dict[str, tuple[str, bytes]] = {}
    hits: dict[str, int] = {}

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            hits[self.path] = hits.get(self.path, 0) + 1
            if self.path not in routes:
                self.send_error(404)
                return
            ctype, body = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve(Handler) as url:
        yield url, routes, hits


def test_download_places_the_official_files(files_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, routes, hits = files_server
    monkeypatch.setitem(amazon.OFFICIAL_URLS, "2014", {
        "page": "x", "reviews": url + "/reviews_{category}{core}.json.gz", "meta": url + "/meta_{category}.json.gz",
    })  # fmt: skip
    reviews = gzip.compress("".join(json.dumps(r) + "\n" for r in REVIEWS_2014).encode())
    meta = gzip.compress("".join(repr(m) + "\n" for m in META_2014).encode())
    routes["/reviews_Beauty_5.json.gz"] = ("application/gzip", reviews)
    routes["/meta_Beauty.json.gz"] = ("application/gzip", meta)
    raw = tmp_path / "amazon"
    data = load_amazon(config(raw, layout="2014", download=True, retries=0))
    assert len(data.interactions) == 4 and data.items["has_metadata"].sum() == 2
    assert sorted(p.name for p in raw.iterdir()) == ["meta_Beauty.json.gz", "reviews_Beauty_5.json.gz"]
    load_amazon(config(raw, layout="2014", download=True))  # present now: not fetched again
    assert hits == {"/reviews_Beauty_5.json.gz": 1, "/meta_Beauty.json.gz": 1}


def test_download_offline_says_where_to_put_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler) as dead:
        port = dead.server_address[1]
    dead_url = f"http://127.0.0.1:{port}"
    monkeypatch.setitem(amazon.OFFICIAL_URLS, "2018", {
        "page": "x", "reviews": dead_url + "/{category}{core}.json.gz", "meta": dead_url + "/m",
    })  # fmt: skip
    offline = config(tmp_path / "amazon", category="All_Beauty", layout="2018", download=True, retries=1,
                     backoff_s=0.01)  # fmt: skip
    with pytest.raises(DataError, match="the download failed: could not download .* after 2 attempt") as err:
        load_amazon(offline)
    assert "All_Beauty_5.json.gz" in str(err.value) and str(tmp_path / "amazon") in str(err.value)
    assert not (tmp_path / "amazon").exists() or list((tmp_path / "amazon").iterdir()) == []
    with pytest.raises(DataError, match="downloading needs `layout: 2014` or `2018`"):
        load_amazon(config(tmp_path / "amazon", download=True))


# ---------------------------------------------------------------------------------- images
def png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 6), colour).save(buf, "PNG")
    return buf.getvalue()


def meta_with_images(url: str) -> list[str]:
    meta = copy.deepcopy(META_2014)
    meta[0]["imUrl"] = url + "/img/palette.png"
    meta[1]["imUrl"] = url + "/img/not-an-image"
    return [repr(m) for m in meta]


def test_images_are_downloaded_cached_and_reported(files_server, tmp_path: Path) -> None:
    url, routes, hits = files_server
    routes["/img/palette.png"] = ("image/png", png((250, 0, 0)))
    routes["/img/not-an-image"] = ("text/html", b"<html>robot check</html>")
    raw = raw_2014(tmp_path / "amazon", meta=meta_with_images(url))
    cfg = config(raw, images={"download": True, "retries": 0, "workers": 2})
    data = load_amazon(cfg)

    items = data.items.set_index("item_id")
    assert items.loc["7806397051", "image_path"] == "images/7806397051.png"
    assert pd.isna(items.loc["9759091062", "image_path"])
    assert data.media == {"images/7806397051.png": png((250, 0, 0))}
    assert data.image_failures == [{"item_id": "9759091062", "url": url + "/img/not-an-image",
                                    "reason": "content type 'text/html' is not image/*"}]  # fmt: skip
    report = json.loads((raw / "images" / "download_report.json").read_text())
    assert report == data.image_failures
    # A second run reuses the cached file and only retries what is missing.
    load_amazon(cfg)
    assert hits == {"/img/palette.png": 1, "/img/not-an-image": 2}


def test_images_offline_is_a_clear_error(tmp_path: Path) -> None:
    with http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler) as dead:
        port = dead.server_address[1]
    raw = raw_2014(tmp_path / "amazon", meta=meta_with_images(f"http://127.0.0.1:{port}"))
    with pytest.raises(DataError, match="item images: no network") as err:
        load_amazon(config(raw, images={"download": True, "retries": 0}))
    assert "images.download: false" in str(err.value)
    assert load_amazon(config(raw)).media == {}  # download off: ingests without images


# ---------------------------------------------------------------------------------- the env
def env_parameters(env: str = "amazon") -> dict:
    loader = OmegaConfigLoader(conf_source=str(ROOT / "conf"), base_env="base", default_run_env=env)
    return copy.deepcopy(dict(loader["parameters"]))


def test_ingest_selects_amazon(tmp_path: Path) -> None:
    raw = raw_2014(tmp_path / "amazon")
    amazon_params = {"raw_dir": str(raw), "images": {"dir": str(raw / "images")}}
    params = IngestionParams.model_validate({"source": "amazon", "amazon": amazon_params})
    result = ingest(params)
    assert len(result.interactions) == 4 and len(result.items) == 3 and len(result.heldout_interactions) == 0
    assert json.loads(result.media["manifest.json"]) == []


def test_amazon_env_runs_the_ingestion_pipeline(files_server, tmp_path: Path) -> None:
    """`kedro run --env amazon`'s parameters, pointed at fixtures and a local image server, through
    Kedro's runner; the raw files are unchanged afterwards."""
    url, routes, _ = files_server
    routes["/img/palette.png"] = ("image/png", png((0, 0, 250)))
    raw = raw_2014(tmp_path / "01_raw" / "amazon", gz=True, meta=None)
    write_lines(raw / "meta_Beauty.json.gz", meta_with_images(url), gz=True)
    before = snapshot(raw)

    params = env_parameters()
    ingestion = params["ingestion"]
    assert ingestion["source"] == "amazon" and ingestion["amazon"]["category"] == "Beauty"
    assert ingestion["amazon"]["raw_dir"] == "data/01_raw/amazon" and ingestion["amazon"]["layout"] == "2014"
    ingestion["amazon"]["raw_dir"] = str(raw)
    ingestion["amazon"]["images"].update(dir=str(tmp_path / "images"), retries=0)

    pipeline = ingestion_pipeline()
    validated = ParameterValidator({"ingestion": pipeline}).validate_raw_params({"ingestion": ingestion})
    catalog = DataCatalog({"params:ingestion": MemoryDataset(validated["ingestion"])})
    SequentialRunner().run(pipeline, catalog)
    out = {name: catalog.load(name) for name in OUTPUTS}

    assert len(out["interactions"]) == 4 and len(out["items"]) == 3 and len(out["users"]) == 3
    manifest = json.loads(out["media"]["manifest.json"])
    assert [m["path"] for m in manifest] == ["images/7806397051.png"]
    assert manifest[0]["sha256"] == hashlib.sha256(png((0, 0, 250))).hexdigest()
    assert set(out["items"]["image_path"].dropna()) == {"images/7806397051.png"}
    assert snapshot(raw) == before  # raw files never modified (images go to their own folder)


def test_amazon_env_pretraining_and_features_parameters_validate() -> None:
    from recforge.features.tables import FeatureTablesConfig
    from recforge.pipelines.pretraining import create_pipeline as pretraining_pipeline
    from recforge.pipelines.pretraining.pipeline import ENCODERS

    params = env_parameters()
    names = set(ENCODERS) | {"vector_diagnostics"}
    validated = ParameterValidator({"pretraining": pretraining_pipeline()}).validate_raw_params(
        {k: v for k, v in params.items() if k in names}
    )
    assert validated["image"]["encoder"].on_bad_media == "skip"
    assert set(validated["meta_prod2vec"]["encoder"].metadata) <= {"category", "brand"}
    assert set(validated["text"]["encoder"].fields) <= {"title", "text", "features"}
    features = FeatureTablesConfig.model_validate(params["features"])
    assert features.user is None and {f.column for f in features.item.fields} <= {"category", "brand", "price"}
