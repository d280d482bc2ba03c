"""bench/bench_model.py --sweep runs where the lead runs it: torch, numpy and the model package, no Spark, Petastorm or pyarrow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Runs a script with pyspark, pyarrow and petastorm unimportable, as on the GPU machine.
WITHOUT_SPARK = """
import runpy, sys

class NotOnTheGpuMachine:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"pyspark", "pyarrow", "petastorm"}:
            raise ImportError(f"{name} is not installed on the GPU machine")
        return None

sys.meta_path.insert(0, NotOnTheGpuMachine())
script, sys.argv = sys.argv[1], sys.argv[1:]
if script == "-":
    exec(sys.argv[1])
else:
    runpy.run_path(script, run_name="__main__")
"""


def run_without_spark(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_SPARK, *args], cwd=REPO, capture_output=True, text=True, timeout=400)


def test_the_blocker_blocks():
    result = run_without_spark("-", "import pyarrow")
    assert result.returncode != 0 and "not installed on the GPU machine" in result.stderr


@pytest.mark.slow
def test_quick_sweep_runs_without_spark_and_writes_every_row(tmp_path):
    result = run_without_spark("bench/bench_model.py", "--sweep", "--quick", "--steps", "1", "--warmup", "0", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "bench_model_sweep.json").read_text())
    labels = [row["label"] for row in report["rows"]]
    assert len(labels) == 8 and all(label in result.stdout for label in labels)  # each row printed
    for row in report["rows"]:
        assert "error" not in row, row
        assert row["ms_per_step"] > 0 and row["main_examples_per_s"] > 0 and row["model_over_bare"] > 0
        assert row["new_loss_ms"] > 0
    assert "old_loss_ms" in report["rows"][0]  # the dense loss where it is cheap
    assert report["rows"][5]["corpus_items"] == 10_000  # the 10M-item row, scaled down
