"""The Airflow DAG (airflow/dags/towerssl_pipeline.py), checked by the Airflow environment's own Python
(made by airflow/setup.sh): it imports with no errors, runs etl -> stats -> train -> evaluate -> export daily
with retries, and one whole run (dag.test()) on tiny synthetic data writes the lake, the metrics and the export.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pyspark
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "airflow" / "setup.sh"
DAGS = REPO / "airflow" / "dags"
DAG_ID = "towerssl_pipeline"
ORDER = ["etl", "stats", "train", "evaluate", "export"]
LOGICAL_DATE = "2026-11-28"
PROJECT_BIN = Path(sys.executable).parent  # the project environment: towerssl, python
SPARK_HOME = Path(pyspark.__file__).parent  # its Spark: the spark-submit the Spark tasks call

# Run by the Airflow environment's Python: argv = dags folder, dag id, logical date, run root, output JSON.
INSPECT = r"""
import json, shlex, sys
from pathlib import Path
from types import SimpleNamespace

import pendulum
from airflow.dag_processing.dagbag import DagBag

dags, dag_id, logical_date, run_root, out = sys.argv[1:]
bag = DagBag(dag_folder=dags)
dag = bag.dags.get(dag_id)
report = {"import_errors": {str(path): error for path, error in bag.import_errors.items()}, "found": dag is not None}
if dag is not None:
    report["schedule"] = dag.schedule
    report["params"] = dag.params.dump()
    report["tasks"] = {t.task_id: {"downstream": sorted(t.downstream_task_ids), "retries": t.retries, "operator": type(t).__name__} for t in dag.tasks}
    # The train task's command for a new day, an interrupted run (checkpoint, no summary), a finished run.
    params = {**dag.params.dump(), "run_root": run_root, "towerssl_bin": "/env/bin"}
    train = dag.task_dict["train"].python_callable
    dag_run = SimpleNamespace(logical_date=pendulum.parse(logical_date), run_after=None)
    commands = {"new": train(params=params, dag_run=dag_run)}
    words = shlex.split(commands["new"])
    run = Path(words[words.index("--run") + 1])
    run.mkdir(parents=True)
    (run / "checkpoint.pt").touch()
    commands["interrupted"] = train(params=params, dag_run=dag_run)
    (run / "train_summary.json").touch()
    commands["finished"] = train(params=params, dag_run=dag_run)
    report["train_commands"], report["train_run"] = commands, str(run)
Path(out).write_text(json.dumps(report))
"""

# Run by the Airflow environment's Python: argv = dags folder, dag id, run conf (JSON), logical date, output JSON.
RUN = r"""
import json, sys
from pathlib import Path

import pendulum
from airflow.dag_processing.dagbag import DagBag
from airflow.utils.db import initdb

dags, dag_id, conf, logical_date, out = sys.argv[1:]
initdb()  # the fresh SQLite database of this AIRFLOW_HOME
dag = DagBag(dag_folder=dags).dags[dag_id]
for task in dag.tasks:
    task.retries = 0  # a failure ends the test at once instead of waiting out the retry delays
run = dag.test(run_conf=json.loads(conf), logical_date=pendulum.parse(logical_date))
states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
Path(out).write_text(json.dumps({"state": str(run.state), "tasks": states}))
"""


@pytest.fixture(scope="module")
def airflow_python() -> Path:
    venv = Path(subprocess.run([str(SETUP), "--print-venv"], capture_output=True, text=True, check=True).stdout.strip())
    if not (venv / ".installed").is_file():
        pytest.fail(f"the Airflow environment {venv} is not set up: run `airflow/setup.sh` (about two minutes, once)")
    return venv / "bin" / "python"


def airflow_env(home: Path) -> dict[str, str]:
    """A throwaway Airflow (SQLite in `home`) that reads this repo's DAG and runs Spark locally."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # keep the two environments apart
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW_CONN_TOWERSSL_SPARK=json.dumps({"conn_type": "spark", "host": "local[2]"}),
        SPARK_HOME=str(SPARK_HOME),
        PATH=f"{SPARK_HOME / 'bin'}{os.pathsep}{env['PATH']}",
        SPARK_LOCAL_IP="127.0.0.1",
    )
    return env


def run_airflow(python: Path, script: str, args: list[str], home: Path, timeout: int) -> tuple[dict, str]:
    """Run `script` with the Airflow environment's Python; returns the JSON it writes and an excerpt of its log."""
    out, log = home / "result.json", home / "airflow.log"
    with log.open("w") as sink:
        done = subprocess.run([str(python), "-c", script, *args, str(out)], env=airflow_env(home), cwd=home, stdout=sink, stderr=subprocess.STDOUT, timeout=timeout)
    excerpt = log_excerpt(log.read_text(errors="replace").splitlines())
    assert done.returncode == 0 and out.is_file(), f"Airflow script failed (exit {done.returncode}); log:\n{excerpt}"
    return json.loads(out.read_text()), excerpt


def log_excerpt(lines: list[str]) -> str:
    """Around the first failed task (its output and traceback), else the end of the log."""
    failed = next((i for i, line in enumerate(lines) if "Task failed with exception" in line), None)
    return "\n".join(lines[-80:] if failed is None else lines[max(failed - 40, 0) : failed + 60])


@pytest.fixture(scope="module")
def inspected(airflow_python, tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("airflow-inspect")
    return run_airflow(airflow_python, INSPECT, [str(DAGS), DAG_ID, LOGICAL_DATE, str(home / "runs")], home, timeout=300)[0]


def test_dag_imports_without_errors(inspected):
    assert inspected["import_errors"] == {}
    assert inspected["found"], f"DAG {DAG_ID} not found in {DAGS}"


def test_tasks_run_in_pipeline_order_daily_with_retries(inspected):
    tasks = inspected["tasks"]
    assert set(tasks) == set(ORDER)
    for upstream, downstream in zip(ORDER, ORDER[1:]):
        assert tasks[upstream]["downstream"] == [downstream]
    assert tasks[ORDER[-1]]["downstream"] == []
    assert {tasks[name]["operator"] for name in ("etl", "stats")} == {"SparkSubmitOperator"}
    assert all(task["retries"] >= 1 for task in tasks.values())
    assert inspected["schedule"] == "@daily"
    assert {"raw_input", "input_format", "lake", "run_root", "config", "towerssl_bin", "spark_jars", "py_files", "spark_properties"} <= set(inspected["params"])


def test_train_resumes_an_interrupted_run_and_replaces_a_finished_one(inspected):
    commands, run, params = inspected["train_commands"], inspected["train_run"], inspected["params"]
    assert Path(run).name == LOGICAL_DATE.replace("-", "")  # one run directory per day
    fresh = f"rm -rf {shlex.quote(run)} && " + shlex.join(["/env/bin/towerssl", "train", "--lake", params["lake"], "--run", run, "--config", params["config"]])
    assert commands["new"] == commands["finished"] == fresh
    assert commands["interrupted"] == shlex.join(["/env/bin/towerssl", "train", "--run", run, "--resume"])


def test_whole_dag_runs_end_to_end_on_tiny_synthetic_data(airflow_python, tmp_path):
    from towerssl.etl.generate import generate

    raw, lake, runs = tmp_path / "raw", tmp_path / "lake", tmp_path / "runs"
    generate(raw, users=200, items=150, clicks=5_000, seed=1)
    config = tmp_path / "towerssl.yaml"
    tiny_model = {"embedding_dim": 8, "hidden_dims": [16], "output_dim": 8, "ssl_batch_size": 32}
    config.write_text(yaml.safe_dump({"train": {"batch_size": 64, "max_steps": 30, "eval_every": 0, "workers": 1, "tensorboard": False, "model": tiny_model}}))
    properties = tmp_path / "spark.properties"  # through the spark_properties param to spark-submit
    properties.write_text("spark.ui.enabled false\n")
    conf = {"raw_input": str(raw), "lake": str(lake), "run_root": str(runs), "config": str(config), "towerssl_bin": str(PROJECT_BIN), "spark_properties": str(properties)}
    home = tmp_path / "airflow"
    home.mkdir()

    result, log = run_airflow(airflow_python, RUN, [str(DAGS), DAG_ID, json.dumps(conf), LOGICAL_DATE], home, timeout=1800)

    assert result["state"] == "success", f"{result}; log:\n{log}"
    assert result["tasks"] == dict.fromkeys(ORDER, "success")
    for table in ("items", "users", "train_clicks", "valid_clicks", "test_clicks", "vocab", "fields", "rejects", "item_stats", "feature_mi"):
        assert (lake / table / "_delta_log").is_dir(), f"lake table {table} missing"
    run = runs / LOGICAL_DATE.replace("-", "")
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["recall@10"]["overall"] <= 1.0
    assert json.loads((run / "config.json").read_text())["max_steps"] == 30  # the config param reached training
    export = run / "export"
    for name in ("items.faiss", "user_tower.pt", "model_card.json"):
        assert (export / name).stat().st_size > 0, f"export/{name} empty"
    assert (export / "item_embeddings" / "_delta_log").is_dir()
    card = json.loads((export / "model_card.json").read_text())
    assert card["lake"] == str(lake) and card["metrics"] == metrics
    assert card["embedding"] == {"dimension": 8, "normalized": True, "faiss_metric": "inner_product", "items": 150}
