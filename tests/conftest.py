"""Shared fixtures: one real local SparkSession (with Delta) for the whole test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

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
