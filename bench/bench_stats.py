"""Benchmark of `towerssl stats`: the Spark job against a vectorized single-node numpy reference.

For each size (default 1M and 10M items) it generates, with Spark, an encoded `items` table with the
synthetic generator's default item fields (item id, category[2], keywords[4], brand, price, audience,
city; about 10% new items with the unknown id) and a Zipf-like `train_clicks` table (2 clicks per item),
writes them (and `fields`) as Delta tables, then times in the same run:
  - Spark: the job itself, run_stats (item_stats, feature_mi, heatmap: read Delta, compute, write Delta);
  - numpy: the same work on one core: reading the same Delta snapshots with pyarrow, the same statistics by
    the same algorithm (including the closed form for the id field), writing item_stats and feature_mi as
    Parquet files and drawing the same heatmap; checked against Spark (MI to 1e-9, popularity exactly).
Each side runs twice per size and the second run is the one timed (the first is printed too): the JVM's
JIT and the Python workers warm up on the first, as the reference's page cache and imports do.
Prints wall and CPU times (Spark: the JVM and its Python workers, from /proc; the machine may be shared;
popularity and MI overlap: the job runs them concurrently), the
Spark / numpy ratios and the 10M / 1M ratios, and writes them to WORK_DIR/results.json.

    python bench/bench_stats.py [--sizes 1000000 10000000] [--work-dir out/bench_stats] [--cores 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from towerssl.fields import FIELDS_SCHEMA, ITEM_ID_FIELD, FieldSpec
from towerssl.lake import latest_version, pinned_snapshot, read_table, write_table
from towerssl.runs import RunRecorder
from towerssl.spark import spark_session
from towerssl.stats.cells import FIRST_VALUE
from towerssl.stats.heatmap import plot_mi_heatmap
from towerssl.stats.job import StatsConfig, run_stats

log = logging.getLogger("bench_stats")

CATEGORIES, KEYWORDS_PER_CATEGORY, GENERIC_KEYWORDS, PRICES, AUDIENCES, CITIES = 16, 8, 8, 5, 3, 12
DENSE_CELLS = 50_000_000  # the numpy reference counts cells with bincount below this key space, np.unique above


# ---------------------------------------------------------------------------------------------- data
def generate_items(spark: SparkSession, n: int, seed: int = 0) -> DataFrame:
    """Encoded items (indices from 3) with the generator's planted structure: brand ~ category, price ~
    brand, keywords ~ category, audience ~ category, city independent."""
    n_brands = max(2 * CATEGORIES, n // 20)
    per_category = n_brands // CATEGORIES

    def uniform(k: int):
        return F.rand(seed * 1000 + k)

    def below(k: int, m: int):
        return F.floor(uniform(k) * m).cast("int")

    items = spark.range(n, numPartitions=max(2, n // 1_000_000)).select(F.col("id").cast("int").alias("item_idx"))
    items = items.withColumn("cat", below(1, CATEGORIES)).withColumn("n_keywords", below(2, 4) + 1)
    home_brand = F.least(F.floor(uniform(3) ** 2 * per_category).cast("int") * CATEGORIES + F.col("cat"), F.lit(n_brands - 1))
    any_brand = F.floor(uniform(4) ** 2 * n_brands).cast("int")
    items = items.withColumn("brand_code", F.when(uniform(5) < 0.9, home_brand).otherwise(any_brand)).withColumn("u_price", uniform(6))
    move = F.when(F.col("u_price") < 0.15, -1).when(F.col("u_price") >= 0.85, 1).otherwise(0)  # 70% the brand's tier
    price = F.greatest(F.lit(0), F.least(F.lit(PRICES - 1), F.pmod(F.hash("brand_code"), F.lit(PRICES)) + move))
    second = F.when(uniform(8) < 0.35, F.pmod(F.col("cat") + 1 + below(9, CATEGORIES - 1), F.lit(CATEGORIES)) + FIRST_VALUE).otherwise(0)
    n_keyword_values = CATEGORIES * KEYWORDS_PER_CATEGORY + GENERIC_KEYWORDS
    keywords = [
        F.when(F.col("n_keywords") > j, F.when(uniform(10 + 2 * j) < 0.75, F.col("cat") * KEYWORDS_PER_CATEGORY + below(11 + 2 * j, KEYWORDS_PER_CATEGORY))
               .otherwise(below(20 + j, n_keyword_values)) + FIRST_VALUE).otherwise(0)
        for j in range(4)
    ]
    audience = F.when(uniform(30) < 0.7, F.pmod(F.col("cat"), F.lit(AUDIENCES))).otherwise(below(31, AUDIENCES)) + FIRST_VALUE
    return items.select(
        "item_idx",
        (F.col("item_idx").cast("long") * 4).alias("item_id"),
        F.when(uniform(40) < 0.1, 2).otherwise(F.col("item_idx") + FIRST_VALUE).alias("item"),
        F.array(F.col("cat") + FIRST_VALUE, second).alias("category"),
        F.array(*keywords).alias("keywords"),
        (F.col("brand_code") + FIRST_VALUE).alias("brand"),
        (price + FIRST_VALUE).alias("price"),
        audience.alias("audience"),
        (below(41, CITIES) + FIRST_VALUE).alias("city"),
    )


def generate_clicks(spark: SparkSession, n_items: int, n_clicks: int, seed: int = 0) -> DataFrame:
    """Zipf-like popularity: item_idx = n u^4 puts half the clicks on the first 1/16 of the items."""
    clicks = spark.range(n_clicks, numPartitions=max(2, n_clicks // 2_000_000))
    item_idx = F.floor(F.rand(seed + 1) ** 4 * n_items).cast("int")
    user_idx = F.floor(F.rand(seed + 2) * max(1, n_items // 10)).cast("int")
    return clicks.select(
        user_idx.alias("user_idx"), item_idx.alias("item_idx"), user_idx.cast("long").alias("user_id"),
        (item_idx.cast("long") * 4).alias("item_id"), F.col("id").alias("timestamp"),
    )


def generated_fields(n: int) -> list[FieldSpec]:
    """The item fields of generate_items(n), with the cardinality the ETL would record (largest index + 1)."""
    n_values = {"item": n, "category": CATEGORIES, "keywords": CATEGORIES * KEYWORDS_PER_CATEGORY + GENERIC_KEYWORDS,
                "brand": max(2 * CATEGORIES, n // 20), "price": PRICES, "audience": AUDIENCES, "city": CITIES}
    shapes = [("item", False, 1), ("category", True, 2), ("keywords", True, 4), ("brand", False, 1), ("price", False, 1), ("audience", False, 1), ("city", False, 1)]
    return [FieldSpec(name, "item", multi, length, n_values[name] + FIRST_VALUE) for name, multi, length in shapes]


def fields_table(spark: SparkSession, n: int) -> DataFrame:
    rows = [(f.name, f.owner, f.multi, f.length, f.cardinality, position) for position, f in enumerate(generated_fields(n))]
    return spark.createDataFrame(rows, FIELDS_SCHEMA)


def ensure_tables(spark: SparkSession, lake: Path, n: int) -> None:
    """Write items, train_clicks and fields for n items, each unless the lake already holds it."""
    makers = {"items": lambda: generate_items(spark, n), "train_clicks": lambda: generate_clicks(spark, n, 2 * n), "fields": lambda: fields_table(spark, n)}
    recorder = RunRecorder(lake, "etl", "bench")  # run_stats reads the tables of the lake's recorded ETL run
    for table, make in makers.items():
        try:
            latest_version(spark, str(lake / table))
        except FileNotFoundError:
            started = time.perf_counter()
            write_table(make(), lake, table, "bench", {"items": n})
            log.info("generated %s for %s items in %.1f s", table, f"{n:,}", time.perf_counter() - started)
        recorder.committed(table)
    recorder.finish()


def read_columns(spark: SparkSession, lake: Path, table: str, columns: list[str]) -> dict[str, np.ndarray]:
    """Columns of the table's pinned snapshot as numpy arrays (fixed-length lists as 2-D arrays)."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    files = pinned_snapshot(spark, lake, table).files
    data = ds.dataset([pafs.FileSystem.from_uri(f)[1] for f in files], format="parquet").to_table(columns=columns)
    arrays = {}
    for column in columns:
        values = data.column(column).combine_chunks()
        if pa.types.is_list(values.type):
            arrays[column] = values.flatten().to_numpy().reshape(len(values), -1)
        else:
            arrays[column] = values.to_numpy(zero_copy_only=False)
    return arrays


# --------------------------------------------------------------------------------- numpy reference
def _valid(values: np.ndarray) -> np.ndarray:
    """(N, L) each row's distinct valid values, sorted, 0 for the invalid and the repeated ones. Sorting finds
    the repeats here, not the job's pairwise comparison, so the reference does not share the kernel's dedup."""
    values = np.sort(values.reshape(len(values), -1).astype(np.int64), axis=1)
    repeated = np.zeros(values.shape, dtype=bool)
    repeated[:, 1:] = values[:, 1:] == values[:, :-1]
    return np.where((values >= FIRST_VALUE) & ~repeated, values, 0)


def _sum_m_ln_m(keys: list[np.ndarray], masses: list[np.ndarray], key_space: int) -> float:
    keys_all, masses_all = np.concatenate(keys), np.concatenate(masses)
    if key_space <= DENSE_CELLS:
        cells = np.bincount(keys_all, masses_all, minlength=0)
    else:
        _, inverse = np.unique(keys_all, return_inverse=True)
        cells = np.bincount(inverse, masses_all)
    cells = cells[cells > 0]
    return float((cells * np.log(cells)).sum())


def reference_mi(columns: dict[str, np.ndarray], fields: list[FieldSpec], unique: tuple[str, ...] = (ITEM_ID_FIELD,)) -> tuple[np.ndarray, np.ndarray]:
    """(mi, nmi) k x k with the definitions of stats/mi.py, item weighting."""
    valid = [_valid(columns[f.name]) for f in fields]
    counts = [(v > 0).sum(axis=1).astype(np.float64) for v in valid]
    cards = [int(v.max()) + 1 for v in valid]
    is_unique = [f.name in unique for f in fields]
    k = len(fields)
    mi, nmi = np.zeros((k, k)), np.zeros((k, k))

    def marginal_sum(f: int, eligible: np.ndarray) -> float:
        if is_unique[f]:
            return float((-np.log(counts[f][eligible])).sum())  # w ln(w / |A|) with w = 1
        slots = valid[f][eligible]
        mass = 1.0 / counts[f][eligible]
        return _sum_m_ln_m([slots[:, i][slots[:, i] > 0] for i in range(slots.shape[1])],
                           [mass[slots[:, i] > 0] for i in range(slots.shape[1])], cards[f])

    for a in range(k):
        for b in range(a, k):
            eligible = (counts[a] > 0) & (counts[b] > 0)
            n = float(eligible.sum())
            if n == 0:
                continue
            h_a = np.log(n) - marginal_sum(a, eligible) / n
            h_b = h_a if a == b else np.log(n) - marginal_sum(b, eligible) / n
            if a == b:
                mi[a, a] = h_a
            else:
                c_ab = counts[a][eligible] * counts[b][eligible]
                if is_unique[a] or is_unique[b]:
                    s_ab = float((-np.log(c_ab)).sum())
                else:
                    va, vb, mass = valid[a][eligible], valid[b][eligible], 1.0 / c_ab
                    keys, masses = [], []
                    for i in range(va.shape[1]):
                        for j in range(vb.shape[1]):
                            both = (va[:, i] > 0) & (vb[:, j] > 0)
                            keys.append(va[both, i] * cards[b] + vb[both, j])
                            masses.append(mass[both])
                    s_ab = _sum_m_ln_m(keys, masses, cards[a] * cards[b])
                h_ab = np.log(n) - s_ab / n
                mi[a, b] = mi[b, a] = max(h_a + h_b - h_ab, 0.0)
            nmi[a, b] = nmi[b, a] = min(mi[a, b] / np.sqrt(h_a * h_b), 1.0) if h_a * h_b > 0 else 0.0
    return mi, nmi


def reference_item_stats(n_items: int, clicked: np.ndarray, floor: float = 0.5) -> dict[str, np.ndarray]:
    clicks = np.bincount(clicked, minlength=n_items).astype(np.int64)
    total = clicks.sum()
    order = np.lexsort((np.arange(n_items), -clicks))
    before = np.empty_like(clicks)
    before[order] = np.cumsum(clicks[order]) - clicks[order]
    bucket = np.where(clicks == 0, 3, np.where(3 * before < total, 0, np.where(3 * before < 2 * total, 1, 2)))
    return {
        "clicks": clicks, "p": clicks / total, "log_p": np.log(np.maximum(clicks, floor) / total),
        "bucket": bucket, "decile": np.where(clicks == 0, 0, 10 * before // total + 1),
    }


def write_reference_tables(out: Path, stats: dict[str, np.ndarray], mi: np.ndarray, nmi: np.ndarray, names: list[str]) -> None:
    """item_stats and feature_mi as Parquet files with the job's columns (what the job writes, minus Delta's log)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    buckets = np.array(["head", "torso", "tail", "new"])
    item_stats = pa.table({
        "item_idx": np.arange(len(stats["clicks"]), dtype=np.int32), "clicks": stats["clicks"], "p": stats["p"], "log_p": stats["log_p"],
        "bucket": buckets[stats["bucket"]], "decile": stats["decile"].astype(np.int32),
    })
    pq.write_table(item_stats, out / "item_stats.parquet")
    k = len(names)
    pairs = [(a, b) for a in range(k) for b in range(k)]
    feature_mi = pa.table({"field_a": [names[a] for a, _ in pairs], "field_b": [names[b] for _, b in pairs],
                           "mi": [mi[a, b] for a, b in pairs], "nmi": [nmi[a, b] for a, b in pairs]})
    pq.write_table(feature_mi, out / "feature_mi.parquet")


# ------------------------------------------------------------------------------------------- timing
def spark_cpu_seconds(spark: SparkSession) -> float:
    """CPU seconds used so far by the Spark JVM (driver and, in local mode, the executors) and every
    process under it (the Python workers of mapInArrow), from /proc: what the job used, whatever else
    runs on the machine."""
    ticks = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parent[pid] = int(fields[1])
        cpu[pid] = sum(int(v) for v in fields[11:15]) / ticks  # utime, stime, and those of waited-for children
    root = spark.sparkContext._gateway.proc.pid
    tree, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, ppid in parent.items() if ppid in frontier and pid not in tree]
        tree.update(children)
        frontier = children
    return sum(cpu.get(pid, 0.0) for pid in tree)


def timed(label: str, action, spark: SparkSession | None = None):
    cpu_before = spark_cpu_seconds(spark) if spark else time.process_time()
    started = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - started
    cpu = (spark_cpu_seconds(spark) if spark else time.process_time()) - cpu_before
    log.info("%s: %.1f s wall, %.1f s CPU", label, seconds, cpu)
    return result, seconds, cpu


def bench_size(spark: SparkSession, work_dir: Path, n: int) -> dict[str, float]:
    lake = work_dir / f"items_{n}"
    ensure_tables(spark, lake, n)
    fields = generated_fields(n)
    names = [f.name for f in fields]

    # Each side runs twice and the second run is timed: the first one's time (JIT of the code paths this size
    # takes, Python workers, page cache) is reported beside it.
    _, spark_first_s, _ = timed(f"{n:,} items: Spark job (run_stats), first run", lambda: run_stats(spark, lake, StatsConfig(), run_id="bench"), spark)
    summary, spark_s, spark_cpu = timed(f"{n:,} items: Spark job (run_stats)", lambda: run_stats(spark, lake, StatsConfig(), run_id="bench"), spark)
    out = lake / "_numpy_reference"

    def numpy_job():  # the job's work on one core: read the snapshots, compute, write both tables, draw the heatmap
        columns = read_columns(spark, lake, "items", names)
        mi, nmi = reference_mi(columns, fields)
        del columns
        clicked = read_columns(spark, lake, "train_clicks", ["item_idx"])["item_idx"]
        stats = reference_item_stats(n, clicked)
        write_reference_tables(out, stats, mi, nmi, names)
        plot_mi_heatmap(mi, nmi, names, out / "feature_mi.png")
        return mi, nmi, stats

    _, numpy_first_s, _ = timed(f"{n:,} items: numpy reference, first run", numpy_job)
    (mi, nmi, expected), numpy_s, numpy_cpu = timed(f"{n:,} items: numpy reference", numpy_job)

    rows = read_table(spark, lake, "feature_mi").collect()
    position = {name: i for i, name in enumerate(names)}
    got_mi, got_nmi = np.zeros_like(mi), np.zeros_like(nmi)
    for row in rows:
        got_mi[position[row.field_a], position[row.field_b]] = row.mi
        got_nmi[position[row.field_a], position[row.field_b]] = row.nmi
    mi_error = float(max(np.abs(got_mi - mi).max(), np.abs(got_nmi - nmi).max()))
    stats = read_columns(spark, lake, "item_stats", ["item_idx", "clicks", "log_p", "decile"])
    order = np.argsort(stats["item_idx"])
    popularity_equal = bool(
        np.array_equal(stats["clicks"][order], expected["clicks"]) and np.array_equal(stats["decile"][order], expected["decile"])
        and np.allclose(stats["log_p"][order], expected["log_p"], rtol=1e-14, atol=0)
    )
    if mi_error > 1e-9 or not popularity_equal:
        raise AssertionError(f"{n:,} items: Spark and numpy disagree (MI max error {mi_error:.2e}, popularity equal {popularity_equal})")
    return {
        "items": n, "spark_s": spark_s, "spark_cpu_s": spark_cpu, "spark_popularity_s": summary["popularity_seconds"],
        "spark_mi_s": summary["mi_seconds"], "numpy_s": numpy_s, "numpy_cpu_s": numpy_cpu, "mi_max_abs_error": mi_error,
        "spark_first_s": spark_first_s, "numpy_first_s": numpy_first_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--work-dir", default="out/bench_stats", help="generated tables are kept here and reused")
    parser.add_argument("--cores", type=int, default=2, help="Spark local[N]")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--warmup-items", type=int, default=100_000, help="a first, untimed-in-ratios job run on this many items (0: none)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    spark = spark_session("bench-stats", master=f"local[{args.cores}]", conf={"spark.driver.memory": args.driver_memory})
    spark.sparkContext.setLogLevel("ERROR")
    work_dir = Path(args.work_dir).resolve()
    started = time.perf_counter()
    cold = None
    if args.warmup_items:  # JVM start-up, class loading and JIT: a fixed cost that would blur the scaling
        ensure_tables(spark, work_dir / f"items_{args.warmup_items}", args.warmup_items)
        _, cold, _ = timed(f"warm-up: Spark job on {args.warmup_items:,} items (cold JVM)", lambda: run_stats(spark, work_dir / f"items_{args.warmup_items}", StatsConfig()), spark)
    results = [bench_size(spark, work_dir, n) for n in args.sizes]

    print(f"\n{'items':>12} {'Spark s':>8} {'(pop / MI)':>12} {'numpy s':>8} {'ratio':>6} {'Spark CPU s':>12} {'numpy CPU s':>12} {'CPU ratio':>9}"
          f" {'first runs: Spark s':>20} {'numpy s':>8} {'ratio':>6}")
    for r in results:
        print(f"{r['items']:>12,} {r['spark_s']:>8.1f} {r['spark_popularity_s']:>5.1f} / {r['spark_mi_s']:>4.1f} {r['numpy_s']:>8.1f} "
              f"{r['spark_s'] / r['numpy_s']:>6.2f} {r['spark_cpu_s']:>12.1f} {r['numpy_cpu_s']:>12.1f} {r['spark_cpu_s'] / r['numpy_cpu_s']:>9.2f}"
              f" {r['spark_first_s']:>20.1f} {r['numpy_first_s']:>8.1f} {r['spark_first_s'] / r['numpy_first_s']:>6.2f}")
    scaling = {}
    if len(results) >= 2:
        small, large = results[0], results[-1]
        scaling = {key: large[key] / small[key] for key in ("spark_s", "spark_cpu_s", "numpy_s")}
        print(f"{large['items']:,} / {small['items']:,} ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in scaling.items()))
    if cold is not None:
        print(f"cold first run of the job (warm-up, {args.warmup_items:,} items): {cold:.1f} s")
    print(f"bench wall time {time.perf_counter() - started:.0f} s; load average now {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    (work_dir / "results.json").write_text(json.dumps({"results": results, "scaling": scaling, "cold_warmup_s": cold}, indent=2))


if __name__ == "__main__":
    main()
