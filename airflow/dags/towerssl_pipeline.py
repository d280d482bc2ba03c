"""towerssl daily pipeline: etl -> stats -> train -> evaluate -> export.

The Spark jobs (ETL, statistics) go through spark-submit (SparkSubmitOperator) on the master of the Airflow
connection `towerssl_spark` (override the id with TOWERSSL_SPARK_CONN_ID); training, evaluation and export
run the project environment's `towerssl` CLI. Airflow itself lives in its own environment
(airflow/setup.sh), so the tasks reach the project's environment only through paths: the `towerssl_bin`
param, and spark-submit on the worker's PATH. Param defaults come from the worker's environment
(TOWERSSL_DATA_DIR, TOWERSSL_CONFIG, TOWERSSL_BIN, TOWERSSL_JARS_DIR, TOWERSSL_JOBS_DIR); every param can be
overridden when triggering. Each day trains a fresh model in RUN_ROOT/<YYYYMMDD>. See docs/airflow.md.
"""

from __future__ import annotations

import os
import shlex
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Param, dag, task
from airflow.sdk.types import DagRunProtocol

_REPO = Path(__file__).resolve().parents[2]


def locked_version(package: str, lock: Path = _REPO / "requirements.lock") -> str:
    """package's version in the project's requirements.lock (what `make setup` installs; the Delta jars the
    Makefile fetches are of delta-spark's version): the one source of the Delta version. Empty without the lock."""
    prefix = f"{package}=="
    lines = lock.read_text().splitlines() if lock.is_file() else []
    return next((line[len(prefix):].strip() for line in lines if line.startswith(prefix)), "")


DELTA_VERSION = locked_version("delta-spark")
DELTA_JARS = ("delta-spark_2.13", "delta-storage")  # Spark 4: Scala 2.13
SPARK_CONN_ID = os.environ.get("TOWERSSL_SPARK_CONN_ID", "towerssl_spark")
INPUT_FORMATS = ["raw", "movielens-100k", "movielens-1m", "movielens-latest-small", "amazon-s3rec"]
CHECKPOINT = "checkpoint.pt"  # in a run directory: the trainer's resumable state
SUMMARY = "train_summary.json"  # in a run directory: written when training has finished

_DATA_DIR = Path(os.environ.get("TOWERSSL_DATA_DIR", Path.home() / "towerssl-data"))
_JARS_DIR = Path(os.environ.get("TOWERSSL_JARS_DIR", Path.home() / ".cache/towerssl/jars" / f"delta-{DELTA_VERSION}"))
_JOBS_DIR = os.environ.get("TOWERSSL_JOBS_DIR", str(_REPO / "jobs"))


def tool(bin_dir: str, name: str) -> str:
    """Executable `name` of the project environment: in bin_dir, or looked up on PATH when bin_dir is empty."""
    return str(Path(bin_dir) / name) if bin_dir else name


def run_dir(params: dict, dag_run: DagRunProtocol) -> Path:
    """This run's model directory: RUN_ROOT/<YYYYMMDD of the logical date, or of run_after when it has none>."""
    day = dag_run.logical_date or dag_run.run_after
    return Path(params["run_root"]) / day.strftime("%Y%m%d")


def _cli(params: dict, *args: str | Path) -> str:
    return shlex.join([tool(params["towerssl_bin"], "towerssl"), *map(str, args)])


PARAMS = {
    "raw_input": Param(str(_DATA_DIR / "raw"), type="string", minLength=1, description="raw input directory (the raw layout of docs/tables.md, or MovieLens; for amazon-s3rec the log DIR/<Name>.txt, with a non-global split in the config)"),
    "input_format": Param("raw", enum=INPUT_FORMATS, description="format of raw_input"),
    "lake": Param(str(_DATA_DIR / "lake"), type="string", minLength=1, description="Delta lake directory (any URI spark-submit reads on a cluster)"),
    "run_root": Param(str(_DATA_DIR / "runs"), type="string", minLength=1, description="parent of the daily run directories"),
    "config": Param(os.environ.get("TOWERSSL_CONFIG", str(_DATA_DIR / "towerssl.yaml")), type="string", minLength=1, description="pipeline YAML (etl:, stats:, train: sections)"),
    "towerssl_bin": Param(os.environ.get("TOWERSSL_BIN", ""), type="string", description="bin/ of the project environment (towerssl, python); empty: found on PATH"),
    "spark_python": Param("", type="string", description="Python of the Spark driver and executors; empty: towerssl_bin's python"),
    "spark_jars": Param(",".join(str(_JARS_DIR / f"{name}-{DELTA_VERSION}.jar") for name in DELTA_JARS), type="string", description="comma-separated jars for spark-submit --jars (the Delta connector); empty: none"),
    "spark_packages": Param("", type="string", description=f"Maven coordinates for --packages, e.g. io.delta:{DELTA_JARS[0]}:{DELTA_VERSION} on a cluster"),
    "py_files": Param("", type="string", description="--py-files, e.g. the towerssl wheel for a driver on the cluster; empty: none"),
    "spark_properties": Param("", type="string", description="--properties-file of cluster settings (spark.archives, images, queues, memory); empty: none"),
    "jobs_dir": Param(_JOBS_DIR, type="string", minLength=1, description="directory (or URI) holding etl.py and stats.py"),
}

SPARK_PYTHON = "{{ params.spark_python or tool(params.towerssl_bin, 'python') }}"


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # runs share the lake: one day at a time
    params=PARAMS,
    user_defined_macros={"tool": tool},
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5), "retry_exponential_backoff": True},
    doc_md=__doc__,
    tags=["towerssl"],
)
def towerssl_pipeline():
    def spark_job(job: str, *args: str) -> SparkSubmitOperator:
        """spark-submit jobs/<job>.py ARGS on the connection's master; Python, jars and code from the params."""
        return SparkSubmitOperator(
            task_id=job,
            conn_id=SPARK_CONN_ID,
            application=f"{{{{ params.jobs_dir }}}}/{job}.py",
            application_args=list(args),
            jars="{{ params.spark_jars }}",
            packages="{{ params.spark_packages }}",
            py_files="{{ params.py_files }}",
            properties_file="{{ params.spark_properties }}",
            conf={"spark.pyspark.python": SPARK_PYTHON, "spark.pyspark.driver.python": SPARK_PYTHON},
            name=f"towerssl-{job}",
        )

    etl = spark_job(
        "etl",
        "--input", "{{ params.raw_input }}",
        "--format", "{{ params.input_format }}",
        "--lake", "{{ params.lake }}",
        "--config", "{{ params.config }}",
    )
    stats = spark_job("stats", "--lake", "{{ params.lake }}", "--config", "{{ params.config }}")

    @task.bash
    def train(params: dict, dag_run: DagRunProtocol) -> str:
        """Train this day's model. A run that was interrupted after a checkpoint (the retry of a killed task)
        resumes; otherwise the day's run directory is replaced by a fresh run on the current lake."""
        run = run_dir(params, dag_run)
        if (run / CHECKPOINT).is_file() and not (run / SUMMARY).is_file():
            return _cli(params, "train", "--run", run, "--resume")
        fresh = _cli(params, "train", "--lake", params["lake"], "--run", run, "--config", params["config"])
        return f"rm -rf {shlex.quote(str(run))} && {fresh}"

    @task.bash
    def evaluate(params: dict, dag_run: DagRunProtocol) -> str:
        """Recall/NDCG@K on the test clicks into RUN/metrics.json."""
        return _cli(params, "evaluate", "--run", run_dir(params, dag_run))

    @task.bash
    def export(params: dict, dag_run: DagRunProtocol) -> str:
        """Item embeddings (Delta + FAISS), the TorchScript user tower and the model card into RUN/export."""
        return _cli(params, "export", "--run", run_dir(params, dag_run))

    etl >> stats >> train() >> evaluate() >> export()


towerssl_pipeline()
