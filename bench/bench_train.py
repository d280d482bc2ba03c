"""Benchmark of the whole `towerssl train` process on CPU: wall clock for a number of epochs of a lake's
train_clicks, split into start-up (process start to the end of the first step: imports, pinning, loading
features, building the model, starting the click feed) and training (first step to last step, validation
included), plus the exit (last checkpoint, summary).

The number to compare with another library's "fit N epochs" is the whole process; the split says where a
short run's time goes. Each run is a fresh process in a fresh run directory.

    python bench/bench_train.py --lake LAKE --epochs 10 [--config FILE] [--batch-size N] [--runs 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from towerssl.config import build_config
from towerssl.delta_rs import snapshot
from towerssl.lake import read_snapshot
from towerssl.trainer.config import TrainConfig


def steps_for(lake: str, epochs: int, batch_size: int) -> tuple[int, int]:
    """(training clicks, steps for `epochs` epochs): the feed yields rows // batch_size batches per epoch."""
    rows = read_snapshot(snapshot(lake, "train_clicks"), ["item_idx"]).num_rows
    return rows, epochs * (rows // batch_size)


def time_one_run(lake: str, config: TrainConfig, workdir: Path, index: int) -> dict[str, float]:
    run_dir = workdir / f"run{index}"
    config_path = workdir / f"config{index}.yaml"
    config_path.write_text(yaml.safe_dump({"train": config.to_dict()}))
    command = [sys.executable, "-m", "towerssl.cli", "train", "--lake", lake, "--run", str(run_dir), "--config", str(config_path)]
    launched = time.time()
    result = subprocess.run(command, capture_output=True, text=True)
    ended = time.time()
    if result.returncode != 0:
        sys.exit(f"towerssl train failed ({result.returncode}):\n{result.stderr[-4000:]}")
    timing = json.loads((run_dir / "train_summary.json").read_text())["timing"]
    return {
        "process_s": ended - launched,
        "startup_to_first_step_s": timing["first_step_done_at"] - launched,
        "training_s": timing["last_step_done_at"] - timing["first_step_done_at"],
        "exit_s": ended - timing["last_step_done_at"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", required=True, help="lake with the ETL and stats tables")
    parser.add_argument("--epochs", type=int, default=10, help="passes over train_clicks (default 10)")
    parser.add_argument("--config", help="pipeline YAML; its train: section is used (max_steps is set from --epochs)")
    parser.add_argument("--batch-size", type=int, help="overrides the config's batch_size")
    parser.add_argument("--device", default="cpu", help="device of the runs (default cpu)")
    parser.add_argument("--runs", type=int, default=1, help="fresh processes to time (default 1)")
    parser.add_argument("--out", default="out/bench_train.json", help="JSON result (default out/bench_train.json)")
    args = parser.parse_args()

    config = build_config(TrainConfig, args.config, {"batch_size": args.batch_size, "device": args.device}, section="train")
    clicks, steps = steps_for(args.lake, args.epochs, config.batch_size)
    config.max_steps = steps
    with tempfile.TemporaryDirectory(prefix="bench_train_") as workdir:
        runs = [time_one_run(args.lake, config, Path(workdir), i) for i in range(args.runs)]
    result = {
        "lake": args.lake, "epochs": args.epochs, "train_clicks": clicks, "batch_size": config.batch_size, "steps": steps,
        "eval_every": config.eval_every, "device": args.device, "runs": runs,
        "machine": {"cpus": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "python": platform.python_version(),
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
    }
    for i, run in enumerate(runs):
        print(f"run {i}: {run['process_s']:.1f} s for the whole process = {run['startup_to_first_step_s']:.1f} s start-up to the first step "
              f"+ {run['training_s']:.1f} s training ({steps} steps, {args.epochs} epochs of {clicks} clicks) + {run['exit_s']:.1f} s exit")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
