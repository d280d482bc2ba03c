"""Shared fixtures: one real local SparkSession (with Delta) for the whole test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
# One torch thread per process (children inherit it): tiny test models run faster, and the Spark JVM beside
# them keeps a core. In-process and subprocess training then also use the same kernels.
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def spark():
    from towerssl.spark import spark_session

    session = spark_session(
        "towerssl-tests",
        master="local[2]",
        conf={"spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "4", "spark.ui.enabled": "false"},
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def shared_dataset(name: str) -> Path:
    """Path to ../shared/datasets/<name>, or skip the test with the reason."""
    path = SHARED_DATASETS / name
    if not path.exists():
        pytest.skip(f"real dataset {path} is not here (../shared/datasets is missing)")
    return path


@pytest.fixture(scope="session")
def synthetic_lake(spark, tmp_path_factory):
    """The embedded synthetic dataset, small, through the real ETL and statistics jobs (shared by the tests
    of later stages). Returns the lake directory."""
    from towerssl.etl.generate import generate
    from towerssl.etl.job import EtlConfig, run_etl
    from towerssl.stats.job import StatsConfig, run_stats

    root = tmp_path_factory.mktemp("synthetic")
    generate(root / "raw", users=300, items=240, clicks=12_000, seed=7)
    run_etl(spark, EtlConfig(input=str(root / "raw"), lake=str(root / "lake"), multi_length=4))
    run_stats(spark, root / "lake", StatsConfig())
    return root / "lake"
