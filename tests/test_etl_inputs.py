"""Inputs the ETL must neither lose nor alter (real Spark, real Delta): files Spark's listing would skip, CSV
read as RFC 4180, the timestamp window, ids that fit a long, U+FFFD in valid UTF-8; and whole inputs that
stop the job before any work."""

from __future__ import annotations

import time

import pytest

from rawdata import clean_dataset, write_raw
from towerssl.errors import UsageError
from towerssl.etl.csvtext import QUOTE_IN_FIELD, TEXT_AFTER_QUOTE, UNCLOSED_QUOTE
from towerssl.etl.job import DAY, EtlConfig, run_etl
from towerssl.etl.layout import RawInputError, read_raw_layout
from towerssl.etl.raw import INVALID_UTF8, WRONG_COLUMNS
from towerssl.etl.validate import OUTSIDE_WINDOW, check_interactions
from towerssl.lake import commit_metadata, read_table

ITEMS_HEADER = b"item_id,category,brand\n"
# Quoted fields (a line break, a lone CR, doubled quotes, backslashes) and records that are not well-formed.
# An unclosed quote rejects its first line only: the next line is a record again.
QUOTED_ITEMS = (
    b'200,a,"line one\nline two"\r\n201,a,"carriage\rreturn"\n202,a,"He said ""hi"""\n203,a,"C:\\temp\\"\n'
    b'205,a,mid"quote\n206,a,b,extra\n207,a,"x"y\n\n208,a,"fine"\n204,a,"unclosed\n209,a,plain\n'
)
QUOTED_VALUES = {"200": "line one\nline two", "201": "carriage\rreturn", "202": 'He said "hi"', "203": "C:\\temp\\", "208": "fine", "209": "plain"}
QUOTED_REJECTS = {('205,a,mid"quote', QUOTE_IN_FIELD), ("206,a,b,extra", WRONG_COLUMNS), ('207,a,"x"y', TEXT_AFTER_QUOTE), ('204,a,"unclosed', UNCLOSED_QUOTE)}
BIG_IDS = (1000000000000000001, 9223372036854775807)  # 19 digits, and the largest long
# A file with a byte that is not UTF-8 (read by the RFC 4180 parser), and one of valid UTF-8 holding U+FFFD
# itself (read by Spark's line reader, its header quoted): the first record is rejected, the U+FFFD values are kept.
ODD_TEXT_ITEMS = f"{BIG_IDS[0]},a,caf\ufffd\n{BIG_IDS[1]},a,b\n9223372036854775808,a,b\n".encode() + b"210,a,bad\xff\n"
FFFD_ITEMS = "211,a,x\ufffdy\n".encode()


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def edge_run(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    interactions, items, users = clean_dataset()
    raw = write_raw(root / "raw", interactions, items, users)
    _write(raw / "items" / "part-1.csv", ITEMS_HEADER + QUOTED_ITEMS)
    _write(raw / "items" / "part-2.csv", ITEMS_HEADER + ODD_TEXT_ITEMS)
    _write(raw / "items" / "part-3.csv", b'"item_id","category","brand"\n' + FFFD_ITEMS)  # a quoted header: the same columns
    future = int(time.time()) + 3 * DAY
    clicks = (  # quoted, with a duplicate event: its later copy comes from the second scan of the parsed records
        f'"1","{BIG_IDS[0]}","5100"\n"1","{BIG_IDS[0]}","5100"\n2,{BIG_IDS[1]},5101\n'
        f"3,200,956703932000\n4,200,{future}\n5,\"201\",5102\n"
    )
    _write(raw / "interactions" / "part-1.csv", b"user_id,item_id,timestamp\n" + clicks.encode())
    _write(raw / "interactions" / "part-2.csv", b"user_id,item_id,timestamp\n6,211,5103\n")
    _write(raw / "interactions" / "_SUCCESS", b"")  # no rows: not data, not an error
    _write(raw / "interactions" / ".part-2.csv.crc", b"\x00crc")  # Hadoop's checksum of part-2.csv
    config = EtlConfig(input=str(raw), lake=str(root / "lake"))
    before = time.time()
    summary = run_etl(spark, config, run_id="edge")
    rejects = read_table(spark, config.lake, "rejects").collect()
    return spark, config, summary, rejects, len(interactions), len(items), (before, time.time())


def _vocab(spark, config, field):
    return {r["value"] for r in read_table(spark, config.lake, "vocab").where(f"field = '{field}'").collect()}


def test_quoted_csv_values_are_read_as_rfc_4180(edge_run):
    spark, config, _, _, _, _, _ = edge_run
    assert set(QUOTED_VALUES.values()) <= _vocab(spark, config, "brand")
    item_ids = {r["item_id"] for r in read_table(spark, config.lake, "items").collect()}
    assert {int(i) for i in QUOTED_VALUES} <= item_ids and not {204, 205, 206, 207} & item_ids


def test_malformed_csv_records_are_rejected_with_reason_source_and_text(edge_run):
    _, _, summary, rejects, _, n_items, _ = edge_run
    quoted = {(r["raw"], r["reason"]) for r in rejects if r["source"].endswith("items/part-1.csv")}
    assert quoted == QUOTED_REJECTS
    assert all(r["field"] is None for r in rejects if (r["raw"], r["reason"]) in QUOTED_REJECTS)
    # rows in counts the records on disk: the clean part, 10 records (4 rejected), 4 and 1
    assert summary["rows_in"]["items"] == n_items + 10 + 4 + 1
    assert summary["rows_written"]["items"] == n_items + 6 + 2 + 1


def test_ids_that_fit_a_long_and_valid_u_fffd_are_kept_invalid_utf8_is_not(edge_run):
    spark, config, _, rejects, _, _, _ = edge_run
    item_ids = {r["item_id"] for r in read_table(spark, config.lake, "items").collect()}
    assert set(BIG_IDS) | {211} <= item_ids
    assert {"caf\ufffd", "x\ufffdy"} <= _vocab(spark, config, "brand")
    odd = {(r["raw"], r["reason"], r["field"]) for r in rejects if r["source"].endswith("items/part-2.csv")}
    assert odd == {("9223372036854775808,a,b", "item_id is not a non-negative integer", "item_id"), ("210,a,bad\ufffd", INVALID_UTF8, None)}
    clicked = {(r["user_id"], r["item_id"]) for s in ("train", "valid", "test") for r in read_table(spark, config.lake, f"{s}_clicks").collect()}
    assert {(1, BIG_IDS[0]), (2, BIG_IDS[1]), (5, 201), (6, 211)} <= clicked


def test_timestamps_outside_the_window_are_rejected_and_the_window_is_recorded(edge_run):
    spark, config, summary, rejects, n_clicks, _, (before, after) = edge_run
    outside = sorted(r["raw"].split(",")[0] for r in rejects if r["reason"] == OUTSIDE_WINDOW)
    assert outside == ["3", "4"]  # the millisecond timestamp and the one three days ahead
    assert all(r["field"] == "timestamp" for r in rejects if r["reason"] == OUTSIDE_WINDOW)
    low, high = summary["timestamp_window"]
    assert low == 0 and before + DAY - 1 <= high <= after + DAY
    assert commit_metadata(spark, config.lake, "train_clicks")["config"]["max_timestamp"] == high
    duplicates = [r for r in rejects if r["reason"] == "duplicate event"]
    assert [r["raw"] for r in duplicates] == [f'"1","{BIG_IDS[0]}","5100"']
    assert summary["rows_in"]["interactions"] == n_clicks + 6 + 1
    assert sum(summary["rows_written"][f"{s}_clicks"] for s in ("train", "valid", "test")) == n_clicks + 4


def test_the_window_is_configurable(spark, tmp_path):
    raw_dir = write_raw(tmp_path / "raw", [[1, 100, 10], [1, 100, 20], [1, 100, 30]], [[100, "a", "b"]], [[1, "F"]])
    raw = read_raw_layout(spark, raw_dir)
    checked = check_interactions(raw.interactions, spark.createDataFrame([(100,)], "item_id long"), None, partitions=2, window=(15, 25))
    assert [tuple(r) for r in checked.valid.collect()] == [(1, 100, 20)]
    assert sorted((r["raw"], r["reason"]) for r in checked.rejects.collect()) == [("1,100,10", OUTSIDE_WINDOW), ("1,100,30", OUTSIDE_WINDOW)]
    for frame in checked.caches:
        frame.unpersist()
    with pytest.raises(UsageError, match="min_timestamp <= max_timestamp"):
        EtlConfig(input="in", lake="lake", min_timestamp=20, max_timestamp=10)


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("hidden", r"start with '_' or '.', which Spark would not read: \.part-8\.csv, _part-9\.csv"),
        ("hidden_directory", r"which Spark would not read: \.ipynb_checkpoints/part-0\.csv"),
        ("no_files", "the items input holds no files"),
        ("hidden_file_input", r"which Spark would not read: _clicks\.csv"),
        ("header_order", "the interactions part files' headers differ: part-0.csv has user_id,item_id,timestamp; part-1.csv has item_id,user_id,timestamp"),
    ],
)
def test_whole_input_errors_stop_the_job_before_any_work(spark, tmp_path, breakage, message):
    interactions, items, users = clean_dataset()
    raw = write_raw(tmp_path / "raw", interactions, items, users)
    if breakage == "hidden":
        _write(raw / "interactions" / "_part-9.csv", b"user_id,item_id,timestamp\n1,100,9000\n")
        _write(raw / "interactions" / ".part-8.csv", b"user_id,item_id,timestamp\n1,101,9001\n")
    elif breakage == "hidden_directory":
        _write(raw / "items" / ".ipynb_checkpoints" / "part-0.csv", (raw / "items" / "part-0.csv").read_bytes())
    elif breakage == "hidden_file_input":  # the schema names a single file that Spark would skip
        (raw / "interactions" / "part-0.csv").rename(raw / "_clicks.csv")
        (raw / "schema.yaml").write_text((raw / "schema.yaml").read_text().replace("interactions: interactions", "interactions: _clicks.csv"))
    elif breakage == "no_files":
        (raw / "items" / "part-0.csv").unlink()
    else:
        _write(raw / "interactions" / "part-1.csv", b"item_id,user_id,timestamp\n100,1,9000\n")
    with pytest.raises(RawInputError, match=message) as caught:
        run_etl(spark, EtlConfig(input=str(raw), lake=str(tmp_path / "lake")))
    assert isinstance(caught.value, UsageError) and "\n" not in str(caught.value)  # one line, exit 2
    assert not (tmp_path / "lake").exists()


def test_parquet_inputs_are_listed_by_the_job_and_keep_valid_u_fffd(spark, tmp_path):
    """The same listing for Parquet inputs; a string holding U+FFFD (valid UTF-8) is kept."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    interactions, items, users = clean_dataset()
    raw = tmp_path / "raw"
    for name, header, rows in (("interactions", ["user_id", "item_id", "timestamp"], interactions),
                               ("items", ["item_id", "category", "brand"], [[i, c, "x\ufffdy" if i == 100 else b] for i, c, b in items]),
                               ("users", ["user_id", "gender"], users)):
        (raw / name).mkdir(parents=True)
        pq.write_table(pa.table({h: [row[k] for row in rows] for k, h in enumerate(header)}), raw / name / "part-0.parquet")
    fields = [{"name": "category", "owner": "item", "multi": True, "sep": "|"}, {"name": "brand", "owner": "item"}, {"name": "gender", "owner": "user"}]
    (raw / "schema.yaml").write_text(yaml.safe_dump({"format": "parquet", "interactions": "interactions", "items": "items", "users": "users", "fields": fields}))
    config = EtlConfig(input=str(raw), lake=str(tmp_path / "lake"))
    summary = run_etl(spark, config)
    assert summary["rows_rejected"] == {} and "x\ufffdy" in _vocab(spark, config, "brand")
    pq.write_table(pa.table({"user_id": [1], "item_id": [101], "timestamp": [9000]}), raw / "interactions" / "_part-1.parquet")
    with pytest.raises(RawInputError, match=r"which Spark would not read: _part-1\.parquet"):
        run_etl(spark, config)
