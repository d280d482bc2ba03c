"""The trainer's click feed: Petastorm batches over the exact files of a pinned Delta snapshot.

Why a pinned file list and not the table directory: the directory also holds files that later Delta
versions removed, so reading it would mix versions. Batches carry indices only (``user_idx``,
``item_idx``); the trainer joins them to item features and log p_j on the device.

Order and resume: row groups are shuffled by Petastorm with a seed drawn from (seed, epoch), rows by a
shuffle buffer with a torch.Generator seeded by (seed, epoch, rank). In deterministic mode the reader runs
in the caller's thread, so a given (seed, epoch, rank) always yields the same batches and
``batches(epoch, skip=k)`` yields exactly the batches after the first k: a run resumes from
(epoch, batches consumed).

Sharding: each rank reads the row groups Petastorm assigns to ``cur_shard=rank`` of ``shard_count=world_size``
(petastorm 0.12: row group i of the snapshot goes to rank i mod world_size, in every epoch), so the ranks
read disjoint row groups that together cover the snapshot. DDP needs the same number of steps on every rank,
and shards differ in size (whole row groups), so with world_size > 1 every rank yields a fixed quota of full
batches, rows // (world_size * batch_size) (rounded up when drop_last is False), from its shard read in
whole passes: all of the shard comes out before any row repeats; a short shard wraps around into a second
pass (a few of its rows come twice), a long one is cut (a few rows, different ones each epoch, are left
out). This is the Horovod/Petastorm steps-per-epoch pattern.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import count, islice

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch

from towerssl.errors import UsageError

log = logging.getLogger(__name__)

# Petastorm 0.12 reads through pyarrow's legacy dataset API, and pyarrow 14 warns about it on every row group.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm(\.|$)")

Batch = dict[str, torch.Tensor]


class FeedError(UsageError):
    """The snapshot cannot feed training: a missing or non-integer column, nulls, or too little data."""


def _row_group_sizes(url: str, columns: Sequence[str]) -> list[int]:
    """Rows per row group of one file, after checking its schema and null counts from the footer alone."""
    filesystem, path = pafs.FileSystem.from_uri(url)
    with filesystem.open_input_file(path) as handle:
        metadata = pq.ParquetFile(handle).metadata
    schema = metadata.schema.to_arrow_schema()
    for column in columns:
        if column not in schema.names:
            raise FeedError(f"{url}: column {column!r} is missing (columns: {', '.join(schema.names)})")
        if not pa.types.is_integer(schema.field(column).type):
            raise FeedError(f"{url}: column {column!r} is {schema.field(column).type}, expected an integer index")
    leaf_paths = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    positions = [leaf_paths.index(column) for column in columns]
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for column, position in zip(columns, positions):
            stats = row_group.column(position).statistics
            if stats is not None and stats.has_null_count and stats.null_count > 0:
                raise FeedError(f"{url}: row group {group} has {stats.null_count} null values in column {column!r}")
    return [metadata.row_group(group).num_rows for group in range(metadata.num_row_groups)]


def _derived_seed(*parts: int) -> int:
    """A 32-bit seed from (seed, epoch[, rank]); the same in every process (no Python hash involved)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class ShuffleBuffer:
    """Rows waiting to be drawn at random, in fixed storage: a draw costs O(rows drawn), not O(buffer)."""

    def __init__(self, columns: int, capacity: int, generator: torch.Generator) -> None:
        self._rows = torch.empty((columns, capacity), dtype=torch.int64)
        self._size = 0
        self._generator = generator

    def __len__(self) -> int:
        return self._size

    def add(self, chunk: torch.Tensor) -> None:
        """Append rows [columns, n]."""
        end = self._size + chunk.shape[1]
        if end > self._rows.shape[1]:
            raise ValueError(f"{end} rows do not fit a shuffle buffer of {self._rows.shape[1]}")
        self._rows[:, self._size : end] = chunk
        self._size = end

    def take(self, count: int) -> torch.Tensor:
        """count rows [columns, count] drawn uniformly without replacement, in random order; the rest stay."""
        picked = self._distinct(count)
        drawn = self._rows.index_select(1, picked)
        end = self._size - count  # undrawn rows past the new end move into the holes before it
        holes = picked[picked < end]
        undrawn_tail = torch.ones(count, dtype=torch.bool)
        undrawn_tail[picked[picked >= end] - end] = False
        movers = end + undrawn_tail.nonzero().squeeze(1)
        self._rows.index_copy_(1, holes, self._rows.index_select(1, movers))
        self._size = end
        return drawn

    def _distinct(self, count: int) -> torch.Tensor:
        """count distinct positions below the size, uniformly, in random order."""
        if count * 4 >= self._size:
            return torch.randperm(self._size, generator=self._generator)[:count]
        # Draws with replacement: by symmetry the distinct values are a uniform subset of their number.
        picked = torch.empty(0, dtype=torch.int64)
        while picked.numel() < count:
            draws = torch.randint(self._size, (count + count // 2,), generator=self._generator)
            picked = torch.cat([picked, draws]).unique()
        return picked[torch.randperm(picked.numel(), generator=self._generator)[:count]]


class ClickFeed:
    """Shuffled batches of click indices from the files of one pinned snapshot, for one rank."""

    def __init__(
        self,
        snapshot_files: Sequence[str],
        batch_size: int,
        *,
        seed: int,
        shuffle_buffer: int,
        workers: int,
        rank: int = 0,
        world_size: int = 1,
        columns: Sequence[str] = ("user_idx", "item_idx"),
        drop_last: bool = True,
        deterministic: bool = False,
        pin_memory: bool = False,
    ) -> None:
        """snapshot_files: Snapshot.files of towerssl.lake.pinned_snapshot (URLs). deterministic: read in the
        caller's thread (needs workers=1) so batch order is exactly reproducible. pin_memory: put batches in
        page-locked memory when CUDA is available, for non-blocking copies (see to_device)."""
        if batch_size < 1 or shuffle_buffer < 0 or workers < 1 or seed < 0:
            raise ValueError("batch_size and workers must be >= 1, shuffle_buffer and seed >= 0")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        if deterministic and workers != 1:
            raise ValueError(f"deterministic reading uses one reader in the caller's thread: workers=1, not {workers}")
        if not columns:
            raise ValueError("columns must name at least one column")
        self.files = list(snapshot_files)
        if not self.files:
            raise FeedError("the snapshot has no data files (is the train_clicks table empty?)")
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.workers = workers
        self.rank = rank
        self.world_size = world_size
        self.columns = tuple(columns)
        self.drop_last = drop_last
        self.deterministic = deterministic
        self.pin_memory = pin_memory and torch.cuda.is_available()

        with ThreadPoolExecutor(max_workers=min(workers * 2, 16)) as pool:
            per_file = list(pool.map(lambda url: _row_group_sizes(url, self.columns), self.files))
        sizes = [size for file_sizes in per_file for size in file_sizes]
        self.num_row_groups = len(sizes)
        self.num_rows = sum(sizes)
        self.largest_row_group = max(sizes, default=0)
        if world_size > self.num_row_groups:
            raise FeedError(
                f"the snapshot has {self.num_row_groups} row groups, fewer than world_size={world_size}: "
                "every rank needs at least one (write train_clicks with more files)"
            )
        rows_per_step = batch_size * world_size
        whole, remainder = divmod(self.num_rows, rows_per_step)
        self.batches_per_epoch = whole + (1 if remainder and not drop_last else 0)
        if self.batches_per_epoch == 0:
            raise FeedError(
                f"the snapshot has {self.num_rows} rows, fewer than one batch of {batch_size} per rank "
                f"for {world_size} rank(s)"
            )
        log.info(
            "click feed: %d files, %d row groups, %d rows; rank %d/%d gets %d batches of %d per epoch",
            len(self.files), self.num_row_groups, self.num_rows, rank, world_size, self.batches_per_epoch, batch_size,
        )

    def batches(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """The batches of one epoch after the first `skip`: {column: int64 tensor of shape [batch]}.

        Exactly batches_per_epoch - skip batches. Exhaust or close() the iterator: that stops the reader.
        """
        if epoch < 0 or not 0 <= skip <= self.batches_per_epoch:
            raise ValueError(f"need epoch >= 0 and 0 <= skip <= {self.batches_per_epoch}, got {epoch}, {skip}")
        return self._batches(epoch, skip)

    def _batches(self, epoch: int, skip: int) -> Iterator[Batch]:
        generator = torch.Generator().manual_seed(_derived_seed(self.seed, epoch, self.rank))
        blocks = self._blocks(epoch, generator)
        try:
            for block in islice(blocks, skip, self.batches_per_epoch):
                yield {column: self._placed(block[j]) for j, column in enumerate(self.columns)}
        finally:
            blocks.close()  # stops and joins the reader now, also when the caller stops early

    def _blocks(self, epoch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """Blocks [columns, batch_size] drawn at random from a buffer kept at shuffle_buffer rows or more.

        After each row group, all the batches it makes ready are drawn at once (one draw per row group, not
        per batch). One rank reads its shard in whole passes: each pass is drained before the next starts and
        the rows short of a full batch lead the next pass, so a rank yields its entire shard before it repeats
        any row. Unsharded, there is exactly one pass, and its last rows form a short batch unless drop_last.
        """
        size = self.batch_size
        buffer = ShuffleBuffer(len(self.columns), self.shuffle_buffer + size + self.largest_row_group, generator)
        head = torch.empty((len(self.columns), 0), dtype=torch.int64)  # carried over from the previous pass
        for _ in count() if self.world_size > 1 else range(1):
            rows_read = 0
            with self._reader(epoch) as reader:
                for chunk in self._chunks(reader):
                    rows_read += chunk.shape[1]
                    buffer.add(chunk)
                    ready = max(0, head.shape[1] + len(buffer) - self.shuffle_buffer) // size
                    if ready:
                        drawn = _joined(head, buffer.take(ready * size - head.shape[1]))
                        head = head[:, :0]
                        yield from drawn.split(size, dim=1)
            if rows_read == 0:
                raise FeedError(f"rank {self.rank}'s shard of the snapshot has no rows in epoch {epoch}")
            drawn = _joined(head, buffer.take(len(buffer)))
            whole = drawn.shape[1] // size * size
            if whole:  # split() of no rows would still give one (empty) block
                yield from drawn[:, :whole].split(size, dim=1)
            head = drawn[:, whole:]
        if head.shape[1] and not self.drop_last:
            yield head

    @contextmanager
    def _reader(self, epoch: int):
        """A Petastorm reader over the rank's row groups, once; stopped and joined on exit."""
        from petastorm import make_batch_reader

        sharded = self.world_size > 1
        with make_batch_reader(
            self.files,
            schema_fields=list(self.columns),
            reader_pool_type="dummy" if self.deterministic else "thread",
            workers_count=self.workers,
            results_queue_size=max(4, 2 * self.workers),
            seed=_derived_seed(self.seed, epoch),  # the same on every rank: shard assignment must agree
            shuffle_row_groups=True,
            shuffle_rows=False,  # the shuffle buffer mixes rows, reproducibly
            num_epochs=1,
            cur_shard=self.rank if sharded else None,
            shard_count=self.world_size if sharded else None,
        ) as reader:
            yield reader

    def _chunks(self, reader) -> Iterator[torch.Tensor]:
        """One int64 tensor [columns, rows] per row group read."""
        for row_group in reader:
            arrays = [np.asarray(getattr(row_group, column)) for column in self.columns]
            for column, array in zip(self.columns, arrays):
                if array.dtype.kind not in "iu":
                    raise FeedError(f"column {column!r} read as {array.dtype} (null values in the snapshot?)")
            yield torch.from_numpy(np.stack(arrays).astype(np.int64, copy=False))

    def _placed(self, column: torch.Tensor) -> torch.Tensor:
        """A batch column is a contiguous view of the rows drawn; pinning copies it to page-locked memory."""
        return column.pin_memory() if self.pin_memory else column


def _joined(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """[columns, rows] blocks side by side, without a copy when one is empty."""
    if first.shape[1] == 0:
        return second
    return torch.cat([first, second], dim=1) if second.shape[1] else first


def to_device(batch: Batch, device: torch.device | str) -> Batch:
    """Move a batch to the device; pinned tensors copy asynchronously (non_blocking) to overlap with compute."""
    return {name: tensor.to(device, non_blocking=tensor.is_pinned()) for name, tensor in batch.items()}
