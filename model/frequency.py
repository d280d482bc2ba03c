"""Streaming item-frequency estimation (Yi et al. RecSys 2019, Algorithms 2 and 3).

For streams whose click counts are not known in advance: per hash bucket, the step an item was last seen (A)
and an exponential moving average of the gap between sightings (B). An item seen every B steps on average
occurs 1/B times per step, so with n items per step its click probability is p = 1 / (B n), the quantity
the Spark item_stats table holds. Several hash functions each keep their own arrays; a collision only ever
shortens a bucket's gap, so the largest B over the hashes is the least collided estimate.
"""

from __future__ import annotations

import torch
from torch import nn

_PRIME = (1 << 31) - 1  # universal hashing ((a x + b) mod prime) mod buckets; ids must be < prime


class StreamingFrequency(nn.Module):
    """Estimates p_j from the item ids of each training step; buffers follow .to(device) and state_dict.

    Update rule per bucket, sightings taken in order: B <- (1 - alpha) B + alpha (t - A); A <- t. Several
    sightings of a bucket in one step are applied in closed form (the later ones have gap 0). A bucket's first
    sighting sets B to the steps since the start, since it has no earlier gap. A bucket never seen is estimated
    as if seen once, now, after t steps: p = 1 / (t n).
    """

    def __init__(self, num_buckets: int, num_hashes: int = 2, alpha: float = 0.01, seed: int = 0) -> None:
        super().__init__()
        if num_buckets < 1 or num_hashes < 1 or not 0 < alpha <= 1:
            raise ValueError(f"streaming frequency: need num_buckets, num_hashes >= 1 and 0 < alpha <= 1, got {num_buckets}, {num_hashes}, {alpha}")
        self.num_buckets = num_buckets
        self.alpha = alpha
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("hash_a", torch.randint(1, _PRIME, (num_hashes, 1), generator=generator))
        self.register_buffer("hash_b", torch.randint(0, _PRIME, (num_hashes, 1), generator=generator))
        self.register_buffer("last_step", torch.zeros((num_hashes, num_buckets), dtype=torch.long))  # 0: never seen
        self.register_buffer("gap", torch.zeros((num_hashes, num_buckets), dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("items_seen", torch.zeros((), dtype=torch.long))

    def buckets(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Bucket of every id under every hash: [num_hashes, n]."""
        return (self.hash_a * item_ids.long()[None, :] + self.hash_b) % _PRIME % self.num_buckets

    @torch.no_grad()
    def update(self, item_ids: torch.Tensor) -> None:
        """Record one training step whose batch holds these item ids (repeats count as separate sightings)."""
        self.steps += 1
        self.items_seen += item_ids.numel()
        decay = 1.0 - self.alpha
        for row, buckets in zip(range(self.last_step.shape[0]), self.buckets(item_ids)):
            seen, count = torch.unique(buckets, return_counts=True)
            count = count.double()
            last, gap = self.last_step[row, seen], self.gap[row, seen]
            since = (self.steps - last).double()
            moving = decay**count * gap + self.alpha * decay ** (count - 1) * since
            first = decay ** (count - 1) * since  # first sighting: B = steps since the start, then gap-0 sightings
            self.gap[row, seen] = torch.where(last == 0, first, moving)
            self.last_step[row, seen] = self.steps

    @torch.no_grad()
    def probability(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Estimated click probability of each id, float64, in (0, 1]."""
        if int(self.steps) == 0:
            raise RuntimeError("streaming frequency: probability() before any update()")
        rows = torch.arange(self.gap.shape[0], device=self.gap.device)[:, None]
        buckets = self.buckets(item_ids)
        gap = torch.where(self.last_step[rows, buckets] == 0, self.steps.double(), self.gap[rows, buckets]).amax(dim=0)
        items_per_step = self.items_seen.double() / self.steps
        return (1.0 / (gap * items_per_step)).clamp(max=1.0)

    def log_probability(self, item_ids: torch.Tensor) -> torch.Tensor:
        return self.probability(item_ids).log()
