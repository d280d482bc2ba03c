"""Mutual information between item feature fields: every field pair in one Spark aggregation.

Joint distribution of a field pair (U, V), defined per item i with weight w_i (1, or its training clicks):
A_i is the set of valid values of U on item i (indices >= 3; padding 0, default 1 and unknown 2 are
dropped, a value listed twice counts once), B_i likewise for V. Items with A_i or B_i empty do not take
part in the pair; the others share the pair's mass N = sum of their w_i, and item i gives
w_i / (|A_i| |B_i|) to every cell (u, v) in A_i x B_i. So p(u, v) = mass(u, v) / N, the marginals are
those of this joint, and MI(U, V) = sum p(u, v) ln(p(u, v) / (p(u) p(v))) is a true MI (>= 0, in nats).
The diagonal holds H(U) over the items with at least one valid U value.

How (docs/stats.md): a constant array of cell templates (diagonal and joint cells of every pair, by
slot) is crossed with each item row (no join), the cells are summed in one aggregation, each joint cell
adds its mass to its two marginal cells in a second, and a third sums per pair N and m ln m:
  H = ln N - (1/N) sum_cells m ln m,  MI = H(U) + H(V) - H(U, V).
A field whose every value belongs to one item only (the item id, by the index contract) never needs the
shuffle: its cells are that item's own, so the item adds its closed-form sum of m ln m directly
(w ln(w / (|A| |B|)) for a joint, w ln(w / |A|) for a marginal), under the cell key x = y = 0. That is
what keeps the id field at O(items) work instead of one aggregation key per item and pair.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from towerssl.stats.fields import FIRST_VALUE, ID_FIELD, ItemField

JOINT, MARGINAL_A, MARGINAL_B = 0, 1, 2
LOCAL = 0  # cell key x = y = LOCAL: the summed m ln m of cells that belong to one item (never a value)


def _slot_ranges(fields: list[ItemField]) -> list[range]:
    """Positions of each field's slots in the item's flat slot array (a single-valued field has one)."""
    ranges, start = [], 0
    for field in fields:
        length = field.length if field.multi else 1
        ranges.append(range(start, start + length))
        start += length
    return ranges


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


@dataclass(frozen=True)
class _Cells:
    """A template every item fills in: cells of pair (a, b), part `part`, keyed by the item's slot values
    i (x) and j (y; -1: none, y = 0); local: the one closed-form cell of a field with one item per value."""

    a: int
    b: int
    part: int
    i: int = -1
    j: int = -1
    local: bool = False


def _templates(fields: list[ItemField], unique: set[str]) -> list[_Cells]:
    """The diagonal's cells, every pair's joint cells, and the marginal cells that the aggregated joint
    cannot give: those of pairs with a unique field, whose joint cells are summed in place."""
    slots = _slot_ranges(fields)
    is_unique = [field.name in unique for field in fields]

    def marginal(a: int, b: int, part: int, f: int) -> list[_Cells]:
        return [_Cells(a, b, part, local=True)] if is_unique[f] else [_Cells(a, b, part, i) for i in slots[f]]

    templates = []
    for a in range(len(fields)):
        templates += marginal(a, a, MARGINAL_A, a)  # the diagonal: H(field a)
        for b in range(a + 1, len(fields)):
            if is_unique[a] or is_unique[b]:
                templates.append(_Cells(a, b, JOINT, local=True))
                templates += marginal(a, b, MARGINAL_A, a) + marginal(a, b, MARGINAL_B, b)
            else:
                templates += [_Cells(a, b, JOINT, i, j) for i in slots[a] for j in slots[b]]
    return templates


def _item_cells(items: DataFrame, fields: list[ItemField], weight: str | None, unique: set[str]) -> DataFrame:
    """(a, b, part, x, y, m, s) rows: every template filled in by every item, empty cells dropped.

    The templates are one constant array that each row is crossed with, so the per-row code stays small
    (JIT-compiled) whatever the number of fields."""
    slots = [slot for field in fields for slot in _valid_slots(field)]
    counts = [sum((F.when(slots[i].isNotNull(), 1).otherwise(0) for i in positions), F.lit(0)) for positions in _slot_ranges(fields)]
    prepared = items.select(
        (F.col(weight).cast("double") if weight else F.lit(1.0)).alias("w"),
        F.array(*slots).alias("vals"),
        F.array(*[count.cast("double") for count in counts]).alias("cnt"),
    ).where("w > 0")

    constant = F.array(*[
        F.struct(F.lit(t.a).alias("a"), F.lit(t.b).alias("b"), F.lit(t.part).alias("part"), F.lit(t.i).alias("i"), F.lit(t.j).alias("j"), F.lit(t.local).alias("local"))
        for t in _templates(fields, unique)
    ])
    crossed = prepared.select("w", "vals", "cnt", F.inline(constant))
    w, a_count, b_count = F.col("w"), F.col("cnt")[F.col("a")], F.col("cnt")[F.col("b")]

    def value(slot: str) -> Column:
        return F.when(F.col(slot) < 0, F.lit(LOCAL)).otherwise(F.col("vals")[F.col(slot)])

    divisor = F.when(F.col("part") == JOINT, a_count * b_count).when(F.col("part") == MARGINAL_A, a_count).otherwise(b_count)
    cells = crossed.select(
        "a", "b", "part", value("i").alias("x"), value("j").alias("y"),
        F.when(F.col("local"), w).otherwise(w / divisor).alias("m"),
        F.when(F.col("local"), w * F.log(w / divisor)).alias("s"),
        ((a_count > 0) & (b_count > 0)).alias("eligible"),
    )
    return cells.where("eligible AND x IS NOT NULL AND y IS NOT NULL").drop("eligible")


def feature_mi(items: DataFrame, fields: list[ItemField], weight: str | None = None, unique: Iterable[str] = (ID_FIELD,)) -> DataFrame:
    """The `feature_mi` table (field_a, field_b, mi, nmi) for all ordered pairs of `fields`, diagonal included.

    weight: a column of `items` holding w_i (e.g. training clicks); None weighs every item 1. Items with
    w_i <= 0 take no part. unique: fields whose every valid value is held by one item only (see module doc).
    nmi = MI / sqrt(H(U) H(V)) with the pair's marginal entropies (in [0, 1]; 0 when either is 0); the
    diagonal has nmi 1 (0 for a constant field). A pair with no eligible item has mi = nmi = 0.
    """
    cells = _item_cells(items, fields, weight, set(unique))
    key = ["a", "b", "part", "x", "y"]
    per_cell = cells.groupBy(*key).agg(F.sum("m").alias("m"), F.sum("s").alias("s"))
    # Marginals of the pairs whose joint cells were aggregated: each joint cell also adds its mass to its
    # two marginal cells, and a second aggregation sums them (one chain: a branch would scan items twice).
    joint = (F.col("part") == JOINT) & (F.col("x") != LOCAL)
    no_s = F.lit(None).cast("double")
    rows = F.array(
        F.struct(*[F.col(c) for c in key], "m", "s"),
        F.when(joint, F.struct("a", "b", F.lit(MARGINAL_A).alias("part"), "x", F.lit(LOCAL).alias("y"), "m", no_s.alias("s"))),
        F.when(joint, F.struct("a", "b", F.lit(MARGINAL_B).alias("part"), F.col("y").alias("x"), F.lit(LOCAL).alias("y"), "m", no_s.alias("s"))),
    )
    expanded = per_cell.select(F.inline(rows)).where("part IS NOT NULL")
    per_cell = expanded.groupBy(*key).agg(F.sum("m").alias("m"), F.sum("s").alias("s"))
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
