"""The ETL job: raw logs -> validated, encoded Delta tables (items, users, *_clicks, vocab, fields, rejects).

Everything that can make the run unusable (missing file or column, empty input, bad config) fails before
the first table is written. Each table is replaced in one Delta commit and the run record (towerssl.runs),
appended after the last, is the run's commit point: readers pin the tables of the last recorded run, so a
run that fails midway leaves the previous run readable.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial, reduce
from pathlib import Path
from typing import Any, TypeVar

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from towerssl.config import build_config, check_types, config_dict
from towerssl.errors import UsageError
from towerssl.etl.layout import RawInputError, read_raw_layout, read_schema
from towerssl.etl.raw import FieldDef, RawInput
from towerssl.etl.split import SPLITS, STRATEGIES, split_cold_items, split_global, split_leave_last_out, split_per_user
from towerssl.etl.validate import Checked, CheckedClicks, check_entities, check_interactions
from towerssl.etl.vocab import ID_FIELDS, build_vocab, encode, feature_counts, id_counts, long_values, with_id_index
from towerssl.fields import FIELDS_SCHEMA, ITEM_ID_FIELD, USER_ID_FIELD, FeatureSpec, FieldSpec
from towerssl.indices import UNTRAINED_ID_CHOICES
from towerssl.lake import read_table, write_table
from towerssl.runs import RunRecorder, latest_record
from towerssl.spark import BROADCAST_ROWS, broadcast_if_small, scheduler_pool, spark_session

log = logging.getLogger(__name__)

FORMATS = ("raw", "movielens-100k", "movielens-1m", "movielens-latest-small", "amazon-s3rec")
UNTIMED_FORMATS = ("amazon-s3rec",)  # timestamps are positions in a user's list: a time cut across users means nothing
RESERVED = {"item", "user", "item_id", "user_id", "item_idx", "user_idx", "timestamp", "split"}
T = TypeVar("T")
DAY = 86_400


@dataclass(frozen=True)
class EtlConfig:
    input: str
    lake: str
    format: str = "raw"
    split: str = "global"  # global | per-user | leave-last-out | cold-items
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    valid_from: int | None = None  # global split with explicit cutoffs (unix seconds, inclusive)
    test_from: int | None = None
    min_user_clicks: int = 3  # per-user and leave-last-out splits (cold-items: warm clicks): users with fewer keep all in train
    cold_item_fraction: float = 0.1  # cold-items split: share of the items whose clicks are all held out
    split_seed: int = 0  # cold-items split: seeds which items are cold and which of them are valid or test
    validation: bool = True  # false: no valid_clicks, those clicks stay in train (the final fit on train + valid)
    min_count: int = 1  # feature values seen on fewer items (users) map to unknown
    id_min_count: int = 1  # item / user ids with fewer training clicks take the untrained id value
    untrained_id: str = "masked"  # that value: masked (as SSL masks ids) | unknown (the old shared id, to compare)
    multi_length: int = 8  # padded length of multi-valued fields without their own max_len
    multi_hard_limit: int = 256  # more values than this in one field: the row is rejected
    click_files: int = 8  # data files per clicks table: readers shard and shuffle by file and row group
    min_timestamp: int = 0  # clicks outside [min_timestamp, max_timestamp] (unix seconds) are rejected
    max_timestamp: int | None = None  # None: the run's start plus one day (recorded with the tables)

    def __post_init__(self) -> None:
        check_types(self, "etl")
        if self.format not in FORMATS:
            raise UsageError(f"format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.untrained_id not in UNTRAINED_ID_CHOICES:
            raise UsageError(f"untrained_id must be one of {', '.join(UNTRAINED_ID_CHOICES)}, got {self.untrained_id!r}")
        if self.split not in STRATEGIES:
            raise UsageError(f"split must be one of {', '.join(STRATEGIES)}, got {self.split!r}")
        if self.split == "global" and self.format in UNTIMED_FORMATS:
            raise UsageError(f"split global cuts all clicks at one time, but {self.format} logs have no timestamps (only each user's order): use split leave-last-out, per-user or cold-items")
        if not 0 < self.cold_item_fraction < 1:
            raise UsageError(f"cold_item_fraction must be in (0, 1), got {self.cold_item_fraction}")
        if not (0 <= self.valid_fraction < 1 and 0 < self.test_fraction < 1 and self.valid_fraction + self.test_fraction < 1):
            raise UsageError("valid_fraction and test_fraction must be in [0, 1) and sum to less than 1")
        if min(self.click_files, self.multi_length, self.multi_hard_limit) < 1:
            raise UsageError("click_files, multi_length and multi_hard_limit must be >= 1")
        if min(self.min_user_clicks, self.min_count, self.id_min_count) < 1:
            raise UsageError(f"min_user_clicks, min_count and id_min_count must be >= 1, got {self.min_user_clicks}, {self.min_count}, {self.id_min_count}")
        if (self.valid_from is None) != (self.test_from is None) or (self.test_from is not None and self.valid_from >= self.test_from):
            raise UsageError(f"valid_from and test_from go together, with valid_from < test_from (got {self.valid_from} and {self.test_from}): "
                             "without a validation window `towerssl train` has no validation clicks")
        lake = Path(self.lake)
        blocked = next((p for p in (lake, *lake.parents) if p.exists() and not p.is_dir()), None) if "://" not in self.lake else None
        if blocked is not None:
            raise UsageError(f"lake {self.lake}: {blocked} is a file, not a directory")
        if self.min_timestamp < 0 or (self.max_timestamp is not None and self.max_timestamp < self.min_timestamp):
            raise UsageError(f"need 0 <= min_timestamp <= max_timestamp, got {self.min_timestamp} and {self.max_timestamp}")


def read_input(spark: SparkSession, config: EtlConfig) -> RawInput:
    if config.format == "raw":
        return read_raw_layout(spark, config.input)
    if config.format == "amazon-s3rec":
        from towerssl.etl.amazon import read_amazon

        return read_amazon(spark, config.input)
    from towerssl.etl.movielens import read_movielens

    return read_movielens(spark, config.input, config.format)


def _check_field_names(fields: tuple[FieldDef, ...]) -> None:
    names = [f.name for f in fields]
    clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & RESERVED))
    if clash:
        raise RawInputError(f"feature field names must be unique and not reserved ({', '.join(sorted(RESERVED))}): {', '.join(clash)}")


class _Stages:
    """Log lines with the seconds each materialized stage took (Spark is lazy: the time lands where rows are made)."""

    def __init__(self) -> None:
        self.last = time.time()

    def done(self, what: str) -> None:
        now = time.time()
        log.info("%s in %.1f s", what, now - self.last)
        self.last = now


def _materialized(df: DataFrame) -> DataFrame:
    """Compute once and cut the lineage: later stages plan from these rows, not from the raw files again.

    Without the cut the plans of the final writes hold every validation, join and window before them and
    exhaust a 1 GiB driver. localCheckpoint keeps the rows on the executors: a lost executor fails the job,
    which a scheduler's retry then reruns from the raw input.
    """
    return df.localCheckpoint(eager=True)


def _fields_of(vocab: DataFrame | None, fields: Iterable[str], keep: bool) -> DataFrame | None:
    """The rows of `vocab` whose field is (keep) or is not (not keep) one of `fields`."""
    if vocab is None:
        return None
    listed = F.col("field").isin(*fields)
    return vocab.where(listed if keep else ~listed)


def _field_rows(fields: tuple[FieldDef, ...], lengths: dict[str, int | None], vocab: DataFrame) -> list[dict[str, Any]]:
    """The `fields` table: each owner's id field, then its feature fields; checked by the contract the trainer reads it with."""
    top = dict(vocab.groupBy("field").agg(F.max("index")).collect())
    ordered = [(ITEM_ID_FIELD, "item")] + [(f.name, f.owner) for f in fields if f.owner == "item"]
    ordered += [(USER_ID_FIELD, "user")] + [(f.name, f.owner) for f in fields if f.owner == "user"]
    spec = FeatureSpec(tuple(
        FieldSpec(name, owner, lengths[name] is not None, lengths[name] or 1, max(int(top.get(name) or 2), 2) + 1) for name, owner in ordered
    ))
    return spec.rows()


def _concurrently(spark: SparkSession, *steps: Callable[[], T]) -> list[T]:
    """Run independent steps in threads, each in its own scheduler pool, and return their results in order
    (the first error is raised).

    Many of the job's Spark jobs are small (a few tasks, then a Delta commit on the driver): run side by side,
    they keep the cores busy while another waits."""
    with ThreadPoolExecutor(max_workers=len(steps), thread_name_prefix="etl") as pool:
        futures = [pool.submit(_in_pool, spark, f"etl-step-{i}", step) for i, step in enumerate(steps)]
        return [future.result() for future in futures]


def _in_pool(spark: SparkSession, pool: str, step: Callable[..., T], *args: Any) -> T:
    """step(*args) with this thread's Spark jobs in their own scheduler pool."""
    scheduler_pool(spark, pool)
    return step(*args)


CACHE_COMPRESSION = "spark.sql.inMemoryColumnarStorage.compressed"
MIN_FILE_PARTITIONS = "spark.sql.files.minPartitionNum"
TASKS_PER_CORE = 4  # file scans are split into at least this many tasks per core


def job_settings(spark: SparkSession) -> dict[str, str]:
    """Session settings the job runs with (restored after it):

    - caches of validated rows uncompressed: on 10M clicks this made the job 25% faster (docs/benchmarks.md)
      for more cache memory;
    - file scans split into at least TASKS_PER_CORE tasks per core, unless the session sets its own minimum:
      Spark's default packs 10 input files into 3 tasks on 2 cores, and the third then runs alone while the
      other core idles (2.5-4 s of 62 on 10M clicks)."""
    settings = {CACHE_COMPRESSION: "false"}
    if spark.conf.get(MIN_FILE_PARTITIONS, None) is None:
        settings[MIN_FILE_PARTITIONS] = str(TASKS_PER_CORE * spark.sparkContext.defaultParallelism)
    return settings


def run_etl(spark: SparkSession, config: EtlConfig, run_id: str | None = None) -> dict[str, Any]:
    """Run the job with job_settings(spark) and return its summary (counts per table and per reject reason)."""
    settings = job_settings(spark)
    previous = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        return _run_etl(spark, config, run_id)
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def _run_etl(spark: SparkSession, config: EtlConfig, run_id: str | None) -> dict[str, Any]:
    run_id = run_id or uuid.uuid4().hex[:12]
    recorder = RunRecorder(config.lake, "etl", run_id)
    started = time.time()
    if config.max_timestamp is None:  # once per run, so every check and the tables' record see one window
        config = dataclasses.replace(config, max_timestamp=int(started) + DAY)
    stages = _Stages()
    raw = read_input(spark, config)
    _check_field_names(raw.fields)
    lengths = {ITEM_ID_FIELD: None, USER_ID_FIELD: None} | {f.name: (f.max_len or config.multi_length) if f.multi else None for f in raw.fields}
    entities = _validated_entities(spark, raw, config)
    last_run = latest_record(config.lake, "etl")  # earlier indices come from the last complete run's vocab
    previous = _materialized(read_table(spark, config.lake, "vocab", last_run.tables["vocab"])) if last_run else None
    stages.done("validated items and users")

    # The features need no click: their vocabularies and encoding are made while the clicks are validated.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="etl-clicks") as pool:
        clicks_future = pool.submit(_in_pool, spark, "etl-clicks", _validated_clicks, raw, entities, config)
        try:
            feature_vocab = _feature_vocab(raw, entities, previous, config)
            items_encoded, users_encoded = _concurrently(
                spark,
                lambda: _encoded(entities.valid_items, "item_id", raw.fields_of("item"), lengths, feature_vocab, "item_idx"),
                lambda: _encoded(entities.valid_users, "user_id", raw.fields_of("user"), lengths, feature_vocab, "user_idx") if entities.valid_users is not None else None,
            )
            stages.done("feature vocabularies and encoding")
        finally:
            clicks, split = clicks_future.result()  # its error wins: it names the bad input
    stages.done("clicks validated and split (beside the features)")
    if users_encoded is None:  # no users input: users are the valid clickers, with only the id field
        users_encoded = _encoded(_materialized(split.select("user_id").distinct()), "user_id", (), lengths, feature_vocab, "user_idx")
    rejects = reduce(DataFrame.unionByName, [checked.rejects for checked in (entities.items, entities.users, clicks) if checked is not None])
    rejects = _materialized(rejects.withColumn("run_id", F.lit(run_id)))

    def id_vocabulary() -> tuple[DataFrame, DataFrame]:
        """Id counts on the training clicks and the id vocabulary (earlier indices kept)."""
        ids = _materialized(id_counts(split.where(F.col("split") == "train"), list(ID_FIELDS)))
        return ids, _materialized(build_vocab(ids, _fields_of(previous, ID_FIELDS, keep=True), config.min_count, config.id_min_count))

    # The id vocabulary is made while the row counts are checked (nothing is written before the check passes).
    n_items, n_users = items_encoded.count(), users_encoded.count()
    (reject_counts, split_counts), (ids, id_vocab) = _concurrently(
        spark, partial(_conserved, entities.rows_in, {"items": n_items, "users": n_users}, rejects, clicks.later_counts, split), id_vocabulary
    )
    stages.done("rejects, row counts and id vocabularies")

    vocab = feature_vocab.unionByName(id_vocab)
    clicks_indexed = _indexed_clicks(split, items_encoded, users_encoded, n_items, n_users, config)
    tables = {  # how to make each table: the small ones need a few Spark jobs, run in their writers' threads
        **{f"{s}_clicks": partial(_split_rows, clicks_indexed, s) for s in SPLITS},
        "vocab": lambda: vocab,
        "items": lambda: _entity_table(items_encoded, "item", raw.fields_of("item"), id_vocab, config.untrained_id),
        "users": lambda: _entity_table(users_encoded, "user", raw.fields_of("user"), id_vocab, config.untrained_id),
        "fields": lambda: spark.createDataFrame(_field_rows(raw.fields, lengths, vocab), FIELDS_SCHEMA),
    }
    written = _write_tables(spark, tables, rejects, clicks, config, recorder)
    recorder.finish()  # the commit point: readers see this run from here on
    stages.done(f"{len(written)} tables written")
    summary = {
        "run_id": run_id,
        "rows_in": entities.rows_in,
        "rows_written": {
            "interactions": sum(split_counts.values()), "items": n_items, "users": n_users,
            **{f"{s}_clicks": split_counts.get(s, 0) for s in SPLITS},
        },
        "rows_rejected": {f"{source}: {reason}": n for (source, reason), n in sorted(reject_counts.items())},
        "timestamp_window": [config.min_timestamp, config.max_timestamp],
        "new_items": n_items - ids.where(F.col("field") == "item").count(),  # items without a clicked id in train_clicks
        "seconds": round(time.time() - started, 1),
    }
    log.info("etl done: %s", json.dumps(summary))
    for checked in filter(None, (entities.items, entities.users, clicks)):  # the validation steps' persisted frames, no one else's
        for frame in checked.caches:
            frame.unpersist()
    return summary


@dataclass(frozen=True)
class _Entities:
    """The items and users inputs, checked, with their valid rows materialized, and every input's row count."""

    rows_in: dict[str, int]  # interactions, items (and users)
    items: Checked
    valid_items: DataFrame
    users: Checked | None
    valid_users: DataFrame | None


def _validated_entities(spark: SparkSession, raw: RawInput, config: EtlConfig) -> _Entities:
    """Items and users validated and every input counted; an empty input stops the job here.

    The clicks are counted while items and users are validated: small jobs side by side keep both cores busy."""

    def validated(df: DataFrame, name: str, key: str, owner: str) -> tuple[int, Checked, DataFrame]:
        checked = check_entities(df, name, key, raw.fields_of(owner), config.multi_hard_limit)
        return df.count(), checked, _materialized(checked.valid)

    n_clicks, (n_items, items, valid_items), with_users = _concurrently(
        spark,
        raw.interactions.count,
        lambda: validated(raw.items, "items", "item_id", "item"),
        lambda: validated(raw.users, "users", "user_id", "user") if raw.users is not None else None,
    )
    rows_in = {"interactions": n_clicks, "items": n_items}
    users, valid_users = None, None
    if with_users is not None:
        rows_in["users"], users, valid_users = with_users
    for name, count in rows_in.items():
        if count == 0:
            raise RawInputError(f"{config.input}: the {name} input has no rows")
    log.info("read %s", ", ".join(f"{n:,} {k}" for k, n in rows_in.items()))
    return _Entities(rows_in, items, valid_items, users, valid_users)


def _validated_clicks(raw: RawInput, entities: _Entities, config: EtlConfig) -> tuple[CheckedClicks, DataFrame]:
    """The clicks, validated (one row per event, persisted, in the clicks tables' partitions) and split."""
    started = time.time()
    valid_users = entities.valid_users.select("user_id") if entities.valid_users is not None else None
    clicks = check_interactions(raw.interactions, entities.valid_items.select("item_id"), valid_users, config.click_files,
                                (config.min_timestamp, config.max_timestamp), raw.interaction_lines, id_rows=max(entities.rows_in["items"], entities.rows_in.get("users", 0)))
    if config.split == "global":  # a column computed from the persisted clicks: nothing more to materialize
        split = split_global(clicks.valid, config.valid_fraction, config.test_fraction, config.valid_from, config.test_from, config.validation)
    else:  # a window per user: materialized, in the files' partitioning again
        if config.split == "leave-last-out":
            split = split_leave_last_out(clicks.valid, config.min_user_clicks, config.validation)
        elif config.split == "cold-items":
            split = split_cold_items(clicks.valid, config.cold_item_fraction, config.split_seed, config.valid_fraction, config.test_fraction,
                                     config.min_user_clicks, config.validation)
        else:
            split = split_per_user(clicks.valid, config.valid_fraction, config.test_fraction, config.min_user_clicks, config.validation)
        split = _materialized(split.repartition(config.click_files, "user_id", "item_id", "timestamp"))
    if split.where(F.col("split") == "train").limit(1).count() == 0:
        raise RawInputError(f"{config.input}: no valid click falls in the training window")
    log.info("validated and split the clicks (%s) in %.1f s", config.split, time.time() - started)
    return clicks, split


def _feature_values(entities: DataFrame, key: str, fields: Iterable[FieldDef]) -> DataFrame:
    return long_values(entities, key, [f.name for f in fields])


def _feature_vocab(raw: RawInput, entities: _Entities, previous: DataFrame | None, config: EtlConfig) -> DataFrame:
    """The feature fields' vocabulary: values count the entities carrying them; earlier indices are kept."""
    values = _feature_values(entities.valid_items, "item_id", raw.fields_of("item")).select("field", "value")
    if entities.valid_users is not None:
        values = values.unionByName(_feature_values(entities.valid_users, "user_id", raw.fields_of("user")).select("field", "value"))
    counts = _materialized(feature_counts(values))
    return _materialized(build_vocab(counts, _fields_of(previous, ID_FIELDS, keep=False), config.min_count, config.id_min_count))


def _encoded(valid: DataFrame, key: str, fields: tuple[FieldDef, ...], lengths: dict[str, int | None], vocab: DataFrame, index: str) -> DataFrame:
    """The entities' feature columns and their dense index (by id): everything but the id field."""
    table = encode(valid, key, _feature_values(valid, key, fields), vocab, {f.name: lengths[f.name] for f in fields})
    return _materialized(table.withColumn(index, (F.row_number().over(Window.orderBy(key)) - 1).cast("int")))


def _entity_table(encoded: DataFrame, owner: str, fields: tuple[FieldDef, ...], id_vocab: DataFrame, untrained_id: str) -> DataFrame:
    """The items or users table: dense index, raw id, the id field's index, then the feature fields."""
    key = ID_FIELDS[owner]
    return with_id_index(encoded, key, owner, id_vocab, untrained_id).select(f"{owner}_idx", key, owner, *[f.name for f in fields])


def _indexed_clicks(split: DataFrame, items: DataFrame, users: DataFrame, n_items: int, n_users: int, config: EtlConfig) -> DataFrame:
    """The split clicks with the items' and users' dense indices."""
    clicks = (  # the id maps are small next to the clicks: broadcast, they keep the clicks' partitions
        split.join(broadcast_if_small(items.select("item_id", "item_idx"), n_items), "item_id")
        .join(broadcast_if_small(users.select("user_id", "user_idx"), n_users), "user_id")
        .select("user_idx", "item_idx", "user_id", "item_id", "timestamp", "split")
    )
    if max(n_items, n_users) > BROADCAST_ROWS:  # shuffled joins: back to click_files partitions
        clicks = clicks.repartition(config.click_files, "user_idx", "item_idx", "timestamp")
    return clicks


def _split_rows(clicks: DataFrame, split: str) -> DataFrame:
    return clicks.where(F.col("split") == split).drop("split")


def _write_tables(spark: SparkSession, tables: dict[str, Callable[[], DataFrame]], rejects: DataFrame, clicks: CheckedClicks,
                  config: EtlConfig, recorder: RunRecorder) -> list[str]:
    """`tables` and rejects, all at once, each made and written in a thread and scheduler pool of its own
    (etl-write-<table>): the held-out clicks tables do not wait for train's, nor the small tables for any.
    Returns the names of the tables written."""
    config_record = config_dict(config)

    def write(table: str, make: Callable[[], DataFrame]) -> None:
        write_table(make(), config.lake, table, recorder.run_id, config_record)
        recorder.committed(table)

    def write_rejects_table() -> None:
        write_rejects(rejects, clicks, config.lake, recorder.run_id, config_record)
        recorder.committed("rejects")

    with ThreadPoolExecutor(max_workers=len(tables) + 1, thread_name_prefix="etl-write") as writers:
        written = [writers.submit(_in_pool, spark, f"etl-write-{table}", write, table, make) for table, make in tables.items()]
        written.append(writers.submit(_in_pool, spark, "etl-write-rejects", write_rejects_table))
        for future in written:
            future.result()
    return [*tables, "rejects"]


def _conserved(rows_in: dict[str, int], entities_out: dict[str, int], rejects: DataFrame, later_counts: dict[str, int],
               split: DataFrame) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
    """Check that every input row is written or rejected, per input; return the reject counts per (input,
    reason) and the clicks per split. The duplicate events' lines are not scanned yet (that runs beside the
    writes), but their number is known (later_counts)."""
    reject_counts = {(r["input"], r["reason"]): r["count"] for r in rejects.groupBy("input", "reason").count().collect()}
    reject_counts |= {("interactions", reason): n for reason, n in later_counts.items()}
    split_counts = dict(split.groupBy("split").count().collect())
    rows_out = {"interactions": sum(split_counts.values()), **entities_out}
    for name, count in rows_in.items():
        rejected = sum(n for (source, _), n in reject_counts.items() if source == name)
        if count != rows_out[name] + rejected:
            raise RuntimeError(f"row count not conserved for {name}: {count} in, {rows_out[name]} written, {rejected} rejected")
    for (source, reason), count in sorted(reject_counts.items()):
        log.warning("rejected %d %s rows: %s", count, source, reason)
    return reject_counts, split_counts


def write_rejects(rejects: DataFrame, clicks: CheckedClicks, lake: str, run_id: str, config_record: dict[str, Any]) -> None:
    """The rejects table: `rejects` plus the clicks' later rejects, which are scanned here and must number
    what the conservation check counted."""
    if clicks.later_rejects is not None:
        later = _materialized(clicks.later_rejects().withColumn("run_id", F.lit(run_id)))
        found = {r["reason"]: r["count"] for r in later.groupBy("reason").count().collect()}
        if found != clicks.later_counts:
            raise RuntimeError(f"interactions: the second scan found {found} rejected rows, the first counted {clicks.later_counts}; did the input change while the job ran?")
        rejects = rejects.unionByName(later)
    write_table(rejects, lake, "rejects", run_id, config_record)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="raw input: the raw layout's directory, a MovieLens directory, or for amazon-s3rec the log DIR/<Name>.txt (its items: DIR/<Name>_item2attributes.json)")
    parser.add_argument("--lake", required=True, help="output directory of the Delta tables (LAKE_DIR/<table>)")
    parser.add_argument("--format", choices=FORMATS, help="input format (default: raw)")
    parser.add_argument("--config", help="YAML file; its `etl:` section sets any option below (flags win)")
    parser.add_argument("--split", choices=STRATEGIES, help="global (default; not for amazon-s3rec, which has no timestamps): last clicks of all; per-user: "
                        "each user's last clicks; leave-last-out: each user's last click is test, the one before valid; cold-items: "
                        "a share of the items has all its clicks in valid or in test (by item), the others split per user")
    parser.add_argument("--valid-fraction", type=float, help="share of clicks in the validation window (default 0.1)")
    parser.add_argument("--test-fraction", type=float, help="share of clicks in the test window (default 0.1)")
    parser.add_argument("--valid-from", type=int, help="global split: first validation timestamp (unix seconds); needs --test-from")
    parser.add_argument("--test-from", type=int, help="global split: first test timestamp (unix seconds); needs --valid-from; wins over fractions")
    parser.add_argument("--min-user-clicks", type=int, help="per-user and leave-last-out splits (cold-items: the warm clicks): fewer clicks keep the user all in train (default 3)")
    parser.add_argument("--cold-item-fraction", type=float, help="cold-items split: share of the items that are cold, none of their clicks in train (default 0.1)")
    parser.add_argument("--split-seed", type=int, help="cold-items split: seed of which items are cold, and valid or test (default 0)")
    parser.add_argument("--no-validation", dest="validation", action="store_const", const=False,
                        help="no valid_clicks: the clicks the split would hold out for validation stay in train (the final fit on train + valid)")
    parser.add_argument("--min-count", type=int, help="feature values on fewer items/users map to unknown (default 1)")
    parser.add_argument("--id-min-count", type=int, help="ids with fewer training clicks take the masked id value, as new ones do (default 1)")
    parser.add_argument("--untrained-id", choices=tuple(UNTRAINED_ID_CHOICES), help="id value of items/users without a trained id: masked (default; as SSL masks ids) or unknown (the old shared id, to compare)")
    parser.add_argument("--multi-length", type=int, help="padded length of multi-valued fields (default 8)")
    parser.add_argument("--multi-hard-limit", type=int, help="reject rows with more values than this in a field (default 256)")
    parser.add_argument("--click-files", type=int, help="data files per clicks table, the unit of reader sharding (default 8)")
    parser.add_argument("--master", help="Spark master (default: spark-submit's, else local[*])")


def config_from_args(args: argparse.Namespace) -> EtlConfig:
    overrides = {k: v for k, v in vars(args).items() if k not in {"config", "master", "command", "verbose"}}
    return build_config(EtlConfig, args.config, overrides, section="etl")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if config.format == "raw":
        read_schema(config.input)  # a broken schema.yaml stops the job before Spark starts (run_etl reads it again)
    spark = spark_session("towerssl-etl", master=args.master)
    run_etl(spark, config)
    return 0
