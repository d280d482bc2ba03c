"""Embeddings of every item and of chosen users, computed in chunks without gradients."""

from __future__ import annotations

import torch

from towerssl.model.features import Features
from towerssl.model.towers import Tower


@torch.no_grad()
def embed(tower: Tower, features: Features, rows: torch.Tensor | None = None, chunk: int = 8192) -> torch.Tensor:
    """tower(features[rows]) as float32 on the CPU; rows None means every row."""
    was_training = tower.training
    tower.eval()
    device = next(tower.parameters()).device
    n = next(iter(features.values())).shape[0] if rows is None else rows.numel()
    out = []
    for start in range(0, n, chunk):
        index = torch.arange(start, min(start + chunk, n)) if rows is None else rows[start : start + chunk]
        batch = {name: values[index.to(values.device)].to(device) for name, values in features.items()}
        out.append(tower(batch).float().cpu())
    tower.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, tower.mlp[-1].out_features)
