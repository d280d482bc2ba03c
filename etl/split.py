"""Time-based splits of the valid clicks into train, valid and test (ties broken by user, then item).

global: the last `test_fraction` of all clicks are test, the `valid_fraction` before them valid, or explicit
cutoff timestamps. per_user: each user's last clicks are held out (at least one each for valid and test),
for users with at least `min_user_clicks` clicks; other users' clicks all stay in train.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

SPLITS = ("train", "valid", "test")
STRATEGIES = ("global", "per-user")


def split_global(clicks: DataFrame, valid_fraction: float, test_fraction: float, valid_from: int | None = None, test_from: int | None = None) -> DataFrame:
    """Adds a `split` column. Explicit cutoffs (timestamps, inclusive) win over fractions."""
    if test_from is not None:
        valid_from = test_from if valid_from is None else valid_from
        split = F.when(F.col("timestamp") >= test_from, "test").when(F.col("timestamp") >= valid_from, "valid").otherwise("train")
        return clicks.withColumn("split", split)
    total = clicks.count()
    n_test = int(round(total * test_fraction))
    n_valid = int(round(total * valid_fraction))
    # Rank in (timestamp, user_id, item_id) order without sorting all clicks in one partition: cumulative
    # counts over the distinct timestamps, then a rank inside each timestamp.
    per_ts = clicks.groupBy("timestamp").agg(F.count(F.lit(1)).alias("_n"))
    earlier = Window.orderBy("timestamp").rowsBetween(Window.unboundedPreceding, -1)
    before = per_ts.select("timestamp", F.coalesce(F.sum("_n").over(earlier), F.lit(0)).alias("_before"))
    within = F.row_number().over(Window.partitionBy("timestamp").orderBy("user_id", "item_id")) - 1
    ranked = clicks.join(before, "timestamp").withColumn("_pos", F.col("_before") + within)
    split = F.when(F.col("_pos") >= total - n_test, "test").when(F.col("_pos") >= total - n_test - n_valid, "valid").otherwise("train")
    return ranked.withColumn("split", split).drop("_pos", "_before")


def split_per_user(clicks: DataFrame, valid_fraction: float, test_fraction: float, min_user_clicks: int) -> DataFrame:
    """Each eligible user's last max(1, round(n*test_fraction)) clicks are test, the same rule before them valid."""
    latest_first = Window.partitionBy("user_id").orderBy(F.desc("timestamp"), F.desc("item_id"))
    n = F.count(F.lit(1)).over(Window.partitionBy("user_id"))
    n_test = F.greatest(F.lit(1), F.round(n * test_fraction)).cast("long")
    n_valid = F.greatest(F.lit(1), F.round(n * valid_fraction)).cast("long")
    rank = F.row_number().over(latest_first)
    split = (
        F.when(n < min_user_clicks, "train")
        .when(rank <= n_test, "test")
        .when(rank <= n_test + n_valid, "valid")
        .otherwise("train")
    )
    return clicks.withColumn("split", split)
