"""Reader for the generic raw layout (docs/tables.md): schema.yaml plus CSV or Parquet files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, StringType, StructField, StructType

from towerssl.config import load_yaml_mapping
from towerssl.errors import UsageError
from towerssl.etl.raw import CORRUPT_COL, LINE_COL, RAW_COL, SOURCE_COL, FieldDef, RawInput

FORMATS = ("csv", "parquet")
ID_COLUMNS = {"interactions": ("user_id", "item_id", "timestamp"), "items": ("item_id",), "users": ("user_id",)}


class RawInputError(UsageError):
    """The raw input cannot be used at all (missing file or column, empty input); names what is wrong."""


def read_schema(raw_dir: str | Path) -> dict:
    path = Path(raw_dir) / "schema.yaml"
    if not path.exists():
        raise RawInputError(f"{path}: schema file not found (see docs/tables.md for the raw layout)")
    schema = load_yaml_mapping(path, "schema file")
    fmt = schema.get("format", "csv")
    if fmt not in FORMATS:
        raise RawInputError(f"{path}: format must be one of {FORMATS}, got {fmt!r}")
    for key in ("interactions", "items"):
        if key not in schema:
            raise RawInputError(f"{path}: missing key {key!r}")
    for key in ("interactions", "items", "users"):
        if schema.get(key) is not None and not isinstance(schema[key], str):
            raise RawInputError(f"{path}: {key} must be a path relative to the schema file, got {schema[key]!r}")
    try:
        schema["fields"] = tuple(FieldDef(**f) for f in schema.get("fields", []))
    except (TypeError, ValueError) as error:
        raise RawInputError(f"{path}: bad field definition: {error}") from error
    return schema


def _read_csv(spark: SparkSession, path: str, required: list[str]) -> tuple[DataFrame, Callable[[Column], DataFrame]]:
    """The CSV input as RawInput columns, and a re-read of only the lines where a condition on LINE_COL
    holds (read as text, filtered, then parsed as the CSV reader parses them: the same columns)."""
    header = spark.read.option("header", True).csv(path).columns
    missing = [c for c in required if c not in header]
    if missing:
        raise RawInputError(f"{path}: missing required column(s) {', '.join(missing)} (header: {', '.join(header)})")
    schema = StructType([StructField(c, StringType()) for c in header] + [StructField(CORRUPT_COL, StringType())])
    options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_COL}
    raw = F.coalesce(F.col(CORRUPT_COL), F.concat_ws(",", *[F.coalesce(F.col(c), F.lit("")) for c in header]))

    def columns(parsed: DataFrame) -> DataFrame:
        return parsed.withColumn(RAW_COL, raw).withColumn(SOURCE_COL, F.input_file_name()).select(*required, CORRUPT_COL, RAW_COL, SOURCE_COL)

    def lines_where(condition: Column) -> DataFrame:
        """A header line parses like a record whose values are the column names: it fails every id check."""
        lines = spark.read.text(path).select(F.col("value").alias(LINE_COL)).where(condition)
        return columns(lines.select(F.from_csv(F.col(LINE_COL), schema.simpleString(), options).alias("_parsed")).select("_parsed.*"))

    df = spark.read.option("header", True).options(**options).option("enforceSchema", False).schema(schema).csv(path)
    return columns(df), lines_where


def _read_parquet(spark: SparkSession, path: str, required: list[str], seps: dict[str, str]) -> DataFrame:
    df = spark.read.parquet(path)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise RawInputError(f"{path}: missing required column(s) {', '.join(missing)} (columns: {', '.join(df.columns)})")

    def as_string(name: str):
        if isinstance(df.schema[name].dataType, ArrayType):
            return F.array_join(F.col(name).cast("array<string>"), seps.get(name, "|")).alias(name)
        return F.col(name).cast("string").alias(name)

    return df.select(
        *[as_string(c) for c in required],
        F.lit(None).cast("string").alias(CORRUPT_COL),
        F.to_json(F.struct(*df.columns)).alias(RAW_COL),
        F.input_file_name().alias(SOURCE_COL),
    )


def read_raw_layout(spark: SparkSession, raw_dir: str | Path) -> RawInput:
    """Read the three inputs as string columns; missing files or columns stop here with a clear error."""
    schema = read_schema(raw_dir)
    fields: tuple[FieldDef, ...] = schema["fields"]

    def read(kind: str) -> tuple[DataFrame, Callable[[Column], DataFrame] | None]:
        path = Path(raw_dir) / schema[kind]
        if not path.exists():
            raise RawInputError(f"{path}: {kind} input not found (named in {Path(raw_dir) / 'schema.yaml'})")
        owner = {"items": "item", "users": "user"}.get(kind)
        required = list(ID_COLUMNS[kind]) + [f.name for f in fields if f.owner == owner]
        if schema["format"] == "csv":
            return _read_csv(spark, str(path), required)
        return _read_parquet(spark, str(path), required, {f.name: f.sep for f in fields}), None

    users = read("users")[0] if schema.get("users") else None
    if users is None and any(f.owner == "user" for f in fields):
        raise RawInputError(f"{Path(raw_dir) / 'schema.yaml'}: user fields are listed but no users input is named")
    interactions, interaction_lines = read("interactions")
    return RawInput(interactions=interactions, items=read("items")[0], users=users, fields=fields, interaction_lines=interaction_lines)
