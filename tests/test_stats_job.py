"""`towerssl stats` end to end on the synthetic generator run through the real ETL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from towerssl.cli import main as cli_main
from towerssl.lake import commit_metadata, read_table
from towerssl.spark import delta_jars
from towerssl.stats.readers import load_log_p, load_mi_matrix

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory) -> Path:
    """Enough items (4,000) that the plug-in MI of independent fields is well below the planted pairs."""
    from towerssl.etl.generate import generate
    from towerssl.etl.job import EtlConfig, run_etl

    root = tmp_path_factory.mktemp("stats_job")
    generate(root / "raw", users=100, items=4_000, clicks=6_000, seed=3)
    run_etl(spark, EtlConfig(input=str(root / "raw"), lake=str(root / "lake"), multi_length=4))
    config = root / "stats.yaml"
    config.write_text("stats:\n  mi_weighting: clicks\n  new_item_floor: 0.3\n")
    assert cli_main(["stats", "--lake", str(root / "lake"), "--config", str(config), "--mi-weighting", "items"]) == 0
    return root / "lake"


def test_stats_writes_item_stats_and_feature_mi_with_the_merged_config(spark, lake):
    record = commit_metadata(spark, lake, "feature_mi")["config"]
    assert (record["mi_weighting"], record["new_item_floor"]) == ("items", 0.3)  # the flag beats the file
    assert (lake / "_reports" / "feature_mi.png").stat().st_size > 10_000

    items = read_table(spark, lake, "items").select("item_idx", "item").toPandas().sort_values("item_idx")
    clicks = np.bincount(read_table(spark, lake, "train_clicks").select("item_idx").toPandas()["item_idx"], minlength=len(items))
    stats = read_table(spark, lake, "item_stats").toPandas().sort_values("item_idx")
    np.testing.assert_array_equal(stats["clicks"], clicks)
    np.testing.assert_allclose(load_log_p(spark, lake), np.log(np.maximum(clicks, 0.3) / clicks.sum()), rtol=1e-14)
    # The ETL gives items without a training click the masked id value (1): exactly the `new` bucket.
    np.testing.assert_array_equal(stats["bucket"].to_numpy() == "new", items["item"].to_numpy() == 1)

    fields = [r.field for r in read_table(spark, lake, "fields").where("owner = 'item'").orderBy("position").collect()]
    mi = load_mi_matrix(spark, lake, fields, normalized=False)
    assert fields[0] == "item" and mi.shape == (len(fields), len(fields))
    np.testing.assert_allclose(mi, mi.T, atol=0)
    known = items["item"].to_numpy() >= 3
    assert mi[0, 0] == pytest.approx(np.log(known.sum()), rel=1e-12)  # one item per id: uniform


def test_planted_field_pairs_rank_above_every_independent_pair(spark, lake):
    from towerssl.etl.generate import INDEPENDENT_FIELDS, PLANTED_PAIRS

    fields = [r.field for r in read_table(spark, lake, "fields").where("owner = 'item' AND field != 'item'").orderBy("position").collect()]
    nmi = load_mi_matrix(spark, lake, fields)
    position = {name: i for i, name in enumerate(fields)}

    def score(a: str, b: str) -> float:
        return nmi[position[a], position[b]]

    planted = [score(a, b) for a, b in PLANTED_PAIRS]
    independent = [score(a, b) for a in INDEPENDENT_FIELDS for b in fields if b != a]
    assert min(planted) > max(independent), (dict(zip(PLANTED_PAIRS, planted)), independent)
    ranking = sorted(((score(a, b), {a, b}) for a in fields for b in fields if a < b), key=lambda pair: pair[0], reverse=True)
    assert ranking[0][1] in [set(pair) for pair in PLANTED_PAIRS]


def test_a_missing_table_is_one_line_through_spark_submit(tmp_path):
    spark_submit = Path(sys.executable).parent / "spark-submit"
    jars = ",".join(delta_jars())
    command = [str(spark_submit), "--master", "local[1]", *(["--jars", jars] if jars else []), str(REPO / "jobs" / "stats.py"), "--lake", str(tmp_path)]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    output = done.stdout + done.stderr  # spark-submit passes the Python driver's stderr on as its stdout
    errors = [line for line in output.splitlines() if line.startswith("towerssl stats: error")]
    assert done.returncode == 2, output[-2000:]
    assert errors == [f"towerssl stats: error: lake {tmp_path} holds no complete ETL run (no `etl` record in its runs table): re-run `towerssl etl --lake {tmp_path}`"]
    assert "Traceback" not in output
