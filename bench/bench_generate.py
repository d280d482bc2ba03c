"""Benchmark of `towerssl generate`: clicks/s and peak memory, chunked against all-in-memory.

Each configuration runs in a fresh process so its peak RSS (ru_maxrss) is its own. All use the same users
and items, so memory differences come from the clicks. Printed ratios, from the same run:
  - peak RSS at 10M clicks / at 1M clicks, both chunked (1M rows per part): ~1 means memory is bounded;
  - peak RSS at 10M clicks chunked / unchunked (one 10M-row part): what chunking saves;
  - throughput of each configuration.

    python bench/bench_generate.py [--clicks 1000000 10000000] [--work-dir out/bench_generate]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, resource, sys
from towerssl.etl.generate import generate
out, users, items, clicks, fmt, chunk_rows = sys.argv[1], *map(int, sys.argv[2:5]), sys.argv[5], int(sys.argv[6])
summary = generate(out, users, items, clicks, seed=0, fmt=fmt, chunk_rows=chunk_rows, overwrite=True)
size = sum(p.stat().st_size for p in summary.out_dir.rglob("*") if p.is_file())
print(json.dumps({"seconds": summary.seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "parts": summary.parts["interactions"], "mib_written": size / 2**20}))
"""


def measure(work_dir: Path, users: int, items: int, clicks: int, fmt: str, chunk_rows: int) -> dict:
    out = work_dir / f"{fmt}_{clicks}_{chunk_rows}"
    args = [str(out), str(users), str(items), str(clicks), fmt, str(chunk_rows)]
    result = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True)
    shutil.rmtree(out)
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row |= {"clicks": clicks, "format": fmt, "chunk_rows": chunk_rows, "clicks_per_s": clicks / row["seconds"]}
    print(f"{fmt:8s} {clicks:>11,} clicks  chunk {chunk_rows:>11,}  {row['parts']:>3} parts  {row['seconds']:7.1f} s  "
          f"{row['clicks_per_s']:>10,.0f} clicks/s  peak {row['peak_mib']:7.0f} MiB  wrote {row['mib_written']:6.0f} MiB", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clicks", type=int, nargs=2, default=[1_000_000, 10_000_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--chunk-rows", type=int, default=1_000_000)
    parser.add_argument("--work-dir", default="out/bench_generate")
    args = parser.parse_args()
    work_dir = Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    small, large = args.clicks
    rows = {
        "small": measure(work_dir, args.users, args.items, small, "csv", args.chunk_rows),
        "large": measure(work_dir, args.users, args.items, large, "csv", args.chunk_rows),
        "large_unchunked": measure(work_dir, args.users, args.items, large, "csv", large),
        "large_parquet": measure(work_dir, args.users, args.items, large, "parquet", args.chunk_rows),
    }
    ratios = {
        "peak_large_over_small_chunked": rows["large"]["peak_mib"] / rows["small"]["peak_mib"],
        "peak_chunked_over_unchunked": rows["large"]["peak_mib"] / rows["large_unchunked"]["peak_mib"],
        "throughput_large_over_small": rows["large"]["clicks_per_s"] / rows["small"]["clicks_per_s"],
    }
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}")
    (work_dir / "results.json").write_text(json.dumps({"runs": rows, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
