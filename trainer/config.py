"""Training settings; the model's own settings nest under `model`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from towerssl.errors import UsageError
from towerssl.model.config import ModelConfig

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class TrainConfig:
    batch_size: int = 1024  # clicked (user, item) pairs per step
    max_steps: int = 2000
    lr: float = 2e-3
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    schedule: str = "cosine"  # after a linear warmup
    warmup_steps: int = 50
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    checkpoint_every: int = 200
    eval_every: int = 200  # Recall@eval_k on valid_clicks; 0 turns evaluation during training off
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
        if isinstance(self.model, dict):
            try:
                self.model = ModelConfig(**self.model)
            except TypeError as error:
                raise UsageError(f"model config: {error}") from error
        problems = [
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
            (self.batch_size >= 2, "batch_size must be >= 2 (in-batch negatives)"),
            (self.max_steps >= 1 and self.lr > 0, "max_steps and lr must be positive"),
            (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
            (self.eval_every >= 0 and self.patience >= 0 and self.eval_k >= 1, "eval_every, patience >= 0 and eval_k >= 1"),
            (self.workers >= 1 and self.shuffle_buffer >= 1, "workers and shuffle_buffer must be >= 1"),
            (self.log_every >= 0, "log_every must be >= 0"),
        ]
        errors = [message for ok, message in problems if not ok]
        if errors:
            raise UsageError("train config: " + "; ".join(errors))

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)
