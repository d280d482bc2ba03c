"""ETL on generated clicks against the I/O floor: a plain Spark read-and-write of the same raw data.

    python bench/bench_etl.py --clicks 10000000 --work /tmp/bench_etl

Prints both times and their ratio (target: ETL <= 3x the floor), measured in one run on one SparkSession.
With --pairs N it measures N (floor, ETL) pairs in turn and also prints each pair and the median ratio: the
first pair runs in a cold JVM (as a spark-submit job does), the later ones with its compiled code warm.
With --processes N it measures N cold pairs, each in a process (and JVM) of its own, one after the other,
and prints their median: on a small machine one cold pair moves by 5-10% from run to run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from towerssl.etl.generate import generate
from towerssl.etl.job import EtlConfig, run_etl
from towerssl.spark import spark_session

log = logging.getLogger(__name__)


def io_floor(spark, raw: Path, out: Path) -> float:
    """Read every raw input as CSV and write it as Delta: what any ETL must at least do."""
    started = time.perf_counter()
    for name in ("interactions", "items", "users"):
        spark.read.option("header", True).csv(str(raw / name)).write.format("delta").mode("overwrite").save(str(out / name))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clicks", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--work", default="/tmp/towerssl-bench-etl")
    parser.add_argument("--pairs", type=int, default=1, help="(floor, ETL) pairs in one session: the first is the cold JVM's")
    parser.add_argument("--processes", type=int, default=1, help="cold pairs, each in a process of its own; prints their median")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    work = Path(args.work)
    raw = work / "raw"
    if not (raw / "schema.yaml").is_file():
        generate(raw, users=args.users, items=args.items, clicks=args.clicks, seed=0, overwrite=True)
    if args.processes > 1:
        print(json.dumps(cold_pairs(args), indent=1))
        return
    spark = spark_session("towerssl-bench-etl")
    spark.sparkContext.setLogLevel("ERROR")
    pairs = []
    for _ in range(args.pairs):  # each pair on a fresh floor and lake: the ETL never reruns on its own tables
        for path in (work / "floor", work / "lake"):
            shutil.rmtree(path, ignore_errors=True)
        floor = io_floor(spark, raw, work / "floor")
        started = time.perf_counter()
        summary = run_etl(spark, EtlConfig(input=str(raw), lake=str(work / "lake")))
        etl = time.perf_counter() - started
        pairs.append({"io_floor_s": round(floor, 1), "etl_s": round(etl, 1), "ratio": round(etl / floor, 2)})
        log.info("pair %d: floor %.1f s, ETL %.1f s, ratio %.2f", len(pairs), floor, etl, etl / floor)
    result = {
        "clicks": args.clicks, "users": args.users, "items": args.items,
        **pairs[0], "clicks_per_s": round(args.clicks / pairs[0]["etl_s"]), "rows_rejected": sum(summary["rows_rejected"].values()),
        "pairs": pairs, "median_ratio": statistics.median(p["ratio"] for p in pairs),
        "machine": f"{platform.machine()}, {spark.sparkContext.defaultParallelism} Spark cores",
    }
    print(json.dumps(result, indent=1))


def cold_pairs(args: argparse.Namespace) -> dict:
    """One cold pair per child process (this script with --processes 1), in turn; each child's last output is its JSON."""
    pairs = []
    for i in range(args.processes):
        command = [sys.executable, __file__, "--clicks", str(args.clicks), "--users", str(args.users), "--items", str(args.items), "--work", args.work]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        pair = json.loads(output[output.index("{"):])
        pairs.append({k: pair[k] for k in ("io_floor_s", "etl_s", "ratio")})
        log.info("process %d of %d: floor %.1f s, ETL %.1f s, ratio %.2f", i + 1, args.processes, pair["io_floor_s"], pair["etl_s"], pair["ratio"])
    return {
        "clicks": args.clicks, "users": args.users, "items": args.items, "cold_pairs": pairs,
        "median_ratio": statistics.median(p["ratio"] for p in pairs), "over_3x": sum(p["ratio"] > 3 for p in pairs),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }


if __name__ == "__main__":
    main()
