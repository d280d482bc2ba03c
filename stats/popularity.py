"""Item popularity from the training clicks: p_j and log p_j for the logQ correction, buckets for evaluation.

p_j = clicks_j / total training clicks. An item with no training click (a new item) has p_j = 0, and its
log_p is ln(floor / total) with `floor` in clicks (default 0.5: below every clicked item, and finite).

Items are ranked by clicks, most first, ties by item_idx. With C_j the clicks of the items ranked before
j and T the total: head when C_j < T/3, torso when C_j < 2T/3, tail otherwise (clicks >= 1), new when
clicks = 0. So head is the fewest items that together hold a third of the clicks (the item crossing the
boundary included). decile = 1 + floor(10 C_j / T) in 1..10 (equal shares of clicks, not of items), 0 for
new items.

C_j without a global sort. Items are grouped in blocks of consecutive item_idx (block = item_idx >> 14),
and click_counts leaves its output hash-partitioned by block, so a block is whole in one task. One small
action collects the histogram "items per (block, click count)" (at most blocks x distinct click counts
rows, far fewer in practice) with T and the unlisted-click check. On the driver, for an item j with c
clicks in block b: clicks_above(c) = the clicks of all items with more than c clicks, and
offset(b, c) = clicks_above(c) + c * (items with c clicks in blocks before b). In the tasks, with no
further shuffle, r_j = j's rank by item_idx among the items of its block with c clicks (a window within
the partition), and C_j = offset(b, c) + c * r_j. The bucket sizes follow from the same histogram (each
(b, c) group's C_j form an arithmetic sequence), so nothing is read back to count them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from towerssl.errors import UsageError

DEFAULT_NEW_ITEM_FLOOR = 0.5
BUCKETS = ("head", "torso", "tail", "new")
BLOCK_BITS = 14  # items per block: 16,384 consecutive item_idx (a block is never split between tasks)
BLOCK = "__block"


def check_new_item_floor(floor: float) -> None:
    if not 0 < floor <= 1:
        raise UsageError(f"new_item_floor must be in (0, 1] clicks (a new item must rank below any clicked item), got {floor}")


def click_counts(items: DataFrame, train_clicks: DataFrame) -> DataFrame:
    """(item_idx, clicks, listed, __block): every item of `items` (clicks 0 without a training click) and,
    with listed false, any item_idx that train_clicks names but items lacks (item_stats rejects those).
    One aggregation over both tables (no join), its output hash-partitioned by __block = item_idx >> 14
    (one shuffle, which item_stats reuses for its ranks)."""
    block = F.shiftright(F.col("item_idx"), BLOCK_BITS).alias(BLOCK)
    rows = items.select("item_idx", F.lit(0).alias("click"), F.lit(True).alias("listed")).unionByName(
        train_clicks.select("item_idx", F.lit(1).alias("click"), F.lit(False).alias("listed"))
    )
    rows = rows.select(block, "item_idx", "click", "listed").repartition(BLOCK)
    counts = rows.groupBy(BLOCK, "item_idx").agg(F.sum("click").cast("long").alias("clicks"), F.max("listed").alias("listed"))
    return counts.select("item_idx", "clicks", "listed", BLOCK)


@dataclass(frozen=True)
class Popularity:
    """item_stats as a frame (lazy: it reads `counts` again), with what the histogram already tells."""

    table: DataFrame
    total: int  # T, the training clicks
    buckets: dict[str, int]  # items per bucket (buckets with no item left out), exact: from the histogram


def popularity(counts: DataFrame, new_item_floor: float = DEFAULT_NEW_ITEM_FLOOR) -> Popularity:
    """The `item_stats` table (item_idx, clicks, p, log_p, bucket, decile) from click_counts' output.

    Runs one small action (the histogram of click counts per block, with the total and the check for
    clicks on unlisted items); persist `counts` first if it is expensive, since the table reads it again."""
    check_new_item_floor(new_item_floor)
    histogram = counts.groupBy(BLOCK, "clicks", "listed").agg(F.count(F.lit(1)).alias("items"), F.min("item_idx").alias("example")).collect()
    unlisted = [r for r in histogram if not r["listed"]]
    if unlisted:
        n = sum(r["clicks"] * r["items"] for r in unlisted)
        raise UsageError(f"table train_clicks: {n} click(s) name an item_idx that is not in table items (e.g. {min(r['example'] for r in unlisted)}); rerun the ETL")
    groups = {(r[BLOCK], r["clicks"]): r["items"] for r in histogram}  # listed items only, from here on
    total = sum(c * n for (_, c), n in groups.items())
    if total == 0:
        raise UsageError("table train_clicks: no training click, so popularity is undefined")
    items_with = defaultdict(int)
    for (_, c), n in groups.items():
        items_with[c] += n
    clicks_above, above = {}, 0
    for c in sorted(items_with, reverse=True):
        clicks_above[c] = above
        above += c * items_with[c]
    offsets, seen = [], defaultdict(int)  # seen[c]: items with c clicks in the blocks so far
    buckets = {b: 0 for b in BUCKETS}
    for block, c in sorted(groups):
        n = groups[(block, c)]
        if c == 0:
            buckets["new"] += n
            continue
        offset = clicks_above[c] + c * seen[c]
        seen[c] += n
        offsets.append((block, c, offset))
        # C = offset + c r for r in 0..n-1: how many have 3C < T (head), and 3C < 2T (head or torso)
        head = _count_below(offset, c, n, total)
        buckets["head"] += head
        buckets["torso"] += _count_below(offset, c, n, 2 * total) - head
        buckets["tail"] += n - _count_below(offset, c, n, 2 * total)

    spark = counts.sparkSession
    offset_frame = spark.createDataFrame(offsets, f"{BLOCK} int, clicks long, offset long")
    rank = F.row_number().over(Window.partitionBy(BLOCK, "clicks").orderBy("item_idx")) - 1  # within the task: counts is partitioned by block
    ranked = counts.where("listed").select("item_idx", "clicks", BLOCK, rank.alias("rank"))
    ranked = ranked.join(F.broadcast(offset_frame), [BLOCK, "clicks"], "left")  # clicks = 0: no offset, no rank
    before, count = F.col("offset") + F.col("clicks") * F.col("rank"), F.col("clicks")
    bucket = (
        F.when(count == 0, "new").when(3 * before < total, "head").when(3 * before < 2 * total, "torso").otherwise("tail")
    )
    decile = F.when(count == 0, 0).otherwise(F.expr(f"10 * (offset + clicks * rank) div {total}") + 1)
    table = ranked.select(
        F.col("item_idx").cast("int"),
        count.cast("long").alias("clicks"),
        (count / F.lit(float(total))).alias("p"),
        F.log(F.greatest(count.cast("double"), F.lit(float(new_item_floor))) / F.lit(float(total))).alias("log_p"),
        bucket.alias("bucket"),
        decile.cast("int").alias("decile"),
    )
    return Popularity(table, total, {b: n for b, n in buckets.items() if n})


def _count_below(offset: int, step: int, n: int, bound: int) -> int:
    """How many r in 0..n-1 have 3 (offset + step r) < bound (exact integers)."""
    room = bound - 3 * offset
    return 0 if room <= 0 else min(n, (room + 3 * step - 1) // (3 * step))


def item_stats(counts: DataFrame, new_item_floor: float = DEFAULT_NEW_ITEM_FLOOR) -> DataFrame:
    """popularity(...).table: the `item_stats` frame alone."""
    return popularity(counts, new_item_floor).table
