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
