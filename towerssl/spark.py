"""The one SparkSession factory every job and test uses.

Delta is always enabled. Outside spark-submit the Delta jars come from the directory that `make setup`
fills (TOWERSSL_JARS_DIR); if it is missing, Spark resolves the same Maven coordinates itself. Under
spark-submit (or on a cluster) the caller's --jars/--packages and --master win: nothing local is baked in.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

# The connector's jars must match the delta-spark Python package, whose version requirements.lock pins (the
# Makefile fetches the jars of that version): one source. Spark 4 is built for Scala 2.13 only. A driver that
# spark-submit gave the connector (--packages puts its Python module on the path) may lack the package: it
# needs no version here.
try:
    DELTA_VERSION = version("delta-spark")
except PackageNotFoundError:
    DELTA_VERSION = ""
DELTA_PACKAGES = (f"io.delta:delta-spark_2.13:{DELTA_VERSION}", f"io.delta:delta-storage:{DELTA_VERSION}")

_DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    # Deterministic output and sane defaults for small local machines; all overridable.
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "8",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.ui.showConsoleProgress": "false",
    # The ETL's plans are long; rendering them whole for the UI and AQE logs has exhausted a 1 GiB driver.
    "spark.sql.maxPlanStringLength": "100000",
    # The jobs run independent steps in threads, each in its own scheduler pool (scheduler_pool): FAIR shares
    # the cores between them, where FIFO would give them all to the first job submitted.
    "spark.scheduler.mode": "FAIR",
    # Every table write commits, also an empty table replacing an empty one (a run without rejects): Delta
    # skips such commits by default, and the table's latest commit would then name an earlier run, which the
    # run record (towerssl/runs.py) refuses to record.
    "spark.databricks.delta.skipRecordingEmptyCommits": "false",
    # Spark 4 turns ANSI SQL mode on by default; the ETL's validation is written for the non-ANSI semantics
    # (Spark 3's default): a cast of a bad raw string, or of a number too long for a long, gives null, which the
    # checks turn into a reject with its reason, where ANSI mode would fail the whole job. Set in every session
    # this factory makes, under spark-submit too (jobs/*.py, the Airflow DAG), so the jobs behave alike everywhere.
    "spark.sql.ansi.enabled": "false",
}
# Only where this process starts the JVM (not under spark-submit, which sets its own): Spark's 1g default
# is too small for the ETL's joins and windows even on MovieLens-sized data.
_LOCAL_DRIVER_MEMORY = os.environ.get("TOWERSSL_DRIVER_MEMORY", "4g")


def _launched_by_spark_submit() -> bool:
    """spark-submit starts the JVM first and hands Python its gateway port."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def delta_jars() -> list[str]:
    """Jar paths from TOWERSSL_JARS_DIR (filled by `make setup`), or [] if they are not there."""
    jar_dir = Path(os.environ.get("TOWERSSL_JARS_DIR", Path.home() / ".cache/towerssl/jars" / f"delta-{DELTA_VERSION}"))
    jars = sorted(str(p) for p in jar_dir.glob("delta-*.jar"))
    return jars if len(jars) == len(DELTA_PACKAGES) else []


def spark_session(app_name: str = "towerssl", master: str | None = None, conf: dict[str, str] | None = None) -> SparkSession:
    """Get or create the SparkSession with Delta enabled.

    master: None keeps what spark-submit set, else local[*]. conf: extra or overriding Spark settings.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # Python workers run in this environment
    builder = SparkSession.builder.appName(app_name)
    if master or not _launched_by_spark_submit():
        builder = builder.master(master or os.environ.get("TOWERSSL_SPARK_MASTER", "local[*]"))
    settings = dict(_DELTA_CONF)
    if not _launched_by_spark_submit():
        jars = delta_jars()
        settings["spark.driver.memory"] = _LOCAL_DRIVER_MEMORY
        if jars:
            settings["spark.jars"] = ",".join(jars)
        elif not DELTA_VERSION:
            raise RuntimeError("delta-spark is not installed: install the project's spark extra (or `make setup`)")
        else:
            settings["spark.jars.packages"] = ",".join(DELTA_PACKAGES)
    settings.update(conf or {})
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    # The jobs log their own progress and counts; Spark's WARNs (e.g. the documented single-partition
    # windows over item and timestamp ranks) would drown them. TOWERSSL_SPARK_LOG_LEVEL=WARN brings them back.
    session.sparkContext.setLogLevel(os.environ.get("TOWERSSL_SPARK_LOG_LEVEL", "ERROR"))
    return session


def scheduler_pool(spark: SparkSession, name: str) -> None:
    """Put the calling thread's Spark jobs in the scheduler pool `name` (created on first use, FIFO inside):
    under FAIR scheduling, concurrent threads in different pools share the cores."""
    spark.sparkContext.setLocalProperty("spark.scheduler.pool", name)


BROADCAST_ROWS = 2_000_000  # frames up to this many rows (id sets, id maps, vocabularies) are broadcast to every task


def broadcast_if_small(df: DataFrame, rows: int | None = None) -> DataFrame:
    """The frame with a broadcast hint when it is small enough to send to every task (rows: its known
    row count, else counted here): joins with it then shuffle neither side."""
    return F.broadcast(df) if (df.count() if rows is None else rows) <= BROADCAST_ROWS else df
