"""Time-based splits of the valid clicks into train, valid and test (ties broken by user, then item).

global: the last `test_fraction` of all clicks are test, the `valid_fraction` before them valid, or explicit
cutoff timestamps. per_user: each user's last clicks are held out (at least one each for valid and test),
for users with at least `min_user_clicks` clicks; other users' clicks all stay in train. leave-last-out:
per_user with exactly one click each (the protocol of most published results on the Amazon logs).
cold-items: a seeded random share of the items is cold, with every click in valid or test (by item), and the
other items' clicks split per_user (the usual item cold-start protocol).

Every strategy can leave validation out (`validation=False`): the clicks it would hold out for validation stay
in train, and test is unchanged. That lake is for the final fit on train + valid, with the settings and the
step count chosen on the lake that has them.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

SPLITS = ("train", "valid", "test")
STRATEGIES = ("global", "per-user", "leave-last-out", "cold-items")


def split_global(clicks: DataFrame, valid_fraction: float, test_fraction: float, valid_from: int | None = None, test_from: int | None = None,
                 validation: bool = True) -> DataFrame:
    """Adds a `split` column. Explicit cutoffs (timestamps, inclusive) win over fractions.

    With fractions the clicks are ranked in (timestamp, user_id, item_id) order, which is unique once duplicate
    events are rejected. No global sort: the first test and the first valid click are found from a timestamp
    histogram (a few small actions), and the split is then a comparison with those two keys.
    """
    if test_from is not None:
        valid_from = test_from if valid_from is None or not validation else valid_from
        split = F.when(F.col("timestamp") >= test_from, "test").when(F.col("timestamp") >= valid_from, "valid").otherwise("train")
        return clicks.withColumn("split", split)
    summary = clicks.agg(F.count(F.lit(1)).alias("n"), F.min("timestamp").alias("lo"), F.max("timestamp").alias("hi")).first()
    total = summary["n"]
    n_test = int(round(total * test_fraction))
    n_valid = int(round(total * valid_fraction)) if validation else 0
    histograms: dict[tuple[int, int], Histogram] = {}  # both boundaries walk the same histograms
    test_key = _key_from_end(clicks, n_test, summary["lo"], summary["hi"], histograms)
    valid_key = _key_from_end(clicks, n_test + n_valid, summary["lo"], summary["hi"], histograms)
    split = F.when(_at_or_after(test_key), "test").when(_at_or_after(valid_key), "valid").otherwise("train")
    return clicks.withColumn("split", split)


Key = tuple[int, int, int]  # (timestamp, user_id, item_id)
Histogram = tuple[int, list[tuple[int, int]]]
BUCKETS = 4096  # histogram resolution; the bucket holding a boundary is ranked exactly
EXACT_ROWS = 200_000  # a boundary bucket larger than this is split again (unless it is a single second)


def _histogram(clicks: DataFrame, lo: int, hi: int) -> Histogram:
    """(bucket width, [(bucket, clicks)] latest bucket first) of the clicks with lo <= timestamp <= hi."""
    width = max(1, -(-(hi - lo + 1) // BUCKETS))
    bucket = F.floor((F.col("timestamp") - lo) / width)
    within = clicks.where(F.col("timestamp").between(lo, hi))
    return width, sorted(((b, n) for b, n in within.groupBy(bucket.alias("b")).count().collect()), reverse=True)


def _key_from_end(clicks: DataFrame, k: int, lo: int, hi: int, histograms: dict[tuple[int, int], Histogram]) -> Key | None:
    """The key of the k-th click from the end, or None when k is 0 (no click after it)."""
    if k <= 0:
        return None
    after = 0  # clicks in buckets above the current range
    while True:
        if (lo, hi) not in histograms:
            histograms[(lo, hi)] = _histogram(clicks, lo, hi)
        width, counts = histograms[(lo, hi)]
        for b, n in counts:
            if after + n >= k:
                break
            after += n
        lo, hi = lo + b * width, min(hi, lo + (b + 1) * width - 1)
        if n <= EXACT_ROWS or width == 1:
            break
    latest_first = Window.orderBy(F.desc("timestamp"), F.desc("user_id"), F.desc("item_id"))
    row = clicks.where(F.col("timestamp").between(lo, hi)).select("timestamp", "user_id", "item_id", F.row_number().over(latest_first).alias("r")).where(F.col("r") == k - after).first()
    return (row["timestamp"], row["user_id"], row["item_id"])


def _at_or_after(key: Key | None) -> Column:
    if key is None:
        return F.lit(False)
    ts, user, item = (F.col(c) for c in ("timestamp", "user_id", "item_id"))
    return (ts > key[0]) | ((ts == key[0]) & ((user > key[1]) | ((user == key[1]) & (item >= key[2]))))


def split_per_user(clicks: DataFrame, valid_fraction: float, test_fraction: float, min_user_clicks: int, validation: bool = True) -> DataFrame:
    """Each eligible user's last max(1, round(n*test_fraction)) clicks are test, the same rule before them valid
    (none without `validation`).

    A user's clicks are ordered by timestamp, then item_id: of two clicks at the same time the larger item id
    counts as the later one."""
    latest_first = Window.partitionBy("user_id").orderBy(F.desc("timestamp"), F.desc("item_id"))
    n = F.count(F.lit(1)).over(Window.partitionBy("user_id"))
    n_test = F.greatest(F.lit(1), F.round(n * test_fraction)).cast("long")
    n_valid = F.greatest(F.lit(1), F.round(n * valid_fraction)).cast("long") if validation else F.lit(0)
    rank = F.row_number().over(latest_first)
    split = (
        F.when(n < min_user_clicks, "train")
        .when(rank <= n_test, "test")
        .when(rank <= n_test + n_valid, "valid")
        .otherwise("train")
    )
    return clicks.withColumn("split", split)


def split_leave_last_out(clicks: DataFrame, min_user_clicks: int, validation: bool = True) -> DataFrame:
    """Each eligible user's last click is test and the one before it valid (the per-user rule, one click each)."""
    return split_per_user(clicks, 0.0, 0.0, min_user_clicks, validation)


UNIFORM_BITS = 53  # a hash's low bits as a double in [0, 1): exact in a double's mantissa


def _item_uniform(seed: int, purpose: str) -> Column:
    """A pseudo-random number in [0, 1) per item_id, fixed by (seed, purpose): the same item gets the same
    draw in any partitioning and on any rerun, whatever other clicks the log holds."""
    hashed = F.xxhash64(F.lit(seed), F.lit(purpose), F.col("item_id"))
    return hashed.bitwiseAND(F.lit((1 << UNIFORM_BITS) - 1)) / float(1 << UNIFORM_BITS)


def split_cold_items(clicks: DataFrame, cold_fraction: float, seed: int, valid_fraction: float, test_fraction: float,
                     min_user_clicks: int, validation: bool = True) -> DataFrame:
    """Each item is cold with probability cold_fraction (so about that share of the clicked items); a cold
    item has no click in train: with probability 1/2 all its clicks are valid, else all are test, so the
    valid and test cold items are disjoint. The warm items' clicks are split by split_per_user (a user's
    warm clicks only count toward its min_user_clicks). Without `validation` the valid half's clicks are train:
    the test cold items are the same."""
    cold = _item_uniform(seed, "cold") < cold_fraction
    flagged = clicks.withColumn("_cold", cold)
    warm = split_per_user(flagged.where(~F.col("_cold")), valid_fraction, test_fraction, min_user_clicks, validation)
    held_out = flagged.where(F.col("_cold")).withColumn("split", F.when(_item_uniform(seed, "half") < 0.5, "valid" if validation else "train").otherwise("test"))
    return warm.unionByName(held_out).drop("_cold")
