"""The amazon-s3rec format through the real ETL: a handmade file pair (brand/category rule, bad tokens
rejected and counted), the refusal of the global split, and the real Toys_and_Games log."""

from __future__ import annotations

import json

import pytest
from pyspark.sql import functions as F

from conftest import shared_dataset
from towerssl.cli import main
from towerssl.errors import UsageError
from towerssl.etl.job import EtlConfig, run_etl
from towerssl.lake import read_table

# Attribute ids: 7 and 8 only ever first (brands); 1..4 appear at position >= 1 (categories). Item 30's
# first id, 2, is a category elsewhere, so item 30 has no brand. Item 20 repeats category 1.
ATTRIBUTES = {"10": [7, 1, 2], "20": [8, 1, 3, 1], "30": [2, 4], "40": [7]}
EXPECTED_ITEMS = {  # item_id -> (brand, categories)
    10: ("7", ["1", "2"]),
    20: ("8", ["1", "3"]),
    30: (None, ["2", "4"]),
    40: ("7", []),
}
LOG = [
    "1 10 20 30 40",
    "2 20 x 10",  # a non-integer item id: one row rejected, the others kept
    "",  # an empty line: one row rejected
    "3 40 30 99",  # 99 has no attributes: rejected as an unknown item
    "4",  # a user without items: one row rejected
]


def _write_pair(tmp_path, log=LOG, attributes=ATTRIBUTES):
    (tmp_path / "Tiny.txt").write_text("\n".join(log) + "\n")
    (tmp_path / "Tiny_item2attributes.json").write_text(json.dumps(attributes))
    return tmp_path / "Tiny.txt"


def _decoded(spark, lake, field):
    """item_id -> the raw values of `field` (vocabulary indices decoded back to their values)."""
    vocab = {r["index"]: r["value"] for r in read_table(spark, lake, "vocab").where(F.col("field") == field).collect()}
    return {r["item_id"]: r[field] for r in read_table(spark, lake, "items").collect()}, vocab


def test_amazon_reader_rule_rejects_and_conservation(spark, tmp_path):
    log = _write_pair(tmp_path)
    config = EtlConfig(input=str(log), lake=str(tmp_path / "lake"), format="amazon-s3rec", split="per-user")
    summary = run_etl(spark, config)
    # rows in: one per item token, one per line without items (the empty line and user 4)
    assert summary["rows_in"] == {"interactions": 4 + 3 + 1 + 3 + 1, "items": 4}
    assert summary["rows_rejected"] == {
        "interactions: item_id is not a non-negative integer": 1,
        "interactions: missing user_id": 1,
        "interactions: missing item_id": 1,
        "interactions: unknown item_id (not a valid row of the items input)": 1,
    }
    assert summary["rows_written"]["interactions"] == 8
    rejects = {r["reason"]: r for r in read_table(spark, config.lake, "rejects").collect()}
    assert rejects["item_id is not a non-negative integer"]["raw"] == "2 20 x 10"
    assert rejects["missing item_id"]["raw"] == "4"

    # timestamps are the 0-based positions of the items in their line (a bad token keeps its position)
    clicks = read_table(spark, config.lake, "train_clicks").unionByName(read_table(spark, config.lake, "valid_clicks")).unionByName(read_table(spark, config.lake, "test_clicks"))
    events = {(r["user_id"], r["item_id"], r["timestamp"]) for r in clicks.collect()}
    assert events == {(1, 10, 0), (1, 20, 1), (1, 30, 2), (1, 40, 3), (2, 20, 0), (2, 10, 2), (3, 40, 0), (3, 30, 1)}

    brands, brand_vocab = _decoded(spark, config.lake, "brand")
    categories, category_vocab = _decoded(spark, config.lake, "categories")
    for item, (brand, cats) in EXPECTED_ITEMS.items():
        assert brand_vocab.get(brands[item]) == brand  # no brand: the default index 1, not in the vocabulary
        assert [category_vocab[i] for i in categories[item] if i > 1] == cats  # 0 pads; 1 (default) means none
    fields = {r["field"]: r for r in read_table(spark, config.lake, "fields").collect()}
    assert not fields["brand"]["multi"] and fields["categories"]["multi"]


def test_amazon_malformed_attribute_list_is_rejected(spark, tmp_path):
    log = _write_pair(tmp_path, log=["1 10 20 30 40"], attributes={**ATTRIBUTES, "50": [7, "a"]})
    summary = run_etl(spark, EtlConfig(input=str(log), lake=str(tmp_path / "lake"), format="amazon-s3rec", split="per-user"))
    assert summary["rows_in"]["items"] == 5 and summary["rows_written"]["items"] == 4
    assert sum(n for reason, n in summary["rows_rejected"].items() if reason.startswith("items: malformed record")) == 1


def test_amazon_global_split_is_refused(tmp_path, capsys):
    log = _write_pair(tmp_path)
    with pytest.raises(UsageError, match="no timestamps"):
        EtlConfig(input=str(log), lake=str(tmp_path / "lake"), format="amazon-s3rec")
    code = main(["etl", "--input", str(log), "--lake", str(tmp_path / "lake"), "--format", "amazon-s3rec", "--split", "global"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no timestamps" in err
    assert not (tmp_path / "lake").exists()


def test_amazon_input_must_be_the_log_file(spark, tmp_path):
    _write_pair(tmp_path)
    with pytest.raises(UsageError, match="Name>.txt"):
        run_etl(spark, EtlConfig(input=str(tmp_path), lake=str(tmp_path / "lake"), format="amazon-s3rec", split="per-user"))


@pytest.mark.slow
def test_toys_and_games_leave_last_out(spark, tmp_path):
    """The real Toys_and_Games log: the README's counts, and exactly the last two clicks of every user held out."""
    log = shared_dataset("amazon-s3rec") / "Toys_and_Games.txt"
    config = EtlConfig(input=str(log), lake=str(tmp_path / "lake"), format="amazon-s3rec", split="leave-last-out")
    summary = run_etl(spark, config)
    assert summary["rows_in"] == {"interactions": 167_597, "items": 11_924}
    assert summary["rows_rejected"] == {}
    assert summary["rows_written"]["interactions"] == 167_597
    assert summary["rows_written"]["items"] == 11_924 and summary["rows_written"]["users"] == 19_412
    parts = {s: read_table(spark, config.lake, f"{s}_clicks").withColumn("split", F.lit(s)) for s in ("train", "valid", "test")}
    clicks = parts["train"].unionByName(parts["valid"]).unionByName(parts["test"])
    # every user has >= 5 clicks (5-core): one test and one valid click each, at the last two positions
    per_user = clicks.groupBy("user_id").agg(
        F.count(F.lit(1)).alias("n"),
        F.sum((F.col("split") == "test").cast("int")).alias("tests"),
        F.sum((F.col("split") == "valid").cast("int")).alias("valids"),
        F.max(F.when(F.col("split") == "test", F.col("timestamp"))).alias("test_at"),
        F.max(F.when(F.col("split") == "valid", F.col("timestamp"))).alias("valid_at"),
        F.max("timestamp").alias("last"),
    )
    assert per_user.count() == 19_412
    wrong = per_user.where((F.col("n") < 5) | (F.col("tests") != 1) | (F.col("valids") != 1) | (F.col("test_at") != F.col("last")) | (F.col("valid_at") != F.col("last") - 1))
    assert wrong.count() == 0
    assert parts["test"].count() == parts["valid"].count() == 19_412
    items = {r["item_id"]: r for r in read_table(spark, config.lake, "items").collect()}
    fields = {r["field"]: r for r in read_table(spark, config.lake, "fields").collect()}
    assert fields["categories"]["length"] == 15
    assert sum(1 for r in items.values() if r["brand"] > 2) == 11_923  # the README's rule: one item has no brand
