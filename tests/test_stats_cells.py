"""The numpy cell kernel every Spark task runs: chunking never changes the summed cells, lists are padded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from celldata import PLAN, random_items
from towerssl.stats.cells import WEIGHT, cell_batches



def summed(batches) -> pd.DataFrame:
    cells = pa.Table.from_batches(list(batches)).to_pandas()
    return cells.groupby(["a", "b", "part", "x", "y"]).agg(m=("m", "sum"), s=("s", "sum")).sort_index()


def test_cells_summed_over_chunks_do_not_depend_on_the_chunk_size():
    table = random_items(np.random.default_rng(2), 500, brands=9)
    whole = summed(cell_batches(iter(table.to_batches(max_chunksize=64)), PLAN, chunk_rows=10_000))
    chunked = summed(cell_batches(iter(table.to_batches(max_chunksize=64)), PLAN, chunk_rows=70))
    pd.testing.assert_index_equal(whole.index, chunked.index)
    np.testing.assert_allclose(chunked.to_numpy(), whole.to_numpy(), rtol=1e-12, atol=1e-12)
    # the id field's pairs and its diagonal are one closed-form cell each; total mass per pair = total weight
    weight = table.column(WEIGHT).to_numpy()
    item_known = table.column("item").to_numpy() >= 3
    assert whole.loc[(0, 0, 1, 0, 0), "m"] == pytest.approx(weight[item_known].sum())


def test_short_lists_are_padded_and_long_lists_are_refused():
    short = pa.table({"item": pa.array([3, 4], pa.int32()), "tags": pa.array([[5], [6, 6, 7]], pa.list_(pa.int32())),
                      "brand": pa.array([3, 3], pa.int32()), WEIGHT: pa.array([1.0, 1.0])})
    cells = summed(cell_batches(iter(short.to_batches()), PLAN))
    # tags marginal: item 0 gives 5 mass 1, item 1 gives 6 and 7 mass 1/2 each (the repeated 6 counts once)
    assert cells.loc[(1, 1, 1)]["m"].to_dict() == {(5, 0): 1.0, (6, 0): 0.5, (7, 0): 0.5}

    long = short.set_column(1, "tags", pa.array([[5, 6, 7, 8], [6]], pa.list_(pa.int32())))
    with pytest.raises(ValueError, match="items.tags: a row holds 4 values, more than the field's length 3"):
        list(cell_batches(iter(long.to_batches()), PLAN))
