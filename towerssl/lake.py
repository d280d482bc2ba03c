"""Reading and writing the Delta tables of a lake directory (LAKE_DIR/<table>)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from towerssl.errors import UsageError


class MissingTableError(UsageError, FileNotFoundError):
    """A Delta table a stage needs is not in the lake."""


def table_path(lake: str | Path, table: str) -> str:
    return str(Path(lake) / table) if "://" not in str(lake) else f"{str(lake).rstrip('/')}/{table}"


def _check_exists(spark: SparkSession, path: str) -> None:
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        raise MissingTableError(f"no Delta table at {path}")


def latest_version(spark: SparkSession, path: str) -> int:
    from delta.tables import DeltaTable

    _check_exists(spark, path)
    return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


def read_table(spark: SparkSession, lake: str | Path, table: str, version: int | None = None) -> DataFrame:
    path = table_path(lake, table)
    if version is None:
        _check_exists(spark, path)  # a clear error when the table is missing (reading the history would cost a Spark job)
        return spark.read.format("delta").load(path)
    return spark.read.format("delta").option("versionAsOf", version).load(path)


def write_table(df: DataFrame, lake: str | Path, table: str, run_id: str, config: dict[str, Any]) -> None:
    """Overwrite the table in one Delta commit that records the run id and the job config.

    A failing write commits nothing, so readers keep seeing the previous version.
    """
    metadata = json.dumps({"run_id": run_id, "config": config}, sort_keys=True, default=str)
    (
        df.write.format("delta")
        .mode("overwrite")
        .option("overwriteSchema", "true")
        .option("userMetadata", metadata)
        .save(table_path(lake, table))
    )


@dataclass(frozen=True)
class Snapshot:
    """The exact data files of one table version: what a reader outside Spark may read."""

    path: str
    version: int
    files: tuple[str, ...]


def pinned_table(spark: SparkSession, lake: str | Path, table: str, version: int | None = None) -> tuple[DataFrame, Snapshot]:
    """A table version (latest if None) as a DataFrame and as its exact file list, from one load: a job
    that reads the version through Spark and outside it sees the same rows."""
    path = table_path(lake, table)
    version = latest_version(spark, path) if version is None else version
    df = read_table(spark, lake, table, version)
    return df, Snapshot(path=path, version=version, files=tuple(sorted(df.inputFiles())))


def pinned_snapshot(spark: SparkSession, lake: str | Path, table: str, version: int | None = None) -> Snapshot:
    """The file list of a table version (latest if None). Never list the raw directory: it also holds
    files that earlier versions removed."""
    return pinned_table(spark, lake, table, version)[1]


def commit_metadata(spark: SparkSession, lake: str | Path, table: str) -> dict[str, Any]:
    """The run id and config recorded by the latest write of a table."""
    from delta.tables import DeltaTable

    path = table_path(lake, table)
    latest_version(spark, path)
    row = DeltaTable.forPath(spark, path).history(1).select("userMetadata").first()
    return json.loads(row[0]) if row and row[0] else {}


def read_snapshot(snapshot: Snapshot, columns: list[str] | None = None):
    """The snapshot's data files as one pyarrow Table, without Spark (the trainer reads tables this way)."""
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    if not snapshot.files:
        raise MissingTableError(f"Delta table {snapshot.path} version {snapshot.version} has no data files")
    filesystem = pafs.FileSystem.from_uri(snapshot.files[0])[0]
    paths = [pafs.FileSystem.from_uri(f)[1] for f in snapshot.files]
    return ds.dataset(paths, format="parquet", filesystem=filesystem).to_table(columns=columns)


def dense_order(table, index: str, name: str, rerun: str, expected: int | None = None):
    """Row order that sorts a pyarrow table by its dense index column, which must hold each of 0..n-1 once
    (n = `expected`, else the row count); otherwise a one-line error naming the table and the job to rerun."""
    import numpy as np

    values = table.column(index).to_numpy()
    n = len(values) if expected is None else expected
    order = np.argsort(values, kind="stable")
    if len(values) != n or not np.array_equal(values[order], np.arange(n)):
        raise UsageError(f"table {name}: {index} is not each of 0..{n - 1} once ({len(values)} rows); rerun `towerssl {rerun}`")
    return order
