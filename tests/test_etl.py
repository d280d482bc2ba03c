"""The ETL job end to end on a small raw layout with a corpus of bad input (real Spark, real Delta)."""

from __future__ import annotations

import random

import pytest
from pyspark.sql import functions as F

from rawdata import FIELDS, clean_dataset, write_raw
from towerssl.etl.job import EtlConfig, run_etl
from towerssl.etl.layout import RawInputError
from towerssl.etl.split import split_global, split_per_user
from towerssl.etl.vocab import VOCAB_SCHEMA, build_vocab
from towerssl.lake import commit_metadata, latest_version, pinned_snapshot, read_table, table_path
from towerssl.spark import BROADCAST_ROWS

# (expected reason, expected field, the bad interaction row). Each row is otherwise plausible.
BAD_INTERACTIONS = [
    ("missing user_id", "user_id", ["", 101, 5000]),
    ("user_id is not a non-negative integer", "user_id", ["abc", 101, 5001]),
    ("item_id is not a non-negative integer", "item_id", [1, -5, 5002]),
    ("item_id is not a non-negative integer", "item_id", [1, "1.5", 5003]),
    ("missing timestamp", "timestamp", [1, 101, ""]),
    ("timestamp is not unix seconds", "timestamp", [1, 101, "2024-01-01T00:00:00"]),
    ("unknown item_id (not a valid row of the items input)", "item_id", [1, 999, 5004]),
    ("unknown user_id (not a valid row of the users input)", "user_id", [77, 101, 5005]),
    ("malformed record (wrong number of columns)", None, [1, 101, 5006, "extra"]),
]
BAD_ITEMS = [
    ("duplicate item_id", "item_id", [101, "z", "brand9"]),  # the copy whose (file, text) sorts first is kept
    ("item_id is not a non-negative integer", "item_id", ["i-7", "a", "brand1"]),
    ("category has 300 values, over the hard limit of 256", "category", [500, "|".join(f"v{i}" for i in range(300)), "b"]),
]
BAD_USERS = [("missing user_id", "user_id", ["", "F"]), ("duplicate user_id", "user_id", [2, "X"])]
INVALID_UTF8_LINE = b"3,102,5007\xff\n"
WINDOW = (0, 10**12)  # the timestamp window of the validation tests that call check_interactions


@pytest.fixture(scope="module")
def lake_run(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("etl")
    interactions, items, users = clean_dataset()
    interactions = interactions + [interactions[0]] + [row for _, _, row in BAD_INTERACTIONS]  # + a duplicate event
    items = items + [[107 + 10, "", ""], [118, "x|y|z|w|v", "brand1"]] + [row for _, _, row in BAD_ITEMS]  # no values; over max_len
    users = users + [row for _, _, row in BAD_USERS]
    raw = write_raw(root / "raw", interactions, items, users)
    with (raw / "interactions" / "part-1.csv").open("wb") as handle:  # a second file, with invalid UTF-8
        handle.write(b"user_id,item_id,timestamp\n" + INVALID_UTF8_LINE)
    (raw / "interactions" / "part-2.csv").write_bytes(b"")  # an empty part file is just no rows
    config = EtlConfig(input=str(raw), lake=str(root / "lake"))
    summary = run_etl(spark, config, run_id="first")
    return spark, config, summary, len(interactions) + 1, len(items), len(users)


def table(spark, config, name):
    return read_table(spark, config.lake, name)


def test_rows_in_equal_rows_written_plus_rejected(lake_run):
    spark, config, summary, n_clicks, n_items, n_users = lake_run
    assert summary["rows_in"] == {"interactions": n_clicks, "items": n_items, "users": n_users}
    rejects = table(spark, config, "rejects")
    per_input = dict(rejects.groupBy("input").count().collect())
    clicks_written = sum(table(spark, config, f"{s}_clicks").count() for s in ("train", "valid", "test"))
    assert clicks_written + per_input["interactions"] == n_clicks
    assert table(spark, config, "items").count() + per_input["items"] == n_items
    assert table(spark, config, "users").count() + per_input["users"] == n_users
    clicked = table(spark, config, "train_clicks").select("item_id").distinct()
    assert summary["new_items"] == table(spark, config, "items").join(clicked, "item_id", "left_anti").count()


def test_each_bad_row_is_rejected_with_its_reason_and_field(lake_run):
    spark, config, _, _, _, _ = lake_run
    rows = table(spark, config, "rejects").collect()
    found = {(r["input"], r["reason"], r["field"], r["raw"]) for r in rows}
    for name, cases in (("interactions", BAD_INTERACTIONS), ("items", BAD_ITEMS), ("users", BAD_USERS)):
        for reason, field, row in cases:
            raw = ",".join(str(v) for v in row)
            assert (name, reason, field, raw) in found, (name, reason, raw)
    assert ("interactions", "duplicate event", None, "1,103,1000") in found
    utf8 = [r for r in rows if r["reason"] == "invalid UTF-8"]
    assert len(utf8) == 1 and utf8[0]["source"].endswith("interactions/part-1.csv")
    assert {r["run_id"] for r in rows} == {"first"}
    expected = len(BAD_INTERACTIONS) + len(BAD_ITEMS) + len(BAD_USERS) + 2
    assert len(rows) == expected


def test_schema_vocab_contract_and_padding(lake_run):
    spark, config, _, _, _, _ = lake_run
    items = table(spark, config, "items")
    assert [(f.name, f.dataType.simpleString()) for f in items.schema] == [
        ("item_idx", "int"), ("item_id", "bigint"), ("item", "int"), ("category", "array<int>"), ("brand", "int")]
    rows = {r["item_id"]: r for r in items.collect()}
    assert sorted(r["item_idx"] for r in rows.values()) == list(range(len(rows)))
    assert all(len(r["category"]) == 3 for r in rows.values())
    vocab = {(r["field"], r["value"]): (r["index"], r["count"]) for r in table(spark, config, "vocab").collect()}
    # Missing values take the default index 1; multi-valued fields pad with 0 and truncate to max_len.
    assert rows[117]["category"] == [1, 0, 0] and rows[117]["brand"] == 1
    assert rows[118]["category"] == [vocab[("category", v)][0] for v in ("x", "y", "z")]
    # Known values start at 3, by descending count then value; counts are items carrying the value.
    for field in ("category", "brand", "gender", "item"):
        entries = sorted((index, -count, value) for (f, value), (index, count) in vocab.items() if f == field)
        assert [e[0] for e in entries] == list(range(3, 3 + len(entries)))
        assert entries == sorted(entries, key=lambda e: (e[1], e[2]))
    assert vocab[("category", "c")][1] == sum(1 for r in rows.values() if r["category"][0] == vocab[("category", "c")][0])
    # Items without a training click get the masked id value (DEFAULT, 1), and still have their features.
    train_items = {r["item_id"] for r in table(spark, config, "train_clicks").select("item_id").distinct().collect()}
    assert any(item_id not in train_items for item_id in rows)
    assert all((r["item"] == 1) == (item_id not in train_items) for item_id, r in rows.items())
    fields = sorted(table(spark, config, "fields").collect(), key=lambda r: r["position"])
    assert [(r["field"], r["owner"], r["multi"], r["length"]) for r in fields] == [
        ("item", "item", False, 1), ("category", "item", True, 3), ("brand", "item", False, 1), ("user", "user", False, 1), ("gender", "user", False, 1)]
    for r in fields:
        assert r["cardinality"] == 1 + max([2] + [i for (f, _), (i, _) in vocab.items() if f == r["field"]])


def test_global_split_is_last_tenth_by_time(lake_run):
    spark, config, _, _, _, _ = lake_run
    parts = {s: table(spark, config, f"{s}_clicks") for s in ("train", "valid", "test")}
    counts = {s: df.count() for s, df in parts.items()}
    total = sum(counts.values())
    assert counts["test"] == round(total * 0.1) and counts["valid"] == round(total * 0.1)
    bounds = {s: df.agg(F.min("timestamp"), F.max("timestamp")).first() for s, df in parts.items()}
    assert bounds["train"][1] <= bounds["valid"][0] and bounds["valid"][1] <= bounds["test"][0]
    assert len(pinned_snapshot(spark, config.lake, "train_clicks").files) > 1  # readers shard by file


def test_per_user_split_holds_out_each_users_last_clicks(spark):
    rows = [(u, i, 100 * u + t) for u in range(1, 4) for i, t in enumerate(range(10 * u))] + [(9, 1, 5), (9, 2, 6)]
    clicks = spark.createDataFrame(rows, "user_id long, item_id long, timestamp long")
    split = {(r["user_id"], r["timestamp"]): r["split"] for r in split_per_user(clicks, 0.1, 0.1, min_user_clicks=3).collect()}
    for user in range(1, 4):
        n = 10 * user
        held = max(1, round(n * 0.1))
        times = sorted(t for (u, t) in split if u == user)
        assert [split[(user, t)] for t in times] == ["train"] * (n - 2 * held) + ["valid"] * held + ["test"] * held
    assert split[(9, 5)] == split[(9, 6)] == "train"  # too few clicks: all in train


def test_global_split_breaks_timestamp_ties_by_user_then_item(spark):
    rows = [(u, i, 1000) for u in (2, 1) for i in (5, 4)] + [(1, 1, t) for t in range(6)]
    clicks = spark.createDataFrame(rows, "user_id long, item_id long, timestamp long")
    split = {(r["user_id"], r["item_id"], r["timestamp"]): r["split"] for r in split_global(clicks, 0.2, 0.2).collect()}
    # 10 clicks: the last 2 in (timestamp, user, item) order are test, the 2 before valid
    assert [k for k, v in sorted(split.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1])) if v != "train"] == [(1, 4, 1000), (1, 5, 1000), (2, 4, 1000), (2, 5, 1000)]
    assert split[(2, 4, 1000)] == split[(2, 5, 1000)] == "test" and split[(1, 4, 1000)] == "valid"


@pytest.mark.parametrize("buckets, exact_rows", [(4096, 200_000), (3, 4)])  # (3, 4): boundary buckets are split again
def test_global_split_matches_a_sorted_reference(spark, monkeypatch, buckets, exact_rows):
    import random

    from towerssl.etl import split as split_module

    monkeypatch.setattr(split_module, "BUCKETS", buckets)
    monkeypatch.setattr(split_module, "EXACT_ROWS", exact_rows)
    rng = random.Random(buckets)
    keys = sorted({(rng.choice([0, 5, 7, 7, 7, 900, 901, 10**9]) + rng.randrange(3), rng.randrange(6), rng.randrange(6)) for _ in range(300)})
    clicks = spark.createDataFrame([(u, i, t) for t, u, i in keys], "user_id long, item_id long, timestamp long")
    got = {(r["timestamp"], r["user_id"], r["item_id"]): r["split"] for r in split_global(clicks, 0.15, 0.1).collect()}
    n_test, n_valid = round(len(keys) * 0.1), round(len(keys) * 0.15)
    expected = ["train"] * (len(keys) - n_test - n_valid) + ["valid"] * n_valid + ["test"] * n_test
    assert [got[k] for k in keys] == expected  # keys sorted by (timestamp, user, item)


def test_commit_records_run_id_and_config(lake_run):
    spark, config, _, _, _, _ = lake_run
    meta = commit_metadata(spark, config.lake, "items")
    assert meta["run_id"] == "first" and meta["config"]["input"] == config.input


def test_rerun_is_idempotent_and_keeps_indices(lake_run):
    spark, config, _, _, _, _ = lake_run
    before = {t: sorted(map(str, table(spark, config, t).drop("run_id").collect())) for t in ("items", "vocab", "train_clicks", "rejects")}
    version = latest_version(spark, table_path(config.lake, "items"))
    callers = spark.range(5).cache()  # a frame the caller cached in the same session
    callers.count()
    run_etl(spark, config, run_id="second")
    after = {t: sorted(map(str, table(spark, config, t).drop("run_id").collect())) for t in before}
    assert after == before
    assert latest_version(spark, table_path(config.lake, "items")) == version + 1
    assert callers.storageLevel.useMemory  # still in the cache manager: the job unpersists its own frames only ...
    callers.unpersist()
    assert spark._jsparkSession.sharedState().cacheManager().isEmpty()  # ... and all of them


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("no_schema", "schema.yaml: schema file not found"),
        ("no_items", "items input not found"),
        ("missing_column", "missing required column(s) timestamp"),
        ("empty_interactions", "the interactions input has no rows"),
    ],
)
def test_unusable_input_stops_before_writing(lake_run, tmp_path, breakage, message):
    spark, config, _, _, _, _ = lake_run
    interactions, items, users = clean_dataset()
    raw = write_raw(tmp_path / "raw", interactions, items, users)
    if breakage == "no_schema":
        (raw / "schema.yaml").unlink()
    elif breakage == "no_items":
        for f in (raw / "items").iterdir():
            f.unlink()
        (raw / "items").rmdir()
    elif breakage == "missing_column":
        (raw / "interactions" / "part-0.csv").write_text("user_id,item_id\n1,101\n")
    else:
        (raw / "interactions" / "part-0.csv").write_text("user_id,item_id,timestamp\n")
    version = latest_version(spark, table_path(config.lake, "items"))
    with pytest.raises(RawInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_etl(spark, EtlConfig(input=str(raw), lake=config.lake))
    assert latest_version(spark, table_path(config.lake, "items")) == version


def test_vocab_keeps_previous_indices_and_appends_new_values(spark):
    previous = spark.createDataFrame([("brand", "b", 3, 5), ("brand", "a", 4, 2), ("item", "7", 3, 1)], VOCAB_SCHEMA)
    counts = spark.createDataFrame([("brand", "a", 9), ("brand", "c", 4), ("brand", "d", 4), ("brand", "e", 1), ("item", "8", 2)], "field string, value string, count long")
    vocab = {(r["field"], r["value"]): (r["index"], r["count"]) for r in build_vocab(counts, previous, min_count=2, id_min_count=1).collect()}
    assert vocab == {
        ("brand", "b"): (3, 0),  # gone from the data: keeps its index, count 0
        ("brand", "a"): (4, 9),  # kept index, new count
        ("brand", "c"): (5, 4), ("brand", "d"): (6, 4),  # new: after the field's max, by count then value
        ("item", "7"): (3, 0), ("item", "8"): (4, 2),
    }  # "e" is below min_count: unknown


def test_global_split_with_explicit_cutoffs(spark):
    clicks = spark.createDataFrame([(1, 1, t) for t in range(10)], "user_id long, item_id long, timestamp long")
    split = {r["timestamp"]: r["split"] for r in split_global(clicks, 0.1, 0.1, valid_from=6, test_from=8).collect()}
    assert [split[t] for t in range(10)] == ["train"] * 6 + ["valid"] * 2 + ["test"] * 2


@pytest.mark.parametrize("before", ["true", None])
def test_the_job_runs_with_its_settings_and_restores_the_session_ones(spark, monkeypatch, before):
    """Uncompressed caches, and file scans of at least 4 tasks per core unless the session sets a minimum."""
    from towerssl.etl import job

    seen = []
    monkeypatch.setattr(job, "_run_etl", lambda spark_, config, run_id: seen.append(
        (spark_.conf.get(job.CACHE_COMPRESSION), spark_.conf.get(job.MIN_FILE_PARTITIONS))) or {})
    for key, value in ((job.CACHE_COMPRESSION, before), (job.MIN_FILE_PARTITIONS, before and "3")):
        if value is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, value)
    job.run_etl(spark, EtlConfig(input="unused", lake="unused"))
    assert seen == [("false", "3" if before else str(4 * spark.sparkContext.defaultParallelism))]
    assert spark.conf.get(job.CACHE_COMPRESSION, None) == before
    assert spark.conf.get(job.MIN_FILE_PARTITIONS, None) == (before and "3")
    spark.conf.unset(job.MIN_FILE_PARTITIONS)


@pytest.mark.parametrize("second_scan", ["text lines", "whole input"])
def test_duplicate_events_keep_the_first_copy_by_file_then_text(spark, tmp_path, second_scan):
    """Copies of an event across files and within one file, written with leading zeros too, a look-alike row
    that fails a check, and a repeated bad line: one copy kept per event, every other row rejected once with
    its own raw line. The duplicates' lines come from either second scan: the text lines filtered for the
    keys' digits (CSV input), or the whole input parsed again (any reader)."""
    from rawdata import write_csv
    from towerssl.etl.layout import read_raw_layout
    from towerssl.etl.validate import check_interactions

    raw_dir = write_raw(tmp_path / "raw", [[1, 100, 10], [1, 100, 10], [2, 100, 11], ["x", 100, 12], ["x", 100, 12]], [[100, "a", "b"]], [[1, "F"]])
    header = ["user_id", "item_id", "timestamp"]
    write_csv(raw_dir / "interactions" / "part-1.csv", header, [[" 1", 100, 10], [3, 100, 13], ["+2", 100, 11]])
    write_csv(raw_dir / "interactions" / "part-2.csv", header, [["001", "0100", 10]])
    raw = read_raw_layout(spark, raw_dir)
    lines = raw.interaction_lines if second_scan == "text lines" else None
    checked = check_interactions(raw.interactions, spark.createDataFrame([(100,)], "item_id long"), None, partitions=3, window=WINDOW, lines=lines)
    assert sorted(tuple(r) for r in checked.valid.collect()) == [(1, 100, 10), (2, 100, 11), (3, 100, 13)]
    assert checked.valid.rdd.getNumPartitions() == 3
    assert checked.later_counts == {"duplicate event": 3}  # counted by the first scan; the lines come from a second
    rejects = sorted((r["reason"], r["raw"], r["source"].rsplit("/", 1)[-1]) for r in checked.rejects.unionByName(checked.later_rejects()).collect())
    assert rejects == [
        ("duplicate event", " 1,100,10", "part-1.csv"),  # part-0.csv sorts first: its copies are kept...
        ("duplicate event", "001,0100,10", "part-2.csv"),
        ("duplicate event", "1,100,10", "part-0.csv"),  # ...one of them: the other identical line is rejected
        ("user_id is not a non-negative integer", "+2,100,11", "part-1.csv"),  # parses as 2, but fails its check
        ("user_id is not a non-negative integer", "x,100,12", "part-0.csv"),
        ("user_id is not a non-negative integer", "x,100,12", "part-0.csv"),  # a repeated bad line: both rejected
    ]
    for frame in checked.caches:
        frame.unpersist()


@pytest.mark.parametrize("id_rows", [2, BROADCAST_ROWS + 1])
def test_id_rows_decides_the_broadcast_of_the_known_ids(spark, tmp_path, id_rows):
    """A bound on the id sets' rows (the job passes the inputs' row counts) decides whether they are broadcast,
    with no count of their own; either join finds the same known and unknown clicks."""
    from towerssl.etl.layout import read_raw_layout
    from towerssl.etl.validate import check_interactions

    raw_dir = write_raw(tmp_path / "raw", [[1, 100, 10], [2, 101, 11], [3, 999, 12]], [[100, "a", "b"], [101, "a", "b"]], [[1, "F"]])
    raw = read_raw_layout(spark, raw_dir)
    item_ids = spark.createDataFrame([(100,), (101,)], "item_id long").localCheckpoint()
    checked = check_interactions(raw.interactions, item_ids, None, partitions=2, window=WINDOW, id_rows=id_rows)
    plan = checked.caches[0]._jdf.queryExecution().optimizedPlan().toString()
    assert ("SortMergeJoin" in plan) == (id_rows > BROADCAST_ROWS), plan  # planned; AQE may still broadcast a tiny side
    assert sorted(tuple(r) for r in checked.valid.collect()) == [(1, 100, 10), (2, 101, 11)]
    assert [(r["reason"], r["raw"]) for r in checked.rejects.collect()] == [("unknown item_id (not a valid row of the items input)", "3,999,12")]
    for frame in checked.caches:
        frame.unpersist()


def test_more_repeated_keys_than_the_prefilter_takes_parse_the_whole_input(spark, tmp_path, monkeypatch):
    """Past PREFILTER_KEYS repeated keys the second scan does not read the text lines (its substring test would
    grow with every key); it parses the whole input and finds the same duplicate lines."""
    from towerssl.etl import validate
    from towerssl.etl.layout import read_raw_layout

    raw_dir = write_raw(tmp_path / "raw", [[1, 100, 10], [1, 100, 10], [2, 100, 11], [2, 100, 11]], [[100, "a", "b"]], [[1, "F"]])
    raw = read_raw_layout(spark, raw_dir)

    def lines_not_read(condition):
        raise AssertionError("the text lines were read for more keys than PREFILTER_KEYS")

    monkeypatch.setattr(validate, "PREFILTER_KEYS", 1)
    checked = validate.check_interactions(raw.interactions, spark.createDataFrame([(100,)], "item_id long"), None, partitions=2, window=WINDOW, lines=lines_not_read)
    assert sorted(r["raw"] for r in checked.later_rejects().collect()) == ["1,100,10", "2,100,11"]
    for frame in checked.caches:
        frame.unpersist()


def test_the_text_lines_of_a_csv_input_parse_like_the_csv_reader(spark, tmp_path):
    """interaction_lines parses the lines it keeps into the columns the CSV reader gives (raw and source
    included), quoted, malformed and header lines alike; the condition applies to the line's text."""
    from towerssl.etl.layout import read_raw_layout
    from towerssl.etl.raw import LINE_COL

    raw_dir = write_raw(tmp_path / "raw", [[1, 100, 10]], [[100, "a", "b"]], [[1, "F"]])
    path = raw_dir / "interactions" / "part-0.csv"
    path.write_text(path.read_text() + '"2","100","11"\n3,100\n"4,x",100,12\n5,100,13,extra\n')
    raw = read_raw_layout(spark, raw_dir)
    everything = raw.interaction_lines(F.lit(True))
    header_row = ("user_id", "item_id", "timestamp")
    assert sorted(tuple(r) for r in everything.collect() if tuple(r)[:3] != header_row) == sorted(tuple(r) for r in raw.interactions.collect())
    assert [r["user_id"] for r in raw.interaction_lines(F.col(LINE_COL).contains("100,1")).collect()] == ["1", "4,x", "5"]


def test_rejects_are_not_written_when_the_second_scan_disagrees_with_the_count(spark, tmp_path):
    from towerssl.etl.job import write_rejects
    from towerssl.etl.validate import CheckedClicks

    schema = "input string, source string, field string, reason string, raw string"
    found = spark.createDataFrame([("interactions", "f.csv", None, "duplicate event", "1,2,3")], schema)
    clicks = CheckedClicks(found, found, later_rejects=lambda: found, later_counts={"duplicate event": 2})
    with pytest.raises(RuntimeError, match="the second scan found .* the first counted"):
        write_rejects(found.withColumn("run_id", F.lit("r")), clicks, str(tmp_path), "r", {})
    assert not (tmp_path / "rejects").exists()


def test_without_a_users_input_the_users_are_the_clickers(spark, tmp_path):
    interactions, items, _ = clean_dataset(n_users=4)
    fields = [f for f in FIELDS if f["owner"] == "item"]
    raw = write_raw(tmp_path / "raw", interactions + [interactions[0]], items, None, fields)
    config = EtlConfig(input=str(raw), lake=str(tmp_path / "lake"))
    summary = run_etl(spark, config)
    users = table(spark, config, "users")
    assert [f.name for f in users.schema] == ["user_idx", "user_id", "user"]
    assert sorted(r["user_id"] for r in users.collect()) == [1, 2, 3, 4]
    assert sorted(r["user_idx"] for r in users.collect()) == [0, 1, 2, 3]
    assert summary["rows_rejected"] == {"interactions: duplicate event": 1}
    assert sum(summary["rows_written"][f"{s}_clicks"] for s in ("train", "valid", "test")) == len(interactions)


@pytest.mark.parametrize("window", [(5, 10**11), (0, 10**15)])  # keys below and above it; a window wider than the digits
def test_plainly_written_keys_skip_the_checks_only_where_the_checks_pass(spark, window):
    """_plain_keys is a shortcut: on random keys (blanks, signs, leading zeros, too many digits, decimals,
    letters, empties), every row it lets through passes every row check, so the first failure is the same
    with and without it."""
    from towerssl.etl.raw import CORRUPT_COL, RAW_COL
    from towerssl.etl.validate import _click_row_checks, _first_failure, _plain_keys

    rng = random.Random(7)
    pieces = ["", " ", "\t", "+", "-", "0", "00", "7", "42", "1.5", "x", "9" * 12, "9" * 13, "9" * 18, "9" * 19, "\ufffd"]

    def key() -> str:
        return rng.choice([str(rng.randrange(10**6)), str(rng.randrange(10**12)), "".join(rng.choice(pieces) for _ in range(rng.randint(0, 3)))])

    rows = [(key(), key(), key(), rng.choice([None, None, None, "broken line"])) for _ in range(3000)]
    df = spark.createDataFrame(rows, f"user_id string, item_id string, timestamp string, {CORRUPT_COL} string")
    df = df.withColumn(RAW_COL, F.coalesce(F.col(CORRUPT_COL), F.concat_ws(",", "user_id", "item_id", "timestamp")))
    full = _first_failure(_click_row_checks(df, window))
    shortcut = _plain_keys(df, window)
    result = df.select(shortcut.alias("plain"), full.alias("full"), F.when(~shortcut, full).alias("shortcut")).collect()
    assert all(r["full"] is None for r in result if r["plain"])
    assert all(r["full"] == r["shortcut"] for r in result)
    assert 0 < sum(r["plain"] for r in result) < sum(r["full"] is None for r in result)  # some valid rows take the long way
