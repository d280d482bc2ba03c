"""The item corpus held on the training device: every item's features and log p, sampled uniformly.

SSL batches and mixed negatives are drawn from it independently of the click stream, and the click batch's
item features are gathered from it by item_idx, so features and ids can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from towerssl.model.features import Features


@dataclass(frozen=True)
class ItemCorpus:
    """features: item field -> [N] or [N, L], row i is item_idx i. log_p: [N] log click probability, or None."""

    features: Features
    log_p: torch.Tensor | None = None

    def __post_init__(self) -> None:
        sizes = {name: values.shape[0] for name, values in self.features.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"item corpus: fields disagree on the number of items: {sizes}")
        if self.log_p is not None:
            if self.log_p.shape != (self.size,):
                raise ValueError(f"item corpus: log_p has shape {tuple(self.log_p.shape)}, expected ({self.size},)")
            bad = (~torch.isfinite(self.log_p)).nonzero().flatten()
            if bad.numel():
                raise ValueError(f"item corpus: log_p is not finite for {bad.numel()} item(s), first item_idx {int(bad[0])}; p must be > 0 for every item")

    @property
    def size(self) -> int:
        return next(iter(self.features.values())).shape[0]

    @property
    def device(self) -> torch.device:
        return next(iter(self.features.values())).device

    def to(self, device: torch.device | str) -> ItemCorpus:
        return ItemCorpus({k: v.to(device) for k, v in self.features.items()}, None if self.log_p is None else self.log_p.to(device))

    def sample(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """`count` item indices drawn uniformly with replacement (repeats are handled as accidental hits)."""
        return torch.randint(self.size, (count,), generator=generator, device=self.device)

    def gather(self, item_idx: torch.Tensor) -> Features:
        return {name: values[item_idx] for name, values in self.features.items()}
