"""Training settings; the model's own settings nest under `model`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from towerssl.config import ConfigError, check_types
from towerssl.model.config import ModelConfig

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class TrainConfig:
    batch_size: int = 256  # clicked (user, item) pairs per step; chosen on validation (docs/experiments.md, Amazon)
    max_steps: int = 8000  # with early stopping on valid_clicks, most runs end before
    lr: float = 2e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    schedule: str = "cosine"  # after a linear warmup
    warmup_steps: int = 50
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    checkpoint_every: int = 500
    eval_every: int = 500  # Recall@eval_k on valid_clicks; 0 turns evaluation during training off
    eval_k: int = 50
    patience: int = 3  # evaluations without improvement before stopping early; 0 never stops early
    seed: int = 0
    deterministic: bool = False  # reproducible kernels and a single reader worker (resume equality on CPU)
    workers: int = 2  # Petastorm reader workers
    shuffle_buffer: int = 65536
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    bf16: bool = True  # autocast to bfloat16 on CUDA
    tensorboard: bool = True
    log_every: int = 100  # steps between progress log lines (step, losses, examples/s); 0: none
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        check_types(self, "train")  # also makes `model` from a mapping, with the model's own checks
        problems = [
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (self.batch_size >= 2, f"batch_size must be >= 2 (in-batch negatives), got {self.batch_size}"),
            (self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}"),
            (self.grad_clip >= 0, f"grad_clip must be >= 0, got {self.grad_clip}"),
            (self.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.checkpoint_every}"),
            (self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}"),
            (self.eval_k >= 1, f"eval_k must be >= 1, got {self.eval_k}"),
            (self.patience >= 0, f"patience must be >= 0, got {self.patience}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (self.workers >= 1, f"workers must be >= 1, got {self.workers}"),
            (self.shuffle_buffer >= 1, f"shuffle_buffer must be >= 1, got {self.shuffle_buffer}"),
            (self.log_every >= 0, f"log_every must be >= 0, got {self.log_every}"),
        ]
        errors = [message for ok, message in problems if not ok]
        if errors:
            raise ConfigError("train: " + "; ".join(errors))

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)
