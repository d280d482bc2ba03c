"""Reader for the generic raw layout (docs/tables.md): schema.yaml plus CSV or Parquet files.

The job lists each input's files itself and reads CSV as RFC 4180, so that rows in counts every record on
disk and no value is cut or altered on the way (docs/tables.md, "Which files are read", "CSV dialect")."""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial, reduce
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, StringType, StructField, StructType

from towerssl.config import load_yaml_mapping
from towerssl.etl.csvtext import records
from towerssl.etl.files import RawInputError, input_files  # noqa: F401 (RawInputError: the jobs import it from here)
from towerssl.etl.raw import CORRUPT_COL, INVALID_UTF8, LINE_COL, RAW_COL, REASON_COL, SOURCE_COL, WRONG_COLUMNS, FieldDef, RawInput

FORMATS = ("csv", "parquet")
CODECS = {".gz": gzip.open, ".bz2": bz2.open}
UNSUPPORTED_CODECS = (".deflate", ".lz4", ".snappy", ".zst")  # Spark decompresses them; the scan here cannot
SCAN_BYTES = 1 << 23
_INVALID = re.compile("[\udc80-\udcff]")  # bytes that are not UTF-8, as the surrogateescape decoder keeps them
ID_COLUMNS = {"interactions": ("user_id", "item_id", "timestamp"), "items": ("item_id",), "users": ("user_id",)}


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



def _decompressed(name: str, data: BinaryIO) -> BinaryIO:
    """The file's bytes as Spark's CSV reader sees them (it decompresses by the file name's suffix)."""
    suffix = PurePosixPath(name).suffix
    if suffix in UNSUPPORTED_CODECS:
        raise RawInputError(f"{name}: {suffix} files cannot be checked as CSV; use plain, .gz or .bz2 files")
    opener = CODECS.get(suffix)
    return opener(data) if opener else data


@dataclass(frozen=True)
class _CsvFile:
    path: Path
    header: tuple[str, ...] | None  # None: the file holds no record at all
    plain: bool  # only UTF-8, and no quote past the header: Spark's line reader reads it as csvtext does, faster


def _scan_csv(path: Path) -> _CsvFile:
    """The file's header and whether it is plain, from one pass over its bytes on the driver (at the speed
    of memchr and UTF-8 decoding, and it warms the page cache for Spark's read)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    head, quotes, utf8 = b"", 0, True
    with path.open("rb") as raw, _decompressed(path.name, raw) as data:
        while chunk := data.read(SCAN_BYTES):
            head = head or chunk
            quotes += chunk.count(b'"')
            utf8 = utf8 and _decodes(decoder, chunk)
    utf8 = utf8 and _decodes(decoder, b"", final=True)
    first = next(records(_text(head)), None)
    if first is None:
        return _CsvFile(path, None, True)
    if first.problem is not None or _INVALID.search(first.text):
        raise RawInputError(f"{path}: the header line is not a well-formed UTF-8 CSV record: {_valid(first.text)!r}")
    return _CsvFile(path, tuple(first.fields), utf8 and quotes == first.text.count('"'))  # quotes in the header only


def _decodes(decoder: codecs.IncrementalDecoder, chunk: bytes, final: bool = False) -> bool:
    try:
        decoder.decode(chunk, final)
    except UnicodeDecodeError:
        return False
    return True


def _text(data: bytes) -> str:
    """Decoded, with each byte that is not UTF-8 kept as a lone surrogate (_INVALID finds them)."""
    return data.decode("utf-8", "surrogateescape").removeprefix("\ufeff")


def _valid(text: str) -> str:
    return _INVALID.sub("\ufffd", text)


def _common_header(path: Path, kind: str, files: list[_CsvFile]) -> tuple[str, ...]:
    """The header every part file shares: Spark would read a part whose columns are in another order under
    the first part's names, so differing headers stop the job."""
    first = files[0]
    for other in files[1:]:
        if other.header != first.header:
            raise RawInputError(f"{path}: the {kind} part files' headers differ: {first.path.name} has {','.join(first.header)}; "
                                f"{other.path.name} has {','.join(other.header)} (every part needs the same columns in the same order)")
    return first.header


def _string_schema(columns: list[str]) -> StructType:
    return StructType([StructField(c, StringType()) for c in columns])


def _read_csv(spark: SparkSession, path: Path, kind: str, required: list[str]) -> tuple[DataFrame, Callable[[Column], DataFrame]]:
    """The CSV input as RawInput columns (with REASON_COL), and a re-read of only the records where a
    condition on LINE_COL (the record's text) holds: the same columns, header records included (a header
    parses like a record whose values are the column names: it fails every id check).

    Plain files (only UTF-8, no quote past the header) go through Spark's line reader; the others through csvtext's RFC
    4180 parser, a Spark task per file."""
    files = [f for f in map(_scan_csv, input_files(path, kind)) if f.header is not None]
    columns = _string_schema([*required, REASON_COL, RAW_COL, SOURCE_COL])
    if not files:  # only empty files: no rows (the job stops on that, naming the input)
        return spark.createDataFrame([], columns), lambda condition: spark.createDataFrame([], columns)
    header = _common_header(path, kind, files)
    missing = [c for c in required if c not in header]
    if missing:
        raise RawInputError(f"{path}: missing required column(s) {', '.join(missing)} (header: {', '.join(header)})")
    plain = [str(f.path) for f in files if f.plain]
    other = [str(f.path) for f in files if not f.plain]
    schema = StructType([*_string_schema(list(header)), StructField(CORRUPT_COL, StringType())])
    options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_COL, "escape": '"'}  # for a quoted header
    raw = F.coalesce(F.col(CORRUPT_COL), F.concat_ws(",", *[F.coalesce(F.col(c), F.lit("")) for c in header]))

    def plain_columns(parsed: DataFrame) -> DataFrame:
        reason = F.when(F.col(CORRUPT_COL).isNotNull(), F.lit(WRONG_COLUMNS))
        return parsed.select(*required, reason.alias(REASON_COL), raw.alias(RAW_COL), F.input_file_name().alias(SOURCE_COL))

    parse = partial(_parsed_rows, len(header), [header.index(c) for c in required])
    parsed = spark.read.format("binaryFile").load(other).select("path", "content").mapInPandas(parse, columns) if other else None

    def lines_where(condition: Column) -> DataFrame:
        frames = [parsed.withColumn(LINE_COL, F.col(RAW_COL)).where(condition).drop(LINE_COL)] if parsed is not None else []
        if plain:
            lines = spark.read.text(plain).select(F.col("value").alias(LINE_COL)).where(condition)
            frames.append(plain_columns(lines.select(F.from_csv(F.col(LINE_COL), schema.simpleString(), options).alias("_parsed")).select("_parsed.*")))
        return reduce(DataFrame.unionByName, frames)

    frames = [parsed] if parsed is not None else []
    if plain:
        frames.append(plain_columns(spark.read.option("header", True).options(**options).option("enforceSchema", False).schema(schema).csv(plain)))
    return reduce(DataFrame.unionByName, frames), lines_where


def _parsed_rows(n_columns: int, picks: list[int], batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas over binaryFile rows (path, content): each file's records after its header, as the
    required columns (by position in the header; those a record has, as Spark's reader fills them),
    REASON_COL, RAW_COL and SOURCE_COL. Bytes that are not UTF-8 come out as U+FFFD."""
    for batch in batches:
        for path, content in zip(batch["path"], batch["content"]):
            source = "file://" + path[len("file:"):] if path.startswith("file:/") and not path.startswith("file://") else path
            with _decompressed(path, io.BytesIO(content)) as data:
                found = records(_text(data.read()))
            next(found, None)  # the header
            rows = []
            for record in found:
                reason, fields = record.problem, record.fields or []
                if reason is None and len(fields) != n_columns:
                    reason = WRONG_COLUMNS
                if reason is None and _INVALID.search(record.text):
                    reason, fields = INVALID_UTF8, [_valid(f) for f in fields]
                rows.append([*(fields[i] if i < len(fields) else None for i in picks), reason, _valid(record.text), source])
            if rows:
                yield pd.DataFrame(rows)  # integer labels: the columns are matched to the schema by position


def _read_parquet(spark: SparkSession, path: Path, kind: str, required: list[str], seps: dict[str, str]) -> DataFrame:
    df = spark.read.parquet(*map(str, input_files(path, kind)))
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise RawInputError(f"{path}: missing required column(s) {', '.join(missing)} (columns: {', '.join(df.columns)})")

    def as_string(name: str):
        if isinstance(df.schema[name].dataType, ArrayType):
            return F.array_join(F.col(name).cast("array<string>"), seps.get(name, "|")).alias(name)
        return F.col(name).cast("string").alias(name)

    # A string that is not UTF-8 changes when decoded and encoded again (each bad byte becomes U+FFFD).
    texts = [c for c in required if isinstance(df.schema[c].dataType, StringType)]
    invalid = reduce(Column.__or__, [F.coalesce(F.encode(c, "UTF-8") != F.col(c).cast("binary"), F.lit(False)) for c in texts], F.lit(False))
    return df.select(
        *[as_string(c) for c in required],
        F.when(invalid, F.lit(INVALID_UTF8)).alias(REASON_COL),
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
            return _read_csv(spark, path, kind, required)
        return _read_parquet(spark, path, kind, required, {f.name: f.sep for f in fields}), None

    users = read("users")[0] if schema.get("users") else None
    if users is None and any(f.owner == "user" for f in fields):
        raise RawInputError(f"{Path(raw_dir) / 'schema.yaml'}: user fields are listed but no users input is named")
    interactions, interaction_lines = read("interactions")
    return RawInput(interactions=interactions, items=read("items")[0], users=users, fields=fields, interaction_lines=interaction_lines)
