"""Training-step throughput of the full objective (main + SSL, AdamW step) against bare matmuls of the same shapes.

The baseline runs, in the same process and on the same device, exactly the dense products one step does
(both tower MLPs over every row they see, then the logit matrices), forward and backward, without
embeddings, augmentation, normalization or softmax. The ratio says what the model costs beyond its matmuls.
The loss alone is also timed against the dense loss this project used before issue 19 (fp32 [n, n + M]
logits, masked_fill, cross_entropy), where that dense matrix is small enough to be cheap.

    python bench/bench_model.py                                  # CPU, float32, one configuration
    python bench/bench_model.py --device cuda                    # CUDA with bf16 autocast
    python bench/bench_model.py --device cuda --sweep --out DIR  # the issue-19 batch-size sweep, DIR/bench_model_sweep.json

Imports only torch, numpy and towerssl.model (the GPU machine has no Spark, Petastorm or pyarrow).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from towerssl.fields import FeatureSpec, FieldSpec
from towerssl.indices import FIRST_VALUE, PAD
from towerssl.model.config import ModelConfig
from towerssl.model.corpus import ItemCorpus
from towerssl.model.losses import main_loss, ssl_loss
from towerssl.model.objective import TwoTowerSSL

MOVIELENS_ITEMS = 3706  # MovieLens-1M-shaped fields: 3.7k items with genres, year and brand, 6k users with demographics
OLD_LOSS_MAX_LOGITS = 1 << 30  # the dense loss keeps ~4 fp32 copies of [n, n + M]: run it up to 4 GiB per copy
SWEEP_FILE = "bench_model_sweep.json"


def feature_spec(num_items: int) -> FeatureSpec:
    return FeatureSpec(
        (
            FieldSpec("item", "item", False, 1, num_items + FIRST_VALUE),
            FieldSpec("genre", "item", True, 6, 21),
            FieldSpec("year", "item", False, 1, 84),
            FieldSpec("brand", "item", False, 1, 500),
            FieldSpec("user", "user", False, 1, 6043),
            FieldSpec("gender", "user", False, 1, 5),
            FieldSpec("age", "user", False, 1, 10),
            FieldSpec("occupation", "user", False, 1, 24),
            FieldSpec("zip", "user", False, 1, 3442),
        )
    )


@dataclass(frozen=True)
class Setting:
    """One bench configuration; ssl_batch 0 turns SSL off (alpha 0)."""

    label: str
    batch: int
    ssl_batch: int
    mixed_negatives: int = 0
    corpus_items: int = MOVIELENS_ITEMS
    distinct_items: bool = False
    augmentation: str = "cfm"


SWEEP = (
    Setting("4,096 + SSL 4,096 cfm", 4096, 4096),
    Setting("16,384 + SSL 16,384 cfm", 16384, 16384),
    Setting("65,536 + SSL 16,384 cfm", 65536, 16384),
    Setting("16,384, no SSL", 16384, 0),
    Setting("16,384 + SSL 16,384 cfm + 16,384 mixed negatives", 16384, 16384, mixed_negatives=16384),
    Setting("16,384 + SSL 16,384 cfm, 10M-item corpus", 16384, 16384, corpus_items=10_000_000),
    # the optional estimator (distinct_items, off by default): what it buys with many repeats and with few
    Setting("16,384 + SSL 16,384 cfm, distinct columns", 16384, 16384, distinct_items=True),
    Setting("16,384 + SSL 16,384 cfm, 10M-item corpus, distinct columns", 16384, 16384, corpus_items=10_000_000, distinct_items=True),
)


def quick(setting: Setting) -> Setting:
    """The same row at 1/256 of the batch sizes and 1/1000 of the corpus: a smoke test of the sweep on CPU."""
    small = {k: max(16, v // 256) if v else 0 for k, v in (("batch", setting.batch), ("ssl_batch", setting.ssl_batch), ("mixed_negatives", setting.mixed_negatives))}
    label = f"[quick] {setting.label}"
    return Setting(**{**asdict(setting), **small, "label": label, "corpus_items": max(MOVIELENS_ITEMS, setting.corpus_items // 1000)})


def random_features(fields: tuple[FieldSpec, ...], rows: int, generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    features = {}
    for f in fields:
        values = torch.randint(FIRST_VALUE, f.cardinality, (rows, f.length), generator=generator)
        if f.multi:  # 1..L real values, then padding
            counts = torch.randint(1, f.length + 1, (rows, 1), generator=generator)
            values = torch.where(torch.arange(f.length) < counts, values, PAD)
        features[f.name] = (values if f.multi else values[:, 0]).to(device)
    return features


class PeakMemory:
    """Peak memory of a block: CUDA max_memory_allocated, or on Linux the peak RSS above the start (VmHWM reset)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @staticmethod
    def _status(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
                self.start = self._status("VmRSS")
            except OSError:
                self.start = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.gib = torch.cuda.max_memory_allocated(self.device) / 2**30
        else:
            self.gib = None if self.start is None else (self._status("VmHWM") - self.start) / 2**30


def time_steps(step: Callable[[], None], steps: int, warmup: int, device: torch.device, label: str | None) -> float:
    """Seconds per step, after warm-up; a progress line per step when label is given."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for done in range(1, steps + 1):
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if label:
            print(f"  {label}: step {done}/{steps}, {(time.perf_counter() - start) / done * 1000:.1f} ms/step", flush=True)
    return (time.perf_counter() - start) / steps


def dense_shapes_step(config: ModelConfig, spec: FeatureSpec, setting: Setting, device: torch.device) -> Callable[[], None]:
    """The same matmuls as one model step: user MLP on `batch` rows, item MLP on batch + M + 2 * ssl_batch rows, the logit products."""

    def mlp_weights(inputs: int) -> list[torch.Tensor]:
        widths = [inputs, *config.hidden_dims, config.output_dim]
        return [torch.randn(a, b, device=device, requires_grad=True) for a, b in zip(widths, widths[1:])]

    user_weights = mlp_weights(config.embedding_dim * len(spec.user_fields))
    item_weights = mlp_weights(config.embedding_dim * len(spec.item_fields))
    user_input = torch.randn(setting.batch, config.embedding_dim * len(spec.user_fields), device=device, requires_grad=True)
    item_rows = setting.batch + setting.mixed_negatives + 2 * setting.ssl_batch
    item_input = torch.randn(item_rows, config.embedding_dim * len(spec.item_fields), device=device, requires_grad=True)

    def chain(x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
        for w in weights:
            x = x @ w
        return x

    def step() -> None:
        users = chain(user_input, user_weights)
        items = chain(item_input, item_weights)
        candidates, one, two = items.split([setting.batch + setting.mixed_negatives, setting.ssl_batch, setting.ssl_batch])
        ((users @ candidates.T).sum() + (one @ two.T).sum()).backward()

    return step


def dense_flops(config: ModelConfig, spec: FeatureSpec, setting: Setting) -> float:
    """Floating-point operations of dense_shapes_step: forward products, and twice that backward."""

    def mlp(rows: int, inputs: int) -> float:
        widths = [inputs, *config.hidden_dims, config.output_dim]
        return sum(2.0 * rows * a * b for a, b in zip(widths, widths[1:]))

    forward = (
        mlp(setting.batch, config.embedding_dim * len(spec.user_fields))
        + mlp(setting.batch + setting.mixed_negatives + 2 * setting.ssl_batch, config.embedding_dim * len(spec.item_fields))
        + 2.0 * setting.batch * (setting.batch + setting.mixed_negatives) * config.output_dim
        + 2.0 * setting.ssl_batch * setting.ssl_batch * config.output_dim
    )
    return 3 * forward


def old_loss(users, items, temperature, log_p, item_ids, negatives, negative_ids, corpus_size, view_one, view_two, ssl_ids) -> torch.Tensor:  # noqa: ANN001
    """The loss before issue 19 (with the issue-16 log(1/N) for the negatives): dense fp32 logits, masked_fill, cross_entropy."""

    def logits(q: torch.Tensor, c: torch.Tensor, log_q: torch.Tensor | None, q_ids: torch.Tensor, c_ids: torch.Tensor, diagonal: bool) -> torch.Tensor:
        with torch.autocast(device_type=q.device.type, enabled=False):
            s = (F.normalize(q.float(), dim=-1) / temperature) @ F.normalize(c.float(), dim=-1).T
        s = s if log_q is None else s - log_q[None, :]
        repeats = q_ids[:, None] == c_ids[None, :]
        if diagonal:
            repeats.fill_diagonal_(False)
        return s.masked_fill_(repeats, float("-inf"))

    main = logits(users, items, log_p, item_ids, item_ids, True)
    if negatives is not None:
        uniform = torch.full((len(negatives),), -math.log(corpus_size), device=users.device)
        main = torch.cat([main, logits(users, negatives, uniform, item_ids, negative_ids, False)], dim=1)
    total = F.cross_entropy(main, torch.arange(len(users), device=users.device))
    if view_one is not None:
        ssl = logits(view_one, view_two, None, ssl_ids, ssl_ids, True)
        total = total + F.cross_entropy(ssl, torch.arange(len(view_one), device=users.device))
    return total


def loss_only(config: ModelConfig, setting: Setting, corpus: ItemCorpus, device: torch.device, steps: int, warmup: int, bf16: bool) -> dict:
    """ms and peak GiB of the losses alone (forward + backward from tower-shaped embeddings): new, and old where cheap."""
    generator = torch.Generator().manual_seed(1)
    dtype = torch.bfloat16 if bf16 else torch.float32

    def embeddings(rows: int) -> torch.Tensor | None:
        return torch.randn(rows, config.output_dim, generator=generator).to(device, dtype).requires_grad_() if rows else None

    users, items, negatives = embeddings(setting.batch), embeddings(setting.batch), embeddings(setting.mixed_negatives)
    view_one, view_two = embeddings(setting.ssl_batch), embeddings(setting.ssl_batch)
    item_ids = torch.randint(corpus.size, (setting.batch,), generator=generator).to(device)
    negative_ids = torch.randint(corpus.size, (setting.mixed_negatives,), generator=generator).to(device) if negatives is not None else None
    ssl_ids = torch.randint(corpus.size, (setting.ssl_batch,), generator=generator).to(device) if view_one is not None else None
    log_p = corpus.log_p[item_ids]

    def new_step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            total = main_loss(users, items, config.temperature, log_p, item_ids, negatives, negative_ids, corpus.size, setting.distinct_items)[0].mean()
            if view_one is not None:
                total = total + ssl_loss(view_one, view_two, config.temperature, ssl_ids)[0].mean()
        total.backward()

    def old_step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            total = old_loss(users, items, config.temperature, log_p, item_ids, negatives, negative_ids, corpus.size, view_one, view_two, ssl_ids)
        total.backward()

    result = {}
    steps_to_run = [("new", new_step)]
    if not setting.distinct_items and setting.batch * (setting.batch + setting.mixed_negatives) <= OLD_LOSS_MAX_LOGITS:
        steps_to_run.append(("old", old_step))
    for name, step in steps_to_run:
        try:
            with PeakMemory(device) as peak:
                seconds = time_steps(step, steps, warmup, device, None)
            result[f"{name}_loss_ms"], result[f"{name}_loss_peak_gib"] = seconds * 1000, peak.gib
        except (torch.cuda.OutOfMemoryError, MemoryError) as error:
            result[f"{name}_loss_error"] = f"out of memory: {str(error).splitlines()[0]}"
            release(device)
    return result


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_setting(setting: Setting, device: torch.device, steps: int, warmup: int, progress: bool, compare_losses: bool) -> dict:
    """One row: the model step (AdamW included) and bare matmuls, and the losses alone; peak memory of the model step."""
    bf16 = device.type == "cuda"
    spec = feature_spec(setting.corpus_items)
    config = ModelConfig(
        ssl_batch_size=max(1, setting.ssl_batch),
        alpha=1.0 if setting.ssl_batch else 0.0,
        mixed_negatives=setting.mixed_negatives,
        augmentation=setting.augmentation,
        distinct_items=setting.distinct_items,
    )
    generator = torch.Generator(device=device).manual_seed(0)
    cpu_generator = torch.Generator().manual_seed(0)
    corpus = ItemCorpus(
        random_features(spec.item_fields, setting.corpus_items, cpu_generator, device),
        torch.log(torch.distributions.Dirichlet(torch.ones(setting.corpus_items)).sample()).to(device),
    )
    users = random_features(spec.user_fields, setting.batch, cpu_generator, device)
    item_idx = torch.randint(setting.corpus_items, (setting.batch,), generator=cpu_generator).to(device)
    nmi = np.random.default_rng(0).uniform(size=(len(spec.item_fields),) * 2)
    model = TwoTowerSSL(spec, config, nmi=nmi).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")

    def model_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(users, item_idx, corpus, generator).total
        loss.backward()
        optimizer.step()

    bare = dense_shapes_step(config, spec, setting, device)

    def bare_step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            bare()

    with PeakMemory(device) as peak:
        model_seconds = time_steps(model_step, steps, warmup, device, "model fwd+bwd+AdamW" if progress else None)
    del model, optimizer
    release(device)
    bare_seconds = time_steps(bare_step, steps, warmup, device, "bare matmuls fwd+bwd" if progress else None)
    flops = dense_flops(config, spec, setting)
    row = {
        **asdict(setting),
        "ms_per_step": model_seconds * 1000,
        "main_examples_per_s": setting.batch / model_seconds,
        "bare_ms_per_step": bare_seconds * 1000,
        "bare_gflop_per_s": flops / bare_seconds / 1e9,
        "model_over_bare": model_seconds / bare_seconds,
        "peak_gib": peak.gib,
    }
    del bare
    release(device)
    if compare_losses:
        row.update(loss_only(config, setting, corpus, device, steps, warmup, bf16))
    return row


def describe(row: dict) -> str:
    def gib(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f} GiB"

    if "error" in row:
        return f"{row['label']}: {row['error']}"
    text = (
        f"{row['label']}: {row['ms_per_step']:.1f} ms/step, {row['main_examples_per_s']:,.0f} main examples/s, "
        f"model / bare matmuls {row['model_over_bare']:.1f}x (bare {row['bare_ms_per_step']:.1f} ms), peak {gib(row['peak_gib'])}"
    )
    for name in ("new", "old"):
        if f"{name}_loss_ms" in row:
            text += f"; {name} loss {row[f'{name}_loss_ms']:.1f} ms, peak {gib(row[f'{name}_loss_peak_gib'])}"
        elif f"{name}_loss_error" in row:
            text += f"; {name} loss {row[f'{name}_loss_error']}"
    return text


def sweep(args: argparse.Namespace, device: torch.device) -> int:
    """Every SWEEP row, printed as it finishes and rewritten to OUT/bench_model_sweep.json after each (partial runs keep theirs)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "bf16_autocast": device.type == "cuda",
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "warmup": args.warmup,
        "peak_memory": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS above the start of the block (VmHWM)",
        "rows": [],
    }
    print(f"sweep on {report['device']}, torch {report['torch']}, bf16 autocast {report['bf16_autocast']}, {args.steps} steps after {args.warmup}", flush=True)
    for setting in SWEEP:
        setting = quick(setting) if args.quick else setting
        started = time.perf_counter()
        try:
            row = run_setting(setting, device, args.steps, args.warmup, progress=False, compare_losses=True)
        except (torch.cuda.OutOfMemoryError, MemoryError) as error:
            row = {**asdict(setting), "error": f"out of memory: {str(error).splitlines()[0]}"}
        release(device)
        row["seconds"] = time.perf_counter() - started
        report["rows"].append(row)
        print(describe(row), flush=True)
        (out / SWEEP_FILE).write_text(json.dumps(report, indent=1))
    print(f"wrote {out / SWEEP_FILE}", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--ssl-batch", type=int, default=4096, help="0 turns SSL off")
    parser.add_argument("--mixed-negatives", type=int, default=0)
    parser.add_argument("--corpus-items", type=int, default=MOVIELENS_ITEMS)
    parser.add_argument("--distinct-items", action="store_true", help="one main-loss column per distinct clicked item")
    parser.add_argument("--augmentation", default="cfm")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default: torch's)")
    parser.add_argument("--sweep", action="store_true", help="run the issue-19 rows instead of one configuration")
    parser.add_argument("--quick", action="store_true", help="with --sweep: tiny sizes (a smoke test)")
    parser.add_argument("--out", default=None, help="with --sweep: folder for bench_model_sweep.json (required)")
    args = parser.parse_args()
    if args.sweep and not args.out:
        parser.error("--sweep needs --out DIR")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.sweep:
        return sweep(args, device)
    setting = Setting("one configuration", args.batch, args.ssl_batch, args.mixed_negatives, args.corpus_items, args.distinct_items, args.augmentation)
    print(f"device {device}, bf16 autocast {device.type == 'cuda'}, threads {torch.get_num_threads()}, batch {args.batch} main + {args.ssl_batch} SSL, "
          f"augmentation {args.augmentation}, mixed negatives {args.mixed_negatives}, corpus {args.corpus_items} items, torch {torch.__version__}", flush=True)
    print(describe(run_setting(setting, device, args.steps, args.warmup, progress=True, compare_losses=True)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
