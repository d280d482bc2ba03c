"""What the trainer reads from the statistics tables, as numpy arrays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from towerssl.errors import UsageError
from towerssl.lake import dense_order, pinned_snapshot, read_snapshot, read_table

if TYPE_CHECKING:  # the trainer imports this module's array readers on nodes without pyspark
    from pyspark.sql import SparkSession


def mi_matrix(field_a: Sequence[str], field_b: Sequence[str], values: Sequence[float], fields: Sequence[str]) -> np.ndarray:
    """The k x k matrix of `values` given per (field_a, field_b) row, rows and columns in `fields` order."""
    position = {name: i for i, name in enumerate(fields)}
    matrix = np.full((len(fields), len(fields)), np.nan)
    for a, b, value in zip(field_a, field_b, values):
        if a in position and b in position:
            matrix[position[a], position[b]] = value
    missing = [fields[i] for i in sorted(set(np.argwhere(np.isnan(matrix)).ravel()))]
    if missing:
        raise UsageError(f"table feature_mi: no complete rows for field(s) {', '.join(missing)}; rerun `towerssl stats`")
    return matrix


def load_mi_matrix(spark: SparkSession, lake: str | Path, fields: Sequence[str], normalized: bool = True) -> np.ndarray:
    """MI between item fields as a k x k float64 array in `fields` order: nmi (default) or mi in nats."""
    column = "nmi" if normalized else "mi"
    rows = read_table(spark, lake, "feature_mi").select("field_a", "field_b", column).collect()
    return mi_matrix([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], list(fields))


def log_p_by_item(stats: pa.Table, n_items: int | None = None) -> np.ndarray:
    """log p_j as a float64 array indexed by item_idx, from item_stats' item_idx and log_p columns (every
    item_idx 0..n-1 once, else a UsageError naming the table)."""
    order = dense_order(stats, "item_idx", "item_stats", "stats", n_items)
    return stats.column("log_p").to_numpy(zero_copy_only=False)[order].astype(np.float64)


def load_log_p(spark: SparkSession, lake: str | Path, n_items: int | None = None) -> np.ndarray:
    """log p_j per item (log_p_by_item), read from item_stats' pinned data files."""
    return log_p_by_item(read_snapshot(pinned_snapshot(spark, lake, "item_stats"), ["item_idx", "log_p"], rerun="stats"), n_items)
