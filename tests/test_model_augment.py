"""SSL augmentations: measured rates, RFM's complementary halves, CFM on planted MI matrices, default embeddings, seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from towerssl.fields import FieldSpec
from towerssl.indices import DEFAULT, PAD
from towerssl.model.augment import Augmenter, apply_masks, cfm_groups, cfm_masks, drop_values, independent_masks, rfm_masks
from towerssl.model.config import AUGMENTATION_ALIASES, AUGMENTATIONS, ModelConfig
from towerssl.model.towers import Tower

FIELDS = (
    FieldSpec("item", "item", False, 1, 500),
    FieldSpec("genre", "item", True, 6, 20),
    FieldSpec("year", "item", False, 1, 40),
    FieldSpec("tags", "item", True, 3, 30),
)


def random_items(batch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Items whose multi-valued rows hold 1..L real values (>= 3) then PAD."""
    g = torch.Generator().manual_seed(seed)
    features = {}
    for f in FIELDS:
        values = torch.randint(3, f.cardinality, (batch_size, f.length), generator=g)
        if f.multi:
            counts = torch.randint(1, f.length + 1, (batch_size, 1), generator=g)
            features[f.name] = torch.where(torch.arange(f.length)[None, :] < counts, values, PAD)
        else:
            features[f.name] = values[:, 0]
    return features


def is_masked(field: FieldSpec, values: torch.Tensor) -> torch.Tensor:
    if not field.multi:
        return values == DEFAULT
    return (values[:, 0] == DEFAULT) & (values[:, 1:] == PAD).all(dim=1)


def masked_matrix(features: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([is_masked(f, features[f.name]) for f in FIELDS], dim=1)


def reference_group(mi: np.ndarray, seed: int) -> set[int]:
    """The seed plus its k/2 - 1 highest-MI partners, ties to the earlier field, straight from the definition."""
    k = len(mi)
    partners = sorted((j for j in range(k) if j != seed), key=lambda j: (-mi[seed][j], j))
    return {seed, *partners[: k // 2 - 1]}


def test_independent_mask_rates_match_per_field_settings():
    rates = torch.tensor([0.1, 0.3, 0.5, 0.0])
    one, two = independent_masks(40_000, rates, torch.Generator().manual_seed(1))
    for view in (one, two):
        np.testing.assert_allclose(view.float().mean(dim=0).numpy(), rates.numpy(), atol=0.01)
    np.testing.assert_allclose((one & two).float().mean(dim=0).numpy(), (rates**2).numpy(), atol=0.01)  # views independent


def test_apply_masks_sets_default_and_keeps_the_rest():
    features = random_items(500)
    masked = torch.rand((500, len(FIELDS)), generator=torch.Generator().manual_seed(2)) < 0.5
    out = apply_masks(features, FIELDS, masked)
    assert torch.equal(masked_matrix(out), masked)
    for j, f in enumerate(FIELDS):
        assert torch.equal(out[f.name][~masked[:, j]], features[f.name][~masked[:, j]])


def test_dropout_rate_matches_and_never_empties_a_field():
    features = random_items(20_000)
    out = drop_values(features, FIELDS, 0.5, torch.Generator().manual_seed(3))
    for f in FIELDS:
        before, after = features[f.name], out[f.name]
        if not f.multi:
            assert torch.equal(before, after)
            continue
        real = before != PAD
        assert abs((after[real] != before[real]).float().mean().item() - 0.5) < 0.01
        assert ((after == PAD) | (after == before) | (after == DEFAULT)).all()
        emptied = is_masked(f, after)
        assert not (after == PAD).all(dim=1).any()  # never silently empty ...
        # ... a field that lost every value is masked, which happens with probability 0.5 ** (number of values)
        expected = (0.5 ** real.sum(dim=1).double()).mean().item()
        assert abs(emptied.double().mean().item() - expected) < 0.01


def test_rfm_halves_are_disjoint_and_cover_all_fields():
    k = 5
    one, two = rfm_masks(10_000, k, torch.Generator().manual_seed(4), torch.device("cpu"))
    assert not (one & two).any() and (one | two).all()
    assert (one.sum(dim=1) == k // 2).all()
    np.testing.assert_allclose(one.float().mean(dim=0).numpy(), np.full(k, (k // 2) / k), atol=0.02)  # every field equally likely


@pytest.mark.parametrize("k", [2, 5, 8])
def test_cfm_groups_are_the_seed_and_its_top_mi_fields(k):
    rng = np.random.default_rng(k)
    mi = rng.uniform(size=(k, k))
    mi = (mi + mi.T) / 2
    if k > 2:
        mi[0, 1] = mi[1, 0] = mi[0, 2] = mi[2, 0] = 0.5  # a tie, broken towards the earlier field
    groups = cfm_groups(mi)
    for seed in range(k):
        assert set(torch.nonzero(groups[seed]).flatten().tolist()) == reference_group(mi, seed)


def test_cfm_masks_exactly_the_seed_group_in_view_one_and_the_rest_in_view_two():
    k = 6
    rng = np.random.default_rng(5)
    mi = rng.permutation(k * k).reshape(k, k).astype(float)  # distinct values: one planted ranking per seed
    groups = cfm_groups(mi)
    one, two = cfm_masks(12_000, groups, torch.Generator().manual_seed(6))
    planted = [reference_group(mi, s) for s in range(k)]
    rows = [set(torch.nonzero(r).flatten().tolist()) for r in one]
    assert all(r in planted for r in rows)
    assert torch.equal(two, ~one)
    counts = np.array([sum(r == g for r in rows) for g in map(set, {frozenset(g) for g in planted})])
    seeds_per_group = np.array([sum(p == g for p in planted) for g in map(set, {frozenset(g) for g in planted})])
    np.testing.assert_allclose(counts / len(rows), seeds_per_group / k, atol=0.02)  # seeds drawn uniformly


def test_raw_mi_makes_the_id_every_seeds_partner_and_nmi_does_not():
    """MI(ID, V) = H(V), the largest MI any field can have with V; normalizing by the entropies undoes that."""
    rng = np.random.default_rng(8)
    n = 4000
    columns = {
        "item": np.arange(n),  # unique per item
        "genre": rng.integers(0, 8, n),
        "year": None,
        "brand": rng.integers(0, 30, n),
    }
    columns["year"] = np.where(rng.uniform(size=n) < 0.8, columns["genre"], rng.integers(0, 8, n))  # year follows genre

    def entropy(*cols):
        _, counts = np.unique(np.stack(cols, axis=1), axis=0, return_counts=True)
        p = counts / n
        return float(-(p * np.log(p)).sum())

    names = list(columns)
    mi = np.array([[entropy(columns[a]) + entropy(columns[b]) - entropy(columns[a], columns[b]) for b in names] for a in names])
    h = np.diag(mi)
    nmi = mi / np.sqrt(np.outer(h, h))
    raw_groups, normalized_groups = cfm_groups(mi), cfm_groups(nmi)
    id_field, genre, year = names.index("item"), names.index("genre"), names.index("year")
    assert all(raw_groups[s, id_field] for s in range(len(names)))
    assert set(torch.nonzero(normalized_groups[genre]).flatten().tolist()) == {genre, year}


def test_masked_fields_get_the_default_embedding():
    config = ModelConfig(embedding_dim=4, hidden_dims=(8,), output_dim=4, augmentation="cfm")
    tower = Tower(FIELDS, config)
    features = random_items(64)
    one, _ = Augmenter(FIELDS, config, nmi=np.random.default_rng(0).uniform(size=(4, 4)))(features, torch.Generator().manual_seed(9))
    embedded = tower.embed_fields(one)
    masked = masked_matrix(one)
    assert masked.any(dim=0).all()
    for j, f in enumerate(FIELDS):
        default = tower.embeddings[f.name].table.weight[DEFAULT]
        assert torch.equal(embedded[masked[:, j], j], default.expand(int(masked[:, j].sum()), -1))
        assert not torch.isclose(embedded[~masked[:, j], j], default).all(dim=1).any()


@pytest.mark.parametrize("augmentation", AUGMENTATIONS)
def test_augmenter_is_pure_and_reproducible_under_a_seed(augmentation):
    config = ModelConfig(augmentation=augmentation, mask_rate=0.3)
    augmenter = Augmenter(FIELDS, config, nmi=np.eye(4))
    features = random_items(256)
    original = {k: v.clone() for k, v in features.items()}
    first = augmenter(features, torch.Generator().manual_seed(10))
    again = augmenter(features, torch.Generator().manual_seed(10))
    other = augmenter(features, torch.Generator().manual_seed(11))
    assert all(torch.equal(features[k], original[k]) for k in features)
    for view, same in zip(first, again):
        assert all(torch.equal(view[k], same[k]) for k in view)
    changed = any(not torch.equal(first[v][k], other[v][k]) for v in (0, 1) for k in features)
    assert changed == (augmentation != "none")


def test_masking_and_dropout_compose():
    """Dropout first, then masking over it: the views equal the two steps done by hand from the same seed."""
    config = ModelConfig(augmentation="rfm", dropout_rate=0.5, dropout_with_masking=True)
    features = random_items(2000)
    one, two = Augmenter(FIELDS, config)(features, torch.Generator().manual_seed(12))
    g = torch.Generator().manual_seed(12)
    dropped_one, dropped_two = drop_values(features, FIELDS, 0.5, g), drop_values(features, FIELDS, 0.5, g)
    masks_one, masks_two = rfm_masks(2000, len(FIELDS), g, torch.device("cpu"))
    for view, expected in ((one, apply_masks(dropped_one, FIELDS, masks_one)), (two, apply_masks(dropped_two, FIELDS, masks_two))):
        assert all(torch.equal(view[k], expected[k]) for k in view)
    genre = [f.name for f in FIELDS].index("genre")
    assert not torch.equal(dropped_one["genre"], features["genre"]) and (~masks_one[:, genre]).any()
    assert not Augmenter(FIELDS, ModelConfig(augmentation="rfm", dropout_with_masking=False)).dropout_rate


def test_augmenter_rejects_what_it_cannot_do():
    with pytest.raises(ValueError, match="no such matrix"):
        Augmenter(FIELDS, ModelConfig(augmentation="cfm", mi_ranking="mi"), nmi=np.eye(4))
    with pytest.raises(ValueError, match="expected 4 x 4"):
        Augmenter(FIELDS, ModelConfig(augmentation="cfm"), nmi=np.eye(3))
    with pytest.raises(ValueError, match="at least 2"):
        Augmenter(FIELDS[:1], ModelConfig(augmentation="rfm"))
    with pytest.raises(ValueError, match="no item field: colour"):
        Augmenter(FIELDS, ModelConfig(augmentation="independent-mask", mask_rates={"colour": 0.2}))


@pytest.mark.parametrize("old, new", sorted(AUGMENTATION_ALIASES.items()))
def test_old_augmentation_names_make_the_same_views_and_are_kept_as_given(old, new):
    assert new in AUGMENTATIONS and old not in AUGMENTATIONS
    features = random_items(256)
    by_old, by_new = (Augmenter(FIELDS, ModelConfig(augmentation=name, mask_rate=0.3))(features, torch.Generator().manual_seed(5)) for name in (old, new))
    assert all(torch.equal(a[k], b[k]) for a, b in zip(by_old, by_new) for k in features)
    assert ModelConfig(augmentation=old).augmentation == old  # a recorded run's config.json still matches
    with pytest.raises(ValueError, match="or an old name: mask, complementary"):
        ModelConfig(augmentation="random")
