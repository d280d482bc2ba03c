"""Training examples/s fed by Petastorm from the pinned Delta snapshot against the same loop fed from
in-memory tensors, in one run, with a step-time breakdown (wait for data / host-to-device copy / compute).

    python bench/bench_feed.py --lake LAKE_DIR [--steps 200 --batch-size 4096 --device cuda]

Target: Petastorm feed >= 0.9 of the in-memory rate (data loading hidden behind compute).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Iterator

import torch

from towerssl.model.config import ModelConfig
from towerssl.model.objective import TwoTowerSSL
from towerssl.trainer.config import TrainConfig
from towerssl.trainer.feed import ClickFeed, to_device
from towerssl.trainer.inputs import Manifest, click_pairs
from towerssl.trainer.train import TrainingData, make_optimizer


def in_memory_batches(manifest: Manifest, batch_size: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    users, items = (torch.from_numpy(a) for a in click_pairs(manifest, "train_clicks"))
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(users.numel(), generator=generator)
        for start in range(0, users.numel() - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            yield {"user_idx": users[index], "item_idx": items[index]}


def feed_batches(feed: ClickFeed) -> Iterator[dict[str, torch.Tensor]]:
    epoch = 0
    while True:
        yield from feed.batches(epoch)
        epoch += 1


def timed_loop(batches: Iterator[dict[str, torch.Tensor]], data: TrainingData, model: TwoTowerSSL, steps: int, device: torch.device) -> dict[str, float]:
    optimizer = make_optimizer(model, TrainConfig())
    generator = torch.Generator(device=device).manual_seed(0)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    wait = copy = compute = 0.0
    examples = 0
    started = time.perf_counter()
    for step in range(steps):
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        batch = to_device(batch, device)
        t2 = time.perf_counter()
        with autocast:
            parts = model(data.gather_users(batch["user_idx"]), batch["item_idx"], data.corpus, generator)
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        optimizer.step()
        sync()
        t3 = time.perf_counter()
        if step >= 5:  # warm-up steps are not timed
            wait, copy, compute, examples = wait + t1 - t0, copy + t2 - t1, compute + t3 - t2, examples + batch["item_idx"].numel()
        else:
            started = time.perf_counter()
    total = time.perf_counter() - started
    return {"examples_per_s": examples / total, "wait_ms": 1000 * wait / (steps - 5), "copy_ms": 1000 * copy / (steps - 5), "compute_ms": 1000 * compute / (steps - 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    manifest = Manifest.resolve(args.lake)
    config = TrainConfig(batch_size=args.batch_size, model=ModelConfig(ssl_batch_size=args.batch_size))
    data = TrainingData(manifest, config, device)
    results = {}
    for name in ("in_memory", "petastorm"):
        torch.manual_seed(0)
        model = TwoTowerSSL(data.spec, config.model, mi=data.mi, nmi=data.nmi).to(device)
        if name == "in_memory":
            batches = in_memory_batches(manifest, args.batch_size, seed=0)
        else:
            feed = ClickFeed(manifest.tables["train_clicks"].files, args.batch_size, seed=0, shuffle_buffer=65536, workers=args.workers, pin_memory=device.type == "cuda")
            batches = feed_batches(feed)
        results[name] = timed_loop(batches, data, model, args.steps, device)
    results["ratio_petastorm_to_in_memory"] = results["petastorm"]["examples_per_s"] / results["in_memory"]["examples_per_s"]
    results["machine"] = f"{platform.machine()}, torch threads {torch.get_num_threads()}, device {device}"
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
