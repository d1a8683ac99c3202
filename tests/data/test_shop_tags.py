"""The synthetic shop's item tags (step 9 of the story): what they are made of, that they reveal
the item, and that adding them changed nothing else."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from recforge.data.schema import STRING, coerce_items
from recforge.data.synthetic import ShopConfig, SyntheticShop, generate_shop
from recforge.data.synthetic._tags import BRAND_TIERS, MAX_TAGS, MIN_TAGS, NOISE_TAGS
from recforge.data.synthetic._text import ADJECTIVES
from recforge.data.synthetic._world import BRANDS, LEAF_CATEGORIES, TOP_CATEGORIES

# Digests of the tiny shop (seed 42) generated before tags existed: the tag stream must not move
# a single value of any other table, column or media file.
BEFORE_TAGS = {
    "interactions": "22c6159d27476c93",
    "users": "41f85c1622c2a6d7",
    "ground_truth_items": "fbe0a5e5973ae348",
    "ground_truth_users": "fb03ad3001731a6e",
    "impressions": "efa16cf8ffc9ce05",
    "ground_truth_impressions": "5ac34dc6274d9d37",  # floats rounded to 4 decimals
    "items": "6b739389f40e429f",  # without the tags column
    "media": "e21b7a5c21f784f3",
}


@pytest.fixture(scope="module")
def tiny() -> SyntheticShop:
    return generate_shop(ShopConfig(preset="tiny"))


@pytest.fixture(scope="module")
def probe() -> SyntheticShop:
    return generate_shop(ShopConfig(preset="tiny", n_users=200, n_items=1000, n_sessions=400, with_media=False,
                                    impression_rows=0))  # fmt: skip


def _digest(df: pd.DataFrame) -> str:
    h = hashlib.sha256()
    h.update(",".join(map(str, df.columns)).encode())
    h.update(",".join(map(str, df.dtypes)).encode())
    h.update(pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes())
    return h.hexdigest()[:16]


def _tag_lists(items: pd.DataFrame) -> list[list[str]]:
    return [t.split("|") for t in items["tags"].tolist()]


def test_every_other_table_and_media_byte_is_unchanged(tiny: SyntheticShop) -> None:
    got = {name: _digest(getattr(tiny, name)) for name in BEFORE_TAGS if name not in ("items", "media")}
    # float32 probabilities from numpy's vectorised exp differ in the last bits between CPUs
    # (AVX2 / AVX-512 code paths); the impressions drawn from them match bit for bit above
    got["ground_truth_impressions"] = _digest(tiny.ground_truth_impressions.round(4))
    got["items"] = _digest(tiny.items.drop(columns=["tags"]))
    media = hashlib.sha256()
    for path in sorted(tiny.media):
        media.update(path.encode())
        media.update(tiny.media[path])
    got["media"] = media.hexdigest()[:16]
    assert got == BEFORE_TAGS


def test_tags_are_two_to_six_distinct_known_strings(tiny: SyntheticShop) -> None:
    assert tiny.items["tags"].dtype == STRING and not tiny.items["tags"].isna().any()
    assert list(tiny.items.columns[-2:]) == ["brand", "tags"]
    known = {*TOP_CATEGORIES, *(leaf for dept in LEAF_CATEGORIES for leaf in dept), *BRAND_TIERS, *NOISE_TAGS,
             *(pair[0] for lo_hi in ADJECTIVES for pair in lo_hi)}  # fmt: skip
    lists = _tag_lists(tiny.items)
    assert all(MIN_TAGS <= len(t) <= MAX_TAGS and len(set(t)) == len(t) for t in lists)
    assert {tag for t in lists for tag in t} <= known
    sizes = pd.Series([len(t) for t in lists])
    assert sizes.nunique() == MAX_TAGS - MIN_TAGS + 1  # every size occurs on 100 items


def test_tags_reveal_department_leaf_factors_and_brand_tier(probe: SyntheticShop) -> None:
    items, truth = probe.items, probe.ground_truth_items
    lists = _tag_lists(items)
    dept = [next((t for t in tags if t in TOP_CATEGORIES), None) for tags in lists]
    has = np.array([d is not None for d in dept])
    assert 0.4 < has.mean() < 0.95  # often, not always: the model must read the text too
    assert (np.array(dept, dtype=object)[has] == truth["top_category"].to_numpy()[has]).all()
    leaves = {leaf for d in LEAF_CATEGORIES for leaf in d}
    leaf = [next((t for t in tags if t in leaves), None) for tags in lists]
    has_leaf = np.array([lf is not None for lf in leaf])
    assert (np.array(leaf, dtype=object)[has_leaf] == truth["leaf_category"].to_numpy()[has_leaf]).all()

    z = truth[[f"f{k}" for k in range(4)]].to_numpy()
    z = (z - z.mean(0)) / z.std(0)
    for f, (low, high) in enumerate(ADJECTIVES):
        said_high = np.array([high[0] in t for t in lists])
        said_low = np.array([low[0] in t for t in lists])
        assert not (said_high & said_low).any()
        agree = np.concatenate([z[said_high, f] > 0, z[said_low, f] < 0])
        assert len(agree) > 100 and agree.mean() > 0.75, (f, agree.mean())

    brand_rank = {b: k for dept in BRANDS for k, b in enumerate(dept)}
    tier = [next((t for t in tags if t in BRAND_TIERS), None) for tags in lists]
    has_tier = np.array([t is not None for t in tier])
    want = np.array([BRAND_TIERS[brand_rank[b]] for b in items["brand"]], dtype=object)
    assert (np.array(tier, dtype=object)[has_tier] == want[has_tier]).all()

    noise = np.array([any(t in NOISE_TAGS for t in tags) for tags in lists])
    assert 0.2 < noise.mean() < 0.4


def test_tags_are_seeded(tiny: SyntheticShop) -> None:
    again = generate_shop(ShopConfig(preset="tiny", with_media=False, impression_rows=0))
    pd.testing.assert_series_equal(again.items["tags"], tiny.items["tags"])
    other = generate_shop(ShopConfig(preset="tiny", seed=7, with_media=False, impression_rows=0))
    assert (other.items["tags"] != tiny.items["tags"]).mean() > 0.5


def test_tags_survive_parquet_the_items_schema_and_validation(tiny: SyntheticShop, tmp_path) -> None:
    from recforge.data.validation import validate_canonical_tables

    tiny.items.to_parquet(tmp_path / "items.parquet")
    back = coerce_items(pd.read_parquet(tmp_path / "items.parquet"), source="items.parquet")
    pd.testing.assert_series_equal(back["tags"].astype(STRING), tiny.items["tags"])
    report = validate_canonical_tables(tiny.interactions, back, tiny.users, now=2_000_000_000)
    assert report["passed"]
    assert "tags" in report["tables"]["items"]["columns"]
    assert not [c for c in report["tables"]["items"]["checks"] if not c["success"]]
