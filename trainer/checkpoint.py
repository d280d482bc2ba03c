"""Checkpoints that let a killed run continue exactly: model, optimizer, scheduler, step, data position and
every random state. Files are written to a temporary name and renamed, so a kill never leaves a torn file."""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

LAST = "checkpoint.pt"
BEST = "best.pt"


@dataclass
class Progress:
    """Where training stands: step count, data position (epoch, batches consumed in it), early stopping."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float = -1.0
    best_step: int = 0
    evals_without_improvement: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def random_states(generator: torch.Generator) -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict[str, Any], generator: torch.Generator) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    generator.set_state(states["generator"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, progress: Progress, rank_random_states: list[dict[str, Any]], config: dict[str, Any]) -> None:
    """rank_random_states: random_states() of every rank, in rank order, so each rank resumes its own draws."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "progress": asdict(progress),
        "random": rank_random_states,
        "config": config,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    return torch.load(path, map_location=map_location, weights_only=False)
