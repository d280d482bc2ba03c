"""`towerssl experiment`: every dataset x split through ETL and statistics, then per variant a tuning grid on
valid_clicks and the chosen settings on every seed, scored on test_clicks; results table and plots at the end.

Resumable: a lake with its marker, a run with its train_summary.json and an evaluation with its metrics.json
are done and skipped; a run stopped mid-training continues from its last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from towerssl.errors import UsageError
from towerssl.etl.layout import RawInputError
from towerssl.experiment.config import DEFAULT_CONFIG, Cell, ExperimentConfig, Run
from towerssl.experiment.report import write_report
from towerssl.trainer import checkpoint
from towerssl.trainer.inputs import Manifest

log = logging.getLogger(__name__)

LAKE_MARKER = "_experiment_lake.json"
TIMING = "timing.json"


def prepare_lake(cell: Cell, config: ExperimentConfig, out: Path) -> Path:
    """The cell's lake: ETL + statistics once (a marker records that both finished), or the given lake."""
    if cell.dataset.lake is not None:
        return Path(cell.dataset.lake)
    from towerssl.config import config_dict
    from towerssl.etl.job import EtlConfig, run_etl
    from towerssl.spark import spark_session
    from towerssl.stats.job import StatsConfig, run_stats

    lake = out / "lakes" / cell.slug
    marker = lake / LAKE_MARKER
    etl_config = EtlConfig(**{**config.etl, **cell.dataset.etl, "input": cell.dataset.input, "lake": str(lake), "format": cell.dataset.format, "split": cell.split,
                              "validation": not cell.refit})
    if marker.is_file():
        if json.loads(marker.read_text())["etl_config"] != config_dict(etl_config):
            raise UsageError(f"{lake} was built with other ETL settings than the experiment config now asks for: use another --out, or delete {lake}")
        return lake
    if not Path(cell.dataset.input).exists():
        raise FileNotFoundError(f"input {cell.dataset.input} does not exist")
    if lake.exists():
        shutil.rmtree(lake)  # an interrupted ETL: start the lake over
    started = time.time()
    spark = spark_session("towerssl-experiment")
    etl = run_etl(spark, etl_config)
    stats = run_stats(spark, lake, StatsConfig(report_dir=str(lake / "_reports")))
    marker.write_text(json.dumps({"etl_config": config_dict(etl_config), "etl": etl, "stats": stats, "seconds": round(time.time() - started, 1)}, indent=1, default=str))
    return lake


def execute(run: Run, config: ExperimentConfig, inputs: Manifest, out: Path, splits: tuple[str, ...]) -> bool:
    """Train the run (or finish it from its checkpoint) and evaluate it on `splits`; False when all was done."""
    from towerssl.trainer.evaluate_run import evaluate_run
    from towerssl.trainer.train import train

    run_dir = run.directory(out)
    planned = config.train_config(run.variant, dict(run.params), run.seed, run.cell.dataset, run.steps)
    recorded = run_dir / "config.json"
    if recorded.is_file() and json.loads(recorded.read_text()) != json.loads(json.dumps(planned.to_dict())):
        raise UsageError(f"{recorded} was trained with other settings than the experiment config now asks for: use another --out, or delete {run_dir}")
    did_work = False
    if not (run_dir / "train_summary.json").is_file():
        resume = (run_dir / checkpoint.LAST).is_file()
        started = time.time()
        train(inputs.lake, run_dir, planned, resume=resume, inputs=inputs)
        (run_dir / TIMING).write_text(json.dumps({"train_seconds": round(time.time() - started, 1), "resumed": resume}))
        did_work = True
    for split in splits:
        if not (run_dir / split / "metrics.json").is_file():
            evaluate_run(run_dir, split, run_dir / split)
            did_work = True
    return did_work


def selection_score(run: Run, config: ExperimentConfig, out: Path) -> float:
    metrics = json.loads((run.directory(out) / "valid" / "metrics.json").read_text())
    return float(metrics[config.selection]["overall"] or 0.0)


def chosen_steps(tuning: list[Run], chosen: dict[str, tuple[tuple[str, Any], ...]], out: Path) -> dict[str, int]:
    """Per variant, the step of the best validation score of its chosen grid point (mean over the tuning seeds)."""
    steps = {}
    for variant, params in chosen.items():
        best = [json.loads((run.directory(out) / "train_summary.json").read_text())["best_step"] for run in tuning if (run.variant, run.params) == (variant, params)]
        steps[variant] = max(1, round(sum(best) / len(best)))
    return steps


def choose(runs: list[Run], config: ExperimentConfig, out: Path) -> dict[str, tuple[tuple[str, Any], ...]]:
    """Per variant, the grid point with the best mean selection score on valid_clicks (first one on ties)."""
    scores: dict[tuple[str, tuple], list[float]] = {}
    for run in runs:
        scores.setdefault((run.variant, run.params), []).append(selection_score(run, config, out))
    chosen: dict[str, tuple[tuple[str, Any], ...]] = {}
    for variant in config.variants:
        points = [(sum(s) / len(s), params) for (v, params), s in scores.items() if v == variant]
        chosen[variant] = max(points, key=lambda point: point[0])[1]
    return chosen


class Progress:
    """One log line per run with the elapsed time and an estimate of what is left."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.worked, self.started = total, 0, 0, time.time()

    def step(self, run: Run, worked: bool, detail: str) -> None:
        self.done += 1
        self.worked += worked
        elapsed = time.time() - self.started
        left = self.total - self.done
        eta = f", about {elapsed / self.worked * left / 60:.0f} min left" if self.worked and left else ""
        state = "done" if worked else "already done"
        log.info("[run %d/%d] %s | %s | %s | seed %d: %s (%s); %.0f min elapsed%s",
                 self.done, self.total, run.cell.name, run.variant, run.params_slug, run.seed, state, detail, elapsed / 60, eta)


def run_experiment(config: ExperimentConfig, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    lakes: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for cell in config.cells():
        try:
            lakes[cell.name] = prepare_lake(cell, config, out)
        except (RawInputError, FileNotFoundError) as error:  # input missing or unusable: say so in the report
            skipped[cell.name] = str(error)
            log.warning("skipping %s: %s", cell.name, error)
    cells = [cell for cell in config.cells() if cell.name in lakes]
    inputs = {cell.name: Manifest.resolve(lakes[cell.name]) for cell in cells}  # every run of a cell reads the same snapshot
    tuning = {cell.name: config.tuning_runs(cell) for cell in cells}
    finals_per_cell = len(config.variants) * (len(config.seeds) if config.refit else len(config.seeds) - config.tuning_seeds)
    progress = Progress(sum(len(runs) for runs in tuning.values()) + finals_per_cell * len(cells))
    finals: dict[str, list[Run]] = {}
    for cell in cells:
        for run in tuning[cell.name]:
            worked = execute(run, config, inputs[cell.name], out, ("valid",))
            progress.step(run, worked, f"valid {config.selection} {selection_score(run, config, out):.4f}")
        chosen = choose(tuning[cell.name], config, out)
        log.info("%s: chosen on valid_clicks: %s", cell.name, "; ".join(f"{v}: {p}" for v, p in chosen.items()))
        if config.refit:
            steps = chosen_steps(tuning[cell.name], chosen, out)
            log.info("%s: refit on train + valid clicks for %s steps", cell.name, steps)
            finals[cell.name] = config.final_runs(cell, chosen, steps)
            refit_inputs = Manifest.resolve(prepare_lake(finals[cell.name][0].cell, config, out))
            for run in finals[cell.name]:
                worked = execute(run, config, refit_inputs, out, ("test",))
                progress.step(run, worked, "refit and scored on test_clicks")
            continue
        finals[cell.name] = config.final_runs(cell, chosen)
        for run in finals[cell.name]:
            tuned_already = run in tuning[cell.name]
            worked = execute(run, config, inputs[cell.name], out, ("valid", "test"))
            if not tuned_already:
                progress.step(run, worked, "trained and scored on test_clicks")
    return write_report(config, out, cells, tuning, finals, skipped)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="experiment YAML (default: the MovieLens SSL experiment, experiment/movielens.yaml)")
    parser.add_argument("--out", default="out/experiment", help="lakes, runs, results.{md,json} and plots (default out/experiment); rerun to resume")


def run(args: argparse.Namespace) -> int:
    results = run_experiment(ExperimentConfig.load(args.config), Path(args.out))
    print(Path(results["markdown"]).read_text())
    return 0
