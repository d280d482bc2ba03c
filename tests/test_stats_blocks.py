"""The parts of the statistics job that spread work over tasks: popularity's per-block ranks, the MI cells'
per-reducer sums, and run_stats' failure path (nothing written)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from celldata import PLAN, random_items
from towerssl.errors import UsageError
from towerssl.lake import MissingTableError, read_table, write_table
from towerssl.runs import RunRecorder
from towerssl.stats.cells import SCHEMA, WEIGHT, cell_batches, cell_blobs, file_blobs, pair_sums, sum_blobs
from towerssl.stats.job import StatsConfig, run_stats
from towerssl.stats.popularity import BLOCK_BITS, click_counts, popularity



def as_dict(batches) -> dict[tuple[int, int], np.ndarray]:
    sums: dict[tuple[int, int], np.ndarray] = {}
    for batch in batches:
        for row in batch.to_pylist():
            key = (row["a"], row["b"])
            sums[key] = sums.get(key, 0) + np.array([row["n"], row["s_ab"], row["s_a"], row["s_b"]])
    return sums


@pytest.mark.parametrize("reducers", [1, 3, 8])
def test_pair_sums_over_reducers_equal_the_sums_of_all_cells(reducers):
    """Whatever the number of reducers (and of map tasks), the per-pair sums add up to those of all cells
    summed in one place."""
    table = random_items(np.random.default_rng(4), 400, brands=40)
    direct = as_dict([pair_sums(pa.Table.from_batches(list(cell_batches(iter(table.to_batches()), PLAN)), schema=SCHEMA))])
    tasks = [table.slice(0, 150), table.slice(150, 100), table.slice(250)]  # three map tasks
    blobs = [b for task in tasks for b in cell_blobs(iter(task.to_batches(max_chunksize=40)), PLAN, reducers, chunk_rows=70)]
    by_reducer: dict[int, list] = {}
    for batch in blobs:
        for r, blob in zip(batch.column("r").to_pylist(), batch.column("cells").to_pylist()):
            assert 0 <= r < reducers
            by_reducer.setdefault(r, []).append(blob)
    reduced = [row for r, group in by_reducer.items() for row in sum_blobs((r, bytearray(blob)) for blob in group)]
    got = as_dict([pa.RecordBatch.from_pylist([dict(zip(("a", "b", "n", "s_ab", "s_a", "s_b"), row)) for row in reduced])])
    assert got.keys() == direct.keys()
    for pair in direct:
        np.testing.assert_allclose(got[pair], direct[pair], rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("parts", [1, 3])
def test_tasks_reading_a_file_in_parts_make_the_cells_of_the_whole_table(tmp_path, parts):
    """file_blobs: a Parquet file of several row groups read by `parts` tasks (row groups part, part + parts,
    ...) gives, reduced, the pair sums of the same items handed over as Arrow batches."""
    plan = replace(PLAN, weighted=False)
    table = random_items(np.random.default_rng(5), 300, brands=30).drop([WEIGHT])
    pq.write_table(table, tmp_path / "items.parquet", row_group_size=70)  # 5 row groups
    assert pq.ParquetFile(tmp_path / "items.parquet").num_row_groups == 5
    direct = as_dict([pair_sums(pa.Table.from_batches(list(cell_batches(iter(table.to_batches()), plan)), schema=SCHEMA))])

    uri = (tmp_path / "items.parquet").as_uri()
    blobs = [blob for part in range(parts) for blob in file_blobs(iter([(uri, part, parts)]), plan, reducers=4, chunk_rows=100)]
    reduced = [row for r in range(4) for row in sum_blobs(b for b in blobs if b[0] == r)]
    got = as_dict([pa.RecordBatch.from_pylist([dict(zip(("a", "b", "n", "s_ab", "s_a", "s_b"), row)) for row in reduced])])
    assert got.keys() == direct.keys()
    for pair in direct:
        np.testing.assert_allclose(got[pair], direct[pair], rtol=1e-12, atol=1e-9)


def reference_before(item_idx: np.ndarray, clicks: np.ndarray) -> np.ndarray:
    order = np.lexsort((item_idx, -clicks))
    before = np.empty_like(clicks)
    before[order] = np.cumsum(clicks[order]) - clicks[order]
    return before


def test_ranks_and_bucket_sizes_span_many_blocks(spark):
    """item_idx spread over many blocks (and not dense): ties by item_idx across blocks, and the bucket
    sizes from the histogram equal the table's."""
    rng = np.random.default_rng(8)
    n = 400
    item_idx = np.sort(rng.choice(60 << BLOCK_BITS, size=n, replace=False)).astype(np.int64)
    clicks = np.minimum(rng.zipf(1.5, size=n), 9)  # few distinct counts: many ties in every block
    clicks[rng.random(n) < 0.2] = 0
    items = spark.createDataFrame([(int(i), int(i) * 7) for i in item_idx], "item_idx int, item_id long")
    train = spark.createDataFrame([(0, int(i), 0, 0, t) for t, i in enumerate(np.repeat(item_idx, clicks))],
                                  "user_idx int, item_idx int, user_id long, item_id long, timestamp long")
    result = popularity(click_counts(items, train), new_item_floor=0.5)
    rows = sorted(result.table.collect(), key=lambda r: r.item_idx)

    total = clicks.sum()
    before = reference_before(item_idx, clicks)
    assert result.total == total
    assert [r.item_idx for r in rows] == item_idx.tolist()
    assert [r.clicks for r in rows] == clicks.tolist()
    assert [r.decile for r in rows] == np.where(clicks == 0, 0, 10 * before // total + 1).tolist()
    expected = np.where(clicks == 0, "new", np.where(3 * before < total, "head", np.where(3 * before < 2 * total, "torso", "tail")))
    assert [r.bucket for r in rows] == expected.tolist()
    counted = {b: int((expected == b).sum()) for b in ("head", "torso", "tail", "new") if (expected == b).any()}
    assert result.buckets == counted


def write_etl_run(lake, tables) -> None:
    """The (name, frame) tables written in order and recorded as one complete ETL run (run_stats reads those)."""
    recorder = RunRecorder(lake, "etl", "test")
    for name, frame in tables:
        write_table(frame, lake, name, "test", {})
        recorder.committed(name)
    recorder.finish()


def test_an_unlisted_click_stops_run_stats_before_either_table_is_written(spark, tmp_path):
    items = spark.createDataFrame([(0, 10, 3), (1, 11, 4)], "item_idx int, item_id long, item int")
    stray = spark.createDataFrame([(0, 0, 1, 10, 5), (0, 7, 1, 17, 6)], "user_idx int, item_idx int, user_id long, item_id long, timestamp long")
    fields = spark.createDataFrame([("item", "item", False, 1, 5, 0)], "field string, owner string, multi boolean, length int, cardinality int, position int")
    write_etl_run(tmp_path, (("items", items), ("train_clicks", stray), ("fields", fields)))
    with pytest.raises(UsageError, match=r"1 click\(s\) name an item_idx that is not in table items \(e.g. 7\)"):
        run_stats(spark, tmp_path, StatsConfig())
    for table in ("item_stats", "feature_mi"):
        with pytest.raises(MissingTableError):
            read_table(spark, tmp_path, table)


@pytest.mark.parametrize("weighting, reads_files", [("items", True), ("clicks", False)])
def test_run_stats_mi_tasks_read_the_pinned_items_files_on_a_local_lake(spark, tmp_path, monkeypatch, weighting, reads_files):
    """Item weighting on a local lake: the MI tasks read the files of the items version popularity reads
    (the latest), and feature_mi is written; click weighting joins the clicks, so it keeps the Spark scan."""
    from towerssl.lake import latest_version, table_path
    from towerssl.stats import job

    items = spark.createDataFrame([(i, 10 + i, i + 3, i % 2 + 3) for i in range(6)], "item_idx int, item_id long, item int, colour int")
    clicks = spark.createDataFrame([(0, i % 6, 1, 10 + i % 6, i) for i in range(9)], "user_idx int, item_idx int, user_id long, item_id long, timestamp long")
    fields = spark.createDataFrame([("item", "item", False, 1, 9, 0), ("colour", "item", False, 1, 5, 1)],
                                   "field string, owner string, multi boolean, length int, cardinality int, position int")
    write_etl_run(tmp_path, (("items", items), ("items", items.where("item_idx < 5")), ("train_clicks", clicks.where("item_idx < 5")), ("fields", fields)))  # items twice: the latest version is 1
    read = []
    real = job.snapshot_feature_mi
    monkeypatch.setattr(job, "snapshot_feature_mi", lambda spark, snapshot, fields: read.append(snapshot) or real(spark, snapshot, fields))

    run_stats(spark, tmp_path, StatsConfig(mi_weighting=weighting))
    assert [s.version for s in read] == ([latest_version(spark, table_path(tmp_path, "items"))] if reads_files else [])
    assert read_table(spark, tmp_path, "feature_mi").count() == 4
