"""The lake through delta-rs (the `deltalake` package): how the training side pins, lists and writes Delta
tables without Spark or a JVM.

Why not Spark: a training node should need Python, torch and the data reader, not Java; and pinning a few
tables' versions through a SparkSession cost a minute of start-up. Arrow data crosses into delta-rs by the
Arrow C stream interface, so pyarrow 14 (held by Petastorm) works beside it.

Remote lakes (s3://, gs://, abfss://) are passed to delta-rs unchanged; it takes credentials from the
environment (AWS_*, GOOGLE_*, AZURE_STORAGE_*: see docs/feed.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from towerssl.lake import MissingTableError, Snapshot, commit_record, rs_table_path
from towerssl.runs import committed_versions


def open_table(lake: str | Path, table: str, version: int | None = None) -> DeltaTable:
    """The Delta table LAKE/<table> at `version` (latest if None); MissingTableError when there is none."""
    path = rs_table_path(lake, table)
    try:
        return DeltaTable(path, version=version)
    except TableNotFoundError as error:
        raise MissingTableError(f"no Delta table at {path}") from error


def pinned_versions(lake: str | Path, tables: Iterable[str]) -> dict[str, int]:
    """The version of each table a run reads: the one its lake's last complete ETL and stats runs committed
    (towerssl.runs), never a table's latest, which a crashed re-run may have written. A lake whose tables do
    not form one run is refused with one line saying which job to re-run."""
    committed = committed_versions(lake).versions
    return {table: committed[table] for table in tables}


def snapshot(lake: str | Path, table: str, version: int | None = None) -> Snapshot:
    """The data files of one table version (latest if None), as URLs Petastorm and pyarrow open. Never the
    raw directory listing: it also holds files that earlier versions removed."""
    delta = open_table(lake, table, version)
    files = tuple(sorted(uri if "://" in uri else Path(uri).as_uri() for uri in delta.file_uris()))
    return Snapshot(path=rs_table_path(lake, table), version=delta.version(), files=files)


def pin(lake: str | Path, tables: Iterable[str]) -> dict[str, Snapshot]:
    """Each table's snapshot at its pinned version."""
    return {table: snapshot(lake, table, version) for table, version in pinned_versions(lake, tables).items()}


def write_arrow(data: pa.Table, lake: str | Path, table: str, run_id: str, config: dict[str, Any]) -> int:
    """Overwrite LAKE/<table> with `data` in one Delta commit recording the run id and config (as Spark's
    write_table does, so Spark and delta-rs readers see the same history). Returns the new version."""
    write_deltalake(
        rs_table_path(lake, table),
        data,
        mode="overwrite",
        schema_mode="overwrite",
        commit_properties=CommitProperties(custom_metadata={"userMetadata": commit_record(run_id, config)}),
    )
    return open_table(lake, table).version()
