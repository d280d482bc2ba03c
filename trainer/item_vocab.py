"""The training vocabulary of the item fields, exported beside the item tower so that new items are encoded
for serving exactly as the ETL encoded the training items, with no lake at hand.

What is exported (RUN_DIR/export/): `item_vocab` (Delta: the lake's `vocab` rows of the item fields, id field
included, from the ETL run that wrote the run's pinned `items`) and `item_fields.json` (the item fields of the
`fields` spec, in order, and the two ETL settings encoding needs, as the ETL recorded them: `untrained_id`
and the hard limit on values per multi-valued field). The index contract itself, and the id value each
`untrained_id` setting stands for, are towerssl.indices.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from deltalake import DeltaTable

from towerssl.delta_rs import open_table, snapshot, write_arrow
from towerssl.errors import UsageError
from towerssl.fields import ITEM_ID_FIELD, FieldSpec
from towerssl.indices import DEFAULT, PAD, UNKNOWN, UNTRAINED_ID_CHOICES
from towerssl.lake import read_snapshot, table_path
from towerssl.model.features import Features
from towerssl.trainer.run_model import TrainedRun

VOCAB_TABLE = "item_vocab"
FIELDS_FILE = "item_fields.json"


def _commit(path: str, version: int) -> dict:
    """The run id and config the project recorded in one Delta commit (towerssl.lake.commit_record)."""
    info = DeltaTable(path, version=version).history(1)[0]
    return json.loads(info.get("userMetadata") or "{}")


def _vocab_version(lake: str, etl_run_id: str) -> int:
    """The version of LAKE/vocab the ETL run `etl_run_id` wrote: the vocabulary the run's items were encoded with."""
    for commit in open_table(lake, "vocab").history():
        if json.loads(commit.get("userMetadata") or "{}").get("run_id") == etl_run_id:
            return int(commit["version"])
    raise UsageError(f"{table_path(lake, 'vocab')}: no version written by ETL run {etl_run_id}, which wrote the run's items; re-run `towerssl etl` and train again")


def export_item_vocabulary(run: TrainedRun, out: Path) -> dict:
    """Write item_vocab and item_fields.json under `out`; returns the item_fields.json record."""
    items = run.manifest.tables["items"]
    etl = _commit(items.path, items.version)
    settings = etl.get("config", {})
    if "untrained_id" not in settings or "multi_hard_limit" not in settings:
        raise UsageError(f"{items.path} version {items.version}: its ETL commit records no untrained_id / multi_hard_limit; re-run `towerssl etl` and train again")
    fields = run.towers.spec.item_fields
    version = _vocab_version(run.manifest.lake, etl["run_id"])
    vocab = read_snapshot(snapshot(run.manifest.lake, "vocab", version), ["field", "value", "index", "count"], rerun="etl")
    vocab = vocab.filter(pc.is_in(vocab.column("field"), value_set=pa.array([f.name for f in fields], type=pa.string())))
    write_arrow(vocab, out, VOCAB_TABLE, run.run_dir.name, {"lake": run.manifest.lake, "vocab_version": version, "etl_run_id": etl["run_id"]})
    record = {
        "fields": [asdict(f) for f in fields],
        "untrained_id": settings["untrained_id"],
        "multi_hard_limit": int(settings["multi_hard_limit"]),
        "etl_run_id": etl["run_id"],
        "lake_vocab_version": version,
    }
    (out / FIELDS_FILE).write_text(json.dumps(record, indent=1))
    return record


@dataclass(frozen=True)
class ItemVocabulary:
    """The exported item fields and their value -> index maps; encodes parsed values as the ETL does."""

    fields: tuple[FieldSpec, ...]
    index: dict[str, dict[str, int]]  # field -> value -> index
    untrained_id: int  # the id value of an item without a trained id (towerssl.indices)
    multi_hard_limit: int

    @classmethod
    def load(cls, export_dir: Path) -> ItemVocabulary:
        path = export_dir / FIELDS_FILE
        if not path.is_file():
            raise UsageError(f"{path} not found: export the run first (`towerssl export --run {export_dir.parent}`)")
        record = json.loads(path.read_text())
        if record["untrained_id"] not in UNTRAINED_ID_CHOICES:
            raise UsageError(f"{path}: untrained_id {record['untrained_id']!r} is not an ETL setting ({', '.join(UNTRAINED_ID_CHOICES)}); export the run again")
        vocab = read_snapshot(snapshot(export_dir, VOCAB_TABLE), ["field", "value", "index"], rerun="export").to_pydict()
        index: dict[str, dict[str, int]] = {}
        for field, value, position in zip(vocab["field"], vocab["value"], vocab["index"]):
            index.setdefault(field, {})[value] = int(position)
        fields = tuple(FieldSpec(**f) for f in record["fields"])
        return cls(fields, index, UNTRAINED_ID_CHOICES[record["untrained_id"]], int(record["multi_hard_limit"]))

    @property
    def feature_fields(self) -> tuple[FieldSpec, ...]:
        """The fields read from raw rows: all but the id field, which the ETL adds."""
        return tuple(f for f in self.fields if f.name != ITEM_ID_FIELD)

    def encode(self, item_ids: Sequence[int], values: dict[str, Sequence[Sequence[str]]]) -> Features:
        """values[field][row]: the row's values of the field (trimmed, non-empty, distinct, in order). A value
        outside the vocabulary is UNKNOWN, a field without values DEFAULT; multi-valued fields are padded with
        PAD or cut to their length. The id keeps its trained index, or takes the untrained-id value."""
        ids = self.index.get(ITEM_ID_FIELD, {})
        features = {ITEM_ID_FIELD: torch.tensor([ids.get(str(i), self.untrained_id) for i in item_ids], dtype=torch.long)}
        for field in self.feature_fields:
            known = self.index.get(field.name, {})
            encoded = np.full((len(item_ids), field.length), PAD, dtype=np.int64)
            for row, row_values in enumerate(values[field.name]):
                indices = [known.get(v, UNKNOWN) for v in row_values] or [DEFAULT]
                kept = indices[: field.length]
                encoded[row, : len(kept)] = kept
            features[field.name] = torch.from_numpy(encoded if field.multi else encoded[:, 0].copy())
        return features
