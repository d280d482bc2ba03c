"""Reading and writing the Delta tables of a lake directory (LAKE_DIR/<table>).

The Spark functions serve the ETL and statistics jobs; the snapshot reader serves both sides. pyspark is
imported only for type checking, so the training side (towerssl.delta_rs) imports this module without it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from towerssl.errors import UsageError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


class MissingTableError(UsageError, FileNotFoundError):
    """A Delta table a stage needs is not in the lake."""


def table_path(lake: str | Path, table: str) -> str:
    return str(Path(lake) / table) if "://" not in str(lake) else f"{str(lake).rstrip('/')}/{table}"


HADOOP_S3 = ("s3a://", "s3n://")  # Hadoop's names for S3, which Spark needs and delta-rs and pyarrow do not know


def rs_table_path(lake: str | Path, table: str) -> str:
    """table_path for delta-rs and pyarrow: an s3a:// (or s3n://) lake is the same objects as s3://, so the
    lake URI a user gives the Spark jobs also works for the run record and the training side."""
    lake = str(lake)
    for scheme in HADOOP_S3:
        if lake.startswith(scheme):
            lake = "s3://" + lake[len(scheme):]
    return table_path(lake, table)


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
    (
        df.write.format("delta")
        .mode("overwrite")
        .option("overwriteSchema", "true")
        .option("userMetadata", commit_record(run_id, config))
        .save(table_path(lake, table))
    )


def commit_record(run_id: str, config: dict[str, Any]) -> str:
    """The userMetadata of every commit the project makes (Spark or delta-rs): the run id and its config."""
    return json.dumps({"run_id": run_id, "config": config}, sort_keys=True, default=str)


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


def read_snapshot(snapshot: Snapshot, columns: list[str] | None = None, rerun: str | None = None) -> pa.Table:
    """The snapshot's data files as one pyarrow Table, without Spark (the trainer reads tables this way).

    Files go through pyarrow's own file systems (local, s3://, gs://, hdfs://). A file that cannot be read
    (truncated, not Parquet, gone) is a UsageError naming the file and the table and saying to re-run
    `towerssl <rerun>`, the step that wrote it.
    """
    if not snapshot.files:
        raise MissingTableError(f"Delta table {snapshot.path} version {snapshot.version} has no data files")
    filesystem = pafs.FileSystem.from_uri(snapshot.files[0])[0]
    paths = [pafs.FileSystem.from_uri(f)[1] for f in snapshot.files]
    try:
        return ds.dataset(paths, format="parquet", filesystem=filesystem).to_table(columns=columns)
    except (pa.ArrowInvalid, OSError):
        for url, path in zip(snapshot.files, paths):  # find the file to name (only on this error path)
            try:
                ds.dataset([path], format="parquet", filesystem=filesystem).to_table(columns=columns)
            except (pa.ArrowInvalid, OSError) as error:
                # pyarrow's message nests "context: context: cause"; the cause is what the user needs
                reason = "no such file" if isinstance(error, FileNotFoundError) else str(error).strip().splitlines()[0].rsplit(": ", 1)[-1]
                step = f"`towerssl {rerun}`, the step that wrote it" if rerun else "the step that wrote it"
                raise UsageError(
                    f"table {Path(snapshot.path).name} (version {snapshot.version}): data file {url} cannot be read ({reason}); re-run {step}"
                ) from error
        raise


def dense_order(table, index: str, name: str, rerun: str, expected: int | None = None):
    """Row order that sorts a pyarrow table by its dense index column, which must hold each of 0..n-1 once
    (n = `expected`, else the row count); otherwise a one-line error naming the table and the job to rerun."""
    values = table.column(index).to_numpy()
    n = len(values) if expected is None else expected
    order = np.argsort(values, kind="stable")
    if len(values) != n or not np.array_equal(values[order], np.arange(n)):
        raise UsageError(f"table {name}: {index} is not each of 0..{n - 1} once ({len(values)} rows); rerun `towerssl {rerun}`")
    return order
