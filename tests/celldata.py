"""Random encoded item rows for the MI cell tests: an id (20% unknown), a 3-long multi-valued field, a
single-valued field and a weight."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from towerssl.stats.cells import WEIGHT, CellPlan

PLAN = CellPlan(names=("item", "tags", "brand"), lengths=(1, 3, 1), unique=(True, False, False), weighted=True)


def random_items(rng: np.random.Generator, n: int, brands: int) -> pa.Table:
    return pa.table({
        "item": pa.array(np.where(rng.random(n) < 0.2, 2, np.arange(n) + 3), pa.int32()),
        "tags": pa.array([rng.integers(0, 8, size=3).tolist() for _ in range(n)], pa.list_(pa.int32())),
        "brand": pa.array(rng.integers(1, brands, size=n), pa.int32()),
        WEIGHT: pa.array(rng.integers(0, 4, size=n).astype(np.float64)),
    })
