"""Mutual information between item feature fields: every field pair in one Spark aggregation.

Joint distribution of a field pair (U, V), defined per item i with weight w_i (1, or its training clicks):
A_i is the set of valid values of U on item i (indices >= 3; padding 0, default 1 and unknown 2 are
dropped, a value listed twice counts once), B_i likewise for V. Items with A_i or B_i empty do not take
part in the pair; the others share the pair's mass N = sum of their w_i, and item i gives
w_i / (|A_i| |B_i|) to every cell (u, v) in A_i x B_i. So p(u, v) = mass(u, v) / N, the marginals are
those of this joint, and MI(U, V) = sum p(u, v) ln(p(u, v) / (p(u) p(v))) is a true MI (>= 0, in nats).
The diagonal holds H(U) over the items with at least one valid U value.

How: each item row makes its own cells (no join): (pair, part, x, y, mass) for the joint and both
marginals of every pair, one shuffle sums the masses per cell, a second sums m ln m per pair, and
  H = ln N - (1/N) sum_cells m ln m,  MI = H(U) + H(V) - H(U, V).
A field whose every value belongs to one item only (the item id, by the index contract) never needs the
shuffle: its cells are that item's own, so the item adds its closed-form sum of m ln m directly
(w ln(w / (|A| |B|)) for a joint, w ln(w / |A|) for a marginal), under the cell key x = y = 0. That is
what keeps the id field at O(items) work instead of one aggregation key per item and pair.
"""

from __future__ import annotations

from collections.abc import Iterable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from towerssl.stats.fields import FIRST_VALUE, ID_FIELD, ItemField

JOINT, MARGINAL_A, MARGINAL_B = 0, 1, 2
LOCAL = 0  # cell key x = y = LOCAL: the summed m ln m of cells that belong to one item (never a value)


def _valid_slots(field: ItemField) -> list[Column]:
    """One column per slot of the field: the value if it is a valid value not listed earlier, else null."""
    values = [F.col(field.name)] if not field.multi else [F.col(field.name)[j] for j in range(field.length)]
    slots = []
    for j, value in enumerate(values):
        fresh = value >= FIRST_VALUE
        for earlier in values[:j]:
            fresh = fresh & (value != earlier)
        slots.append(F.when(fresh, value))
    return slots


def _cell(a: int, b: int, part: int, x: Column | int, y: Column | int, mass: Column, m_ln_m: Column | None = None) -> Column:
    return F.struct(
        F.lit(a).alias("a"), F.lit(b).alias("b"), F.lit(part).alias("part"),
        (x if isinstance(x, Column) else F.lit(x)).alias("x"), (y if isinstance(y, Column) else F.lit(y)).alias("y"),
        mass.cast("double").alias("m"), (m_ln_m if m_ln_m is not None else F.lit(None)).cast("double").alias("s"),
    )


class _Item:
    """Column names of one item's prepared row: weight `w`, valid slots `v{f}_{j}`, valid counts `c{f}`."""

    def __init__(self, fields: list[ItemField]) -> None:
        self.lengths = [1 if not f.multi else f.length for f in fields]

    def slots(self, f: int) -> list[Column]:
        return [F.col(f"v{f}_{j}") for j in range(self.lengths[f])]

    @staticmethod
    def count(f: int) -> Column:
        return F.col(f"c{f}")


def _marginal_cells(item: _Item, a: int, b: int, part: int, f: int, other: int, unique: bool) -> list[Column]:
    """Cells of field f's marginal within pair (a, b); `other` is the pair's other field (f itself on the diagonal)."""
    w, count_f = F.col("w"), item.count(f)
    eligible = (count_f > 0) & (item.count(other) > 0)
    if unique:
        return [F.when(eligible, _cell(a, b, part, LOCAL, LOCAL, w, w * F.log(w / count_f)))]
    return [F.when(slot.isNotNull() & (item.count(other) > 0), _cell(a, b, part, slot, LOCAL, w / count_f)) for slot in item.slots(f)]


def _pair_cells(item: _Item, a: int, b: int, unique_a: bool, unique_b: bool) -> list[Column]:
    w, count_a, count_b = F.col("w"), item.count(a), item.count(b)
    if unique_a or unique_b:
        joint = [F.when((count_a > 0) & (count_b > 0), _cell(a, b, JOINT, LOCAL, LOCAL, w, w * F.log(w / (count_a * count_b))))]
    else:
        joint = [
            F.when(u.isNotNull() & v.isNotNull(), _cell(a, b, JOINT, u, v, w / (count_a * count_b)))
            for u in item.slots(a) for v in item.slots(b)
        ]
    return joint + _marginal_cells(item, a, b, MARGINAL_A, a, b, unique_a) + _marginal_cells(item, a, b, MARGINAL_B, b, a, unique_b)


def feature_mi(items: DataFrame, fields: list[ItemField], weight: str | None = None, unique: Iterable[str] = (ID_FIELD,)) -> DataFrame:
    """The `feature_mi` table (field_a, field_b, mi, nmi) for all ordered pairs of `fields`, diagonal included.

    weight: a column of `items` holding w_i (e.g. training clicks); None weighs every item 1. Items with
    w_i <= 0 take no part. unique: fields whose every valid value is held by one item only (see module doc).
    nmi = MI / sqrt(H(U) H(V)) with the pair's marginal entropies (in [0, 1]; 0 when either is 0); the
    diagonal has nmi 1 (0 for a constant field). A pair with no eligible item has mi = nmi = 0.
    """
    unique = set(unique)
    item = _Item(fields)
    columns = [(F.col(weight).cast("double") if weight else F.lit(1.0)).alias("w")]
    for f, field in enumerate(fields):
        slots = _valid_slots(field)
        columns += [slot.alias(f"v{f}_{j}") for j, slot in enumerate(slots)]
        columns.append(sum((F.when(slot.isNotNull(), 1).otherwise(0) for slot in slots), F.lit(0)).cast("double").alias(f"c{f}"))
    prepared = items.select(*columns).where("w > 0")

    k = len(fields)
    is_unique = [field.name in unique for field in fields]
    cells: list[Column] = []
    for a in range(k):
        cells += _marginal_cells(item, a, a, MARGINAL_A, a, a, is_unique[a])  # the diagonal: H(field a)
        for b in range(a + 1, k):
            cells += _pair_cells(item, a, b, is_unique[a], is_unique[b])

    masses = prepared.select(F.inline(F.array(*cells))).where("m IS NOT NULL")
    per_cell = masses.groupBy("a", "b", "part", "x", "y").agg(F.sum("m").alias("m"), F.sum("s").alias("s"))
    m_ln_m = F.when(F.col("x") == LOCAL, F.col("s")).otherwise(F.col("m") * F.log("m"))

    def total(part: int, value: Column) -> Column:
        return F.sum(F.when(F.col("part") == part, value))

    per_pair = per_cell.groupBy("a", "b").agg(
        total(MARGINAL_A, F.col("m")).alias("n"),
        total(JOINT, m_ln_m).alias("s_ab"),
        total(MARGINAL_A, m_ln_m).alias("s_a"),
        total(MARGINAL_B, m_ln_m).alias("s_b"),
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
