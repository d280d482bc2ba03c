"""The spark-submit entry points jobs/etl.py and jobs/stats.py, run through the real spark-submit script of the
project environment in local[2] mode, exactly as a cluster runs them (only --master and the jars differ)."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from towerssl.lake import read_table
from towerssl.spark import DELTA_PACKAGES, delta_jars

REPO = Path(__file__).resolve().parents[1]
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"  # pyspark's script in the project environment
USERS, ITEMS, CLICKS = 200, 150, 5_000
SPARK_LOG_LINE = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d (INFO|WARN) ")


def spark_submit(job: str, *args: str | Path) -> subprocess.CompletedProcess:
    """spark-submit --master local[2] jobs/<job>.py ARGS, with this environment's Python and the Delta jars."""
    jars = delta_jars()
    delta = ["--jars", ",".join(jars)] if jars else ["--packages", ",".join(DELTA_PACKAGES)]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    command = [str(SPARK_SUBMIT), "--master", "local[2]", "--conf", "spark.ui.enabled=false", *delta, str(REPO / "jobs" / f"{job}.py"), *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


def job_output(done: subprocess.CompletedProcess) -> str:
    """What the job itself printed (spark-submit merges the Python driver's stderr into its stdout), without
    Spark's INFO/WARN log lines."""
    lines = (done.stdout + done.stderr).splitlines()
    return "\n".join(line for line in lines if not SPARK_LOG_LINE.match(line))


def csv_rows(directory: Path) -> int:
    """Data rows of a raw-layout CSV input (every part file has a header)."""
    total = 0
    for part in sorted(directory.glob("*.csv")):
        with part.open(newline="") as handle:
            total += sum(1 for _ in csv.reader(handle)) - 1
    return total


@pytest.fixture(scope="module")
def submitted_lake(tmp_path_factory) -> tuple[Path, Path]:
    """Tiny synthetic raw data, then the ETL and the statistics job through spark-submit; (raw, lake)."""
    from towerssl.etl.generate import generate

    root = tmp_path_factory.mktemp("spark-submit")
    raw, lake = root / "raw", root / "lake"
    generate(raw, users=USERS, items=ITEMS, clicks=CLICKS, seed=1)
    for job, args in (("etl", ["--input", raw, "--lake", lake]), ("stats", ["--lake", lake])):
        done = spark_submit(job, *args)
        assert done.returncode == 0, f"spark-submit jobs/{job}.py failed ({done.returncode}):\n{job_output(done)[-6000:]}"
    return raw, lake


def test_etl_job_writes_every_raw_row_to_the_lake(spark, submitted_lake):
    raw, lake = submitted_lake
    assert read_table(spark, lake, "rejects").count() == 0  # the generator writes valid rows only
    assert read_table(spark, lake, "items").count() == csv_rows(raw / "items") == ITEMS
    assert read_table(spark, lake, "users").count() == csv_rows(raw / "users") == USERS
    clicks = sum(read_table(spark, lake, split).count() for split in ("train_clicks", "valid_clicks", "test_clicks"))
    assert clicks == csv_rows(raw / "interactions") == CLICKS


def test_stats_job_writes_popularity_and_mi_of_every_item_field_pair(spark, submitted_lake):
    _, lake = submitted_lake
    stats = read_table(spark, lake, "item_stats").agg(F.count("*").alias("items"), F.sum("clicks").alias("clicks"), F.sum("p").alias("p")).first()
    assert stats["items"] == ITEMS
    assert stats["clicks"] == read_table(spark, lake, "train_clicks").count()
    assert stats["p"] == pytest.approx(1.0)
    fields = [row["field"] for row in read_table(spark, lake, "fields").where("owner = 'item'").collect()]
    pairs = {(row["field_a"], row["field_b"]) for row in read_table(spark, lake, "feature_mi").collect()}
    assert pairs == {(a, b) for a in fields for b in fields}


def test_a_user_error_exits_2_through_spark_submit(tmp_path):
    """Schedulers see the job's own exit status: a lake without a complete ETL run fails the task with status 2
    and says so."""
    done = spark_submit("stats", "--lake", tmp_path / "no-lake")
    output = job_output(done)
    assert done.returncode == 2, output[-6000:]
    assert f"towerssl stats: error: lake {tmp_path / 'no-lake'} holds no complete ETL run" in output
