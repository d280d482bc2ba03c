"""Mutual information between item feature fields: every field pair in one Spark aggregation.

Joint distribution of a field pair (U, V), defined per item i with weight w_i (1, or its training clicks):
A_i is the set of valid values of U on item i (indices >= 3; padding 0, default 1 and unknown 2 are
dropped, a value listed twice counts once), B_i likewise for V. Items with A_i or B_i empty do not take
part in the pair; the others share the pair's mass N = sum of their w_i, and item i gives
w_i / (|A_i| |B_i|) to every cell (u, v) in A_i x B_i. So p(u, v) = mass(u, v) / N, the marginals are
those of this joint, and MI(U, V) = sum p(u, v) ln(p(u, v) / (p(u) p(v))) is a true MI (>= 0, in nats).
The diagonal holds H(U) over the items with at least one valid U value.

How (docs/stats.md): each Spark task turns its items into cells with numpy (stats/cells.py, through
mapInArrow, chunk by chunk): the joint cells of every pair, the pair's marginals summed from them, the
diagonal's cells; Spark sums the cells of all tasks in one aggregation and m ln m per pair in a second:
  H = ln N - (1/N) sum_cells m ln m,  MI = H(U) + H(V) - H(U, V).
A field whose every value belongs to one item only (the item id, by the index contract) never needs the
shuffle: its cells are that item's own, so the item adds its closed-form sum of m ln m directly
(w ln(w / (|A| |B|)) for a joint, w ln(w / |A|) for a marginal), under the cell key x = y = 0. That is
what keeps the id field at O(items) work instead of one aggregation key per item and pair.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from pyspark import cloudpickle
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from towerssl.stats import cells
from towerssl.stats.fields import ID_FIELD, ItemField

cloudpickle.register_pickle_by_value(cells)  # the tasks get the kernel's code itself: no towerssl on executors


def feature_mi(items: DataFrame, fields: list[ItemField], weight: str | None = None, unique: Iterable[str] = (ID_FIELD,)) -> DataFrame:
    """The `feature_mi` table (field_a, field_b, mi, nmi) for all ordered pairs of `fields`, diagonal included.

    weight: a column of `items` holding w_i (e.g. training clicks); None weighs every item 1. Items with
    w_i <= 0 take no part. unique: fields whose every valid value is held by one item only (see module doc).
    nmi = MI / sqrt(H(U) H(V)) with the pair's marginal entropies (in [0, 1]; 0 when either is 0); the
    diagonal has nmi 1 (0 for a constant field). A pair with no eligible item has mi = nmi = 0.
    """
    unique = set(unique)
    plan = cells.CellPlan(
        names=tuple(f.name for f in fields),
        lengths=tuple(f.length if f.multi else 1 for f in fields),
        unique=tuple(f.name in unique for f in fields),
        weighted=weight is not None,
    )
    columns = [F.col(f.name) for f in fields] + ([F.col(weight).cast("double").alias(cells.WEIGHT)] if weight else [])
    made = items.select(*columns).mapInArrow(partial(cells.cell_batches, plan=plan), cells.SPARK_SCHEMA)
    per_cell = made.groupBy("a", "b", "part", "x", "y").agg(F.sum("m").alias("m"), F.sum("s").alias("s"))
    m_ln_m = F.when(F.col("x") == cells.LOCAL, F.col("s")).otherwise(F.col("m") * F.log("m"))

    def total(part: int, value: Column) -> Column:
        return F.sum(F.when(F.col("part") == part, value))

    per_pair = per_cell.groupBy("a", "b").agg(
        total(cells.MARGINAL_A, F.col("m")).alias("n"),
        total(cells.JOINT, m_ln_m).alias("s_ab"),
        total(cells.MARGINAL_A, m_ln_m).alias("s_a"),
        total(cells.MARGINAL_B, m_ln_m).alias("s_b"),
    )
    return _finish(per_pair, [f.name for f in fields])


def _finish(per_pair: DataFrame, names: list[str]) -> DataFrame:
    """Entropies and MI from the per-pair sums (a <= b), for every ordered pair of fields; missing pairs are 0."""
    k = len(names)
    ordered = [(names[a], names[b], min(a, b), max(a, b)) for a in range(k) for b in range(k)]
    grid = per_pair.sparkSession.createDataFrame(ordered, "field_a string, field_b string, a int, b int")  # (a, b): the computed pair
    pairs = grid.join(F.broadcast(per_pair), ["a", "b"], "left")
    n, diagonal = F.col("n"), F.col("a") == F.col("b")
    h_a = F.log(n) - F.col("s_a") / n
    h_b = F.when(diagonal, h_a).otherwise(F.log(n) - F.col("s_b") / n)
    mi = F.when(diagonal, h_a).otherwise(h_a + h_b - (F.log(n) - F.col("s_ab") / n))
    # Rounding can leave MI a few ulps below 0 (independent fields) or nmi a few ulps above 1.
    mi = F.coalesce(F.greatest(mi, F.lit(0.0)), F.lit(0.0))
    nmi = F.when(h_a * h_b > 0, F.least(mi / F.sqrt(h_a * h_b), F.lit(1.0))).otherwise(F.lit(0.0))
    return pairs.select("field_a", "field_b", mi.alias("mi"), nmi.alias("nmi"))
