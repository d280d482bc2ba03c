"""The experiment's results: mean and standard deviation over seeds per variant, metric and item slice, the
verdict against the target, as results.json, results.md and a PNG of Recall@50 by slice.

"Beyond the seed-to-seed spread" means the two means differ by more than the sum of their standard
deviations (sample std over seeds): a deliberately strict reading, stated in every verdict.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from towerssl.experiment.config import BASELINE, Cell, ExperimentConfig, Run
from towerssl.plots import saved_figure

METRICS = ("recall@10", "recall@50", "recall@100", "ndcg@50")
SLICES = ("overall", "head", "torso", "tail", "new")
NO_SSL = "no SSL"
TARGET = {"tail_gain": 0.10, "overall_loss": 0.01}  # relative; new items must simply beat no SSL


def summarize(values: list[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation of the values that exist (a slice with no test pair has none)."""
    present = np.array([v for v in values if v is not None], dtype=np.float64)
    mean = float(present.mean()) if present.size else None
    std = float(present.std(ddof=1)) if present.size > 1 else (0.0 if present.size else None)
    return {"mean": mean, "std": std, "values": values}


def _metrics(run: Run, out: Path, split: str = "test") -> dict[str, Any]:
    return json.loads((run.directory(out) / split / "metrics.json").read_text())


def _seconds(run: Run, out: Path) -> float | None:
    path = run.directory(out) / "timing.json"
    return json.loads(path.read_text())["train_seconds"] if path.is_file() else None


def variant_results(runs: list[Run], tuning: list[Run], config: ExperimentConfig, out: Path) -> dict[str, Any]:
    tests = [_metrics(run, out) for run in runs]
    seconds = [s for s in (_seconds(run, out) for run in runs) if s is not None]
    grid = {}
    for run in tuning:
        grid.setdefault(run.params_slug, []).append(_metrics(run, out, "valid")[config.selection]["overall"])
    return {
        "params": dict(runs[0].params),
        "refit_steps": runs[0].steps,  # None: trained on train_clicks, stopped early on valid_clicks
        "seeds": [run.seed for run in runs],
        "valid_grid": {point: summarize(scores)["mean"] for point, scores in grid.items()},
        "test": {m: {s: summarize([t[m].get(s) for t in tests]) for s in SLICES} for m in METRICS},
        "train_seconds": summarize(seconds)["mean"] if seconds else None,
        "run_dirs": [str(run.directory(out)) for run in runs],
    }


def _beyond(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["mean"] is not None and b["mean"] is not None and abs(a["mean"] - b["mean"]) > a["std"] + b["std"]


def verdict(variants: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each SSL variant against no SSL on test Recall@50: the three conditions of the target."""
    if NO_SSL not in variants:
        return {}
    base = variants[NO_SSL]["test"]["recall@50"]
    result = {}
    for name, data in variants.items():
        if name == NO_SSL:
            continue
        recall = data["test"]["recall@50"]
        tail_gain = _relative(recall["tail"]["mean"], base["tail"]["mean"])
        overall_change = _relative(recall["overall"]["mean"], base["overall"]["mean"])
        new_diff = None if None in (recall["new"]["mean"], base["new"]["mean"]) else recall["new"]["mean"] - base["new"]["mean"]
        checks = {
            "tail_gain_at_least_10pct": tail_gain is not None and tail_gain >= TARGET["tail_gain"] and _beyond(recall["tail"], base["tail"]),
            "overall_within_1pct": overall_change is not None and overall_change >= -TARGET["overall_loss"],
            "new_items_above": new_diff is not None and new_diff > 0 and _beyond(recall["new"], base["new"]),
        }
        result[name] = {"tail_relative_gain": tail_gain, "overall_relative_change": overall_change, "new_difference": new_diff, **checks, "target_met": all(checks.values())}
    return result


def _relative(value: float | None, reference: float | None) -> float | None:
    return None if value is None or not reference else value / reference - 1


def collect(config: ExperimentConfig, out: Path, cells: list[Cell], tuning: dict[str, list[Run]], finals_by_cell: dict[str, list[Run]]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for cell in cells:
        finals = finals_by_cell[cell.name]
        variants = {
            variant: variant_results([r for r in finals if r.variant == variant], [r for r in tuning[cell.name] if r.variant == variant], config, out)
            for variant in config.variants
        }
        first = _metrics(finals[0], out)  # the baseline and the test set are the same for every run of a cell
        results[cell.name] = {
            "baseline": {m: {s: first["baseline"][m].get(s) for s in SLICES} for m in METRICS},
            "test_counts": {s: first["counts"].get(s) for s in SLICES},
            "variants": variants,
            "verdict": verdict(variants),
        }
    return results


def _cell_text(value: dict[str, Any] | float | None) -> str:
    if isinstance(value, dict):
        if value["mean"] is None:
            return "n/a"
        return f"{value['mean']:.4f} ± {value['std']:.4f}"
    return "n/a" if value is None else f"{value:.4f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}%"


def markdown(config: ExperimentConfig, results: dict[str, Any], skipped: dict[str, str]) -> str:
    lines = [
        "# SSL experiment results",
        "",
        f"Mean ± sample std over seeds {config.seeds}; test_clicks; settings chosen per variant on valid_clicks "
        f"({config.selection}, overall) from the grid {config.grid}"
        + ("; then refit on train + valid clicks for the step count chosen there (settings: steps=)." if config.refit else "."),
    ]
    for name, cell in results.items():
        counts = cell["test_counts"]
        lines += ["", f"## {name}", "", "Test pairs (users): " + ", ".join(f"{s} {counts[s]['pairs']} ({counts[s]['users']})" for s in SLICES if counts[s]), ""]
        for metric in METRICS:
            lines += [f"**{metric}**", "", "| variant | settings | " + " | ".join(SLICES) + " |", "|" + " --- |" * (len(SLICES) + 2)]
            lines.append(f"| {BASELINE} | | " + " | ".join(_cell_text(cell["baseline"][metric][s]) for s in SLICES) + " |")
            for variant, data in cell["variants"].items():
                settings = ", ".join([f"{k}={v}" for k, v in data["params"].items()] + ([f"steps={data['refit_steps']}"] if data["refit_steps"] else []))
                lines.append(f"| {variant} | {settings} | " + " | ".join(_cell_text(data["test"][metric][s]) for s in SLICES) + " |")
            lines.append("")
        lines += ["**Against the target** (Recall@50 vs no SSL; the tail and new-item conditions also need the means to differ by more than the sum of their stds)", "",
                  "| SSL variant | tail gain | tail >= +10% | overall change | overall >= -1% | new items diff | new items above | target met | train s/run |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        yes = {True: "yes", False: "no"}
        for variant, v in cell["verdict"].items():
            seconds = cell["variants"][variant]["train_seconds"]
            lines.append(
                f"| {variant} | {_percent(v['tail_relative_gain'])} | {yes[v['tail_gain_at_least_10pct']]} | {_percent(v['overall_relative_change'])} | "
                f"{yes[v['overall_within_1pct']]} | {_cell_text(v['new_difference'])} | {yes[v['new_items_above']]} | {'**yes**' if v['target_met'] else 'no'} | "
                f"{'n/a' if seconds is None else f'{seconds:.0f}'} |"
            )
    for name, reason in skipped.items():
        lines += ["", f"## {name}: skipped", "", reason]
    return "\n".join(lines) + "\n"


def plot_recall_by_slice(results: dict[str, Any], path: Path, metric: str = "recall@50") -> Path:
    names = list(results)
    columns = min(2, len(names))
    rows = math.ceil(len(names) / columns)
    with saved_figure(path, rows, columns, size=(7 * columns, 4 * rows)) as (_, axes):
        for index, name in enumerate(names):
            axis = axes[index // columns][index % columns]
            cell = results[name]
            bars = {BASELINE: {s: {"mean": cell["baseline"][metric][s], "std": 0.0} for s in SLICES}} | {v: d["test"][metric] for v, d in cell["variants"].items()}
            width = 0.8 / len(bars)
            for position, (label, by_slice) in enumerate(bars.items()):
                means = [np.nan if by_slice[s]["mean"] is None else by_slice[s]["mean"] for s in SLICES]
                errors = [0.0 if by_slice[s]["std"] is None else by_slice[s]["std"] for s in SLICES]
                axis.bar(np.arange(len(SLICES)) + (position - (len(bars) - 1) / 2) * width, means, width, yerr=errors, capsize=2, label=label)
            axis.set_xticks(range(len(SLICES)), SLICES)
            axis.set(title=name, ylabel=f"test {metric} (mean ± std over seeds)")
            axis.grid(True, axis="y", alpha=0.3)
        axes[0][0].legend(fontsize=8)
        for index in range(len(names), rows * columns):
            axes[index // columns][index % columns].axis("off")
    return path


def write_report(config: ExperimentConfig, out: Path, cells: list[Cell], tuning: dict[str, list[Run]], finals: dict[str, list[Run]], skipped: dict[str, str]) -> dict[str, Any]:
    results = collect(config, out, cells, tuning, finals)
    json_path, md_path, png_path = out / "results.json", out / "results.md", out / "recall50_by_slice.png"
    json_path.write_text(json.dumps({"seeds": config.seeds, "grid": config.grid, "selection": config.selection, "cells": results, "skipped": skipped}, indent=1) + "\n")
    md_path.write_text(markdown(config, results, skipped))
    if results:
        plot_recall_by_slice(results, png_path)
    return {"json": str(json_path), "markdown": str(md_path), "plot": str(png_path) if results else None, "cells": results}
