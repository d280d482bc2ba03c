"""The session factory gives a working Delta-enabled Spark, and pinned snapshots list only live files."""

from pathlib import Path

from towerssl.lake import pinned_snapshot, read_table, write_table


def test_delta_round_trip_and_snapshot_excludes_overwritten_files(spark, tmp_path):
    write_table(spark.range(10).repartition(2), tmp_path, "t", run_id="r1", config={"a": 1})
    first = pinned_snapshot(spark, tmp_path, "t")
    write_table(spark.range(3).repartition(1), tmp_path, "t", run_id="r2", config={"a": 2})
    second = pinned_snapshot(spark, tmp_path, "t")

    on_disk = {p.name for p in Path(tmp_path, "t").glob("*.parquet")}
    assert (first.version, second.version) == (0, 1)
    assert {Path(f).name for f in first.files} <= on_disk  # old files are still in the directory...
    assert not {Path(f).name for f in first.files} & {Path(f).name for f in second.files}  # ...but not listed
    assert len(on_disk) == len(first.files) + len(second.files)
    assert read_table(spark, tmp_path, "t").count() == 3
    assert read_table(spark, tmp_path, "t", version=0).count() == 10


def test_sessions_schedule_fair_and_each_concurrent_step_has_its_own_pool(spark):
    """Under FAIR, threads share the cores only if their jobs sit in different pools."""
    from towerssl.etl.job import _concurrently

    assert spark.sparkContext.getConf().get("spark.scheduler.mode") == "FAIR"

    def pool_and_rows():
        return spark.sparkContext.getLocalProperty("spark.scheduler.pool"), spark.range(10).count()

    assert _concurrently(spark, pool_and_rows, pool_and_rows) == [("etl-step-0", 10), ("etl-step-1", 10)]


def test_sessions_keep_spark_3_cast_semantics(spark):
    """Spark 4 defaults to ANSI mode; the factory turns it off, so a bad raw string casts to null (which the
    ETL's checks turn into a reject) instead of failing the job."""
    assert spark.conf.get("spark.sql.ansi.enabled") == "false"
    row = spark.sql("SELECT CAST('x1' AS BIGINT) AS bad, CAST('99999999999999999999' AS BIGINT) AS too_long, CAST(' 7 ' AS BIGINT) AS padded").first()
    assert (row["bad"], row["too_long"], row["padded"]) == (None, None, 7)
