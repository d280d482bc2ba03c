"""The leave-last-out and cold-items splits on handmade clicks (a real SparkSession)."""

from __future__ import annotations

from towerssl.etl.split import split_leave_last_out


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
