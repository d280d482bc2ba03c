"""`towerssl embed-items`: new catalogue items embedded by a run's exported item tower, without retraining,
Spark or the lake (a feature-based item tower exists to do this).

Input: raw item rows, `--format raw` (the raw layout's items: CSV with a header, or Parquet; a file or a
directory of part files) or `--format amazon-s3rec` (a `<Name>_item2attributes.json`, parsed by the ETL's own
brand/category rule, etl/amazon_attributes.py). Rows are checked by the ETL's rules and reasons (docs/tables.md):
a bad row goes to the rejects table with its reason, and rows in = rows embedded + rows rejected. Valid rows
are encoded with the exported training vocabulary (trainer/item_vocab.py), embedded by item_tower.pt and written
under RUN_DIR/export/: `<name>_embeddings` (Delta, the item_embeddings schema, item_idx = the row of
`<name>.faiss`, in item_id order), `<name>.faiss` (inner product on unit vectors) and `<name>_rejects` (Delta,
the lake's rejects schema). Each output is overwritten, so a rerun on the same input gives the same content.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from towerssl.delta_rs import write_arrow
from towerssl.errors import UsageError
from towerssl.etl.amazon_attributes import item_rows
from towerssl.etl.csvtext import records as csv_records
from towerssl.etl.files import input_files
from towerssl.etl.raw import INVALID_UTF8, WRONG_COLUMNS
from towerssl.fields import ITEM_ID_FIELD, FieldSpec
from towerssl.indices import FIRST_VALUE
from towerssl.trainer.embed import embed
from towerssl.trainer.export import ITEM_TOWER_FILE
from towerssl.trainer.faiss_index import build_flat_index, save_index, write_item_embeddings
from towerssl.trainer.item_vocab import ItemVocabulary

log = logging.getLogger(__name__)

FORMATS = ("raw", "amazon-s3rec")
AMAZON_COLUMNS = ("item_id", "brand", "categories")  # the columns of etl.amazon_attributes.item_rows, in order
KEY = "item_id"
MAX_ID = (1 << 63) - 1  # ids are non-negative integers that fit a signed long (etl/validate.py)
RESERVED_NAMES = ("item", "items")  # their outputs would overwrite the export's own item_embeddings / items.faiss
REJECTS_SCHEMA = pa.schema([(name, pa.string()) for name in ("input", "source", "field", "reason", "raw", "run_id")])


@dataclass(frozen=True)
class Record:
    """One raw row: its file (URI), its text, and its columns as text (None: it could not be split into them)."""

    source: str
    raw: str
    columns: dict[str, str | None] | None
    problem: str | None = None  # why columns is None


def _require(path: Path, present: list[str], needed: list[str]) -> None:
    missing = [c for c in needed if c not in present]
    if missing:
        raise UsageError(f"{path}: missing required column(s) {', '.join(missing)} (columns: {', '.join(present)})")


def _text(path: Path) -> str:
    """The file as text; bytes that are not UTF-8 are kept as lone surrogates, which the checks reject as
    invalid UTF-8 (as the ETL does; a U+FFFD written in valid UTF-8 is an ordinary character)."""
    return path.read_bytes().decode("utf-8", errors="surrogateescape")


def _readable(text: str) -> str:
    """The text with its non-UTF-8 bytes as U+FFFD, for the rejects table (which holds valid UTF-8)."""
    return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


def _csv_records(path: Path, needed: list[str]) -> list[Record]:
    """One record per RFC 4180 record after the header, parsed as the ETL parses CSV (etl/csvtext.py); an
    empty value is missing; a malformed record or one with the wrong number of columns is rejected."""
    parsed = iter(csv_records(_text(path)))
    header = next(parsed, None)
    _require(path, header.fields if header and header.fields else [], needed)
    out = []
    for record in parsed:
        if record.fields is None or len(record.fields) != len(header.fields):
            out.append(Record(path.resolve().as_uri(), record.text, None, record.problem or WRONG_COLUMNS))
            continue
        row = dict(zip(header.fields, record.fields))
        out.append(Record(path.resolve().as_uri(), record.text, {c: row[c] or None for c in needed}))
    return out


def _as_text(value: object, sep: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):  # a multi-valued field given as a list: joined, as the ETL's Parquet reader does
        return sep.join(str(v) for v in value if v is not None)
    return str(value)


def _parquet_records(path: Path, needed: list[str], sep: str) -> list[Record]:
    table = pq.read_table(path)
    _require(path, table.column_names, needed)
    return [
        Record(path.resolve().as_uri(), json.dumps(row, default=str, ensure_ascii=False), {c: _as_text(row[c], sep) for c in needed})
        for row in table.to_pylist()
    ]


def _amazon_records(path: Path, needed: list[str]) -> list[Record]:
    _require(path, list(AMAZON_COLUMNS), needed)
    return [
        Record(source, raw, None if corrupt is not None else dict(zip(AMAZON_COLUMNS, (item, brand, categories))))
        for item, brand, categories, corrupt, raw, source in item_rows(_text(path), path.resolve().as_uri())
    ]


def read_records(path: Path, fmt: str, fields: tuple[FieldSpec, ...], sep: str) -> list[Record]:
    """Every row of the input; UsageError (before any work) when a file or a needed column is missing."""
    needed = [KEY] + [f.name for f in fields]
    if fmt == "amazon-s3rec":
        records = [r for file in input_files(path, "items") for r in _amazon_records(file, needed)]
    else:
        records = [r for file in input_files(path, "items") for r in (_parquet_records(file, needed, sep) if file.suffix == ".parquet" else _csv_records(file, needed))]
    if not records:
        raise UsageError(f"{path}: the items input has no rows")
    return records


def field_values(text: str | None, field: FieldSpec, sep: str) -> list[str]:
    """As the ETL: split on sep (multi-valued fields), trimmed of spaces, empties removed, distinct in order."""
    parts = (text or "").split(sep) if field.multi else [text or ""]
    return list(dict.fromkeys(p.strip(" ") for p in parts if p.strip(" ")))


@dataclass(frozen=True)
class Checked:
    """Valid rows by item id (the id, then each field's values) and the rejects (REJECTS_SCHEMA rows)."""

    ids: list[int]
    values: dict[str, list[list[str]]]
    rejects: list[dict[str, str | None]]


def check(records: list[Record], vocab: ItemVocabulary, sep: str, run_id: str) -> Checked:
    """The ETL's checks, first failure wins: malformed, invalid UTF-8, missing or non-integer id, a
    multi-valued field over the hard limit; then of rows with the same id the copy whose (source, raw) sorts
    first is kept and the others are duplicates."""
    rejects: list[dict[str, str | None]] = []

    def reject(record: Record, field: str | None, reason: str) -> None:
        rejects.append({"input": "items", "source": record.source, "field": field, "reason": reason, "raw": _readable(record.raw), "run_id": run_id})

    passed: dict[int, list[tuple[Record, dict[str, list[str]]]]] = {}
    for record in records:
        if any("\udc80" <= c <= "\udcff" for c in record.raw):
            reject(record, None, INVALID_UTF8)
            continue
        if record.columns is None:
            reject(record, None, record.problem or WRONG_COLUMNS)
            continue
        key = record.columns[KEY]
        if key is None or not key.strip(" "):
            reject(record, KEY, f"missing {KEY}")
            continue
        if not (key.strip().isascii() and key.strip().isdigit() and int(key) <= MAX_ID):
            reject(record, KEY, f"{KEY} is not a non-negative integer")
            continue
        values = {f.name: field_values(record.columns[f.name], f, sep) for f in vocab.feature_fields}
        over = next((f for f in vocab.feature_fields if f.multi and len(values[f.name]) > vocab.multi_hard_limit), None)
        if over is not None:
            reject(record, over.name, f"{over.name} has {len(values[over.name])} values, over the hard limit of {vocab.multi_hard_limit}")
            continue
        passed.setdefault(int(key), []).append((record, values))
    ids = sorted(passed)
    kept = []
    for item_id in ids:
        first, *later = sorted(passed[item_id], key=lambda copy: (copy[0].source, copy[0].raw))
        kept.append(first[1])
        for record, _ in later:
            reject(record, KEY, f"duplicate {KEY}")
    return Checked(ids, {f.name: [row[f.name] for row in kept] for f in vocab.feature_fields}, rejects)


def embed_items(run_dir: str | Path, input_path: str | Path, fmt: str = "raw", sep: str = "|", name: str = "new_items") -> dict:
    """Embed the input's items with the run's exported item tower; returns the summary (also logged in one line)."""
    export_dir = Path(run_dir) / "export"
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or name in RESERVED_NAMES:
        raise UsageError(f"--name {name!r}: use letters, digits, '_' or '-', and not {' or '.join(RESERVED_NAMES)} (the export's own outputs)")
    tower_path = export_dir / ITEM_TOWER_FILE
    if not tower_path.is_file():
        raise UsageError(f"{tower_path} not found: export the run first (`towerssl export --run {run_dir}`)")
    vocab = ItemVocabulary.load(export_dir)
    records = read_records(Path(input_path), fmt, vocab.feature_fields, sep)
    run_id = Path(run_dir).resolve().name
    checked = check(records, vocab, sep, run_id)

    tower = torch.jit.load(str(tower_path), map_location="cpu")
    dimension = json.loads((export_dir / "model_card.json").read_text())["embedding"]["dimension"]
    features = vocab.encode(checked.ids, checked.values)
    vectors = embed(tower, features).numpy() if checked.ids else np.zeros((0, dimension), dtype=np.float32)
    record = {"input": str(input_path), "format": fmt, "sep": sep}
    write_item_embeddings(export_dir, f"{name}_embeddings", np.arange(len(checked.ids)), np.asarray(checked.ids, dtype=np.int64), vectors, run_id, record)
    save_index(build_flat_index(vectors), export_dir / f"{name}.faiss")
    write_arrow(pa.Table.from_pylist(checked.rejects, schema=REJECTS_SCHEMA), export_dir, f"{name}_rejects", run_id, record)

    trained = int((features[ITEM_ID_FIELD] >= FIRST_VALUE).sum())  # a trained id is a vocabulary value
    reasons = Counter(r["reason"] for r in checked.rejects)
    summary = {"rows_in": len(records), "embedded": len(checked.ids), "with_trained_id": trained, "rejected": len(checked.rejects), "rejected_by_reason": dict(sorted(reasons.items()))}
    if summary["embedded"] + summary["rejected"] != summary["rows_in"]:
        raise RuntimeError(f"embed-items: {summary['rows_in']} rows in but {summary['embedded']} embedded + {summary['rejected']} rejected")
    log.info(
        "embed-items: %d rows in, %d embedded (%d with a trained id, %d without), %d rejected%s -> %s/{%s_embeddings, %s.faiss, %s_rejects}",
        len(records), len(checked.ids), trained, len(checked.ids) - trained, len(checked.rejects),
        f" ({'; '.join(f'{reason}: {n}' for reason, n in sorted(reasons.items()))})" if reasons else "", export_dir, name, name, name,
    )
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run directory whose export (`towerssl export --run RUN_DIR`) holds item_tower.pt and the item vocabulary")
    parser.add_argument("--input", required=True, help="the items: for raw, a CSV (with header) or Parquet file, or a directory of them, with item_id and the run's item fields; for amazon-s3rec, DIR/<Name>_item2attributes.json")
    parser.add_argument("--format", default="raw", choices=FORMATS, help="raw (the raw layout's items, docs/tables.md) or amazon-s3rec (the S3-Rec item json, the ETL's brand/category rule); default raw")
    parser.add_argument("--sep", default="|", help="separator of the values of a multi-valued field given as one string (raw CSV/Parquet); default |")
    parser.add_argument("--name", default="new_items", help="outputs under RUN_DIR/export/: NAME_embeddings (Delta), NAME.faiss, NAME_rejects (Delta), overwritten on each run; default new_items")


def run(args: argparse.Namespace) -> int:
    embed_items(args.run, args.input, args.format, args.sep, args.name)
    return 0
