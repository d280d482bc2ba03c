"""`towerssl demo` (`make demo`): the whole system on the embedded synthetic data, or on a MovieLens directory.

generate -> etl -> stats -> train (no SSL, independent mask, CFM) -> evaluate -> export, then one table of
Recall@50 (overall, tail, new items) per variant beside the popularity baseline, and PNGs: training curves,
recall by popularity decile per variant, and the MI heatmap (written by the stats job).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from towerssl.etl.job import FORMATS, EtlConfig, run_etl
from towerssl.plots import saved_figure
from towerssl.spark import spark_session
from towerssl.stats.job import StatsConfig, run_stats
from towerssl.trainer.config import TrainConfig
from towerssl.trainer.evaluate_run import evaluate_run
from towerssl.trainer.export import export_run
from towerssl.trainer.reporting import plot_recall_by_decile
from towerssl.trainer.train import train

log = logging.getLogger(__name__)

VARIANTS: dict[str, dict[str, Any]] = {
    "no SSL": {"alpha": 0.0, "augmentation": "none"},
    "independent mask": {"alpha": 0.5, "augmentation": "independent-mask", "mask_rate": 0.3},
    "CFM": {"alpha": 0.5, "augmentation": "cfm"},
}
DEMO_TRAIN = {"batch_size": 512, "max_steps": 600, "eval_every": 100, "checkpoint_every": 200, "patience": 3, "lr": 3e-3, "workers": 2}
DEMO_MODEL = {"embedding_dim": 32, "hidden_dims": [128], "output_dim": 64, "ssl_batch_size": 512, "temperature": 0.1}


def plot_training_curves(runs: dict[str, Path], path: Path) -> Path:
    with saved_figure(path, columns=2, size=(11, 4)) as (_, axes):
        loss_axis, recall_axis = axes[0]
        for name, run_dir in runs.items():
            history = json.loads((run_dir / "train_summary.json").read_text())["history"]
            losses = [(h["step"], h["loss/main"]) for h in history if "loss/main" in h]
            recalls = [(h["step"], v) for h in history for k, v in h.items() if k.startswith("valid/recall")]
            loss_axis.plot(*zip(*losses), label=name)
            if recalls:
                recall_axis.plot(*zip(*recalls), marker="o", label=name)
        loss_axis.set(xlabel="step", ylabel="main loss (in-batch softmax)", title="training loss")
        recall_axis.set(xlabel="step", ylabel=f"valid recall@{DEMO_TRAIN.get('eval_k', 50)}", title="validation recall")
        for axis in (loss_axis, recall_axis):
            axis.grid(True, alpha=0.3)
            axis.legend()
    return path


def report_table(results: dict[str, dict[str, Any]]) -> str:
    def fmt(value: float | None) -> str:
        return "   n/a" if value is None else f"{value:6.4f}"

    rows = ["| variant | recall@50 overall | tail | new items |", "| --- | --- | --- | --- |"]
    baseline = next(iter(results.values()))["baseline"]["recall@50"]
    rows.append(f"| popularity baseline | {fmt(baseline['overall'])} | {fmt(baseline['tail'])} | {fmt(baseline['new'])} |")
    for name, metrics in results.items():
        recall = metrics["recall@50"]
        rows.append(f"| {name} | {fmt(recall['overall'])} | {fmt(recall['tail'])} | {fmt(recall['new'])} |")
    return "\n".join(rows)


def run_demo(out: Path, input_dir: str | None, fmt: str, max_steps: int | None = None) -> dict[str, Any]:
    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    spark = spark_session("towerssl-demo")
    if input_dir is None:
        from towerssl.etl.generate import generate

        input_dir, fmt = str(out / "raw"), "raw"
        log.info("[1/5] generating the synthetic dataset in %s", input_dir)
        generate(input_dir, overwrite=True)
    lake = out / "lake"
    log.info("[2/5] ETL %s (%s) -> %s", input_dir, fmt, lake)
    run_etl(spark, EtlConfig(input=input_dir, lake=str(lake), format=fmt))
    log.info("[3/5] statistics: item popularity and feature MI")
    run_stats(spark, lake, StatsConfig(report_dir=str(out)))
    runs: dict[str, Path] = {}
    results: dict[str, dict[str, Any]] = {}
    for position, (name, model) in enumerate(VARIANTS.items(), start=1):
        run_dir = out / "runs" / name.lower().replace(" ", "-")
        log.info("[4/5] training variant %d/%d: %s", position, len(VARIANTS), name)
        settings = {**DEMO_TRAIN, **({"max_steps": max_steps} if max_steps else {})}
        train(str(lake), run_dir, TrainConfig(**settings, model={**DEMO_MODEL, **model}))
        results[name] = evaluate_run(run_dir)
        runs[name] = run_dir
    log.info("[5/5] exporting the CFM run and writing the report")
    export_run(runs["CFM"])
    deciles = {name: json.loads((run_dir / "recall_by_decile.json").read_text()) for name, run_dir in runs.items()}
    curves = {"popularity baseline": deciles["CFM"]["baseline"]["recall@50"]} | {name: d["model"]["recall@50"] for name, d in deciles.items()}
    plot_recall_by_decile(curves, "recall@50", out / "recall_by_decile.png")
    plot_training_curves(runs, out / "training_curves.png")
    table = report_table(results)
    (out / "report.md").write_text(f"# towerssl demo\n\nInput: {input_dir} ({fmt}); test window of the global time split.\n\n{table}\n")
    print(table)
    log.info("demo done in %.0f s; report, PNGs and runs under %s", time.time() - started, out)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/demo", help="output directory (default out/demo)")
    parser.add_argument("--input", help="a raw-layout or MovieLens directory instead of the synthetic data")
    parser.add_argument("--format", choices=FORMATS, default="raw", help="format of --input (default raw)")
    parser.add_argument("--max-steps", type=int, help="training steps per variant (default 600)")


def run(args: argparse.Namespace) -> int:
    run_demo(Path(args.out), args.input, args.format, args.max_steps)
    return 0
