"""The lake's commit point: the `runs` table, one row appended by each job after all of its tables committed.

Delta commits one table at a time, so a job that dies midway leaves some tables from the new run and the rest
from the last one. Each table's commit records its run id (towerssl.lake.write_table); the run record, written
last, names the version of every table the run wrote (and, for stats, the ETL run it read). Readers pin the
versions of the latest complete record instead of each table's latest version, so they see one run or refuse.
Reading the record needs only the `deltalake` package: no Spark, no JVM. docs/tables.md describes the record.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from towerssl.errors import UsageError
from towerssl.lake import rs_table_path

log = logging.getLogger(__name__)

RUNS = "runs"
JOBS = ("etl", "stats")
FAIL_AFTER_COMMITS = "TOWERSSL_FAIL_AFTER_COMMITS"  # fault injection: a job stops after its N-th table commit


class LakeStateError(UsageError):
    """The lake's tables do not form one complete run; the message says which job to re-run."""


class InjectedFault(RuntimeError):
    """Raised by a job when FAIL_AFTER_COMMITS asks it to stop, as a crash would, between two table commits."""


@dataclass(frozen=True)
class RunRecord:
    """One row of `runs`: the tables a job's run wrote, at their versions, and for stats the ETL run it read."""

    job: str
    run_id: str
    tables: dict[str, int]
    source_run_id: str | None = None
    source_tables: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Committed:
    """The table versions a reader pins: the latest complete ETL run's, plus the statistics computed from it."""

    run_id: str  # the ETL run
    stats_run_id: str | None
    versions: dict[str, int]


_VERSIONS = pa.map_(pa.string(), pa.int64())  # table -> Delta version
SCHEMA = pa.schema([
    ("job", pa.string()), ("run_id", pa.string()), ("finished_at", pa.timestamp("us", tz="UTC")),
    ("tables", _VERSIONS), ("source_run_id", pa.string()), ("source_tables", _VERSIONS),
])


def latest_record(lake: str | Path, job: str) -> RunRecord | None:
    """The last record of `job` in the lake's runs table (None when the lake has none)."""
    try:
        rows = DeltaTable(rs_table_path(lake, RUNS)).to_pyarrow_table().to_pylist()
    except TableNotFoundError:
        return None
    rows = sorted((r for r in rows if r["job"] == job), key=lambda r: r["finished_at"])
    if not rows:
        return None
    last = rows[-1]
    return RunRecord(job, last["run_id"], dict(last["tables"]), last["source_run_id"], dict(last["source_tables"] or []))


def committed_versions(lake: str | Path, stats: bool = True) -> Committed:
    """The versions a reader of the lake pins: every table of the latest complete ETL run, and (stats=True)
    item_stats and feature_mi, which must have been computed from that run. Anything else is a one-line
    LakeStateError saying which job to re-run."""
    if "://" not in str(lake) and Path(lake).exists() and not Path(lake).is_dir():
        raise LakeStateError(f"lake {lake} is a file, not a lake directory")
    etl = latest_record(lake, "etl")
    if etl is None:
        raise LakeStateError(f"lake {lake} holds no complete ETL run (no `etl` record in its {RUNS} table): re-run `towerssl etl --lake {lake}`")
    _check_written(lake, etl)
    versions = dict(etl.tables)
    stats_run_id = None
    if stats:
        computed = latest_record(lake, "stats")
        if computed is None:
            raise LakeStateError(f"lake {lake} has no statistics for its ETL run {etl.run_id}: run `towerssl stats --lake {lake}`")
        if computed.source_run_id != etl.run_id:
            raise LakeStateError(f"lake {lake}: the statistics come from ETL run {computed.source_run_id}, but the last complete ETL run is {etl.run_id}: re-run `towerssl stats --lake {lake}`")
        _check_written(lake, computed)
        versions |= computed.tables
        stats_run_id = computed.run_id
    return Committed(etl.run_id, stats_run_id, versions)


def _check_written(lake: str | Path, record: RunRecord) -> None:
    """Each table's pinned version must be the commit of the recorded run (else the lake was altered since)."""
    for table, version in record.tables.items():
        if _commit(lake, table, version) != (version, record.run_id):
            raise LakeStateError(f"lake {lake}: table {table} version {version} was not written by {record.job} run {record.run_id} (the lake changed after that run): re-run `towerssl {record.job} --lake {lake}`")


def _commit(lake: str | Path, table: str, version: int | None = None) -> tuple[int, str | None] | None:
    """(version, recorded run id) of a table's commit `version` (the latest if None); None if there is none."""
    try:
        delta = DeltaTable(rs_table_path(lake, table))
    except TableNotFoundError:
        return None
    latest = delta.version()
    version = latest if version is None else version
    if version > latest:
        return None
    commit = next((c for c in delta.history(latest - version + 1) if c.get("version") == version), {})
    return version, json.loads(commit.get("userMetadata") or "{}").get("run_id")


class RunRecorder:
    """A job's side of the record: told of each table commit, it appends the run record once all are done.

    Setting the environment variable TOWERSSL_FAIL_AFTER_COMMITS=N makes the job raise InjectedFault right after
    its N-th table commit, as a crash there would leave the lake (the crash-safety tests use it)."""

    def __init__(self, lake: str | Path, job: str, run_id: str, source: Committed | None = None) -> None:
        if job not in JOBS:
            raise ValueError(f"job must be one of {JOBS}, got {job!r}")
        self.lake, self.job, self.run_id, self.source = lake, job, run_id, source
        self.tables: list[str] = []
        self._lock = threading.Lock()
        self._fail_after = int(os.environ.get(FAIL_AFTER_COMMITS) or 0)

    def committed(self, table: str) -> None:
        """Call right after `table`'s commit (from any writer thread)."""
        with self._lock:
            self.tables.append(table)
            count = len(self.tables)
        if count == self._fail_after:
            raise InjectedFault(f"{FAIL_AFTER_COMMITS}={self._fail_after}: {self.job} run {self.run_id} stops after committing {table}")

    def finish(self) -> RunRecord:
        """Append the run record: the commit point of the run. Every table told of must still be at this run's
        commit (another job writing the same lake meanwhile is an error, and nothing is recorded)."""
        versions = {}
        for table in sorted(self.tables):
            commit = _commit(self.lake, table)
            if commit is None or commit[1] != self.run_id:
                raise RuntimeError(f"table {table}: its latest commit is not from {self.job} run {self.run_id}: did another job write the lake meanwhile?")
            versions[table] = commit[0]
        record = RunRecord(self.job, self.run_id, versions,
                           self.source.run_id if self.source else None, dict(self.source.versions) if self.source else {})
        row = {
            "job": record.job, "run_id": record.run_id, "finished_at": datetime.datetime.now(datetime.timezone.utc),
            "tables": list(record.tables.items()), "source_run_id": record.source_run_id, "source_tables": list(record.source_tables.items()),
        }
        write_deltalake(rs_table_path(self.lake, RUNS), pa.Table.from_pylist([row], schema=SCHEMA), mode="append")
        log.info("%s run %s recorded in %s: %s", self.job, self.run_id, RUNS, json.dumps(record.tables, sort_keys=True))
        return record
