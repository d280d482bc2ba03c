"""What a training run reads from the lake, pinned once and recorded in RUN_DIR/manifest.json.

The trainer pins each table at the version of the lake's last complete ETL and stats runs (towerssl.runs) and
resolves its file list with delta-rs when a run starts; everything after that (resume, evaluate, export) reads
exactly those files with pyarrow, so a model is always tied to the table versions it was trained on. No step
of a run needs Spark or a JVM.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from towerssl.delta_rs import pin
from towerssl.errors import UsageError
from towerssl.fields import FeatureSpec, FieldSpec
from towerssl.lake import Snapshot, dense_order, read_snapshot
from towerssl.model.features import Features
from towerssl.stats.readers import log_p_by_item, mi_matrix

log = logging.getLogger(__name__)

# The tables a run reads, each with the command that writes it (named in errors about the table).
TRAINING_TABLES = {
    "fields": "etl", "items": "etl", "users": "etl", "train_clicks": "etl", "valid_clicks": "etl", "test_clicks": "etl",
    "item_stats": "stats", "feature_mi": "stats",
}


@dataclass(frozen=True)
class Manifest:
    lake: str
    tables: dict[str, Snapshot]

    def save(self, run_dir: str | Path) -> None:
        record = {"lake": self.lake, "tables": {name: asdict(s) for name, s in self.tables.items()}}
        Path(run_dir, "manifest.json").write_text(json.dumps(record, indent=1))

    @classmethod
    def load(cls, run_dir: str | Path) -> Manifest:
        path = Path(run_dir, "manifest.json")
        if not path.is_file():
            raise UsageError(f"{path} not found: is {run_dir} a training run directory (made by `towerssl train`)?")
        record = json.loads(path.read_text())
        tables = {name: Snapshot(s["path"], s["version"], tuple(s["files"])) for name, s in record["tables"].items()}
        return cls(record["lake"], tables)

    @classmethod
    def resolve(cls, lake: str | Path) -> Manifest:
        """Pin the version of every table the trainer needs and list its files (delta-rs, no JVM)."""
        log.info("pinning the versions of %d tables in %s", len(TRAINING_TABLES), lake)
        manifest = cls(str(lake), pin(lake, TRAINING_TABLES))
        log.info("pinned %s", ", ".join(f"{name} v{version}" for name, version in manifest.versions().items()))
        return manifest

    def versions(self) -> dict[str, int]:
        return {name: s.version for name, s in self.tables.items()}

    def read(self, table: str, columns: list[str] | None = None) -> pa.Table:
        return read_snapshot(self.tables[table], columns, rerun=TRAINING_TABLES.get(table))


def feature_spec(manifest: Manifest) -> FeatureSpec:
    return FeatureSpec.from_rows(manifest.read("fields").to_pylist())


def feature_tensors(manifest: Manifest, table: str, fields: tuple[FieldSpec, ...], index: str) -> Features:
    """Each field as a LongTensor in index order: [N] for single-valued fields, [N, length] for multi-valued."""
    data = manifest.read(table, [index] + [f.name for f in fields])
    order = dense_order(data, index, table, "etl")
    features: Features = {}
    for field in fields:
        column = data.column(field.name)
        if field.multi:
            flat = pa.concat_arrays([chunk.flatten() for chunk in column.chunks]).to_numpy()
            if flat.size != len(data) * field.length:
                raise UsageError(f"table {table}: field {field.name} is not padded to length {field.length}: rerun `towerssl etl`")
            values = flat.reshape(len(data), field.length)
        else:
            values = column.to_numpy()
        features[field.name] = torch.from_numpy(values[order].astype(np.int64))
    return features


def item_log_p(manifest: Manifest, n_items: int) -> torch.Tensor:
    return torch.from_numpy(log_p_by_item(manifest.read("item_stats", ["item_idx", "log_p"]), n_items).astype(np.float32))


def item_clicks(manifest: Manifest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training clicks per item, popularity bucket and decile, in item_idx order (for evaluation slices)."""
    stats = manifest.read("item_stats", ["item_idx", "clicks", "bucket", "decile"])
    order = dense_order(stats, "item_idx", "item_stats", "stats")
    return (stats.column("clicks").to_numpy()[order], np.asarray(stats.column("bucket").to_pylist(), dtype=object)[order], stats.column("decile").to_numpy()[order])


def mi_matrices(manifest: Manifest, item_fields: list[str]) -> tuple[np.ndarray, np.ndarray]:
    rows = manifest.read("feature_mi", ["field_a", "field_b", "mi", "nmi"]).to_pydict()
    return (mi_matrix(rows["field_a"], rows["field_b"], rows["mi"], item_fields), mi_matrix(rows["field_a"], rows["field_b"], rows["nmi"], item_fields))


def click_pairs(manifest: Manifest, table: str) -> tuple[np.ndarray, np.ndarray]:
    """(user_idx, item_idx) arrays of a clicks table; none from a table without data files (Spark writes an
    empty table as a log entry only: valid_clicks of a lake built without validation)."""
    if not manifest.tables[table].files:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    clicks = manifest.read(table, ["user_idx", "item_idx"])
    return clicks.column("user_idx").to_numpy().astype(np.int64), clicks.column("item_idx").to_numpy().astype(np.int64)
