"""Feature spec and towers: built from `fields` rows, mean pooling over real values, L2 output, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from towerssl.fields import FeatureSpec
from towerssl.indices import DEFAULT, PAD
from towerssl.model.config import ModelConfig
from towerssl.model.towers import Tower, TwoTowers

ROWS = [  # shaped like the `fields` Delta table, deliberately out of order
    {"field": "genre", "owner": "item", "multi": True, "length": 4, "cardinality": 22, "position": 1},
    {"field": "user", "owner": "user", "multi": False, "length": 1, "cardinality": 60, "position": 3},
    {"field": "item", "owner": "item", "multi": False, "length": 1, "cardinality": 90, "position": 0},
    {"field": "year", "owner": "item", "multi": False, "length": 1, "cardinality": 12, "position": 2},
    {"field": "occupation", "owner": "user", "multi": False, "length": 1, "cardinality": 24, "position": 4},
]
CONFIG = ModelConfig(embedding_dim=5, hidden_dims=(16, 8), output_dim=6)


def test_spec_from_rows_keeps_position_order_and_owners():
    spec = FeatureSpec.from_rows(ROWS)
    assert [f.name for f in spec.fields] == ["item", "genre", "year", "user", "occupation"]
    assert [f.name for f in spec.item_fields] == ["item", "genre", "year"]
    assert [f.name for f in spec.user_fields] == ["user", "occupation"]
    genre = spec.item_fields[1]
    assert genre.multi and genre.length == 4 and genre.cardinality == 22


@pytest.mark.parametrize(
    "change, message",
    [
        ({"owner": "shop"}, "owner must be one of"),
        ({"multi": False, "length": 4}, "length must be 1"),
        ({"cardinality": 2}, "reserved indices"),
        ({"field": "item"}, "duplicate field"),
    ],
)
def test_spec_rejects_bad_rows_naming_the_field(change, message):
    rows = [dict(r) for r in ROWS]
    rows[0].update(change)
    with pytest.raises(ValueError, match=message):
        FeatureSpec.from_rows(rows)


def test_spec_needs_both_id_fields():
    with pytest.raises(ValueError, match="id field 'user' must be present"):
        FeatureSpec.from_rows([r for r in ROWS if r["field"] != "user"])


def test_spec_names_a_row_with_missing_columns():
    with pytest.raises(ValueError, match="row 0 .'genre'.: missing column.s. cardinality"):
        FeatureSpec.from_rows([{k: v for k, v in ROWS[0].items() if k != "cardinality"}])


def test_multi_valued_fields_are_the_mean_of_real_values_and_empty_rows_are_default():
    spec = FeatureSpec.from_rows(ROWS)
    tower = Tower(spec.item_fields, CONFIG)
    genre = torch.tensor([[5, 7, PAD, PAD], [9, PAD, PAD, PAD], [PAD, PAD, PAD, PAD], [DEFAULT, PAD, PAD, PAD], [3, 4, 5, 6]])
    features = {"item": torch.tensor([3, 4, 5, 6, 7]), "genre": genre, "year": torch.tensor([3, 3, 4, DEFAULT, 5])}
    embedded = tower.embed_fields(features)
    table = tower.embeddings["genre"].table.weight.detach().double().numpy()
    expected = [table[[5, 7]].mean(0), table[9], table[DEFAULT], table[DEFAULT], table[[3, 4, 5, 6]].mean(0)]
    np.testing.assert_allclose(embedded[:, 1].detach().double().numpy(), np.stack(expected), atol=1e-6)
    year = tower.embeddings["year"].table.weight
    assert torch.equal(embedded[3, 2], year[DEFAULT])
    output = tower(features)
    assert output.shape == (5, 6)
    torch.testing.assert_close(output.norm(dim=1), torch.ones(5))


def test_towers_have_layer_norm_and_no_batch_norm():
    towers = TwoTowers(FeatureSpec.from_rows(ROWS), CONFIG)
    kinds = {type(m).__name__ for m in towers.modules()}
    assert "LayerNorm" in kinds and not any("BatchNorm" in k for k in kinds)
    assert [f.name for f in towers.user_tower.fields] == ["user", "occupation"]


def test_tower_inputs_are_checked_by_field():
    tower = Tower(FeatureSpec.from_rows(ROWS).item_fields, CONFIG)
    good = {"item": torch.tensor([3]), "genre": torch.tensor([[3, 0, 0, 0]]), "year": torch.tensor([3])}
    with pytest.raises(KeyError, match="lacks field.s. year"):
        tower({k: v for k, v in good.items() if k != "year"})
    with pytest.raises(ValueError, match=r"field 'genre': expected a LongTensor of shape \[B, 4\], got \(1, 3\)"):
        tower({**good, "genre": torch.tensor([[3, 0, 0]])})
