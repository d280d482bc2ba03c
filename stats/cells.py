"""The cell masses of the MI computation for one chunk of items, in numpy: what each Spark task runs.

A cell is (a, b, part, x, y, m, s): for field pair (a, b) (a == b: the diagonal), part JOINT with values
(x, y), or MARGINAL_A / MARGINAL_B with value x (y = 0); m is the mass the chunk's items give it. Cells
with x = y = LOCAL hold, in s, the summed m ln m of cells that each belong to one item (pairs with a
field whose every value is held by one item, such as the id): those are complete where they are made.
Summing m (and s) per cell over all chunks gives the masses of docs/stats.md, whatever the chunking.

This module imports only numpy, pyarrow and one constant of towerssl.indices, and is pickled by value into
the Spark tasks (the constant travels as its value), so executors need no towerssl install.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from towerssl.indices import FIRST_VALUE

JOINT, MARGINAL_A, MARGINAL_B = 0, 1, 2
LOCAL = 0  # cell key x = y = LOCAL: the closed-form sums of one-item cells (never a value)
CHUNK_ROWS = 524_288  # items per numpy pass: bounds a chunk's memory, large enough to pre-sum cells well
SCHEMA = pa.schema([("a", pa.int32()), ("b", pa.int32()), ("part", pa.int32()), ("x", pa.int32()), ("y", pa.int32()), ("m", pa.float64()), ("s", pa.float64())])
SPARK_SCHEMA = "a int, b int, part int, x int, y int, m double, s double"
WEIGHT = "__weight"  # the input column holding w_i when items are weighted
FILE_BATCH_ROWS = 65_536  # rows per batch when a task reads Parquet files itself


@dataclass(frozen=True)
class CellPlan:
    """The fields in order: name, slots (1 for single-valued), and whether each value belongs to one item."""

    names: tuple[str, ...]
    lengths: tuple[int, ...]
    unique: tuple[bool, ...]
    weighted: bool = False


class _Cells:
    """Columns of the cells made so far."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(self, a: int, b: int, part: int, x: np.ndarray, y: np.ndarray | int, m: np.ndarray, s: float | None = None) -> None:
        n = len(m)
        if n == 0:
            return
        self.parts.append((
            np.full(n, a, np.int32), np.full(n, b, np.int32), np.full(n, part, np.int32), np.asarray(x, np.int32),
            np.broadcast_to(np.asarray(y, np.int32), (n,)), np.asarray(m, np.float64), np.full(n, np.nan if s is None else s),
        ))

    def local(self, a: int, b: int, part: int, weight: np.ndarray, divisor: np.ndarray) -> None:
        """One cell holding the items' one-item cells: total mass w, sum of m ln m = sum w ln(w / divisor)."""
        if len(weight):
            self.add(a, b, part, np.array([LOCAL]), LOCAL, np.array([weight.sum()]), float((weight * np.log(weight / divisor)).sum()))

    def batch(self) -> pa.RecordBatch:
        columns = [np.concatenate(c) for c in zip(*self.parts)] if self.parts else [np.empty(0)] * len(SCHEMA)
        arrays = [pa.array(column, type=field.type, from_pandas=True) for column, field in zip(columns, SCHEMA)]  # NaN s -> null
        return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


def _sum_by(keys: np.ndarray, mass: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct non-negative keys and their summed (positive) masses: counting when the key range is
    small next to the number of keys, sorting otherwise."""
    if keys.size == 0:
        return keys, mass
    span = int(keys.max()) + 1
    if span <= max(4 * keys.size, 1 << 16):
        sums = np.bincount(keys, mass, minlength=span)
        distinct = np.flatnonzero(sums)  # every mass is > 0, so a zero sum is an absent key
        return distinct, sums[distinct]
    distinct, inverse = np.unique(keys, return_inverse=True)
    return distinct, np.bincount(inverse, mass, minlength=len(distinct))


def valid_values(values: np.ndarray) -> np.ndarray:
    """(N, L) values with 0 where a slot is not a valid value (< FIRST_VALUE) or repeats an earlier slot."""
    valid = np.where(values >= FIRST_VALUE, values, 0).astype(np.int64)
    for j in range(1, valid.shape[1]):
        for i in range(j):
            valid[valid[:, j] == valid[:, i], j] = 0
    return valid


def chunk_cells(values: list[np.ndarray], weight: np.ndarray, plan: CellPlan) -> pa.RecordBatch:
    """The cells of a chunk: values[f] is field f's (N, L_f) int array, weight the items' w_i (all > 0)."""
    valid = [valid_values(v) for v in values]
    counts = [(v > 0).sum(axis=1).astype(np.float64) for v in valid]
    cells = _Cells()

    def marginal(a: int, b: int, part: int, f: int, eligible: np.ndarray) -> None:
        w, count = weight[eligible], counts[f][eligible]
        if plan.unique[f]:
            cells.local(a, b, part, w, count)
            return
        slots = valid[f][eligible]
        present = slots > 0
        x, m = _sum_by(slots[present], np.broadcast_to((w / count)[:, None], slots.shape)[present])
        cells.add(a, b, part, x, LOCAL, m)

    for a in range(len(plan.names)):
        marginal(a, a, MARGINAL_A, a, counts[a] > 0)  # the diagonal: H(field a)
        for b in range(a + 1, len(plan.names)):
            eligible = (counts[a] > 0) & (counts[b] > 0)
            if plan.unique[a] or plan.unique[b]:
                cells.local(a, b, JOINT, weight[eligible], counts[a][eligible] * counts[b][eligible])
                marginal(a, b, MARGINAL_A, a, eligible)
                marginal(a, b, MARGINAL_B, b, eligible)
                continue
            slots_a, slots_b = valid[a][eligible], valid[b][eligible]
            mass = weight[eligible] / (counts[a][eligible] * counts[b][eligible])
            span_b = int(slots_b.max(initial=0)) + 1  # joint key x * span_b + y (< 2^62: values are ints)
            keys, masses = [], []
            for i in range(slots_a.shape[1]):
                for j in range(slots_b.shape[1]):
                    both = (slots_a[:, i] > 0) & (slots_b[:, j] > 0)
                    keys.append(slots_a[both, i] * span_b + slots_b[both, j])
                    masses.append(mass[both])
            key, m = _sum_by(np.concatenate(keys), np.concatenate(masses))
            x, y = np.divmod(key, span_b)
            cells.add(a, b, JOINT, x, y, m)
            for part, value in ((MARGINAL_A, x), (MARGINAL_B, y)):  # the pair's marginals, from its joint
                distinct, mass_of = _sum_by(value, m)
                cells.add(a, b, part, distinct, LOCAL, mass_of)
    return cells.batch()


def table_values(table: pa.Table, plan: CellPlan) -> tuple[list[np.ndarray], np.ndarray]:
    """Field values as (N, L_f) int64 arrays (nulls and missing slots 0) and the weights, rows with w <= 0 dropped."""
    values = []
    for name, length in zip(plan.names, plan.lengths):
        column = table.column(name).combine_chunks()
        if pa.types.is_list(column.type):
            values.append(_padded(column, length, name))
        else:
            values.append(column.fill_null(0).to_numpy().astype(np.int64).reshape(-1, 1))
    weight = table.column(WEIGHT).fill_null(0).to_numpy().astype(np.float64) if plan.weighted else np.ones(table.num_rows)
    keep = weight > 0
    return [v[keep] for v in values], weight[keep]


def _padded(column: pa.ListArray, length: int, name: str) -> np.ndarray:
    sizes = column.value_lengths().fill_null(0).to_numpy()
    if sizes.size and sizes.max() > length:
        raise ValueError(f"items.{name}: a row holds {sizes.max()} values, more than the field's length {length} in table fields")
    flat = column.flatten().fill_null(0).to_numpy().astype(np.int64)
    row = np.repeat(np.arange(len(column)), sizes)
    slot = np.arange(len(flat)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    padded = np.zeros((len(column), length), np.int64)
    padded[row, slot] = flat
    return padded


def cell_batches(batches: Iterator[pa.RecordBatch], plan: CellPlan, chunk_rows: int = CHUNK_ROWS) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: the cells of the task's items, one numpy pass per chunk of up to chunk_rows items."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        pending.append(batch)
        rows += batch.num_rows
        if rows >= chunk_rows:
            yield chunk_cells(*table_values(pa.Table.from_batches(pending), plan), plan)
            pending, rows = [], 0
    if rows:
        yield chunk_cells(*table_values(pa.Table.from_batches(pending), plan), plan)


# --------------------------------------------------------------------------------- the cross-task sums
# Spark only moves the cells: each task packs its cells into one Arrow blob per reducer (a cell's
# reducer is a hash of its full key, so every distinct cell meets all its parts in one reducer), Spark
# shuffles those few binary records (as an RDD keyed by reducer: no Arrow batch holds them all, so no
# 2 GiB vector limit), and each reducer sums its cells and their m ln m per pair with numpy.
BLOB_SPARK_SCHEMA = "r int, cells binary"
SUMS_SCHEMA = pa.schema([("a", pa.int32()), ("b", pa.int32()), ("n", pa.float64()), ("s_ab", pa.float64()), ("s_a", pa.float64()), ("s_b", pa.float64())])


def reducer_of(batch: pa.RecordBatch, reducers: int) -> np.ndarray:
    """Each cell's reducer in 0..reducers-1, a hash of (a, b, part, x, y): the same in every task."""
    key = np.zeros(batch.num_rows, np.uint64)
    for name in ("a", "b", "part", "x", "y"):
        key = (key ^ batch.column(name).to_numpy().astype(np.uint64)) * np.uint64(0x100000001B3)  # FNV-style mixing
    key ^= key >> np.uint64(29)
    return ((key * np.uint64(0xBF58476D1CE4E5B9)) >> np.uint64(40)) % np.uint64(reducers)


def reducer_blobs(batches: Iterator[pa.RecordBatch], plan: CellPlan, reducers: int, chunk_rows: int = CHUNK_ROWS) -> list[tuple[int, bytes]]:
    """The cells of a task's items (cell_batches), packed into one Arrow IPC blob per reducer: (reducer, blob)."""
    made = [b for b in cell_batches(batches, plan, chunk_rows) if b.num_rows]
    if not made:
        return []
    cells = pa.Table.from_batches(made, schema=SCHEMA).combine_chunks().to_batches()[0]
    target = reducer_of(cells, reducers)
    order = np.argsort(target, kind="stable")
    bounds = np.searchsorted(target[order], np.arange(reducers + 1))
    return [(r, cells.take(pa.array(order[bounds[r]:bounds[r + 1]])).serialize().to_pybytes())
            for r in range(reducers) if bounds[r + 1] > bounds[r]]


def cell_blobs(batches: Iterator[pa.RecordBatch], plan: CellPlan, reducers: int, chunk_rows: int = CHUNK_ROWS) -> Iterator[pa.RecordBatch]:
    """mapInArrow body of the map side over a DataFrame's items: reducer_blobs as one (r, cells) batch."""
    blobs = reducer_blobs(batches, plan, reducers, chunk_rows)
    if blobs:
        rs, data = zip(*blobs)
        yield pa.RecordBatch.from_arrays([pa.array(rs, pa.int32()), pa.array(data, pa.binary())], names=["r", "cells"])


def file_blobs(splits: Iterator[tuple[str, int, int]], plan: CellPlan, reducers: int, chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[int, bytes]]:
    """mapPartitions body of the map side reading Parquet files itself (no JVM scan, no Arrow transfer from
    the JVM): a split (uri, part, parts) is the file's row groups part, part + parts, part + 2 parts, ..."""
    if plan.weighted:
        raise ValueError("file_blobs reads the fields only: weighted items come through cell_blobs")

    def batches() -> Iterator[pa.RecordBatch]:
        for uri, part, parts in splits:
            filesystem, path = pafs.FileSystem.from_uri(uri)
            with filesystem.open_input_file(path) as source:
                parquet = pq.ParquetFile(source)
                groups = list(range(part, parquet.num_row_groups, parts))
                if groups:
                    yield from parquet.iter_batches(batch_size=FILE_BATCH_ROWS, row_groups=groups, columns=list(plan.names))

    yield from reducer_blobs(batches(), plan, reducers, chunk_rows)


def pair_sums(cells: pa.Table) -> pa.RecordBatch:
    """Per pair (a, b) present: n = the MARGINAL_A mass, and sum m ln m over the distinct cells of the
    joint (s_ab) and of each marginal (s_a, s_b), the cells' m summed over all their rows first (LOCAL cells
    add their s). Partial when `cells` is one reducer's share: the shares add up."""
    a, b, part = (cells.column(name).to_numpy().astype(np.int64) for name in ("a", "b", "part"))
    x, y = (cells.column(name).to_numpy().astype(np.int64) for name in ("x", "y"))
    m = cells.column("m").to_numpy()
    s = cells.column("s").fill_null(0.0).to_numpy()
    group = (a << 32 | b) * 3 + part
    order = np.argsort(group, kind="stable")
    group, starts = np.unique(group[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    sums: dict[tuple[int, int], list[float]] = {}
    for g, start, end in zip(group.tolist(), starts.tolist(), ends.tolist()):
        rows = order[start:end]
        pair, p = divmod(g, 3)
        gx, gy, gm = x[rows], y[rows], m[rows]
        local = (gx == LOCAL) & (gy == LOCAL)
        key = gx[~local] * (int(gy.max()) + 1) + gy[~local]
        _, masses = _sum_by(key, gm[~local])
        total = sums.setdefault((pair >> 32, pair & 0xFFFFFFFF), [0.0, 0.0, 0.0, 0.0])
        total[1 + p] += float((masses * np.log(masses)).sum() + s[rows][local].sum())  # JOINT, MARGINAL_A, MARGINAL_B: 0, 1, 2
        if p == MARGINAL_A:
            total[0] += float(gm.sum())
    pairs = sorted(sums)
    columns = [[p[0] for p in pairs], [p[1] for p in pairs]] + [[sums[p][i] for p in pairs] for i in range(4)]
    return pa.RecordBatch.from_arrays([pa.array(c, f.type) for c, f in zip(columns, SUMS_SCHEMA)], schema=SUMS_SCHEMA)


def reducer_partition(r: int) -> int:
    return r  # the partitioner of the blob shuffle: reducer r is partition r, no two reducers share a task


def sum_blobs(blobs: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, int, float, float, float, float]]:
    """mapPartitions body of the reduce side: (a, b, n, s_ab, s_a, s_b) over all cells of the (r, blob)
    pairs it receives."""
    parts = [pa.ipc.read_record_batch(pa.py_buffer(blob), SCHEMA) for _, blob in blobs]
    if parts:
        for row in pair_sums(pa.Table.from_batches(parts, schema=SCHEMA)).to_pylist():
            yield tuple(row.values())
