"""Readers for the raw MovieLens formats (100K, 1M, latest-small), each producing a RawInput.

Why this shape: the ETL's validation, rejects and encoding then run unchanged on MovieLens. Every frame is
read line by line with Spark's text source (the file's bytes are kept and decoded here, so latin-1 files come
out right), and every line stays one row: a line that does not split into the expected fields comes through
with CORRUPT_COL set to its text, so the ETL rejects it with a reason instead of losing it. Rows in = rows out
(header lines of the CSV files excepted). Every rating is an interaction (implicit feedback); its value is
dropped.

Columns (all strings) and fields per variant:
  interactions: user_id, item_id, timestamp
  items: item_id, genres (multi), year (5-year bucket "1995-1999"), title (multi: title words),
         and for movielens-latest-small also tags (multi, when tags.csv is there)
  users: user_id, gender, age (bucket), occupation, zip (first character); None for movielens-latest-small
Every frame also has CORRUPT_COL, RAW_COL (the line) and SOURCE_COL (the file).

Feature rules:
  genres: 100K from the 19 flag columns (u.genre order); 1M and latest-small from the '|' list. "unknown"
          (100K) and "(no genres listed)" (latest-small) mean no genre.
  year:   the "(1995)" at the end of the title (also "(2006-2007)", or followed by "(V)"), else the year of
          the release date (100K); bucketed by 5 years. No year: null.
  title:  lowercase words of the title without that year, split on anything but letters and digits, without
          one-letter words and STOPWORDS, distinct, at most TITLE_WORDS.
  tags:   user tags of the movie, lowercased and trimmed, the TAGS most applied first (ties by text). tags.csv
          is a side input, not a frame: its lines that do not parse are skipped.
  age:    AGE_BUCKETS, the 1M codes; 100K ages are put in the same buckets.
  occupation: the name (100K names, 1M codes mapped to the README's names).
  zip:    the zip code's first character: the US national area digit (10 values), or a letter for a
          non-US code. Three digits would give ~900 values, too many for 943 or 6,040 users.
A value that cannot be read (a non-numeric age, an unknown code) is null: a missing feature, not a reject.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from towerssl.etl.raw import CORRUPT_COL, RAW_COL, SOURCE_COL, FieldDef, RawInput

LATIN_1 = "ISO-8859-1"
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
NO_GENRE = ("unknown", "(no genres listed)")
AGE_BUCKETS = {1: "under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
    "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)
STOPWORDS = ("the", "an", "of", "and", "in", "on", "to", "for", "with", "at", "by", "from", "la", "le", "les", "de",
             "des", "du", "el", "il", "der", "die", "das", "und")
TITLE_WORDS = 8
TAGS = 8
YEAR_BUCKET = 5
# The year in parentheses at the end of a title: "(1995)", "(2006-2007)", "(1995) (V)".
_YEAR_SUFFIX = r"\s*\((\d{4})(?:[-\u2013]\d{0,4})?\)(?:\s*\([^)]*\))*\s*$"
_QUOTED = r'(?<=^|,)"(?:[^"]|"")*"(?=,|$)'  # a whole RFC-4180 quoted field ("" for a quote inside)

ITEM_FIELDS = (
    FieldDef("genres", "item", multi=True, max_len=6),
    FieldDef("year", "item"),
    FieldDef("title", "item", multi=True, max_len=TITLE_WORDS),
)
USER_FIELDS = (FieldDef("gender", "user"), FieldDef("age", "user"), FieldDef("occupation", "user"), FieldDef("zip", "user"))
LATEST_GENRES = FieldDef("genres", "item", multi=True, max_len=10)  # latest-small has up to 10 per movie
TAGS_FIELD = FieldDef("tags", "item", multi=True, max_len=TAGS)


# --- lines and fields -------------------------------------------------------------------------------------


def _text(spark: SparkSession, directory: str, name: str) -> DataFrame | None:
    """The file's lines (Spark's text source), or None when it does not exist."""
    try:
        return spark.read.text(f"{directory.rstrip('/')}/{name}")
    except AnalysisException as error:
        if error.getErrorClass() == "PATH_NOT_FOUND":
            return None
        raise


def _lines(spark: SparkSession, directory: str, name: str, variant: str, encoding: str = "UTF-8") -> DataFrame:
    """One row per line: RAW_COL (decoded with `encoding`) and SOURCE_COL; FileNotFoundError if missing."""
    text = _text(spark, directory, name)
    if text is None:
        raise FileNotFoundError(f"{directory.rstrip('/')}/{name}: not found (MovieLens {variant} needs {name})")
    # The text source keeps a line's bytes as they are; casting to binary gives them back for decoding.
    raw = F.col("value") if encoding == "UTF-8" else F.decode(F.col("value").cast("binary"), encoding)
    return text.select(raw.alias(RAW_COL), F.input_file_name().alias(SOURCE_COL))


def _split(
    lines: DataFrame, sep: str, names: tuple[str, ...], well_formed: Callable[[Column], Column] | None = None
) -> DataFrame:
    """Fields separated by the literal `sep`; a line with another field count (or not well_formed(parts)) is corrupt."""
    split = lines.withColumn("_parts", F.split(F.col(RAW_COL), f"\\Q{sep}\\E", -1))  # split once, read many times
    ok = F.size("_parts") == len(names)
    if well_formed is not None:
        ok = ok & well_formed(F.col("_parts"))
    fields = [F.get(F.col("_parts"), i).alias(n) for i, n in enumerate(names)]
    return split.select(*lines.columns, *fields, F.when(~ok, F.col(RAW_COL)).alias(CORRUPT_COL))


def _csv(lines: DataFrame, header: str, names: tuple[str, ...]) -> DataFrame:
    """RFC-4180 lines (header dropped); a wrong field count or a stray quote makes the line corrupt."""
    body = lines.where(F.col(RAW_COL) != header).select(
        *lines.columns,
        F.from_csv(F.col(RAW_COL), ", ".join(f"`{n}` STRING" for n in names), {"escape": '"'}).alias("_parsed"),
        F.regexp_replace(F.col(RAW_COL), _QUOTED, "").alias("_unquoted"),
    )
    ok = ~F.col("_unquoted").contains('"') & (F.size(F.split("_unquoted", ",", -1)) == len(names))
    fields = [F.col(f"_parsed.`{n}`").alias(n) for n in names]
    return body.select(*lines.columns, *fields, F.when(~ok, F.col(RAW_COL)).alias(CORRUPT_COL))


def _frame(parsed: DataFrame, columns: dict[str, Column]) -> DataFrame:
    return parsed.select(*[c.alias(n) for n, c in columns.items()], CORRUPT_COL, RAW_COL, SOURCE_COL)


def _joined(values: Column) -> Column:
    """array<string> without empty strings -> one '|'-joined string, null when the array is empty."""
    return F.nullif(F.array_join(values, "|"), F.lit(""))


# --- item features ---------------------------------------------------------------------------------------


def _genre_list(genres: Column) -> Column:
    return _joined(F.filter(F.split(genres, r"\|"), lambda g: (g != "") & ~g.isin(*NO_GENRE)))


def _with_year(parsed: DataFrame, fallback_year: Column | None = None) -> DataFrame:
    """Adds _year: the title's year, else fallback_year, else null (a column of its own, computed once)."""
    year = F.nullif(F.regexp_extract("title", _YEAR_SUFFIX, 1), F.lit(""))
    if fallback_year is not None:
        year = F.coalesce(year, F.nullif(fallback_year, F.lit("")))
    return parsed.withColumn("_year", year)


def _movie_columns(genres: Column) -> dict[str, Column]:
    """genres, year (bucket) and title (words) from the columns title and _year (see _with_year)."""
    start = F.floor(F.col("_year").cast("int") / YEAR_BUCKET) * YEAR_BUCKET
    year = F.when(F.col("_year").isNotNull(), F.format_string("%d-%d", start, start + YEAR_BUCKET - 1))
    words = F.split(F.lower(F.regexp_replace("title", _YEAR_SUFFIX, "")), r"[^\p{L}\p{N}]+")
    kept = F.array_distinct(F.filter(words, lambda w: (F.length(w) > 1) & ~w.isin(*STOPWORDS)))
    return {"genres": genres, "year": year, "title": _joined(F.slice(kept, 1, TITLE_WORDS))}


# --- user features ---------------------------------------------------------------------------------------


def _lookup(mapping: dict, key: Column) -> Column:
    return F.create_map(*[F.lit(x) for pair in mapping.items() for x in pair])[key]


def _age_bucket_from_years(age: Column) -> Column:
    """A 100K age in years -> the 1M bucket it falls in; a non-numeric age -> null."""
    years = F.when(age.rlike(r"^\d{1,3}$"), age.cast("int"))
    buckets = sorted(AGE_BUCKETS.items(), reverse=True)  # (56, "56+") ... (1, "under 18")
    label = F.when(years >= buckets[0][0], buckets[0][1])
    for lower, name in buckets[1:-1]:
        label = label.when(years >= lower, name)
    return label.when(years.isNotNull(), buckets[-1][1])


def _zip_area(zip_code: Column) -> Column:
    return F.nullif(F.upper(F.substring(F.trim(zip_code), 1, 1)), F.lit(""))


# --- the variants ----------------------------------------------------------------------------------------


def _ml100k_interactions(spark: SparkSession, path: str) -> DataFrame:
    parsed = _split(_lines(spark, path, "u.data", "movielens-100k"), "\t", ("user", "item", "rating", "ts"))
    return _frame(parsed, {"user_id": F.col("user"), "item_id": F.col("item"), "timestamp": F.col("ts")})


def _ml100k_items(spark: SparkSession, path: str) -> DataFrame:
    flags = tuple(f"flag_{i}" for i in range(len(ML100K_GENRES)))
    lines = _lines(spark, path, "u.item", "movielens-100k", LATIN_1)

    def flags_ok(parts: Column) -> Column:
        return F.forall(F.slice(parts, 6, len(flags)), lambda v: v.isin("0", "1"))

    parsed = _split(lines, "|", ("item", "title", "released", "video_released", "url") + flags, flags_ok)
    genres = F.array_compact(F.array(*[F.when(F.col(f) == "1", F.lit(g)) for f, g in zip(flags, ML100K_GENRES) if g not in NO_GENRE]))
    with_year = _with_year(parsed, F.regexp_extract("released", r"(\d{4})$", 1))
    return _frame(with_year, {"item_id": F.col("item")} | _movie_columns(_joined(genres)))


def _ml100k_users(spark: SparkSession, path: str) -> DataFrame:
    parsed = _split(_lines(spark, path, "u.user", "movielens-100k"), "|", ("user", "age", "gender", "occupation", "zip"))
    return _frame(
        parsed,
        {
            "user_id": F.col("user"),
            "gender": F.col("gender"),
            "age": _age_bucket_from_years(F.col("age")),
            "occupation": F.col("occupation"),
            "zip": _zip_area(F.col("zip")),
        },
    )


def _ml1m_interactions(spark: SparkSession, path: str) -> DataFrame:
    parsed = _split(_lines(spark, path, "ratings.dat", "movielens-1m"), "::", ("user", "item", "rating", "ts"))
    return _frame(parsed, {"user_id": F.col("user"), "item_id": F.col("item"), "timestamp": F.col("ts")})


def _ml1m_items(spark: SparkSession, path: str) -> DataFrame:
    parsed = _split(_lines(spark, path, "movies.dat", "movielens-1m", LATIN_1), "::", ("item", "title", "genres"))
    return _frame(_with_year(parsed), {"item_id": F.col("item")} | _movie_columns(_genre_list(F.col("genres"))))


def _ml1m_users(spark: SparkSession, path: str) -> DataFrame:
    parsed = _split(_lines(spark, path, "users.dat", "movielens-1m"), "::", ("user", "gender", "age", "occupation", "zip"))
    age_code = F.when(F.col("age").rlike(r"^\d{1,3}$"), F.col("age").cast("int"))
    occupation_code = F.when(F.col("occupation").rlike(r"^\d{1,3}$"), F.col("occupation").cast("int"))
    return _frame(
        parsed,
        {
            "user_id": F.col("user"),
            "gender": F.col("gender"),
            "age": _lookup(AGE_BUCKETS, age_code),
            "occupation": _lookup(dict(enumerate(ML1M_OCCUPATIONS)), occupation_code),
            "zip": _zip_area(F.col("zip")),
        },
    )


def _latest_interactions(spark: SparkSession, path: str) -> DataFrame:
    lines = _lines(spark, path, "ratings.csv", "movielens-latest-small")
    parsed = _csv(lines, "userId,movieId,rating,timestamp", ("user", "item", "rating", "ts"))
    return _frame(parsed, {"user_id": F.col("user"), "item_id": F.col("item"), "timestamp": F.col("ts")})


def _latest_tags(spark: SparkSession, path: str) -> DataFrame:
    """movieId -> its TAGS most applied tags, '|'-joined (a '|' inside a tag becomes a space)."""
    lines = _lines(spark, path, "tags.csv", "movielens-latest-small")
    parsed = _csv(lines, "userId,movieId,tag,timestamp", ("user", "item", "tag", "ts")).where(F.col(CORRUPT_COL).isNull())
    tag = F.lower(F.trim(F.regexp_replace(F.col("tag"), r"\|", " ")))
    counted = parsed.select("item", tag.alias("tag")).where(F.col("tag") != "").groupBy("item", "tag").count()
    ranked = F.array_sort(F.collect_list(F.struct((-F.col("count")).alias("order"), F.col("tag"))))
    return counted.groupBy("item").agg(_joined(F.slice(F.transform(ranked, lambda t: t["tag"]), 1, TAGS)).alias("tags"))


def _latest_items(spark: SparkSession, path: str) -> DataFrame:
    parsed = _csv(_lines(spark, path, "movies.csv", "movielens-latest-small"), "movieId,title,genres", ("item", "title", "genres"))
    columns = {"item_id": F.col("item")} | _movie_columns(_genre_list(F.col("genres")))
    if _text(spark, path, "tags.csv") is not None:
        parsed = parsed.join(_latest_tags(spark, path), "item", "left")
        columns["tags"] = F.col("tags")
    return _frame(_with_year(parsed), columns)


@dataclass(frozen=True)
class Variant:
    interactions: Callable[[SparkSession, str], DataFrame]
    items: Callable[[SparkSession, str], DataFrame]
    users: Callable[[SparkSession, str], DataFrame] | None
    item_fields: tuple[FieldDef, ...]


VARIANTS: dict[str, Variant] = {
    "movielens-100k": Variant(_ml100k_interactions, _ml100k_items, _ml100k_users, ITEM_FIELDS),
    "movielens-1m": Variant(_ml1m_interactions, _ml1m_items, _ml1m_users, ITEM_FIELDS),
    "movielens-latest-small": Variant(_latest_interactions, _latest_items, None, (LATEST_GENRES,) + ITEM_FIELDS[1:]),
}


def _variant(variant: str) -> Variant:
    if variant not in VARIANTS:
        raise ValueError(f"unknown MovieLens variant {variant!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[variant]


def read_interactions(spark: SparkSession, path: str | Path, variant: str) -> DataFrame:
    return _variant(variant).interactions(spark, str(path))


def read_items(spark: SparkSession, path: str | Path, variant: str) -> DataFrame:
    return _variant(variant).items(spark, str(path))


def read_users(spark: SparkSession, path: str | Path, variant: str) -> DataFrame | None:
    users = _variant(variant).users
    return users(spark, str(path)) if users is not None else None


def read_movielens(spark: SparkSession, path: str | Path, variant: str) -> RawInput:
    """The MovieLens directory `path` as a RawInput; FileNotFoundError naming the first missing file."""
    spec = _variant(variant)
    interactions = read_interactions(spark, path, variant)
    items = read_items(spark, path, variant)
    users = read_users(spark, path, variant)
    item_fields = spec.item_fields + ((TAGS_FIELD,) if "tags" in items.columns else ())
    return RawInput(interactions, items, users, item_fields + (USER_FIELDS if users is not None else ()))
