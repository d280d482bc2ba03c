"""The synthetic generator: deterministic, the raw layout as documented, and the planted structure is there."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from towerssl.cli import main
from towerssl.errors import UsageError
from towerssl.etl import generate as gen
from towerssl.etl.generate import GroupedSampler, generate
from towerssl.etl.layout import read_raw_layout, read_schema

SMALL = dict(users=300, items=200, clicks=6_000, seed=3)


def _read(out: Path, name: str) -> pd.DataFrame:
    parts = sorted((out / name).glob("part-*"))
    if parts[0].suffix == ".parquet":
        return pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)
    return pd.concat([pd.read_csv(p, keep_default_na=False) for p in parts], ignore_index=True)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("small")
    summary = generate(out, **SMALL, chunk_rows=2_500)
    return summary, _read(out, "interactions"), _read(out, "items"), _read(out, "users")


@pytest.fixture(scope="module")
def larger(tmp_path_factory):
    """Enough items for the statistics to be clear of sampling noise."""
    out = tmp_path_factory.mktemp("larger")
    summary = generate(out, users=2_000, items=3_000, clicks=60_000, seed=11)
    return summary, _read(out, "interactions"), _read(out, "items")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate(tmp_path / name, users=50, items=40, clicks=900, seed=seed, chunk_rows=400)
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_sizes_schema_and_headers_match(small):
    summary, clicks, items, users = small
    assert (len(clicks), len(items), len(users)) == (SMALL["clicks"], SMALL["items"], SMALL["users"])
    schema = read_schema(summary.out_dir)
    assert schema["format"] == "csv" and (schema["interactions"], schema["items"], schema["users"]) == ("interactions", "items", "users")
    assert schema["fields"] == gen.FIELDS
    assert list(clicks.columns) == ["user_id", "item_id", "timestamp"]
    assert list(items.columns) == ["item_id"] + [f.name for f in gen.FIELDS if f.owner == "item"]
    assert list(users.columns) == ["user_id"] + [f.name for f in gen.FIELDS if f.owner == "user"]
    assert items.item_id.is_unique and users.user_id.is_unique and (items.item_id >= 0).all() and (users.user_id >= 0).all()
    assert set(clicks.item_id) <= set(items.item_id) and set(clicks.user_id) <= set(users.user_id)
    assert clicks.timestamp.between(summary.start_ts, summary.end_ts - 1).all()


def test_field_values_follow_their_definitions(small):
    _, _, items, users = small
    categories = items.category.str.split("|")
    keywords = items.keywords.str.split("|")
    assert categories.map(len).between(1, 2).all() and keywords.map(len).between(1, gen.MAX_KEYWORDS).all()
    assert (categories.map(len) == categories.map(lambda v: len(set(v)))).all()  # no repeated value
    assert (keywords.map(len) == keywords.map(lambda v: len(set(v)))).all()
    assert set(categories.explode()) == set(gen.CATEGORIES)
    assert set(keywords.explode()) <= set(gen.KEYWORDS)
    for column, allowed in (("price", gen.PRICES), ("audience", gen.AUDIENCES), ("city", gen.CITIES)):
        assert set(items[column]) <= set(allowed)
    assert set(users.gender) <= set(gen.GENDERS) and set(users.age) <= set(gen.AGES)


def test_chunked_parts_are_bounded_and_follow_time(small):
    summary, _, _, _ = small
    parts = sorted((summary.out_dir / "interactions").glob("part-*.csv"))
    assert summary.parts["interactions"] == len(parts) == math.ceil(SMALL["clicks"] / 2_500) == 3
    frames = [pd.read_csv(p) for p in parts]
    assert all(len(f) <= 2_500 for f in frames)
    for frame in frames:
        assert frame.timestamp.is_monotonic_increasing
    for earlier, later in zip(frames, frames[1:]):
        assert earlier.timestamp.max() <= later.timestamp.min()


def test_parquet_layout_reads_through_the_raw_layout_reader(spark, tmp_path):
    summary = generate(tmp_path, users=40, items=60, clicks=700, seed=1, fmt="parquet", chunk_rows=300)
    assert summary.parts == {"interactions": 3, "items": 1, "users": 1}
    raw = read_raw_layout(spark, tmp_path)
    assert (raw.interactions.count(), raw.items.count(), raw.users.count()) == (700, 60, 40)
    assert raw.fields == gen.FIELDS
    first = raw.items.orderBy("item_id").first()
    expected = _read(tmp_path, "items").sort_values("item_id").iloc[0]
    assert [first[f.name] for f in raw.fields_of("item")] == [expected[f.name] for f in raw.fields_of("item")]


def test_item_popularity_has_a_long_tail(larger):
    _, clicks, items = larger
    counts = clicks.item_id.value_counts().reindex(items.item_id, fill_value=0).to_numpy()
    ordered = np.sort(counts)[::-1]
    top_share = ordered[: len(ordered) // 5].sum() / ordered.sum()
    assert top_share > 0.6
    assert ordered[0] > 20 * np.median(ordered)


def _mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in MI in nats of two integer-coded columns, float64: sum p(x,y) log(p(x,y) / (p(x) p(y)))."""
    width = b.max() + 1
    joint = np.bincount(a * width + b, minlength=(a.max() + 1) * width).reshape(-1, width).astype(np.float64)
    joint /= joint.sum()
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / outer[nz])).sum())


def _permutation_test(a: np.ndarray, b: np.ndarray, rounds: int = 100) -> tuple[float, float]:
    """MI above its mean under shuffles of b (the plug-in bias removed), and the share of shuffles reaching it."""
    rng = np.random.default_rng(0)
    a, b = np.unique(a, return_inverse=True)[1], np.unique(b, return_inverse=True)[1]
    observed = _mutual_information(a, b)
    null = np.array([_mutual_information(a, rng.permutation(b)) for _ in range(rounds)])
    return observed - null.mean(), (1 + (null >= observed).sum()) / (1 + rounds)


def _pairs(items: pd.DataFrame, a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    """Single-valued columns as they are; a multi-valued one as (item, value) rows; category: the primary."""
    frame = items.assign(category=items.category.str.split("|").str[0], keywords=items.keywords.str.split("|"))
    frame = frame.explode("keywords") if "keywords" in (a, b) else frame
    return frame[a].to_numpy(), frame[b].to_numpy()


def test_planted_pairs_are_dependent_and_city_is_independent(larger):
    _, _, items = larger
    assert set(gen.PLANTED_PAIRS) == {("audience", "category"), ("brand", "category"), ("price", "brand"), ("keywords", "category")}
    planted = {}
    for a, b in gen.PLANTED_PAIRS:
        planted[(a, b)], p_value = _permutation_test(*_pairs(items, a, b))
        assert p_value < 0.01, (a, b)
    assert gen.INDEPENDENT_FIELDS == ("city",)
    for other in ("category", "audience", "price", "brand"):
        excess, p_value = _permutation_test(*_pairs(items, "city", other))
        assert p_value > 0.01, other
        assert excess < 0.05 * min(planted.values()), other


def test_clicks_follow_user_gender_to_item_audience(larger):
    summary, clicks, items = larger
    users = _read(summary.out_dir, "users")
    joined = clicks.merge(items, on="item_id").merge(users, on="user_id")
    share = pd.crosstab(joined.gender, joined.audience, normalize="index")
    assert share.loc["female", "female"] > 3 * share.loc["female", "male"]
    assert share.loc["male", "male"] > 3 * share.loc["male", "female"]


def test_new_items_are_released_late_and_clicked_only_after_release(larger):
    summary, clicks, items = larger
    release = pd.Series(summary.new_item_release_ts, index=summary.new_item_ids)
    assert len(release) == round(gen.NEW_ITEM_SHARE * (len(items) - len(gen.CATEGORIES)))
    assert release.between(summary.release_window_start, summary.end_ts - 1).all()
    on_new = clicks[clicks.item_id.isin(release.index)]
    assert len(on_new) > 0
    assert (on_new.timestamp >= on_new.item_id.map(release)).all()
    before_window = clicks[clicks.timestamp < summary.release_window_start]
    assert not before_window.item_id.isin(release.index).any()


def test_grouped_sampler_draws_each_group_by_its_weights():
    rng = np.random.default_rng(4)
    weights = rng.random((3, 5)) ** 3
    sampler = GroupedSampler.from_matrix(weights, values=np.arange(15).reshape(3, 5) * 10)
    draws = 200_000
    groups = rng.integers(3, size=draws)
    values = sampler.sample(groups, rng.random(draws))
    for g in range(3):
        expected = weights[g] / weights[g].sum()
        seen = np.bincount(values[groups == g] // 10 - 5 * g, minlength=5) / (groups == g).sum()
        sd = np.sqrt(expected * (1 - expected) / (groups == g).sum())
        assert np.all(np.abs(seen - expected) <= 5 * sd + 1e-12), g
    edge = sampler.sample(np.array([0, 1, 2]), np.array([np.nextafter(1.0, 0.0)] * 3))  # u just below 1
    assert list(edge // 10 // 5) == [0, 1, 2]


def test_existing_layout_needs_overwrite(tmp_path):
    generate(tmp_path, users=10, items=40, clicks=50)
    with pytest.raises(UsageError, match="--overwrite"):
        generate(tmp_path, users=10, items=40, clicks=50)
    summary = generate(tmp_path, users=10, items=40, clicks=80, overwrite=True)
    assert len(_read(tmp_path, "interactions")) == summary.clicks == 80


def test_bad_sizes_are_refused(tmp_path):
    with pytest.raises(UsageError, match="items must be at least"):
        generate(tmp_path, items=5)
    with pytest.raises(UsageError, match="positive"):
        generate(tmp_path, clicks=0)


def test_cli_writes_the_layout(tmp_path):
    out = tmp_path / "raw"
    code = main(["generate", "--out", str(out), "--users", "20", "--items", "40", "--clicks", "300", "--format", "parquet", "--chunk-rows", "100"])
    assert code == 0
    assert len(list((out / "interactions").glob("part-*.parquet"))) == 3
    assert read_schema(out)["format"] == "parquet"
