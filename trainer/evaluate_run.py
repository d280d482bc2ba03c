"""`towerssl evaluate`: score a trained run on test_clicks (or valid_clicks) against the popularity baseline."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from towerssl.trainer.embed import embed
from towerssl.trainer.inputs import click_pairs, feature_tensors, item_clicks
from towerssl.trainer.metrics import SPLITS, EvaluationData, evaluate
from towerssl.trainer.reporting import write_evaluation
from towerssl.trainer.run_model import TrainedRun

log = logging.getLogger(__name__)


def evaluate_run(run_dir: str | Path, split: str = "test", out_dir: str | Path | None = None) -> dict[str, Any]:
    """Writes metrics.json (+ recall_by_decile.json/.png, and evaluation_info.json naming the split and table
    versions) to out_dir (default RUN_DIR) and returns the metrics."""
    run = TrainedRun.load(run_dir)
    manifest, towers = run.manifest, run.towers
    _, bucket, decile = item_clicks(manifest)
    train_users, train_items = click_pairs(manifest, "train_clicks")
    eval_users, eval_items = click_pairs(manifest, SPLITS[split])
    data = EvaluationData.from_arrays(train_users, train_items, eval_users, eval_items, bucket, decile, split)
    items = feature_tensors(manifest, "items", towers.spec.item_fields, "item_idx")
    users = feature_tensors(manifest, "users", towers.spec.user_fields, "user_idx")
    # Warm users, and cold users (no training click) where the dataset has user features beyond the id.
    has_user_features = len(towers.spec.user_fields) > 1
    user_idx = np.concatenate([data.warm_users, data.cold_users]) if has_user_features else data.warm_users
    item_emb = embed(towers.item_tower, items)
    user_emb = embed(towers.user_tower, users, torch.from_numpy(user_idx))
    evaluation = evaluate(data, item_emb, user_idx, user_emb)
    out_dir = Path(out_dir) if out_dir is not None else run.run_dir
    paths = write_evaluation(evaluation, out_dir)
    info = {"split": split, "table": SPLITS[split], "table_versions": manifest.versions()}
    (out_dir / "evaluation_info.json").write_text(json.dumps(info, indent=1))
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return evaluation.metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run directory made by `towerssl train`")
    parser.add_argument("--split", choices=sorted(SPLITS), default="test", help="clicks to score: test (default) or valid")
    parser.add_argument("--out", help="directory of metrics.json and the decile plot (default: the run directory)")


def run(args: argparse.Namespace) -> int:
    metrics = evaluate_run(args.run, args.split, args.out)
    print(json.dumps({k: v for k, v in metrics.items() if k.startswith("recall@")}, indent=1))
    return 0
