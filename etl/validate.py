"""Row validation: every raw record ends up either typed and valid or in the rejects frame with a reason.

Checks run in a fixed order and the first failing one names the reason (and the field), so the counts per
reason are stable. Nothing is dropped silently: callers assert rows in = rows kept + rows rejected.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial, reduce

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Row, Window
from pyspark.sql import functions as F

from towerssl.etl.raw import CORRUPT_COL, INVALID_UTF8, LINE_COL, RAW_COL, REASON_COL, SOURCE_COL, FieldDef
from towerssl.spark import broadcast_if_small

REJECT_COLUMNS = ("input", "source", "field", "reason", "raw")
TIMESTAMP_DIGITS = 12  # unix seconds; the window (min_timestamp, max_timestamp) then bounds them
ID_RANGE = (0, 2**63 - 1)  # ids: non-negative longs
OUTSIDE_WINDOW = "timestamp outside the plausible window (etl min_timestamp, max_timestamp)"


@dataclass(frozen=True)
class Checked:
    """Valid rows (typed) and rejected rows (REJECT_COLUMNS) of one input, and the persisted frames both read
    (the caller unpersists them when the job is done)."""

    valid: DataFrame
    rejects: DataFrame
    caches: tuple[DataFrame, ...] = ()


@dataclass(frozen=True)
class CheckedClicks(Checked):
    """Checked, plus the rejects that need another scan of the input (the raw lines of duplicate events):
    made on demand, so the scan can run beside other work; how many rows it returns, per reason, is known."""

    later_rejects: Callable[[], DataFrame] | None = None
    later_counts: dict[str, int] = dataclasses.field(default_factory=dict)  # reason -> rows


def _first_failure(checks: list[tuple[Column, str | None, Column | str]]) -> Column:
    """struct(field, reason) of the first check whose condition holds, else null."""
    expr = None
    for condition, field, reason in checks:
        value = F.struct(F.lit(field).cast("string").alias("field"), (reason if isinstance(reason, Column) else F.lit(reason)).alias("reason"))
        expr = F.when(condition, value) if expr is None else expr.when(condition, value)
    return expr


def _id_checks(name: str) -> list[tuple[Column, str, str]]:
    """Digits whose value fits a long (a longer number casts to null)."""
    col = F.col(name)
    return [
        (col.isNull() | (F.trim(col) == ""), name, f"missing {name}"),
        (~col.rlike(r"^\s*[0-9]+\s*$") | col.cast("long").isNull(), name, f"{name} is not a non-negative integer"),
    ]


def _record_checks(df: DataFrame) -> list[tuple[Column, str | None, Column | str]]:
    """The reader's own reason (REASON_COL), or, for a reader that decodes with replacement, CORRUPT_COL and
    U+FFFD in the text."""
    if REASON_COL in df.columns:
        return [(F.col(REASON_COL).isNotNull(), None, F.col(REASON_COL))]
    checks = [(F.col(RAW_COL).contains("\ufffd"), None, INVALID_UTF8)]
    if CORRUPT_COL in df.columns:
        checks.insert(0, (F.col(CORRUPT_COL).isNotNull(), None, "malformed record (wrong number of columns or bad quoting)"))
    return checks


def field_values(field: FieldDef) -> Column:
    """The field's values as array<string>: trimmed, empties removed, duplicates removed in order."""
    col = F.col(field.name)
    if field.multi:
        parts = F.split(F.coalesce(col, F.lit("")), re.escape(field.sep))
    else:
        parts = F.array(F.coalesce(col, F.lit("")))
    return F.array_distinct(F.filter(F.transform(parts, lambda v: F.trim(v)), lambda v: v != ""))


def _reject_rows(df: DataFrame, input_name: str, failure: Column, *extra: Column) -> DataFrame:
    """The rows of `df` as rejects (REJECT_COLUMNS): `failure` is their struct(field, reason)."""
    return df.select(
        F.lit(input_name).alias("input"),
        F.col(SOURCE_COL).alias("source"),
        failure["field"].alias("field"),
        failure["reason"].alias("reason"),
        F.col(RAW_COL).alias("raw"),
        *extra,
    )


def _split(df: DataFrame, failure: Column, input_name: str, keep: list[Column]) -> Checked:
    """Valid and rejected rows from one evaluation of the checks (persisted: both halves read it)."""
    flagged = df.withColumn("_failure", failure).persist(StorageLevel.MEMORY_AND_DISK)
    rejects = _reject_rows(flagged.where(F.col("_failure").isNotNull()), input_name, F.col("_failure"))
    valid = flagged.where(F.col("_failure").isNull()).select(*keep)
    return Checked(valid, rejects, (flagged,))


def _later_copy(keys: list[str]) -> Column:
    """True for every row after the first of its key (deterministic order: source file, then raw text)."""
    order = Window.partitionBy(*keys).orderBy(SOURCE_COL, RAW_COL)
    return F.row_number().over(order) > 1


def check_entities(df: DataFrame, input_name: str, key: str, fields: tuple[FieldDef, ...], hard_limit: int) -> Checked:
    """Items or users: a valid id, at most `hard_limit` values per multi-valued field, one row per id.

    The checks are evaluated once (persisted). Repeated ids are found by counting the ids (a shuffle of the
    ids alone) and only their rows are ranked, by source file then raw text; most inputs have none."""
    with_values = df.select(
        "*", *[field_values(f).alias(f"_v_{f.name}") for f in fields]
    )
    checks = _record_checks(df) + _id_checks(key)
    checks += [
        (F.size(f"_v_{f.name}") > hard_limit, f.name, F.format_string(f"{f.name} has %d values, over the hard limit of {hard_limit}", F.size(f"_v_{f.name}")))
        for f in fields
        if f.multi
    ]
    row_level = _split(with_values, _first_failure(checks), input_name, [F.col("*")])
    typed = row_level.valid.withColumn(key, F.trim(key).cast("long"))
    keep = [F.col(key)] + [F.col(f"_v_{f.name}").alias(f.name) for f in fields]
    repeated = typed.groupBy(key).count().where(F.col("count") > 1).select(key, F.lit(True).alias("_repeated"))
    n_repeated = repeated.count()  # fills the cache
    if not n_repeated:
        return Checked(typed.select(*keep), row_level.rejects, row_level.caches)
    marked = typed.join(broadcast_if_small(repeated, n_repeated), key, "left")
    ranked = marked.where(F.col("_repeated")).withColumn("_later", _later_copy([key]))
    deduped = _split(ranked, _first_failure([(F.col("_later"), key, f"duplicate {key}")]), input_name, keep)
    valid = marked.where(F.col("_repeated").isNull()).select(*keep).unionByName(deduped.valid)
    return Checked(valid, row_level.rejects.unionByName(deduped.rejects), row_level.caches + deduped.caches)


KEYS = ["user_id", "item_id", "timestamp"]  # an event; a second row with the same key is a duplicate
DUPLICATE_EVENT = "duplicate event"


def check_interactions(df: DataFrame, item_ids: DataFrame, user_ids: DataFrame | None, partitions: int, window: tuple[int, int],
                       lines: Callable[[Column], DataFrame] | None = None, id_rows: int | None = None) -> CheckedClicks:
    """Clicks: valid ids, a timestamp within `window` (inclusive unix seconds), a known item (and user, when
    users are given), no duplicate event.

    valid holds one row per distinct event key, hash-partitioned by the key into `partitions` partitions
    (the clicks tables' data files) and persisted. One scan of the input and one shuffle make it: every row
    is checked, and the shuffle groups the valid rows by key (copies counted) and carries the failing rows
    with their raw text; valid rows never carry theirs. The raw lines of duplicate events, which rarely
    exist, come from a second scan restricted to the repeated keys: the first copy of a key in (source file,
    raw text) order is kept, the later ones are rejected (`later_rejects`, counted in `later_counts`).
    lines: RawInput.interaction_lines; with it, and few repeated keys, that scan parses only the lines that
    hold the keys' digits. id_rows: at most this many rows in item_ids and in user_ids (e.g. the inputs' row
    counts), so the id sets need no count to be broadcast; None: counted."""
    row_failure = _first_failure(_click_row_checks(df, window))
    # The checks are evaluated once, as their own column (Spark keeps a costly column in its own projection):
    # inlined into each key's expression they ran four times per row, a third of the scan's time. Rows whose
    # keys are written plainly skip them (_plain_keys); the cast trims the blanks the checks allow.
    passed = F.col("_row_failure").isNull()
    typed = df.withColumn("_row_failure", F.when(~_plain_keys(df, window), row_failure)).select(
        *[F.when(passed, F.col(c).cast("long")).alias(c) for c in KEYS], "_row_failure", SOURCE_COL, RAW_COL
    )
    typed = typed.join(broadcast_if_small(item_ids.select("item_id", F.lit(True).alias("_known_item")), id_rows), "item_id", "left")
    if user_ids is not None:
        typed = typed.join(broadcast_if_small(user_ids.select("user_id", F.lit(True).alias("_known_user")), id_rows), "user_id", "left")
    else:
        typed = typed.withColumn("_known_user", F.lit(True))
    failure = F.coalesce(F.col("_row_failure"), _first_failure([
        (F.col("_known_item").isNull(), "item_id", "unknown item_id (not a valid row of the items input)"),
        (F.col("_known_user").isNull(), "user_id", "unknown user_id (not a valid row of the users input)"),
    ]))
    failing = F.col("_failure").isNotNull()
    compact = typed.withColumn("_failure", failure).select(
        *[F.when(~failing, F.col(c)).alias(c) for c in KEYS], "_failure", *[F.when(failing, F.col(c)).alias(c) for c in (SOURCE_COL, RAW_COL)]
    )
    # Grouped by key, the failing rows by their text too: identical lines in one file become one group, its copies counted.
    grouped = compact.repartition(partitions, *KEYS).groupBy(*KEYS, "_failure", SOURCE_COL, RAW_COL).agg(F.count(F.lit(1)).alias("_copies"))
    grouped = grouped.persist(StorageLevel.MEMORY_AND_DISK)
    valid = grouped.where(~failing).select(*KEYS)
    copies = F.explode(F.array_repeat(F.lit(0), F.col("_copies").cast("int"))).alias("_copy")  # a row per copy
    rejects = _reject_rows(grouped.where(failing), "interactions", F.col("_failure"), copies).drop("_copy")
    repeated = grouped.where(~failing & (F.col("_copies") > 1)).select(*KEYS, "_copies")
    n_repeated, extra_copies = repeated.agg(F.count(F.lit(1)), F.sum(F.col("_copies") - 1)).first()  # fills the cache
    if not n_repeated:
        return CheckedClicks(valid, rejects, (grouped,))
    return CheckedClicks(
        valid, rejects, (grouped,),
        later_rejects=partial(_duplicate_events, df, lines, row_failure, repeated.select(*KEYS), n_repeated),
        later_counts={DUPLICATE_EVENT: int(extra_copies)},
    )


def _plain_keys(df: DataFrame, window: tuple[int, int]) -> Column:
    """True for rows that pass every row check for certain: a well-formed record, and each key in canonical
    decimal (no blank, sign or leading zero), the ids non-negative and the timestamp within `window`.
    Comparing a key with its value written back costs less than the checks' regular expressions, which then
    run only on the other rows."""
    plain = ~reduce(Column.__or__, [condition for condition, _, _ in _record_checks(df)])
    timestamps = (window[0], min(window[1], 10**TIMESTAMP_DIGITS - 1))  # within the window and the digits
    for name, (low, high) in (("user_id", ID_RANGE), ("item_id", ID_RANGE), ("timestamp", timestamps)):
        value = F.col(name).cast("long")
        plain &= (F.col(name) == value.cast("string")) & value.between(low, high)
    return F.coalesce(plain, F.lit(False))  # a key that is no number makes the comparison null: not plain


def _click_row_checks(df: DataFrame, window: tuple[int, int]) -> list[tuple[Column, str | None, Column | str]]:
    ts = F.col("timestamp")
    return _record_checks(df) + _id_checks("user_id") + _id_checks("item_id") + [
        (ts.isNull() | (F.trim(ts) == ""), "timestamp", "missing timestamp"),
        (~ts.rlike(rf"^\s*[0-9]{{1,{TIMESTAMP_DIGITS}}}\s*$"), "timestamp", "timestamp is not unix seconds"),
        (~ts.cast("long").between(*window), "timestamp", OUTSIDE_WINDOW),
    ]


PREFILTER_KEYS = 64  # up to this many repeated keys, the second scan tests each line's text for them first


def _may_hold(keys: list[Row]) -> Column:
    """True for every line that can hold a valid row of one of `keys`: such a row's fields are digits (with
    blanks or quotes around them), so its line contains each part of the key as written in decimal."""
    line = F.col(LINE_COL)
    holds = [line.contains(str(key["timestamp"])) & line.contains(str(key["user_id"])) & line.contains(str(key["item_id"])) for key in keys]
    return reduce(lambda a, b: a | b, holds)


def _duplicate_events(df: DataFrame, lines: Callable[[Column], DataFrame] | None, row_failure: Column, repeated: DataFrame, n_repeated: int) -> DataFrame:
    """The later copies of the `repeated` keys, with their raw lines, from a second scan of the input.

    Their rows passed every check in the first scan (the ids of a repeated key are known) and the checks
    are deterministic, so this scan finds exactly the copies counted there. With `lines` and at most
    PREFILTER_KEYS keys it parses only the lines whose text may hold one (a substring test, a few times
    cheaper than parsing every line); otherwise it parses the whole input again."""
    if lines is not None and n_repeated <= PREFILTER_KEYS:
        keys = repeated.collect()
        df = lines(_may_hold(keys))
        repeated = df.sparkSession.createDataFrame(keys, repeated.schema)  # the keys at hand: the clicks are not scanned for them again
    parsed = df.select(*[F.trim(c).cast("long").alias(f"_{c}") for c in KEYS], *df.columns)
    matched = parsed.join(broadcast_if_small(repeated.select(*[F.col(c).alias(f"_{c}") for c in KEYS]), n_repeated), [f"_{c}" for c in KEYS], "left_semi")
    # Materialized before the checks: Spark would push them below the join and run them on every row again.
    copies = (
        matched.localCheckpoint()
        .where(row_failure.isNull())
        .select(*[F.col(f"_{c}").alias(c) for c in KEYS], SOURCE_COL, RAW_COL)
        .withColumn("_later", _later_copy(KEYS))
        .where("_later")
    )
    return _reject_rows(copies, "interactions", _first_failure([(F.lit(True), None, DUPLICATE_EVENT)]))
