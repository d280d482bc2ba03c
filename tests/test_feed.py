"""The Petastorm click feed over a real Delta snapshot (real Spark, Delta, Petastorm and torch)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import torch
from pyspark.sql import functions as F

from towerssl.lake import pinned_snapshot, write_table
from towerssl.trainer.feed import ClickFeed, FeedError, ShuffleBuffer, to_device

ROWS = 2400  # the pinned version: 4 files of 600 rows, 100-row row groups
OLD_START, OLD_ROWS = 1_000_000, 500  # the overwritten version, ids that must never come out
ROW_GROUP_ROWS = 100
COLUMNS = ("user_idx", "item_idx", "timestamp")  # timestamp is the row's unique id here

# Petastorm 0.12 on pyarrow 14 warns about the legacy dataset API on every row group (pytest resets the
# filter that trainer/feed.py installs).
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning:petastorm")


def clicks_frame(spark, start: int, rows: int, files: int):
    """train_clicks rows whose id is the timestamp; spark.range splits rows evenly over the files."""
    ids = spark.range(start, start + rows, 1, numPartitions=files)
    return ids.select(
        (F.col("id") % 37).cast("int").alias("user_idx"),
        (F.col("id") % 1009).cast("int").alias("item_idx"),
        F.col("id").alias("user_id"),
        F.col("id").alias("item_id"),
        F.col("id").alias("timestamp"),
    )


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    lake = tmp_path_factory.mktemp("feed") / "lake"
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    hadoop.set("parquet.block.size", "2048")  # parquet-mr then closes a row group every 100 rows
    try:
        write_table(clicks_frame(spark, OLD_START, OLD_ROWS, files=2), lake, "train_clicks", "old", {})
        write_table(clicks_frame(spark, 0, ROWS, files=4), lake, "train_clicks", "new", {})
    finally:
        hadoop.unset("parquet.block.size")
    return spark, lake


@pytest.fixture(scope="module")
def files(lake):
    spark, root = lake
    snapshot = pinned_snapshot(spark, root, "train_clicks")
    assert snapshot.version == 1 and len(snapshot.files) == 4
    for url in snapshot.files:  # the layout the sharding tests rely on: equal row groups, several per file
        filesystem, path = pafs.FileSystem.from_uri(url)
        metadata = pq.ParquetFile(filesystem.open_input_file(path)).metadata
        sizes = {metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)}
        assert metadata.num_row_groups > 1 and sizes == {ROW_GROUP_ROWS}
    return snapshot.files


def feed(files, **options) -> ClickFeed:
    settings = dict(batch_size=64, seed=7, shuffle_buffer=300, workers=1, columns=COLUMNS)
    settings.update(options)
    return ClickFeed(files, settings.pop("batch_size"), **settings)


def row_ids(batches) -> torch.Tensor:
    return torch.cat([batch["timestamp"] for batch in batches])


def check_rows_intact(batches):
    """Columns of a row stay together: user_idx and item_idx are functions of the row id."""
    for batch in batches:
        assert all(tensor.dtype == torch.int64 for tensor in batch.values())
        assert torch.equal(batch["user_idx"], batch["timestamp"] % 37)
        assert torch.equal(batch["item_idx"], batch["timestamp"] % 1009)


def test_every_row_of_the_pinned_version_once_per_epoch(files, lake):
    spark, root = lake
    source = feed(files, drop_last=False)
    batches = list(source.batches(0))
    check_rows_intact(batches)
    assert source.num_rows == ROWS and source.num_row_groups == ROWS // ROW_GROUP_ROWS
    assert len(batches) == source.batches_per_epoch == -(-ROWS // 64)
    assert [len(b["timestamp"]) for b in batches[:-1]] == [64] * (len(batches) - 1)
    assert 0 < len(batches[-1]["timestamp"]) < 64
    assert torch.equal(row_ids(batches).sort().values, torch.arange(ROWS))
    # The table directory still holds the overwritten version's files; the pinned list leaves them out.
    assert len(list((root / "train_clicks").glob("*.parquet"))) > len(files)
    old = pinned_snapshot(spark, root, "train_clicks", version=0)
    old_ids = row_ids(feed(old.files, drop_last=False).batches(0))
    assert torch.equal(old_ids.sort().values, torch.arange(OLD_START, OLD_START + OLD_ROWS))


def test_drop_last_yields_only_full_batches_without_repeats(files):
    source = feed(files, batch_size=100 + 7)
    batches = list(source.batches(0))
    assert len(batches) == source.batches_per_epoch == ROWS // 107
    assert {len(b["timestamp"]) for b in batches} == {107}
    assert row_ids(batches).unique().numel() == len(batches) * 107


def test_same_seed_and_epoch_give_the_same_batches_and_skip_gives_the_tail(files):
    def replay(epoch: int, skip: int = 0) -> list:  # a new feed each time, as after a restart
        return list(feed(files, deterministic=True, drop_last=False).batches(epoch, skip=skip))

    first, again, tail = replay(0), replay(0), replay(0, skip=5)
    assert all(torch.equal(row_ids([a]), row_ids([b])) for a, b in zip(first, again, strict=True))
    assert len(tail) == len(first) - 5
    assert all(torch.equal(row_ids([a]), row_ids([b])) for a, b in zip(first[5:], tail, strict=True))
    assert replay(0, skip=len(first)) == []
    next_epoch = row_ids(replay(1))
    assert not torch.equal(row_ids(first), next_epoch)
    assert torch.equal(row_ids(first).sort().values, next_epoch.sort().values)
    # The shuffle buffer mixes row groups: the first batch spans several of them.
    assert (first[0]["timestamp"] // ROW_GROUP_ROWS).unique().numel() > 1


def digest(files, epoch: int, skip: int) -> str:
    """A hash of every batch rank 1 of 2 yields in deterministic mode."""
    source = ClickFeed(files, 64, seed=7, shuffle_buffer=300, workers=1, rank=1, world_size=2, deterministic=True)
    hashed = hashlib.sha256()
    for batch in source.batches(epoch, skip=skip):
        for name in sorted(batch):
            hashed.update(name.encode() + batch[name].numpy().tobytes())
    return hashed.hexdigest()


def test_a_new_process_resumes_the_same_batches(files):
    """What --resume relies on: another interpreter (other hash seed, no shared state) yields the same tail."""
    code = "import json, sys; from test_feed import digest; print(digest(json.loads(sys.argv[1]), 1, 3))"
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONWARNINGS="ignore")
    child = subprocess.run(
        [sys.executable, "-c", code, json.dumps(list(files))],
        cwd=Path(__file__).parent, env=env, capture_output=True, text=True,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.strip() == digest(files, 1, 3)


def test_ranks_read_disjoint_shards_that_cover_the_data_in_equal_steps(files):
    world = 3
    per_rank = [
        list(feed(files, rank=rank, world_size=world, drop_last=False, deterministic=True).batches(2))
        for rank in range(world)
    ]
    quota = -(-ROWS // (64 * world))
    assert [len(batches) for batches in per_rank] == [quota] * world
    assert all(len(b["timestamp"]) == 64 for batches in per_rank for b in batches)
    seen = [set(row_ids(batches).tolist()) for batches in per_rank]
    for a in range(world):
        check_rows_intact(per_rank[a])
        for b in range(a + 1, world):
            assert not seen[a] & seen[b]
    assert set().union(*seen) == set(range(ROWS))


def test_uneven_shards_still_give_every_rank_the_same_steps(files):
    world = 5  # 24 row groups: four ranks get 5, one gets 4
    counts, seen = [], []
    for rank in range(world):
        batches = list(feed(files, rank=rank, world_size=world, deterministic=True).batches(0, skip=1))
        counts.append(len(batches))
        seen.append(set(row_ids(batches).tolist()))
    assert counts == [ROWS // (64 * world) - 1] * world
    assert all(not seen[a] & seen[b] for a in range(world) for b in range(a + 1, world))


def test_several_workers_yield_every_row_once(files):
    batches = list(feed(files, workers=3, drop_last=False, shuffle_buffer=0).batches(0))
    check_rows_intact(batches)
    assert torch.equal(row_ids(batches).sort().values, torch.arange(ROWS))


def test_reader_threads_end_when_the_iterator_is_closed_early(files):
    before = {thread.ident for thread in threading.enumerate()}
    for options in (dict(workers=3), dict(workers=2, rank=1, world_size=2), dict(deterministic=True)):
        batches = feed(files, **options).batches(0)
        next(batches)
        batches.close()
    assert {thread.ident for thread in threading.enumerate()} <= before


def test_to_device_keeps_values_and_pins_only_with_cuda(files):
    batch = next(iter(feed(files, pin_memory=True).batches(0)))
    assert all(tensor.is_pinned() == torch.cuda.is_available() for tensor in batch.values())
    moved = to_device(batch, "cuda" if torch.cuda.is_available() else "cpu")
    assert moved.keys() == batch.keys()
    assert all(torch.equal(moved[name].cpu(), batch[name]) for name in batch)


def test_shuffle_buffer_gives_back_every_row_once():
    buffer = ShuffleBuffer(2, 1000, torch.Generator().manual_seed(0))
    rows = torch.arange(900).repeat(2, 1)
    taken = []
    for start in range(0, 900, 150):
        buffer.add(rows[:, start : start + 150])
        taken.append(buffer.take(40 if start % 300 else 130))  # both sampling paths (rejection, permutation)
    taken.append(buffer.take(len(buffer)))
    out = torch.cat(taken, dim=1)
    assert len(buffer) == 0 and torch.equal(out[0], out[1])
    assert torch.equal(out[0].sort().values, torch.arange(900))


@pytest.mark.parametrize("count", [3, 15])  # 3 of 40: draws with replacement; 15 of 40: a permutation
def test_shuffle_buffer_draws_uniformly_in_random_order(count):
    """Chi-square over 4000 seeded draws, each after an earlier draw moved rows around in the buffer: every
    row present is drawn with probability count/40 and comes first with probability 1/40
    (p = 0.001 threshold for 39 degrees of freedom: 72.05)."""
    size, trials = 40, 4000
    drawn, first = torch.zeros(size), torch.zeros(size)
    for trial in range(trials):
        buffer = ShuffleBuffer(1, size, torch.Generator().manual_seed(trial))
        buffer.add(torch.arange(size).unsqueeze(0))
        earlier = buffer.take(7)[0]
        buffer.add(torch.arange(size, size + 7).unsqueeze(0))
        kept = torch.arange(size)[~torch.isin(torch.arange(size), earlier)]
        present = torch.cat([kept, torch.arange(size, size + 7)])
        slots = torch.searchsorted(present, buffer.take(count)[0])  # each row's rank among the rows present
        drawn[slots] += 1
        first[slots[0]] += 1
    expected = trials * count / size
    assert (((drawn - expected) ** 2) / expected).sum() < 72.05
    assert (((first - trials / size) ** 2) / (trials / size)).sum() < 72.05


def write_parquet(path: Path, table: pa.Table) -> str:
    pq.write_table(table, path, row_group_size=2)
    return path.as_uri()


def test_bad_snapshots_are_refused_with_file_and_field(files, tmp_path):
    with pytest.raises(FeedError, match=r"part-.*column 'label' is missing"):
        ClickFeed(files, 64, seed=0, shuffle_buffer=0, workers=1, columns=("item_idx", "label"))
    with_null = pa.table({"user_idx": [1, 2, 3], "item_idx": pa.array([4, 5, None], pa.int32())})
    nulls = write_parquet(tmp_path / "nulls.parquet", with_null)
    with pytest.raises(FeedError, match=r"nulls\.parquet: row group 1 has 1 null values in column 'item_idx'"):
        ClickFeed([nulls], 1, seed=0, shuffle_buffer=0, workers=1)
    text = write_parquet(tmp_path / "text.parquet", pa.table({"user_idx": [1], "item_idx": ["a"]}))
    with pytest.raises(FeedError, match=r"text\.parquet: column 'item_idx' is string"):
        ClickFeed([text], 1, seed=0, shuffle_buffer=0, workers=1)
    with pytest.raises(FeedError, match="24 row groups, fewer than world_size=25"):
        feed(files, world_size=25)
    with pytest.raises(FeedError, match="fewer than one batch"):
        feed(files, batch_size=ROWS + 1)
    with pytest.raises(FeedError, match="no data files"):
        feed([])
    with pytest.raises(ValueError, match="workers=1"):
        feed(files, deterministic=True, workers=2)
    with pytest.raises(ValueError, match="skip"):
        feed(files).batches(0, skip=ROWS)
