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
    """(item_idx, clicks, listed): every item of `items` (clicks 0 without a training click) and, with
    listed false, any item_idx that train_clicks names but items lacks (item_stats rejects those).
    One aggregation over both tables (no join)."""
    rows = items.select("item_idx", F.lit(0).alias("click"), F.lit(True).alias("listed")).unionByName(
        train_clicks.select("item_idx", F.lit(1).alias("click"), F.lit(False).alias("listed"))
    )
    return rows.groupBy("item_idx").agg(F.sum("click").cast("long").alias("clicks"), F.max("listed").alias("listed"))


def item_stats(counts: DataFrame, new_item_floor: float = DEFAULT_NEW_ITEM_FLOOR) -> DataFrame:
    """The `item_stats` table (item_idx, clicks, p, log_p, bucket, decile) from click_counts' output.

    Runs one small action (the total and the check for clicks on unlisted items); persist `counts` first
    if it is expensive, since the returned frame reads it again."""
    check_new_item_floor(new_item_floor)
    unlisted = ~F.col("listed")
    summary = counts.agg(
        F.sum(F.when(F.col("listed"), F.col("clicks"))).alias("total"),
        F.sum(F.when(unlisted, F.col("clicks"))).alias("unlisted"),
        F.min(F.when(unlisted, F.col("item_idx"))).alias("example"),
    ).first()
    if summary["unlisted"]:
        raise UsageError(f"table train_clicks: {summary['unlisted']} click(s) name an item_idx that is not in table items (e.g. {summary['example']}); rerun the ETL")
    total = summary["total"] or 0
    if total == 0:
        raise UsageError("table train_clicks: no training click, so popularity is undefined")
    clicks = counts.select("item_idx", "clicks")
    # One row per distinct click count (few): the clicks held by items with more clicks than that count.
    more_clicks = Window.orderBy(F.desc("clicks")).rowsBetween(Window.unboundedPreceding, -1)
    by_count = clicks.where("clicks > 0").groupBy("clicks").agg(F.count(F.lit(1)).alias("items"))
    by_count = by_count.select("clicks", F.coalesce(F.sum(F.col("clicks") * F.col("items")).over(more_clicks), F.lit(0)).alias("clicks_above"))
    rank_in_count = F.row_number().over(Window.partitionBy("clicks").orderBy("item_idx")) - 1
    clicked = clicks.where("clicks > 0").join(F.broadcast(by_count), "clicks").select(
        "item_idx", "clicks", (F.col("clicks_above") + F.col("clicks") * rank_in_count).alias("before")
    )
    ranked = clicked.unionByName(clicks.where("clicks = 0").withColumn("before", F.lit(None).cast("long")))  # new items: no rank

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
