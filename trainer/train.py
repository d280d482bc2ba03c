"""`towerssl train`: the training loop, readable top to bottom.

Clicks stream from the pinned train_clicks snapshot through Petastorm; item and user features, log p_j and the
MI matrices live on the training device, so a step gathers features by index and never waits on a join.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from towerssl.config import build_config
from towerssl.errors import UsageError
from towerssl.model.corpus import ItemCorpus
from towerssl.model.objective import TwoTowerSSL
from towerssl.trainer import checkpoint, distributed
from towerssl.trainer.config import TrainConfig
from towerssl.trainer.embed import embed
from towerssl.trainer.feed import ClickFeed, to_device
from towerssl.trainer.inputs import Manifest, click_pairs, feature_spec, feature_tensors, item_log_p, mi_matrices
from towerssl.trainer.metrics import ranking_metrics
from towerssl.trainer.ranking import UserItems, top_k_items

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    """Training diverged; the last good checkpoint is left as it was."""


def pick_device(name: str, world: distributed.World) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{world.local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {name} asked for, but CUDA is not available here")
    device = torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL collectives (the checkpoint's gather) use the current device
    return device


def lr_lambda(config: TrainConfig):
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
        if config.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if config.schedule == "linear":
            return max(0.0, 1 - progress)
        return 1.0

    return factor


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


class ProgressLog:
    """An INFO line every `every` steps and at the last: step, losses, in-batch accuracy, lr and examples/s
    since the previous line. Logged, not only drawn on the bar: a scheduler's log has no terminal."""

    def __init__(self, every: int, max_steps: int) -> None:
        self.every, self.max_steps = every, max_steps
        self.start, self.examples = time.perf_counter(), 0

    def step(self, step: int, examples: int, parts: Any, lr: float) -> None:
        self.examples += examples
        if not self.every or (step % self.every and step != self.max_steps):
            return
        rate = self.examples / max(time.perf_counter() - self.start, 1e-9)
        log.info(
            "step %d/%d: loss %.4f (main %.4f, ssl %.4f), in-batch accuracy %.3f, lr %.2e, %.0f examples/s",
            step, self.max_steps, parts.total.item(), parts.main.item(), parts.ssl.item(), parts.accuracy.item(), lr, rate,
        )
        self.start, self.examples = time.perf_counter(), 0


class TrainingData:
    """Everything a step needs on the device, loaded once from the manifest's pinned files."""

    def __init__(self, manifest: Manifest, config: TrainConfig, device: torch.device) -> None:
        log.info("loading features, item statistics and clicks from the pinned files")
        self.spec = feature_spec(manifest)
        items = feature_tensors(manifest, "items", self.spec.item_fields, "item_idx")
        n_items = next(iter(items.values())).shape[0]
        log_p = item_log_p(manifest, n_items) if config.model.logq and config.model.frequency == "table" else None
        self.corpus = ItemCorpus(items, log_p).to(device)
        self.users = {k: v.to(device) for k, v in feature_tensors(manifest, "users", self.spec.user_fields, "user_idx").items()}
        self.mi, self.nmi = mi_matrices(manifest, [f.name for f in self.spec.item_fields]) if config.model.augmentation == "cfm" and config.model.alpha > 0 else (None, None)
        n_users = next(iter(self.users.values())).shape[0]
        train_users, train_items = click_pairs(manifest, "train_clicks")
        valid_users, valid_items = click_pairs(manifest, "valid_clicks")
        self.train_items = UserItems.from_pairs(train_users, train_items, n_users, n_items, "train_clicks")
        valid = UserItems.from_pairs(valid_users, valid_items, n_users, n_items, "valid_clicks")
        # Validation users: warm users with a validation click that is not one of their training items.
        self.valid_users = np.flatnonzero((valid.counts() > 0) & (self.train_items.counts() > 0))
        self.valid_relevant = valid.take(self.valid_users).without(self.train_items.take(self.valid_users), n_items)
        log.info("loaded %d items, %d users, %d training clicks, %d validation users", n_items, n_users, len(train_users), self.valid_users.size)

    def gather_users(self, user_idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: values[user_idx] for name, values in self.users.items()}


@torch.no_grad()
def valid_recall(model: TwoTowerSSL, data: TrainingData, k: int) -> float:
    """Recall@k over valid_clicks (warm users, all items ranked, training items excluded)."""
    if data.valid_users.size == 0:
        return float("nan")
    items = embed(model.towers.item_tower, data.corpus.features)
    users = embed(model.towers.user_tower, data.users, torch.from_numpy(data.valid_users))
    top = top_k_items(users, items, k, data.train_items.take(data.valid_users))
    metrics, _ = ranking_metrics(top, data.valid_relevant, ks=(k,))
    return float(metrics[f"recall@{k}"]["overall"] or 0.0)


def train(lake: str | None, run_dir: str | Path, config: TrainConfig, resume: bool = False, inputs: Manifest | None = None) -> dict[str, Any]:
    """Train a run; `inputs` (tables already pinned, e.g. one manifest for a grid of runs) saves pinning `lake` again."""
    run_dir = Path(run_dir)
    started = time.time()
    world = distributed.start("cuda" if config.device.startswith("cuda") or (config.device == "auto" and torch.cuda.is_available()) else "cpu")
    device = pick_device(config.device, world)
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(config.seed + world.rank)
    np.random.seed(config.seed + world.rank)

    # Inputs: pinned once per run (rank 0, delta-rs), then read from the recorded files by every rank.
    last = run_dir / checkpoint.LAST
    if resume and not last.is_file():
        raise UsageError(f"--resume: no checkpoint at {last}")
    if world.is_main and not resume:
        if lake is None and inputs is None:
            raise UsageError("--lake is required for a new run")
        manifest = inputs or Manifest.resolve(lake)  # a refused lake leaves no run directory behind
        run_dir.mkdir(parents=True, exist_ok=True)
        manifest.save(run_dir)
        (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
    distributed.barrier(world)
    manifest = Manifest.load(run_dir)
    data = TrainingData(manifest, config, device)
    validating = config.eval_every > 0 and data.valid_users.size > 0
    if config.eval_every and not validating:
        log.warning("valid_clicks has no validation user: no validation and no early stopping; the model after %d steps is the one kept", config.max_steps)

    log.info("building the model (augmentation %s, alpha %g) on %s", config.model.augmentation, config.model.alpha, device)
    model = TwoTowerSSL(data.spec, config.model, mi=data.mi, nmi=data.nmi).to(device)
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    generator = torch.Generator(device=device).manual_seed(config.seed * 1000 + world.rank)
    progress = checkpoint.Progress()
    if resume:
        state = checkpoint.load(last, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        progress = checkpoint.Progress(**state["progress"])
        if len(state["random"]) != world.world_size:
            raise UsageError(f"--resume: {last} was written by {len(state['random'])} process(es); resume with the same number, not {world.world_size}")
        checkpoint.restore_random_states(state["random"][world.rank], generator)
        log.info("resumed at step %d (epoch %d, batch %d)", progress.step, progress.epoch, progress.batch_in_epoch)
    step_model = DistributedDataParallel(model) if world.distributed else model

    feed = ClickFeed(
        manifest.tables["train_clicks"].files, config.batch_size, seed=config.seed, shuffle_buffer=config.shuffle_buffer,
        workers=1 if config.deterministic else config.workers, rank=world.rank, world_size=world.world_size,
        deterministic=config.deterministic, pin_memory=device.type == "cuda",
    )
    writer = None
    if config.tensorboard and world.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=config.bf16 and device.type == "cuda")

    def save(path: Path) -> None:
        """A checkpoint to resume from: every rank must call it, since each rank's random state goes in."""
        states = distributed.gather_to_main(world, checkpoint.random_states(generator))
        if world.is_main:
            checkpoint.save(path, model, optimizer, scheduler, progress, states, config.to_dict())

    def save_best() -> None:
        """best.pt, written by rank 0 alone during its evaluation; it is for serving, not for resuming."""
        checkpoint.save(run_dir / checkpoint.BEST, model, optimizer, scheduler, progress, [checkpoint.random_states(generator)], config.to_dict())

    log.info("training steps %d..%d, batch %d, %d batches per epoch", progress.step + 1, config.max_steps, config.batch_size, feed.batches_per_epoch)
    bar = tqdm(total=config.max_steps, initial=progress.step, desc="train", unit="step", disable=not world.is_main or None)
    stop_early = False
    window_start, window_examples = time.perf_counter(), 0
    progress_log = ProgressLog(config.log_every if world.is_main else 0, config.max_steps)
    timing = {"started_at": started}  # wall-clock times (bench/bench_train.py splits start-up from training)
    model.train()
    with logging_redirect_tqdm():  # on a terminal, log lines print above the bar; without one they are the progress
        while progress.step < config.max_steps and not stop_early:
            for batch in feed.batches(progress.epoch, skip=progress.batch_in_epoch):
                batch = to_device(batch, device)
                with autocast:
                    parts = step_model(data.gather_users(batch["user_idx"]), batch["item_idx"], data.corpus, generator)
                if not torch.isfinite(parts.total):
                    raise NonFiniteLoss(f"loss is {parts.total.item()} at step {progress.step + 1}; the last good checkpoint ({last}) is kept")
                optimizer.zero_grad(set_to_none=True)
                parts.total.backward()
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                progress.step += 1
                progress.batch_in_epoch += 1

                if world.is_main and "first_step_done_at" not in timing:
                    timing["first_step_done_at"] = time.time()
                    log.info("first step done, %.1f s after start", timing["first_step_done_at"] - started)
                window_examples += batch["item_idx"].numel() * world.world_size
                progress_log.step(progress.step, batch["item_idx"].numel() * world.world_size, parts, scheduler.get_last_lr()[0])
                if world.is_main and (progress.step % 10 == 0 or progress.step == config.max_steps):
                    rate = window_examples / max(time.perf_counter() - window_start, 1e-9)
                    window_start, window_examples = time.perf_counter(), 0
                    scalars = {"loss/total": parts.total.item(), "loss/main": parts.main.item(), "loss/ssl": parts.ssl.item(), "accuracy/in_batch": parts.accuracy.item(), "lr": scheduler.get_last_lr()[0], "examples_per_s": rate}
                    progress.history.append({"step": progress.step, **scalars})
                    bar.set_postfix(loss=f"{scalars['loss/total']:.3f}", acc=f"{scalars['accuracy/in_batch']:.2f}", ex_s=f"{rate:,.0f}")
                    if writer:
                        for name, value in scalars.items():
                            writer.add_scalar(name, value, progress.step)
                bar.update(1)

                if validating and progress.step % config.eval_every == 0:
                    stop_early = evaluate_and_maybe_stop(model, data, config, progress, world, device, writer, save_best)
                if progress.step % config.checkpoint_every == 0:
                    save(last)
                if progress.step >= config.max_steps or stop_early:
                    break
            else:  # the epoch is used up
                progress.epoch += 1
                progress.batch_in_epoch = 0
    timing["last_step_done_at"] = time.time()
    save(last)
    if world.is_main and not (run_dir / checkpoint.BEST).is_file():
        save_best()  # no evaluation ran: the final model is the one to use
    bar.close()
    if writer:
        writer.close()
    distributed.stop(world)
    summary = {"steps": progress.step, "best_step": progress.best_step, "best_valid_recall": progress.best_metric, "table_versions": manifest.versions()}
    if world.is_main:
        (run_dir / "train_summary.json").write_text(json.dumps({**summary, "timing": timing, "history": progress.history}, indent=1))
        log.info("training done: %s", json.dumps(summary))
    return summary


def evaluate_and_maybe_stop(model, data, config, progress, world, device, writer, save_best) -> bool:
    """Validation Recall@K on rank 0; keeps the best model in best.pt; returns whether to stop early."""
    stop = False
    if world.is_main:
        recall = valid_recall(model, data, config.eval_k)
        log.info("step %d: valid recall@%d = %.4f", progress.step, config.eval_k, recall)
        if writer:
            writer.add_scalar(f"valid/recall@{config.eval_k}", recall, progress.step)
        progress.history.append({"step": progress.step, f"valid/recall@{config.eval_k}": recall})
        if recall > progress.best_metric:
            progress.best_metric, progress.best_step, progress.evals_without_improvement = recall, progress.step, 0
            save_best()
        else:
            progress.evals_without_improvement += 1
            stop = config.patience > 0 and progress.evals_without_improvement >= config.patience
            if stop:
                log.info("stopping early: no improvement in %d evaluations (best %.4f at step %d)", config.patience, progress.best_metric, progress.best_step)
    model.train()
    return distributed.broadcast_flag(world, stop, device)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lake", help="lake directory with the ETL and stats tables (required unless --resume)")
    parser.add_argument("--run", required=True, help="run directory: manifest, checkpoints, TensorBoard logs, metrics")
    parser.add_argument("--config", help="YAML file; its `train:` section sets any option below, `train.model:` the model")
    parser.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt with the run's own config and pinned tables")
    parser.add_argument("--max-steps", type=int, help="training steps (default 8000)")
    parser.add_argument("--batch-size", type=int, help="clicked pairs per step, the in-batch negatives (default 256)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default 2e-3)")
    parser.add_argument("--seed", type=int, help="seed of the data order, initialization and sampling (default 0)")
    parser.add_argument("--device", help="auto (default: cuda if present), cpu, cuda or cuda:N")
    parser.add_argument("--augmentation", help="SSL augmentation: none | independent-mask | dropout | rfm (the paper's random feature masking) | cfm (default cfm); old names mask, complementary accepted")
    parser.add_argument("--alpha", type=float, help="weight of the SSL loss; 0 turns SSL off (default 1.0)")
    parser.add_argument("--temperature", type=float, help="softmax temperature of both losses (default 0.1)")
    parser.add_argument("--eval-every", type=int, help="steps between validation Recall@K checks; 0: never (default 500)")
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 500)")
    parser.add_argument("--deterministic", action="store_true", default=None, help="reproducible kernels and data order (one reader worker)")


MODEL_FLAGS = ("augmentation", "alpha", "temperature")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    if args.resume:
        path = Path(args.run, "config.json")
        if not path.is_file():
            raise UsageError(f"--resume: {path} not found")
        return TrainConfig(**json.loads(path.read_text()))
    flags = {k: v for k, v in vars(args).items() if k not in {"lake", "run", "config", "resume", "command", "verbose", *MODEL_FLAGS}}
    config = build_config(TrainConfig, args.config, flags, section="train")
    model_overrides = {k: getattr(args, k) for k in MODEL_FLAGS if getattr(args, k) is not None}
    if model_overrides:
        config.model = type(config.model)(**{**config.to_dict()["model"], **model_overrides})
    return config


def run(args: argparse.Namespace) -> int:
    train(args.lake, args.run, config_from_args(args), resume=args.resume)
    return 0
