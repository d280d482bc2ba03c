"""Evaluation outputs: metrics.json, recall_by_decile.json and the recall-by-decile plot (docs/evaluation.md)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from towerssl.trainer.metrics import Evaluation


def write_metrics(metrics: Mapping[str, Any], path: str | Path) -> Path:
    """metrics.json: {"recall@K": {slice: value}, "ndcg@K": {...}, "baseline": {...}, "counts": {...}}."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    return path


def plot_recall_by_decile(curves: Mapping[str, Mapping[int | str, float | None]], metric: str, path: str | Path) -> Path:
    """PNG of recall by popularity decile, one line per named model (baseline included by the caller)."""
    from towerssl.plots import saved_figure

    with saved_figure(path) as (_, axes):
        axis = axes[0][0]
        for name, by_decile in curves.items():
            deciles = sorted(by_decile, key=int)  # int keys, or the string keys of recall_by_decile.json
            values = [np.nan if by_decile[d] is None else by_decile[d] for d in deciles]
            axis.plot([int(d) for d in deciles], values, marker="o", label=name)
        axis.set_xticks(sorted({int(d) for by_decile in curves.values() for d in by_decile}))
        axis.set_xlabel("item popularity decile (1 = the most clicked items holding a tenth of training clicks)")
        axis.set_ylabel(metric)
        axis.set_title(f"{metric} by item popularity decile")
        axis.grid(True, alpha=0.3)
        axis.legend()
    return Path(path)


def write_evaluation(evaluation: Evaluation, out_dir: str | Path, plot_k: int = 50) -> dict[str, Path]:
    """metrics.json, recall_by_decile.json and recall_by_decile.png (model vs baseline at plot_k)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metric = f"recall@{plot_k}"
    deciles_path = out_dir / "recall_by_decile.json"
    deciles_path.write_text(json.dumps(evaluation.deciles, indent=2, allow_nan=False) + "\n")
    return {
        "metrics": write_metrics(evaluation.metrics, out_dir / "metrics.json"),
        "deciles": deciles_path,
        "plot": plot_recall_by_decile(
            {"model": evaluation.deciles["model"][metric], "popularity baseline": evaluation.deciles["baseline"][metric]}, metric, out_dir / "recall_by_decile.png"
        ),
    }
