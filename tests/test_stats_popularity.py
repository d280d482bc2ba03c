"""item_stats against a numpy reference written from the definitions (p, floored log p, buckets, deciles)."""

from __future__ import annotations

import numpy as np
import pytest

from towerssl.errors import UsageError
from towerssl.lake import write_table
from towerssl.stats.popularity import click_counts, item_stats
from towerssl.stats.readers import load_log_p


def reference(clicks: np.ndarray, floor: float) -> dict[str, np.ndarray]:
    """Rank by clicks (most first, ties by item_idx); C_j = clicks of the items ranked before j."""
    total = clicks.sum()
    order = np.lexsort((np.arange(len(clicks)), -clicks))
    before = np.empty_like(clicks)
    before[order] = np.cumsum(clicks[order]) - clicks[order]
    bucket = np.where(3 * before < total, "head", np.where(3 * before < 2 * total, "torso", "tail"))
    return {
        "clicks": clicks,
        "p": clicks / total,
        "log_p": np.log(np.maximum(clicks, floor) / total),
        "bucket": np.where(clicks == 0, "new", bucket),
        "decile": np.where(clicks == 0, 0, 10 * before // total + 1),
    }


@pytest.fixture(scope="module")
def clicks_per_item() -> np.ndarray:
    rng = np.random.default_rng(5)
    clicks = np.minimum(rng.zipf(1.6, size=300), 60)  # many ties, a long tail
    clicks[rng.random(300) < 0.15] = 0  # new items
    return clicks


def frames(spark, clicks: np.ndarray):
    items = spark.createDataFrame([(i, 500 + i) for i in range(len(clicks))], "item_idx int, item_id long")
    item_of_click = np.repeat(np.arange(len(clicks)), clicks)
    rows = [(t % 17, int(i), 900 + t % 17, 500 + int(i), t) for t, i in enumerate(item_of_click)]
    train = spark.createDataFrame(rows, "user_idx int, item_idx int, user_id long, item_id long, timestamp long")
    return items, train


def test_item_stats_follow_the_definitions(spark, clicks_per_item):
    items, train = frames(spark, clicks_per_item)
    rows = item_stats(click_counts(items, train), new_item_floor=0.5).orderBy("item_idx").collect()
    expected = reference(clicks_per_item, 0.5)

    assert [r.item_idx for r in rows] == list(range(len(clicks_per_item)))
    np.testing.assert_array_equal([r.clicks for r in rows], expected["clicks"])
    np.testing.assert_allclose([r.p for r in rows], expected["p"], rtol=1e-15)
    np.testing.assert_allclose([r.log_p for r in rows], expected["log_p"], rtol=1e-14)
    assert [r.bucket for r in rows] == expected["bucket"].tolist()
    assert [r.decile for r in rows] == expected["decile"].tolist()
    # head: the fewest most-clicked items that together hold a third of the clicks
    head = np.array([r.bucket == "head" for r in rows])
    total = clicks_per_item.sum()
    assert 3 * clicks_per_item[head].sum() >= total > 3 * (clicks_per_item[head].sum() - clicks_per_item[head].min())
    assert {r.decile for r in rows} == set(range(11))


def test_new_items_get_the_floor_and_log_p_reads_back_by_item_idx(spark, clicks_per_item, tmp_path):
    items, train = frames(spark, clicks_per_item)
    write_table(item_stats(click_counts(items, train), new_item_floor=0.25).repartition(3), tmp_path, "item_stats", "test", {})
    log_p = load_log_p(spark, tmp_path)

    total = clicks_per_item.sum()
    new = clicks_per_item == 0
    assert np.isfinite(log_p).all()
    np.testing.assert_allclose(log_p[new], np.log(0.25 / total), rtol=1e-14)
    np.testing.assert_allclose(log_p[~new], np.log(clicks_per_item[~new] / total), rtol=1e-14)
    assert log_p[new].max() < log_p[~new].min()
    with pytest.raises(UsageError, match="item_idx is not each of 0..300"):
        load_log_p(spark, tmp_path, n_items=301)


def test_bad_inputs_are_named(spark):
    items = spark.createDataFrame([(0, 10), (1, 11)], "item_idx int, item_id long")
    stray = spark.createDataFrame([(0, 0, 1, 10, 5), (0, 7, 1, 17, 6)], "user_idx int, item_idx int, user_id long, item_id long, timestamp long")
    with pytest.raises(UsageError, match=r"train_clicks: 1 click\(s\) name an item_idx that is not in table items \(e.g. 7\)"):
        item_stats(click_counts(items, stray))
    with pytest.raises(UsageError, match="no training click"):
        item_stats(click_counts(items, stray.limit(0)))
    with pytest.raises(UsageError, match=r"new_item_floor must be in \(0, 1\]"):
        item_stats(click_counts(items, stray.where("item_idx = 0")), new_item_floor=0.0)
