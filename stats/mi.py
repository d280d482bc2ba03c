"""Mutual information between item feature fields: every field pair in one Spark job.

Joint distribution of a field pair (U, V), defined per item i with weight w_i (1, or its training clicks):
A_i is the set of valid values of U on item i (indices >= 3; padding 0, default 1 and unknown 2 are
dropped, a value listed twice counts once), B_i likewise for V. Items with A_i or B_i empty do not take
part in the pair; the others share the pair's mass N = sum of their w_i, and item i gives
w_i / (|A_i| |B_i|) to every cell (u, v) in A_i x B_i. So p(u, v) = mass(u, v) / N, the marginals are
those of this joint, and MI(U, V) = sum p(u, v) ln(p(u, v) / (p(u) p(v))) is a true MI (>= 0, in nats).
The diagonal holds H(U) over the items with at least one valid U value.

How (docs/stats.md): each Spark task turns its items into cells with numpy (stats/cells.py, chunk by
chunk, reading a Delta snapshot's Parquet files itself, or given a DataFrame's rows through mapInArrow):
the joint cells of every pair, the pair's marginals summed from them, the diagonal's cells, packed into
one Arrow blob per reducer; Spark shuffles the blobs, each reducer sums its share of the cells and m ln m
per pair with numpy (cells.sum_blobs), and the driver adds the reducers' per-pair rows up and computes
  H = ln N - (1/N) sum_cells m ln m,  MI = H(U) + H(V) - H(U, V).
A field whose every value belongs to one item only (the item id, by the index contract) never needs the
shuffle: its cells are that item's own, so the item adds its closed-form sum of m ln m directly
(w ln(w / (|A| |B|)) for a joint, w ln(w / |A|) for a marginal), under the cell key x = y = 0. That is
what keeps the id field at O(items) work instead of one aggregation key per item and pair.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

import numpy as np
from pyspark import RDD, cloudpickle
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from towerssl.fields import ITEM_ID_FIELD, FieldSpec
from towerssl.lake import Snapshot
from towerssl.stats import cells

cloudpickle.register_pickle_by_value(cells)  # the tasks get the kernel's code itself: no towerssl on executors


@dataclass(frozen=True)
class FeatureMI:
    """The MI of every field pair as k x k arrays, rows and columns in `names` order (symmetric)."""

    names: tuple[str, ...]
    mi: np.ndarray  # nats; the diagonal holds H(U)
    nmi: np.ndarray

    def rows(self) -> list[tuple[str, str, float, float]]:
        """(field_a, field_b, mi, nmi) for all ordered pairs, diagonal included."""
        k = len(self.names)
        return [(self.names[a], self.names[b], float(self.mi[a, b]), float(self.nmi[a, b])) for a in range(k) for b in range(k)]

    def frame(self, spark: SparkSession) -> DataFrame:
        """The `feature_mi` table (field_a, field_b, mi, nmi): k*k rows, built on the driver."""
        return spark.createDataFrame(self.rows(), SCHEMA)


SCHEMA = "field_a string, field_b string, mi double, nmi double"


def compute_feature_mi(items: DataFrame, fields: list[FieldSpec], weight: str | None = None, unique: Iterable[str] = (ITEM_ID_FIELD,),
                       reducers: int | None = None) -> FeatureMI:
    """MI and nmi of all pairs of `fields`: one Spark job (the cells per task, one shuffle of a blob per task
    and reducer, the per-pair sums per reducer), whose few rows the driver adds up and turns into entropies.

    weight: a column of `items` holding w_i (e.g. training clicks); None weighs every item 1. Items with
    w_i <= 0 take no part. unique: fields whose every valid value is held by one item only (see module doc).
    nmi = MI / sqrt(H(U) H(V)) with the pair's marginal entropies (in [0, 1]; 0 when either is 0); the
    diagonal has nmi 1 (0 for a constant field). A pair with no eligible item has mi = nmi = 0.
    """
    plan = _plan(fields, unique, weighted=weight is not None)
    columns = [F.col(f.name) for f in fields] + ([F.col(weight).cast("double").alias(cells.WEIGHT)] if weight else [])
    made = items.select(*columns)
    reducers = reducers or _reducers(items.sparkSession, made.rdd.getNumPartitions())
    blobs = made.mapInArrow(partial(cells.cell_blobs, plan=plan, reducers=reducers), cells.BLOB_SPARK_SCHEMA)
    return _sum_blobs(blobs.rdd.map(lambda row: (row[0], row[1])), reducers, plan.names)


def snapshot_feature_mi(spark: SparkSession, snapshot: Snapshot, fields: list[FieldSpec], unique: Iterable[str] = (ITEM_ID_FIELD,),
                        reducers: int | None = None, tasks: int | None = None) -> FeatureMI:
    """compute_feature_mi over a pinned Delta snapshot of `items`, each item weighing 1, with the tasks
    reading the snapshot's Parquet files themselves (pyarrow, as the trainer does) instead of a Spark scan
    handing them rows through Arrow: the same cells and sums, about half the map side's CPU.

    tasks (default: the cores) spreads the files' row groups over at least that many map tasks."""
    plan = _plan(fields, unique, weighted=False)
    tasks = tasks or spark.sparkContext.defaultParallelism
    parts = max(1, -(-tasks // max(1, len(snapshot.files))))
    splits = [(uri, part, parts) for uri in snapshot.files for part in range(parts)]
    reducers = reducers or _reducers(spark, len(splits))
    blobs = spark.sparkContext.parallelize(splits, max(1, len(splits))).mapPartitions(partial(cells.file_blobs, plan=plan, reducers=reducers))
    return _sum_blobs(blobs, reducers, plan.names)


def readable_by_tasks(snapshot: Snapshot) -> bool:
    """Whether snapshot_feature_mi's tasks can read the files with pyarrow: local or mounted paths (file:)
    only. Hadoop file systems (s3a, abfss, hdfs) have schemes or credentials pyarrow does not share."""
    return bool(snapshot.files) and all(uri.startswith("file:") for uri in snapshot.files)


def _plan(fields: list[FieldSpec], unique: Iterable[str], weighted: bool) -> cells.CellPlan:
    unique = set(unique)
    return cells.CellPlan(
        names=tuple(f.name for f in fields),
        lengths=tuple(f.length if f.multi else 1 for f in fields),
        unique=tuple(f.name in unique for f in fields),
        weighted=weighted,
    )


def _reducers(spark: SparkSession, map_tasks: int) -> int:
    """As many reducers as map tasks, at least the shuffle partitions: a reducer holds about one task's cells."""
    return max(int(spark.conf.get("spark.sql.shuffle.partitions")), map_tasks)


def _sum_blobs(blobs: RDD, reducers: int, names: tuple[str, ...]) -> FeatureMI:
    """Shuffle the (reducer, blob) records, sum each reducer's cells per pair, add the reducers' rows up on
    the driver (at most reducers x k(k+1)/2 of them) and finish."""
    keyed = blobs.partitionBy(reducers, cells.reducer_partition)
    per_pair: dict[tuple[int, int], list[float]] = {}
    for a, b, *values in keyed.mapPartitions(cells.sum_blobs).collect():
        total = per_pair.setdefault((a, b), [0.0, 0.0, 0.0, 0.0])
        for i, value in enumerate(values):
            total[i] += value
    return finish(list(names), [(a, b, *sums) for (a, b), sums in per_pair.items()])


def feature_mi(items: DataFrame, fields: list[FieldSpec], weight: str | None = None, unique: Iterable[str] = (ITEM_ID_FIELD,)) -> DataFrame:
    """The `feature_mi` table (field_a, field_b, mi, nmi) for all ordered pairs of `fields`, diagonal
    included: compute_feature_mi(...).frame(). Runs the Spark job now; the frame is k*k driver rows."""
    return compute_feature_mi(items, fields, weight, unique).frame(items.sparkSession)


def finish(names: list[str], per_pair: list[tuple]) -> FeatureMI:
    """Entropies and MI from the per-pair sums (a, b, n, s_ab, s_a, s_b), a <= b; missing pairs are 0."""
    k = len(names)
    mi, nmi = np.zeros((k, k)), np.zeros((k, k))
    for a, b, n, s_ab, s_a, s_b in per_pair:
        if n <= 0:
            continue  # no eligible item
        h_a = math.log(n) - s_a / n
        if a == b:
            h_b, value = h_a, h_a
        else:
            h_b = math.log(n) - s_b / n
            value = h_a + h_b - (math.log(n) - s_ab / n)
        value = max(value, 0.0)  # rounding can leave MI a few ulps below 0 (independent fields) or nmi a few ulps above 1
        mi[a, b] = mi[b, a] = value
        nmi[a, b] = nmi[b, a] = min(value / math.sqrt(h_a * h_b), 1.0) if h_a * h_b > 0 else 0.0
    return FeatureMI(tuple(names), mi, nmi)
