"""Streaming frequency estimation: the batched update equals Algorithm 2 run sighting by sighting, and it
recovers known frequencies on a generated stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from towerssl.model.frequency import StreamingFrequency


def test_batched_update_equals_the_sequential_algorithm():
    alpha, buckets = 0.1, 16  # few buckets: collisions must be handled like repeats
    estimator = StreamingFrequency(buckets, num_hashes=2, alpha=alpha, seed=3)
    rng = np.random.default_rng(0)
    stream = [rng.integers(0, 40, size=int(rng.integers(1, 12))) for _ in range(30)]
    last = np.zeros((2, buckets))
    gap = np.zeros((2, buckets))
    for step, ids in enumerate(stream, start=1):
        ids_t = torch.from_numpy(ids)
        bucket_rows = estimator.buckets(ids_t).numpy()
        estimator.update(ids_t)
        for h in range(2):
            for b in bucket_rows[h]:  # Algorithm 2, one sighting at a time
                gap[h, b] = step - last[h, b] if last[h, b] == 0 else (1 - alpha) * gap[h, b] + alpha * (step - last[h, b])
                last[h, b] = step
    np.testing.assert_allclose(estimator.gap.numpy(), gap, rtol=1e-12)
    np.testing.assert_array_equal(estimator.last_step.numpy(), last)
    # the estimate: largest gap over the hashes (never seen: the steps so far), p = 1 / (gap * items per step)
    probe = torch.arange(50)
    rows = estimator.buckets(probe).numpy()
    per_hash = np.where(last[np.arange(2)[:, None], rows] == 0, len(stream), gap[np.arange(2)[:, None], rows])
    items_per_step = sum(map(len, stream)) / len(stream)
    np.testing.assert_allclose(estimator.probability(probe).numpy(), np.minimum(1, 1 / (per_hash.max(axis=0) * items_per_step)), rtol=1e-12)


def test_estimates_known_frequencies_within_ten_percent():
    num_items, batch, steps = 2000, 256, 3000
    weights = 1.0 / np.arange(1, num_items + 1) ** 1.1  # Zipf-like popularity
    p = weights / weights.sum()
    g = torch.Generator().manual_seed(1)
    stream = torch.multinomial(torch.from_numpy(p), batch * steps, replacement=True, generator=g).view(steps, batch)
    shuffled_ids = torch.randperm(num_items, generator=g) * 7919 + 11  # arbitrary large ids, not 0..n-1
    estimator = StreamingFrequency(1 << 14, num_hashes=2, alpha=0.001, seed=0)  # relative noise ~ sqrt(alpha / 2)
    for ids in shuffled_ids[stream]:
        estimator.update(ids)
    frequent = torch.from_numpy(p * batch >= 2)  # items seen about twice per step or more
    assert int(frequent.sum()) >= 15
    estimate = estimator.probability(shuffled_ids[frequent]).numpy()
    relative_error = np.abs(estimate / p[frequent.numpy()] - 1)
    assert relative_error.max() < 0.10, relative_error


def test_probability_needs_an_update_first():
    with pytest.raises(RuntimeError, match="before any update"):
        StreamingFrequency(8).probability(torch.tensor([1]))
