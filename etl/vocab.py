"""Per-field vocabularies and encoding (index contract: towerssl.indices, docs/tables.md).

Known values get indices from FIRST_VALUE by descending frequency then value. Indices already in the lake's vocab table are kept on later runs and new
values are appended after them, so a model's embeddings stay aligned with re-encoded data.
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from towerssl.fields import ITEM_ID_FIELD, USER_ID_FIELD
from towerssl.indices import DEFAULT, FIRST_VALUE, PAD, UNKNOWN, UNTRAINED_ID_CHOICES
from towerssl.spark import broadcast_if_small

ID_FIELDS = {ITEM_ID_FIELD: "item_id", USER_ID_FIELD: "user_id"}  # id field -> raw id column
VOCAB_SCHEMA = "field string, value string, index int, count long"


def long_values(entities: DataFrame, key: str, fields: list[str]) -> DataFrame:
    """(key, field, pos, value) rows, one per value of a field; fields hold array<string> columns."""
    if not fields:
        return entities.sparkSession.createDataFrame([], f"{key} long, field string, pos int, value string")
    stacked = F.explode(F.array(*[F.struct(F.lit(f).alias("field"), F.col(f).alias("values")) for f in fields]))
    return (
        entities.select(key, stacked.alias("s"))
        .select(key, "s.field", F.posexplode("s.values"))
        .withColumnRenamed("col", "value")
    )


def feature_counts(values: DataFrame) -> DataFrame:
    """(field, value, count): feature values count the entities carrying them."""
    return values.groupBy("field", "value").agg(F.count(F.lit(1)).alias("count"))


def id_counts(train_clicks: DataFrame, id_fields: list[str]) -> DataFrame:
    """(field, value, count): id values count training clicks. One aggregation per id field, on its long
    column alone (faster than one aggregation over the fields' exploded (field, id) pairs)."""
    counts = [
        train_clicks.groupBy(F.col(ID_FIELDS[field]).alias("id")).agg(F.count(F.lit(1)).alias("count")).select(
            F.lit(field).alias("field"), F.col("id").cast("string").alias("value"), "count"
        )
        for field in id_fields
    ]
    return reduce(DataFrame.unionByName, counts)


def build_vocab(counts: DataFrame, previous: DataFrame | None, min_count: int, id_min_count: int) -> DataFrame:
    """Keep every previous (field, value) -> index; add new values with enough count after the field's max."""
    spark: SparkSession = counts.sparkSession
    previous = previous if previous is not None else spark.createDataFrame([], VOCAB_SCHEMA)
    merged = counts.join(previous.select("field", "value", "index"), ["field", "value"], "full").withColumn(
        "count", F.coalesce("count", F.lit(0)).cast("long")
    )
    threshold = F.when(F.col("field").isin(*ID_FIELDS), id_min_count).otherwise(min_count)
    offsets = previous.groupBy("field").agg(F.max("index").alias("_offset"))
    fresh = (
        merged.where(F.col("index").isNull() & (F.col("count") >= threshold))
        .join(offsets, "field", "left")
        .withColumn(
            "index",
            (F.coalesce("_offset", F.lit(FIRST_VALUE - 1)) + F.row_number().over(Window.partitionBy("field").orderBy(F.desc("count"), "value"))).cast("int"),
        )
        .drop("_offset")
    )
    return merged.where(F.col("index").isNotNull()).unionByName(fresh).select("field", "value", "index", "count")


def encode(entities: DataFrame, key: str, values: DataFrame, vocab: DataFrame, lengths: dict[str, int | None]) -> DataFrame:
    """One int column per field (lengths[f] None) or array<int> of exactly lengths[f] (0-padded, truncated).

    A field without any value gets DEFAULT; a value not in the vocabulary gets UNKNOWN. One shuffle: the
    values, looked up in the (broadcast) vocabulary, are gathered per entity and split into fields there.
    """
    if not lengths:
        return entities.select(key)
    looked_up = values.join(broadcast_if_small(vocab.select("field", "value", "index")), ["field", "value"], "left")
    slots = looked_up.select(key, F.struct("field", "pos", F.coalesce("index", F.lit(UNKNOWN)).alias("index")).alias("slot"))
    anchors = entities.select(key, F.lit(None).cast(slots.schema["slot"].dataType).alias("slot"))  # entities without values
    gathered = slots.unionByName(anchors).groupBy(key).agg(F.collect_list("slot").alias("slots"))  # nulls are not collected

    def column(field: str, length: int | None):
        ordered = F.transform(F.array_sort(F.filter("slots", lambda slot: slot["field"] == field)), lambda slot: slot["index"])  # by pos
        indices = F.when(F.size(ordered) > 0, ordered).otherwise(F.array(F.lit(DEFAULT)))
        if length is None:
            return F.element_at(indices, 1).cast("int").alias(field)
        return F.slice(F.concat(indices, F.array_repeat(F.lit(PAD), length)), 1, length).cast("array<int>").alias(field)

    return gathered.select(key, *[column(f, n) for f, n in lengths.items()])


def with_id_index(encoded: DataFrame, key: str, field: str, vocab: DataFrame, untrained_id: str = "masked") -> DataFrame:
    """Adds the id field's column: the id's index in `vocab`, or UNTRAINED_ID_CHOICES[untrained_id] when it has
    none (the entity had too few training clicks, so no trained embedding). The id vocabulary has one row per id at most: broadcast unless it is large."""
    ids = vocab.where(F.col("field") == field).select(F.col("value").cast("long").alias(key), F.col("index").alias(field))
    return encoded.join(broadcast_if_small(ids), key, "left").withColumn(field, F.coalesce(field, F.lit(UNTRAINED_ID_CHOICES[untrained_id])).cast("int"))
