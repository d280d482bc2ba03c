"""Rows/s of the click feed's reader and shuffle buffer against a bare Petastorm read of the same files.

    python bench/bench_feed_reader.py [--rows 4000000] [--files 8]

CPU only, no training (bench/bench_feed.py measures the feed inside the training loop). OMP_NUM_THREADS=1
shows the feed without torch intra-op threads. Writes plain parquet files shaped like train_clicks, with
128k-row row groups (Spark writes larger ones) so that a small table still has many.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from towerssl.trainer.feed import ClickFeed

warnings.filterwarnings("ignore", category=FutureWarning)
BATCH = 4096


def write_clicks(root: Path, rows: int, files: int) -> list[str]:
    rng = np.random.default_rng(0)
    urls = []
    for part, ids in enumerate(np.array_split(np.arange(rows, dtype=np.int64), files)):
        table = pa.table({
            "user_idx": rng.integers(3, 100_000, ids.size, dtype=np.int32),
            "item_idx": rng.integers(3, 50_000, ids.size, dtype=np.int32),
            "user_id": ids, "item_id": ids, "timestamp": ids,
        })
        path = root / f"part-{part:05d}.parquet"
        pq.write_table(table, path, row_group_size=128 * 1024)
        urls.append(path.as_uri())
    return urls


def bare_petastorm_rows_per_s(urls: list[str], workers: int) -> float:
    from petastorm import make_batch_reader

    start, rows = time.perf_counter(), 0
    with make_batch_reader(urls, schema_fields=["user_idx", "item_idx"], workers_count=workers, num_epochs=1) as reader:
        for row_group in reader:
            rows += len(row_group.item_idx)
    return rows / (time.perf_counter() - start)


def feed_rows_per_s(urls: list[str], **options) -> float:
    feed = ClickFeed(urls, BATCH, seed=0, **options)
    start, rows = time.perf_counter(), 0
    for batch in feed.batches(0):
        rows += batch["item_idx"].numel()
    return rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--files", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        urls = write_clicks(Path(tmp), args.rows, args.files)
        threads = torch.get_num_threads()
        print(f"{args.rows} rows in {args.files} files, batches of {BATCH}, torch intra-op threads: {threads}")
        for workers in (1, 4):
            bare = bare_petastorm_rows_per_s(urls, workers)
            print(f"bare petastorm, {workers} reader thread(s): {bare / 1e6:.2f} M rows/s")
            for buffer in (0, 100_000, 1_000_000):
                rate = feed_rows_per_s(urls, shuffle_buffer=buffer, workers=workers)
                print(f"  feed, {workers} reader thread(s), shuffle_buffer={buffer}: {rate / 1e6:.2f} M rows/s "
                      f"({rate / bare:.2f} x bare)")
        rate = feed_rows_per_s(urls, shuffle_buffer=100_000, workers=1, deterministic=True)
        print(f"feed, deterministic (caller's thread), shuffle_buffer=100000: {rate / 1e6:.2f} M rows/s")
        rate = feed_rows_per_s(urls, shuffle_buffer=100_000, workers=4, rank=1, world_size=2)
        print(f"feed, rank 1 of 2, 4 reader threads, shuffle_buffer=100000: {rate / 1e6:.2f} M rows/s")


if __name__ == "__main__":
    main()
