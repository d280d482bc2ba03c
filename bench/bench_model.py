"""Forward+backward throughput of the full objective (main + SSL) against bare matmuls of the same shapes.

The baseline runs, in the same process and on the same device, exactly the dense products one step does
(both tower MLPs over every row they see, then the two logit matrices), forward and backward, without
embeddings, augmentation, normalization or softmax. The ratio says what the model costs beyond its matmuls.

    python bench/bench_model.py                      # CPU, float32
    python bench/bench_model.py --device cuda        # CUDA with bf16 autocast
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from towerssl.model.config import ModelConfig
from towerssl.model.corpus import ItemCorpus
from towerssl.model.features import FIRST_VALUE, PAD, FeatureSpec, FieldSpec
from towerssl.model.objective import TwoTowerSSL

# MovieLens-1M-shaped fields: 3.7k items with genres and year, 6k users with demographics
SPEC = FeatureSpec(
    (
        FieldSpec("item", "item", False, 1, 3709),
        FieldSpec("genre", "item", True, 6, 21),
        FieldSpec("year", "item", False, 1, 84),
        FieldSpec("user", "user", False, 1, 6043),
        FieldSpec("gender", "user", False, 1, 5),
        FieldSpec("age", "user", False, 1, 10),
        FieldSpec("occupation", "user", False, 1, 24),
        FieldSpec("zip", "user", False, 1, 3442),
    )
)


def random_features(fields: tuple[FieldSpec, ...], rows: int, generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    features = {}
    for f in fields:
        values = torch.randint(FIRST_VALUE, f.cardinality, (rows, f.length), generator=generator)
        if f.multi:  # 1..L real values, then padding
            counts = torch.randint(1, f.length + 1, (rows, 1), generator=generator)
            values = torch.where(torch.arange(f.length) < counts, values, PAD)
        features[f.name] = (values if f.multi else values[:, 0]).to(device)
    return features


def time_steps(step: Callable[[], None], steps: int, warmup: int, device: torch.device, label: str) -> float:
    """Seconds per step, after warm-up, with a progress line per step."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for done in range(1, steps + 1):
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        print(f"  {label}: step {done}/{steps}, {elapsed / done * 1000:.1f} ms/step", flush=True)
    return (time.perf_counter() - start) / steps


def dense_shapes_step(config: ModelConfig, batch: int, ssl_batch: int, device: torch.device) -> Callable[[], None]:
    """The same matmuls as one model step: user MLP on `batch` rows, item MLP on batch + 2 * ssl_batch rows, two logit products."""

    def mlp_weights(inputs: int) -> list[torch.Tensor]:
        widths = [inputs, *config.hidden_dims, config.output_dim]
        return [torch.randn(a, b, device=device, requires_grad=True) for a, b in zip(widths, widths[1:])]

    user_weights = mlp_weights(config.embedding_dim * len(SPEC.user_fields))
    item_weights = mlp_weights(config.embedding_dim * len(SPEC.item_fields))
    user_input = torch.randn(batch, config.embedding_dim * len(SPEC.user_fields), device=device, requires_grad=True)
    item_input = torch.randn(batch + 2 * ssl_batch, config.embedding_dim * len(SPEC.item_fields), device=device, requires_grad=True)

    def chain(x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
        for w in weights:
            x = x @ w
        return x

    def step() -> None:
        users = chain(user_input, user_weights)
        items = chain(item_input, item_weights)
        clicked, one, two = items.split([batch, ssl_batch, ssl_batch])
        ((users @ clicked.T).sum() + (one @ two.T).sum()).backward()

    return step


def dense_flops(config: ModelConfig, batch: int, ssl_batch: int) -> float:
    """Floating-point operations of dense_shapes_step: forward products, and twice that backward."""

    def mlp(rows: int, inputs: int) -> float:
        widths = [inputs, *config.hidden_dims, config.output_dim]
        return sum(2.0 * rows * a * b for a, b in zip(widths, widths[1:]))

    forward = (
        mlp(batch, config.embedding_dim * len(SPEC.user_fields))
        + mlp(batch + 2 * ssl_batch, config.embedding_dim * len(SPEC.item_fields))
        + 2.0 * batch * batch * config.output_dim
        + 2.0 * ssl_batch * ssl_batch * config.output_dim
    )
    return 3 * forward


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--ssl-batch", type=int, default=4096)
    parser.add_argument("--mixed-negatives", type=int, default=0)
    parser.add_argument("--augmentation", default="cfm")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bf16 = device.type == "cuda"
    config = ModelConfig(ssl_batch_size=args.ssl_batch, mixed_negatives=args.mixed_negatives, augmentation=args.augmentation)

    generator = torch.Generator(device=device).manual_seed(0)
    cpu_generator = torch.Generator().manual_seed(0)
    num_items = SPEC.item_fields[0].cardinality - FIRST_VALUE
    corpus = ItemCorpus(
        random_features(SPEC.item_fields, num_items, cpu_generator, device),
        torch.log(torch.distributions.Dirichlet(torch.ones(num_items)).sample()).to(device),
    )
    users = random_features(SPEC.user_fields, args.batch, cpu_generator, device)
    item_idx = torch.randint(num_items, (args.batch,), generator=cpu_generator).to(device)
    nmi = np.random.default_rng(0).uniform(size=(len(SPEC.item_fields),) * 2)
    model = TwoTowerSSL(SPEC, config, nmi=nmi).to(device)

    def model_step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(users, item_idx, corpus, generator).total
        loss.backward()

    bare = dense_shapes_step(config, args.batch, args.ssl_batch, device)

    def bare_step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            bare()

    print(f"device {device}, bf16 autocast {bf16}, threads {torch.get_num_threads()}, batch {args.batch} main + {args.ssl_batch} SSL, "
          f"augmentation {config.augmentation}, mixed negatives {config.mixed_negatives}, torch {torch.__version__}")
    model_seconds = time_steps(model_step, args.steps, args.warmup, device, "model fwd+bwd")
    bare_seconds = time_steps(bare_step, args.steps, args.warmup, device, "bare matmuls fwd+bwd")
    print(f"model:        {model_seconds * 1000:8.1f} ms/step, {args.batch / model_seconds:10.0f} main examples/s "
          f"({(args.batch + args.ssl_batch) / model_seconds:.0f} main+SSL examples/s)")
    flops = dense_flops(config, args.batch, args.ssl_batch)
    print(f"bare matmuls: {bare_seconds * 1000:8.1f} ms/step, {args.batch / bare_seconds:10.0f} main examples/s "
          f"({flops / 1e9:.1f} GFLOP/step, {flops / bare_seconds / 1e9:.1f} GFLOP/s)")
    print(f"model / bare matmul time: {model_seconds / bare_seconds:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
