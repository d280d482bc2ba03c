"""`towerssl stats`: item_stats and feature_mi from the ETL tables, written next to them, plus the MI heatmap."""

from __future__ import annotations

import argparse
import logging
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import SparkSession

from towerssl.config import build_config, check_types, config_dict
from towerssl.errors import UsageError
from towerssl.lake import pinned_table, read_table, write_table
from towerssl.runs import RunRecorder, committed_versions
from towerssl.spark import scheduler_pool, spark_session
from towerssl.stats.fields import item_fields
from towerssl.stats.heatmap import plot_mi_heatmap
from towerssl.stats.mi import FeatureMI, compute_feature_mi, readable_by_tasks, snapshot_feature_mi
from towerssl.stats.popularity import BUCKETS, DEFAULT_NEW_ITEM_FLOOR, check_new_item_floor, click_counts, popularity

log = logging.getLogger(__name__)

WEIGHTINGS = ("items", "clicks")
HEATMAP = "_reports/feature_mi.png"  # under the lake directory unless report_dir is set


@dataclass(frozen=True)
class StatsConfig:
    mi_weighting: str = "items"  # items: each item weighs 1 in the MI; clicks: each item weighs its training clicks
    new_item_floor: float = DEFAULT_NEW_ITEM_FLOOR  # clicks assumed for log_p of items without a training click
    report_dir: str | None = None  # where feature_mi.png goes; default LAKE_DIR/_reports

    def __post_init__(self) -> None:
        check_types(self, "stats")
        if self.mi_weighting not in WEIGHTINGS:
            raise UsageError(f"mi_weighting must be one of {', '.join(WEIGHTINGS)}, got {self.mi_weighting!r}")
        check_new_item_floor(self.new_item_floor)


def heatmap_path(lake: str | Path, config: StatsConfig) -> Path | None:
    """Where the PNG goes: report_dir, else LAKE_DIR/_reports (None for a remote lake without report_dir)."""
    if config.report_dir is not None:
        return Path(config.report_dir) / Path(HEATMAP).name
    return None if "://" in str(lake) else Path(lake) / HEATMAP


def run_stats(spark: SparkSession, lake: str | Path, config: StatsConfig, run_id: str | None = None) -> dict[str, Any]:
    """Write item_stats and feature_mi (one Delta commit each) and the heatmap; return a summary.

    The MI job runs in a second thread beside popularity (Spark interleaves their tasks on the cores) and
    writes feature_mi there, once the popularity check has passed, while item_stats is being written: a
    failed check writes neither table. popularity_seconds and mi_seconds therefore overlap."""
    run_id = run_id or uuid.uuid4().hex[:12]
    record = {"lake": str(lake), **config_dict(config)}
    started = time.time()
    etl = committed_versions(lake, stats=False)  # the tables of the last complete ETL run, never a half-written one
    recorder = RunRecorder(lake, "stats", run_id, source=etl)
    items, items_snapshot = pinned_table(spark, lake, "items", etl.versions["items"])  # popularity and MI see the same version
    train_clicks = read_table(spark, lake, "train_clicks", etl.versions["train_clicks"])
    fields = item_fields(read_table(spark, lake, "fields", etl.versions["fields"]), items)
    log.info("item fields: %s", ", ".join(f"{f.name}[{f.length}]" if f.multi else f.name for f in fields))

    weighted = config.mi_weighting == "clicks"
    clicks = click_counts(items, train_clicks).persist(StorageLevel.MEMORY_AND_DISK)
    mi_group = f"towerssl-stats-mi-{run_id}-{uuid.uuid4().hex[:6]}"
    checked: Future[None] = Future()  # the popularity check: feature_mi is written only once it has passed

    def mi_part() -> tuple[FeatureMI, float]:  # in a second thread: its Spark jobs share the cores with popularity's
        spark.sparkContext.setJobGroup(mi_group, "feature_mi", interruptOnCancel=True)
        scheduler_pool(spark, "stats-mi")  # shares the cores with popularity's jobs (FAIR) instead of queueing behind or ahead
        mi_started = time.time()
        if weighted:
            result = compute_feature_mi(items.join(clicks.where("listed").select("item_idx", "clicks"), "item_idx"), fields, weight="clicks")
        elif readable_by_tasks(items_snapshot):
            result = snapshot_feature_mi(spark, items_snapshot, fields)  # the tasks read the snapshot's files
        else:  # the rows come from a Spark scan, which has the Hadoop file systems and their credentials
            result = compute_feature_mi(items, fields)
        mi_s = time.time() - mi_started
        checked.result()  # raises if the check failed: nothing is written
        write_table(result.frame(spark), lake, "feature_mi", run_id, record)  # beside item_stats' write
        recorder.committed("feature_mi")
        return result, mi_s

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stats-mi") as pool:
        mi_future = None if weighted else pool.submit(mi_part)
        try:
            try:
                stats = popularity(clicks, config.new_item_floor)  # the histogram action (and the check): the bucket sizes come with it
            except BaseException as error:
                checked.set_exception(error)
                raise
            checked.set_result(None)
            if weighted:  # its items join the cached click counts, filled by now
                mi_future = pool.submit(mi_part)
            write_table(stats.table, lake, "item_stats", run_id, record)
            recorder.committed("item_stats")
            buckets = stats.buckets
            n_items = sum(buckets.values())
            popularity_s = time.time() - started
            log.info("item_stats: %d items in %.1f s (%s)", n_items, popularity_s, ", ".join(f"{b} {buckets.get(b, 0)}" for b in BUCKETS))
            result, mi_s = mi_future.result()
        except BaseException:
            if mi_future is not None and not mi_future.done():
                spark.sparkContext.cancelJobGroup(mi_group)  # stop the MI jobs still running
            raise
        finally:
            if mi_future is not None:
                wait([mi_future])
            clicks.unpersist()
    recorder.finish()  # the commit point: readers pin these two tables from here on
    log.info("feature_mi: %d field pairs over %d items in %.1f s (%.0f items/s), weighting %s",
             len(fields) * (len(fields) - 1) // 2, n_items, mi_s, n_items / max(mi_s, 1e-9), config.mi_weighting)

    names, mi, nmi = list(result.names), result.mi, result.nmi
    for a, name in enumerate(names):
        partners = sorted((b for b in range(len(names)) if b != a), key=lambda b: -nmi[a, b])[:3]
        log.info("H(%s) = %.3f nats; top nmi partners: %s", name, mi[a, a], ", ".join(f"{names[b]} {nmi[a, b]:.3f}" for b in partners))
    png = heatmap_path(lake, config)
    if png is None:
        log.warning("lake %s is not a local directory: no heatmap written (set report_dir)", lake)
    else:
        plot_mi_heatmap(mi, nmi, names, png)
        log.info("heatmap: %s", png)
    return {
        "run_id": run_id, "items": n_items, "buckets": buckets, "fields": names,
        "popularity_seconds": round(popularity_s, 1), "mi_seconds": round(mi_s, 1), "heatmap": str(png) if png else None,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lake", required=True, help="lake directory: reads items, train_clicks, fields; writes item_stats, feature_mi")
    parser.add_argument("--config", help="YAML file; its `stats:` section sets any option below (flags win)")
    parser.add_argument("--mi-weighting", choices=WEIGHTINGS, help="items (default): each item weighs 1 in the MI; clicks: its training clicks")
    parser.add_argument("--new-item-floor", type=float, help=f"clicks assumed for log_p of new items, in (0, 1] (default {DEFAULT_NEW_ITEM_FLOOR})")
    parser.add_argument("--report-dir", help="directory of feature_mi.png (default LAKE_DIR/_reports)")
    parser.add_argument("--master", help="Spark master (default: spark-submit's, else local[*])")


def run(args: argparse.Namespace) -> int:
    overrides = {"mi_weighting": args.mi_weighting, "new_item_floor": args.new_item_floor, "report_dir": args.report_dir}
    config = build_config(StatsConfig, args.config, overrides, section="stats")
    committed_versions(args.lake, stats=False)  # a lake without a complete ETL run stops here, before Spark starts
    run_stats(spark_session("towerssl-stats", master=args.master), args.lake, config)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`spark-submit jobs/stats.py --lake LAKE_DIR ...`: the same options as `towerssl stats`."""
    import sys

    from towerssl.cli import main as cli_main

    return cli_main(["stats", *(sys.argv[1:] if argv is None else argv)])
