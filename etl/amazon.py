"""Reader for the Amazon review logs as the S3-Rec paper prepared them (`--format amazon-s3rec`): a RawInput.

Why this shape: the ETL's validation, rejects and encoding then run unchanged on these logs.

Input: `--input DIR/<Name>.txt`; the items are read from `DIR/<Name>_item2attributes.json` beside it.

Interactions: `<Name>.txt` has one line per user, `user_id item_id item_id ...` (whitespace-separated, the
items in time order). The logs have no timestamps, so an item's timestamp is its 0-based position among the
line's items: a user's order is kept, and positions of different users say nothing about each other (hence
no global time split on them). Each item token is one interaction row; a line with no item token (an empty
line, or a user id alone) is one row without an item. So a bad token (a non-integer id, an empty line) is a
row the ETL rejects with its reason, and rows in = rows written + rows rejected. Every row carries its whole
line as raw text. An item of the log that is not in the json is rejected as an unknown item_id.

Items: the json maps an item id to a list of attribute ids, brands and categories in one id space. The
preparation's rule: an id that ever appears at position >= 1 of some item's list is a category; an item's
first id is its brand iff that id never appears at position >= 1. So `brand` (single-valued) is that first
id or null, and `categories` (multi-valued) the item's category ids in list order, duplicates removed. An
entry whose value is not a list of non-negative integers is a malformed record (rejected); the rule is
drawn from the well-formed lists only.
"""

from __future__ import annotations

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from towerssl.errors import UsageError
from towerssl.etl.amazon_attributes import item_rows
from towerssl.etl.raw import CORRUPT_COL, RAW_COL, SOURCE_COL, FieldDef, RawInput

FORMAT = "amazon-s3rec"
LOG_SUFFIX = ".txt"
ATTRIBUTES_SUFFIX = "_item2attributes.json"
# The most categories any item has in Toys_and_Games and in Sports_and_Outdoors (15 in both; the 99th
# percentile is 6 and 10): no item of either loses a category, and the padding stays short.
CATEGORIES_LEN = 15
ITEM_FIELDS = (FieldDef("brand", "item"), FieldDef("categories", "item", multi=True, max_len=CATEGORIES_LEN))
ITEMS_SCHEMA = f"item_id string, brand string, categories string, {CORRUPT_COL} string, {RAW_COL} string, {SOURCE_COL} string"


def attributes_path(log: str) -> str:
    """The item json beside the log `DIR/<Name>.txt`: `DIR/<Name>_item2attributes.json`."""
    if not log.endswith(LOG_SUFFIX):
        raise UsageError(f"{log}: --format {FORMAT} takes the log file DIR/<Name>{LOG_SUFFIX} as --input (its items are DIR/<Name>{ATTRIBUTES_SUFFIX})")
    return log[: -len(LOG_SUFFIX)] + ATTRIBUTES_SUFFIX


def _text(spark: SparkSession, path: str, wholetext: bool = False) -> DataFrame:
    try:
        return spark.read.text(path, wholetext=wholetext)
    except AnalysisException as error:
        if error.getErrorClass() == "PATH_NOT_FOUND":
            raise FileNotFoundError(f"{path}: not found ({FORMAT} needs the log <Name>{LOG_SUFFIX} and <Name>{ATTRIBUTES_SUFFIX} beside it)") from error
        raise


def read_interactions(spark: SparkSession, log: str) -> DataFrame:
    """user_id, item_id, timestamp (the item's position in the line) and CORRUPT_COL, RAW_COL, SOURCE_COL."""
    lines = _text(spark, log).select(F.col("value").alias(RAW_COL), F.input_file_name().alias(SOURCE_COL))
    tokens = F.split(F.regexp_replace(RAW_COL, r"^\s+|\s+$", ""), r"\s+")
    items = F.slice(tokens, F.lit(2), F.size(tokens) - 1)
    exploded = lines.select("*", tokens[0].alias("user_id"), F.posexplode_outer(items).alias("position", "item_id"))
    return exploded.select(
        "user_id", "item_id", F.col("position").cast("string").alias("timestamp"),
        F.lit(None).cast("string").alias(CORRUPT_COL), RAW_COL, SOURCE_COL,
    )


def read_items(spark: SparkSession, log: str) -> DataFrame:
    """item_id, brand, categories ('|'-joined) and CORRUPT_COL, RAW_COL, SOURCE_COL, one row per json entry.

    The json is one object (a few hundred KB for these logs): read through Spark, so any file system Spark
    reads works, and parsed on the driver, where the rule needs every list at once anyway."""
    path = attributes_path(log)
    text = _text(spark, path, wholetext=True).select("value", F.input_file_name().alias("source")).collect()
    if not text:
        raise UsageError(f"{path}: the items input has no rows")
    return spark.createDataFrame(item_rows(text[0]["value"], text[0]["source"]), ITEMS_SCHEMA)


def read_amazon(spark: SparkSession, log: str) -> RawInput:
    """The log `DIR/<Name>.txt` and its item json as a RawInput (no users input: users are the clickers).

    No interaction_lines shortcut: a valid row's line does not hold its timestamp (the position) as text."""
    return RawInput(read_interactions(spark, log), read_items(spark, log), None, ITEM_FIELDS)
