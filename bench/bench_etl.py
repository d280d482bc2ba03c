"""ETL on generated clicks against the I/O floor: a plain Spark read-and-write of the same raw data.

    python bench/bench_etl.py --clicks 10000000 --work /tmp/bench_etl

Prints both times and their ratio (target: ETL <= 3x the floor), measured in one run on one SparkSession.
With --pairs N it measures N (floor, ETL) pairs in turn and also prints each pair and the median ratio: the
first pair runs in a cold JVM (as a spark-submit job does), the later ones with its compiled code warm.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import statistics
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
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    work = Path(args.work)
    raw = work / "raw"
    if not (raw / "schema.yaml").is_file():
        generate(raw, users=args.users, items=args.items, clicks=args.clicks, seed=0, overwrite=True)
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


if __name__ == "__main__":
    main()
