"""The leave-last-out and cold-items splits on handmade clicks (a real SparkSession)."""

from __future__ import annotations

import math

import pytest

from towerssl.errors import UsageError
from towerssl.etl.job import EtlConfig
from towerssl.etl.split import split_cold_items, split_leave_last_out

USERS, ITEMS = 50, 400


def test_leave_last_out_holds_out_each_users_last_two_clicks(spark):
    rows = [(1, item, ts) for item, ts in ((10, 1), (11, 2), (12, 3), (13, 4))]  # 4 clicks
    rows += [(2, 20, 7), (2, 22, 5), (2, 21, 5)]  # 3 clicks, two at time 5: the larger item id is later
    rows += [(3, 30, 1), (3, 31, 2)]  # 2 clicks: all in train
    clicks = spark.createDataFrame(rows, "user_id long, item_id long, timestamp long")
    split = {(r["user_id"], r["item_id"]): r["split"] for r in split_leave_last_out(clicks, min_user_clicks=3).collect()}
    assert split == {
        (1, 10): "train", (1, 11): "train", (1, 12): "valid", (1, 13): "test",
        (2, 21): "train", (2, 22): "valid", (2, 20): "test",
        (3, 30): "train", (3, 31): "train",
    }


def test_without_validation_the_validation_clicks_stay_in_train_and_test_is_the_same(spark):
    rows = [(1, item, ts) for item, ts in ((10, 1), (11, 2), (12, 3), (13, 4))] + [(3, 30, 1), (3, 31, 2)]
    clicks = spark.createDataFrame(rows, "user_id long, item_id long, timestamp long")
    split = {(r["user_id"], r["item_id"]): r["split"] for r in split_leave_last_out(clicks, min_user_clicks=3, validation=False).collect()}
    assert split == {(1, 10): "train", (1, 11): "train", (1, 12): "train", (1, 13): "test", (3, 30): "train", (3, 31): "train"}


def _everyone_clicks_everything(spark):
    """Every user clicks every item once, in an order rotated per user: with a per-user split every item
    keeps training clicks, so an item without one is a cold item."""
    rows = [(u, (t + 8 * u) % ITEMS, t) for u in range(USERS) for t in range(ITEMS)]
    return spark.createDataFrame(rows, "user_id long, item_id long, timestamp long"), set(rows)


def _splits_by_item(rows):
    by_item: dict[int, set[str]] = {}
    for r in rows:
        by_item.setdefault(r["item_id"], set()).add(r["split"])
    return by_item


def test_cold_items_have_no_training_click_and_split_by_item(spark):
    clicks, events = _everyone_clicks_everything(spark)
    fraction = 0.25
    rows = split_cold_items(clicks, fraction, seed=3, valid_fraction=0.1, test_fraction=0.1, min_user_clicks=3).collect()
    assert {(r["user_id"], r["item_id"], r["timestamp"]) for r in rows} == events and len(rows) == len(events)  # conserved
    by_item = _splits_by_item(rows)
    cold = {item for item, splits in by_item.items() if "train" not in splits}
    valid_cold = {item for item in cold if by_item[item] == {"valid"}}
    test_cold = {item for item in cold if by_item[item] == {"test"}}
    assert valid_cold | test_cold == cold  # each cold item's clicks are all valid or all test: disjoint halves
    spread = math.sqrt(ITEMS * fraction * (1 - fraction))
    assert abs(len(cold) - ITEMS * fraction) < 4 * spread  # a binomial share of the items
    assert abs(len(valid_cold) - len(cold) / 2) < 4 * math.sqrt(len(cold) / 4)
    # the warm clicks split per user: 10% of each user's warm clicks (at least one) are its last ones, test
    n_warm = ITEMS - len(cold)
    for user in range(USERS):
        warm = sorted((r["timestamp"], r["split"]) for r in rows if r["user_id"] == user and r["item_id"] not in cold)
        held = max(1, round(n_warm * 0.1))
        assert [s for _, s in warm] == ["train"] * (n_warm - 2 * held) + ["valid"] * held + ["test"] * held


def test_cold_items_are_fixed_by_the_seed(spark):
    clicks, _ = _everyone_clicks_everything(spark)

    def cold(seed):
        by_item = _splits_by_item(split_cold_items(clicks, 0.1, seed, 0.1, 0.1, 3).collect())
        return {item for item, splits in by_item.items() if "train" not in splits}

    assert cold(1) == cold(1) != cold(2)


def test_cold_items_without_validation_keep_the_test_split_and_train_on_the_rest(spark):
    clicks, _ = _everyone_clicks_everything(spark)
    key = ("user_id", "item_id", "timestamp")
    held = {tuple(r[k] for k in key): r["split"] for r in split_cold_items(clicks, 0.25, 3, 0.1, 0.1, 3).collect()}
    refit = {tuple(r[k] for k in key): r["split"] for r in split_cold_items(clicks, 0.25, 3, 0.1, 0.1, 3, validation=False).collect()}
    assert refit.keys() == held.keys() and "valid" not in refit.values()
    assert {e: s for e, s in refit.items() if s == "test"} == {e: s for e, s in held.items() if s == "test"}


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_cold_item_fraction_outside_zero_one_is_refused(fraction):
    with pytest.raises(UsageError, match="cold_item_fraction"):
        EtlConfig(input="raw", lake="lake", split="cold-items", cold_item_fraction=fraction)
