"""Benchmark of retrieval evaluation and the FAISS export (CPU).

Measures, in one run: exact top-K speed and peak memory (each configuration in a fresh process, so
ru_maxrss is its own peak) for several chunk sizes against a naive float32 full-matrix torch.topk,
the metric computation, and FAISS flat vs IVF search speed (best of three) and recall.

    python bench/bench_evaluate.py [--users 6040 --items 50000 --dim 64]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch


def data(users: int, items: int, dim: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    user_emb = rng.normal(size=(users, dim)).astype(np.float32)
    item_emb = rng.normal(size=(items, dim)).astype(np.float32)
    seen = [rng.choice(items, size=rng.integers(20, 200), replace=False) for _ in range(users)]
    return user_emb, item_emb, seen


def worker(users: int, items: int, dim: int, chunk: int) -> dict[str, float]:
    """One top-K configuration; chunk 0 = naive float32 full matrix + torch.topk (no tie rule)."""
    from towerssl.trainer.ranking import top_k_items

    user_emb, item_emb, seen = data(users, items, dim)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if chunk == 0:
        scores = torch.from_numpy(user_emb) @ torch.from_numpy(item_emb).T
        rows = torch.from_numpy(np.repeat(np.arange(users), [s.size for s in seen]))
        scores[rows, torch.from_numpy(np.concatenate(seen))] = -float("inf")
        scores.topk(100, dim=1)
    else:
        top_k_items(user_emb, item_emb, 100, seen, chunk_users=chunk)
    seconds = time.perf_counter() - started
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    return {"seconds": seconds, "peak_mib": peak_mib}


def run_worker(args: argparse.Namespace, chunk: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--worker", str(chunk), "--users", str(args.users), "--items", str(args.items), "--dim", str(args.dim)]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


def bench_metrics(args: argparse.Namespace) -> None:
    from towerssl.trainer.metrics import ITEM_SLICES, ranking_metrics, recall_by_decile
    from towerssl.trainer.ranking import UserItems

    rng = np.random.default_rng(1)
    top = np.stack([rng.choice(args.items, 100, replace=False) for _ in range(args.users)])
    relevant = UserItems.from_pairs(rng.integers(0, args.users, 20 * args.users), rng.integers(0, args.items, 20 * args.users), args.users, args.items)
    bucket = rng.choice(np.array(ITEM_SLICES), size=args.items)
    started = time.perf_counter()
    ranking_metrics(top, relevant, bucket)
    recall_by_decile(top, relevant, rng.integers(0, 10, args.items))
    print(f"metrics (3 K x 5 slices + deciles) for {args.users} users, {relevant.indices.size} pairs: {time.perf_counter() - started:.2f}s")


def best_of_three(run) -> float:
    """Fastest of three runs: the least disturbed by other processes on a shared machine."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_faiss(args: argparse.Namespace) -> None:
    from towerssl.trainer.faiss_index import build_flat_index, build_ivf_index, recall_vs_exact, search, unit_vectors

    rng = np.random.default_rng(2)
    centres = rng.normal(size=(200, args.dim))
    items = unit_vectors(centres[rng.integers(0, 200, args.items)] + 0.5 * rng.normal(size=(args.items, args.dim)), "items", normalize=True)
    queries = unit_vectors(centres[rng.integers(0, 200, 2000)] + 0.5 * rng.normal(size=(2000, args.dim)), "queries", normalize=True)
    flat = build_flat_index(items)
    flat_seconds = best_of_three(lambda: search(flat, queries, 100))
    print(f"faiss flat: {len(queries) / flat_seconds:,.0f} queries/s over {args.items} items")
    nlist = int(4 * np.sqrt(args.items))
    started = time.perf_counter()
    ivf = build_ivf_index(items, nlist=nlist, nprobe=1)
    print(f"faiss IVF nlist={nlist}: built in {time.perf_counter() - started:.1f}s")
    for nprobe in (4, 16, 64):
        ivf.nprobe = nprobe
        seconds = best_of_three(lambda: search(ivf, queries, 100))
        recall = recall_vs_exact(ivf, queries, items, 100)
        print(f"faiss IVF nprobe={nprobe}: {len(queries) / seconds:,.0f} queries/s ({flat_seconds / seconds:.1f}x flat), recall@100 vs exact {recall:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=6040)
    parser.add_argument("--items", type=int, default=50000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.users, args.items, args.dim, args.worker)))
        return
    print(f"top-100 of {args.items} items for {args.users} users, dim {args.dim}, {torch.get_num_threads()} threads")
    naive = run_worker(args, 0)
    print(f"naive float32 full matrix + topk: {naive['seconds']:.2f}s, peak +{naive['peak_mib']:.0f} MiB")
    for chunk in (256, 1024, args.users):
        result = run_worker(args, chunk)
        print(
            f"top_k_items chunk_users={chunk}: {result['seconds']:.2f}s ({args.users / result['seconds']:,.0f} users/s, "
            f"{result['seconds'] / naive['seconds']:.2f}x naive time), peak +{result['peak_mib']:.0f} MiB "
            f"({result['peak_mib'] / naive['peak_mib']:.2f}x naive memory)"
        )
    bench_metrics(args)
    bench_faiss(args)


if __name__ == "__main__":
    main()
