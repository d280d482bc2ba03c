"""The training side needs no Spark and no JVM: `towerssl train`, `evaluate` and `export` run on a lake the ETL
wrote, in processes where importing pyspark fails and no `java` is on PATH, and give the same model as a run
in this (Spark-capable) process. Their output, not a terminal, shows start-up and progress lines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from deltalake import DeltaTable

from towerssl.trainer import checkpoint
from towerssl.trainer.config import TrainConfig
from towerssl.trainer.train import train

STEPS = 40
BLOCKED = ("pyspark", "py4j", "delta")  # delta: delta-spark's Python module (deltalake is another package)


def config() -> TrainConfig:
    model = {"embedding_dim": 16, "hidden_dims": [32], "output_dim": 16, "ssl_batch_size": 64, "temperature": 0.1, "augmentation": "cfm", "alpha": 0.5}
    return TrainConfig(batch_size=64, max_steps=STEPS, warmup_steps=5, eval_every=20, checkpoint_every=20, log_every=10, workers=1,
                       shuffle_buffer=2048, lr=3e-3, tensorboard=False, deterministic=True, model=model)


def jvm_free_env(root: Path) -> dict[str, str]:
    """os.environ with pyspark, py4j and delta-spark unimportable and PATH holding only the interpreter's dir."""
    blocker = root / "blocked"
    for name in BLOCKED:
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked: the training side must not import it')\n")
    env = {k: v for k, v in os.environ.items() if k not in {"JAVA_HOME", "SPARK_HOME", "PYSPARK_PYTHON"}}
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["PATH"] = str(Path(sys.executable).parent)
    return env


def towerssl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "towerssl.cli", *args], env=env, capture_output=True, text=True, timeout=540)


@pytest.fixture(scope="module")
def jvm_free_run(synthetic_lake, tmp_path_factory):
    """train, evaluate and export in JVM-free subprocesses; returns (run dir, {command: CompletedProcess})."""
    root = tmp_path_factory.mktemp("no_jvm")
    env = jvm_free_env(root)
    (root / "config.yaml").write_text(yaml.safe_dump({"train": config().to_dict()}))
    run = root / "run"
    results = {"train": towerssl(env, "train", "--lake", str(synthetic_lake), "--run", str(run), "--config", str(root / "config.yaml"))}
    results["evaluate"] = towerssl(env, "evaluate", "--run", str(run))
    results["export"] = towerssl(env, "export", "--run", str(run))
    return run, env, results


def test_the_environment_has_no_pyspark_and_no_java(jvm_free_run):
    _, env, _ = jvm_free_run
    assert shutil.which("java", path=env["PATH"]) is None
    probe = subprocess.run([sys.executable, "-c", "import pyspark"], env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode != 0 and "pyspark is blocked" in probe.stderr


def test_train_evaluate_export_succeed_without_a_jvm(jvm_free_run):
    run, _, results = jvm_free_run
    for command, result in results.items():
        assert result.returncode == 0, f"{command}:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == STEPS and summary["best_valid_recall"] > 0
    manifest = json.loads((run / "manifest.json").read_text())["tables"]
    assert all(table["files"] and table["version"] >= 0 for table in manifest.values())
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 < metrics["recall@50"]["overall"] <= 1 and metrics["recall@10"]["overall"] <= metrics["recall@100"]["overall"]
    embeddings = DeltaTable(str(run / "export" / "item_embeddings")).to_pyarrow_table()
    card = json.loads((run / "export" / "model_card.json").read_text())
    assert embeddings.num_rows == card["embedding"]["items"] == len(DeltaTable(manifest["items"]["path"]).to_pyarrow_table())
    vectors = np.array(embeddings.column("embedding").to_pylist(), dtype=np.float64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert (run / "export" / "items.faiss").stat().st_size > 0 and (run / "export" / "user_tower.pt").stat().st_size > 0


def test_the_model_equals_a_run_in_a_spark_capable_process(jvm_free_run, synthetic_lake, tmp_path):
    run, _, results = jvm_free_run
    assert results["train"].returncode == 0, results["train"].stderr[-4000:]
    train(str(synthetic_lake), tmp_path / "here", config())
    expected = checkpoint.load(tmp_path / "here" / checkpoint.LAST)["model"]
    got = checkpoint.load(run / checkpoint.LAST)["model"]
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=name)


def test_train_logs_start_up_and_progress_without_a_terminal(jvm_free_run):
    _, _, results = jvm_free_run
    output = results["train"].stderr  # logging's stream; stdout and stderr are pipes, not a terminal
    for start_up in ("pinning the versions of", "pinned fields v", "loading features", "building the model", "click feed:", "first step done"):
        assert start_up in output, f"{start_up!r} not in:\n{output[-3000:]}"
    progress = [line for line in output.splitlines() if "examples/s" in line and f"/{STEPS}: loss" in line]
    assert [line.split(" step ")[1].split("/")[0] for line in progress] == [str(s) for s in range(10, STEPS + 1, 10)], output[-3000:]
