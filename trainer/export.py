"""`towerssl export`: what serving needs from a run, under RUN_DIR/export/.

item_embeddings (Delta), items.faiss (inner product on unit vectors, the metric the model was trained with),
user_tower.pt and item_tower.pt (TorchScript), the item fields' training vocabulary (item_vocab, Delta, and
item_fields.json: what `towerssl embed-items` encodes new items with, without the lake) and model_card.json
(config, table versions, metrics, code version).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import torch

from towerssl.model.features import Features
from towerssl.trainer.embed import embed
from towerssl.trainer.faiss_index import build_flat_index, save_index, write_item_embeddings
from towerssl.trainer.inputs import feature_tensors
from towerssl.trainer.item_vocab import FIELDS_FILE, VOCAB_TABLE, export_item_vocabulary
from towerssl.trainer.run_model import TrainedRun

log = logging.getLogger(__name__)


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


ITEM_TOWER_FILE = "item_tower.pt"


def export_tower(tower: torch.nn.Module, features: Features, path: Path, example_rows: int = 8) -> torch.jit.ScriptModule:
    """TorchScript (traced) tower: dict of field -> LongTensor in, unit vectors out."""
    example = {name: values[:example_rows] for name, values in features.items()}
    traced = torch.jit.trace(tower, (example,), strict=False)
    traced.save(str(path))
    return traced


def export_user_tower(run: TrainedRun, path: Path) -> torch.jit.ScriptModule:
    return export_tower(run.towers.user_tower, feature_tensors(run.manifest, "users", run.towers.spec.user_fields, "user_idx"), path)


def export_run(run_dir: str | Path) -> dict[str, Any]:
    run = TrainedRun.load(run_dir)
    out = run.run_dir / "export"
    out.mkdir(parents=True, exist_ok=True)
    items = feature_tensors(run.manifest, "items", run.towers.spec.item_fields, "item_idx")
    item_table = run.manifest.read("items", ["item_idx", "item_id"]).sort_by("item_idx")
    item_emb = embed(run.towers.item_tower, items).numpy()
    run_id = run.run_dir.name
    write_item_embeddings(out, "item_embeddings", item_table.column("item_idx").to_numpy(), item_table.column("item_id").to_numpy(), item_emb, run_id, run.config.to_dict())
    save_index(build_flat_index(item_emb), out / "items.faiss")
    export_user_tower(run, out / "user_tower.pt")
    export_tower(run.towers.item_tower, items, out / ITEM_TOWER_FILE)
    export_item_vocabulary(run, out)
    metrics_path = run.run_dir / "metrics.json"
    card = {
        "run": str(run.run_dir),
        "config": run.config.to_dict(),
        "table_versions": run.manifest.versions(),
        "lake": run.manifest.lake,
        "metrics": json.loads(metrics_path.read_text()) if metrics_path.is_file() else None,
        "code_version": {"towerssl": run.code_version(), "git_commit": _git_commit(), "torch": torch.__version__},
        "embedding": {"dimension": int(item_emb.shape[1]), "normalized": True, "faiss_metric": "inner_product", "items": int(item_emb.shape[0])},
        "files": {"item_embeddings": "item_embeddings (Delta)", "faiss_index": "items.faiss", "user_tower": "user_tower.pt (TorchScript)",
                  "item_tower": f"{ITEM_TOWER_FILE} (TorchScript)", "item_vocabulary": f"{VOCAB_TABLE} (Delta), {FIELDS_FILE}"},
    }
    (out / "model_card.json").write_text(json.dumps(card, indent=1, default=str))
    log.info("exported %d item vectors, the FAISS index, both towers and the item vocabulary to %s", len(item_emb), out)
    return card


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run directory made by `towerssl train` (evaluate first to include metrics)")


def run(args: argparse.Namespace) -> int:
    export_run(args.run)
    return 0
