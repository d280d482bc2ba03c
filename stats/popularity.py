"""Item popularity from the training clicks: p_j and log p_j for the logQ correction, buckets for evaluation.

p_j = clicks_j / total training clicks. An item with no training click (a new item) has p_j = 0, and its
log_p is ln(floor / total) with `floor` in clicks (default 0.5: below every clicked item, and finite).

Items are ranked by clicks, most first, ties by item_idx. With C_j the clicks of the items ranked before
j and T the total: head when C_j < T/3, torso when C_j < 2T/3, tail otherwise (clicks >= 1), new when
clicks = 0. So head is the fewest items that together hold a third of the clicks (the item crossing the
boundary included). decile = 1 + floor(10 C_j / T) in 1..10 (equal shares of clicks, not of items), 0 for
new items.

C_j without a global sort: items with more clicks than j hold clicks_above(c) (a window over the few
distinct click counts), and the items with j's count c that come before it add c each, so
C_j = clicks_above(c) + c * (rank of j among the items with c clicks).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from towerssl.errors import UsageError

DEFAULT_NEW_ITEM_FLOOR = 0.5
BUCKETS = ("head", "torso", "tail", "new")


def check_new_item_floor(floor: float) -> None:
    if not 0 < floor <= 1:
        raise UsageError(f"new_item_floor must be in (0, 1] clicks (a new item must rank below any clicked item), got {floor}")


def click_counts(items: DataFrame, train_clicks: DataFrame) -> DataFrame:
    """(item_idx, clicks) for every item, 0 for items without a training click."""
    counts = train_clicks.groupBy("item_idx").agg(F.count(F.lit(1)).alias("clicks"))
    unknown = counts.join(items.select("item_idx"), "item_idx", "left_anti")
    stray = unknown.orderBy("item_idx").limit(3).collect()
    if stray:
        examples = ", ".join(str(r["item_idx"]) for r in stray)
        raise UsageError(f"table train_clicks: item_idx not in table items (e.g. {examples}); rerun the ETL")
    return items.select("item_idx").join(counts, "item_idx", "left").select("item_idx", F.coalesce("clicks", F.lit(0)).cast("long").alias("clicks"))


def item_stats(clicks: DataFrame, new_item_floor: float = DEFAULT_NEW_ITEM_FLOOR) -> DataFrame:
    """The `item_stats` table from (item_idx, clicks): item_idx, clicks, p, log_p, bucket, decile."""
    check_new_item_floor(new_item_floor)
    total = clicks.agg(F.sum("clicks")).first()[0] or 0
    if total == 0:
        raise UsageError("table train_clicks: no training click, so popularity is undefined")
    # One row per distinct click count (few): the clicks held by items with more clicks than that count.
    more_clicks = Window.orderBy(F.desc("clicks")).rowsBetween(Window.unboundedPreceding, -1)
    by_count = clicks.where("clicks > 0").groupBy("clicks").agg(F.count(F.lit(1)).alias("items"))
    by_count = by_count.select("clicks", F.coalesce(F.sum(F.col("clicks") * F.col("items")).over(more_clicks), F.lit(0)).alias("clicks_above"))
    rank_in_count = F.row_number().over(Window.partitionBy("clicks").orderBy("item_idx")) - 1
    clicked = clicks.where("clicks > 0").join(F.broadcast(by_count), "clicks").select(
        "item_idx", "clicks", (F.col("clicks_above") + F.col("clicks") * rank_in_count).alias("before")
    )
    ranked = clicked.unionByName(clicks.where("clicks = 0").select("item_idx", "clicks", F.lit(None).cast("long").alias("before")))

    before, count = F.col("before"), F.col("clicks")
    bucket = (
        F.when(count == 0, "new").when(3 * before < total, "head").when(3 * before < 2 * total, "torso").otherwise("tail")
    )
    decile = F.when(count == 0, 0).otherwise(F.expr(f"10 * before div {total}") + 1)
    return ranked.select(
        F.col("item_idx").cast("int"),
        count.cast("long").alias("clicks"),
        (count / F.lit(float(total))).alias("p"),
        F.log(F.greatest(count.cast("double"), F.lit(float(new_item_floor))) / F.lit(float(total))).alias("log_p"),
        bucket.alias("bucket"),
        decile.cast("int").alias("decile"),
    )
