"""The whole objective: gradients reach what should learn (and never PAD), and a tiny problem is learned."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from towerssl.fields import FeatureSpec
from towerssl.indices import DEFAULT, PAD
from towerssl.model.config import ModelConfig
from towerssl.model.corpus import ItemCorpus
from towerssl.model.objective import TwoTowerSSL

NUM_ITEMS, NUM_USERS, CLUSTERS = 60, 120, 6


def spec() -> FeatureSpec:
    return FeatureSpec.from_rows(
        [
            {"field": "item", "owner": "item", "multi": False, "length": 1, "cardinality": 3 + NUM_ITEMS, "position": 0},
            {"field": "genre", "owner": "item", "multi": True, "length": 3, "cardinality": 3 + CLUSTERS + 4, "position": 1},
            {"field": "year", "owner": "item", "multi": False, "length": 1, "cardinality": 3 + 5, "position": 2},
            {"field": "user", "owner": "user", "multi": False, "length": 1, "cardinality": 3 + NUM_USERS, "position": 3},
            {"field": "taste", "owner": "user", "multi": False, "length": 1, "cardinality": 3 + CLUSTERS, "position": 4},
        ]
    )


def corpus() -> ItemCorpus:
    """Item i: genres {cluster i % 6, sub-genre i % 4} (one item in three has only the first), year i % 5."""
    i = torch.arange(NUM_ITEMS)
    genre = torch.stack([3 + i % CLUSTERS, torch.where(i % 3 == 0, PAD, 3 + CLUSTERS + i % 4), torch.full_like(i, PAD)], dim=1)
    log_p = torch.full((NUM_ITEMS,), -float(np.log(NUM_ITEMS)), dtype=torch.float64)
    return ItemCorpus({"item": 3 + i, "genre": genre, "year": 3 + i % 5}, log_p)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops on a shared 2-core machine: one intra-op thread avoids spinning threads fighting for cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def clicks(users: torch.Tensor, generator: torch.Generator, noise: float = 0.1) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """User u clicks its favourite item u % 60 (its taste is that item's cluster), else a random item."""
    favourite = users % NUM_ITEMS
    random_item = torch.randint(NUM_ITEMS, users.shape, generator=generator)
    item_idx = torch.where(torch.rand(users.shape, generator=generator) < noise, random_item, favourite)
    return {"user": 3 + users, "taste": 3 + favourite % CLUSTERS}, item_idx


def model(**overrides) -> TwoTowerSSL:
    torch.manual_seed(0)
    settings = {"embedding_dim": 8, "hidden_dims": (32,), "output_dim": 16, "temperature": 0.1, "ssl_batch_size": 32, "mixed_negatives": 8}
    nmi = np.random.default_rng(0).uniform(size=(3, 3))
    return TwoTowerSSL(spec(), ModelConfig(**{**settings, **overrides}), nmi=nmi)


def test_gradients_reach_every_parameter_that_should_learn_and_no_padding_row():
    m = model(augmentation="cfm", alpha=1.0)
    g = torch.Generator().manual_seed(1)
    users, item_idx = clicks(torch.randint(NUM_USERS, (32,), generator=g), g)
    m(users, item_idx, corpus(), g).total.backward()
    for name, parameter in m.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    for name, embedding in m.towers.item_tower.embeddings.items():
        grad = embedding.table.weight.grad
        assert torch.equal(grad[PAD], torch.zeros_like(grad[PAD])), name
        assert grad[DEFAULT].abs().sum() > 0, name  # the masked value learns, through the SSL views
    for name, embedding in m.towers.user_tower.embeddings.items():
        assert torch.equal(embedding.table.weight.grad[PAD], torch.zeros_like(embedding.table.weight.grad[PAD])), name


@pytest.mark.parametrize("frequency", ["table", "streaming"])
def test_a_tiny_synthetic_problem_is_learned(frequency):
    m = model(augmentation="cfm", alpha=0.5, frequency=frequency)
    items = corpus()
    optimizer = torch.optim.Adam(m.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(2)
    losses = []
    for _ in range(150):
        users, item_idx = clicks(torch.randint(NUM_USERS, (32,), generator=g), g)
        parts = m(users, item_idx, items, g)
        optimizer.zero_grad()
        parts.total.backward()
        optimizer.step()
        losses.append(parts.main.item())
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    m.eval()
    with torch.no_grad():
        users, item_idx = clicks(torch.arange(NUM_USERS), g, noise=0.0)  # every item twice: the copy is no negative
        accuracy = m(users, item_idx, items, g).accuracy.item()
    assert accuracy > 0.6, accuracy  # chance: 1 in 60 distinct items


def test_streaming_frequency_learns_only_in_training_mode():
    m = model(frequency="streaming", alpha=0.0)
    g = torch.Generator().manual_seed(3)
    users, item_idx = clicks(torch.randint(NUM_USERS, (32,), generator=g), g)
    m(users, item_idx, corpus(), g)
    assert int(m.frequency.steps) == 1
    m.eval()
    m(users, item_idx, corpus(), g)
    assert int(m.frequency.steps) == 1


def test_alpha_weights_the_ssl_loss_and_zero_turns_it_off():
    g = torch.Generator().manual_seed(4)
    users, item_idx = clicks(torch.randint(NUM_USERS, (32,), generator=g), g)
    parts = model(alpha=0.3)(users, item_idx, corpus(), torch.Generator().manual_seed(5))
    torch.testing.assert_close(parts.total.detach(), parts.main + 0.3 * parts.ssl)
    off = model(alpha=0.0)
    assert off.augmenter is None
    assert off(users, item_idx, corpus(), g).ssl.item() == 0.0


def test_logq_from_the_table_needs_log_p():
    g = torch.Generator().manual_seed(6)
    users, item_idx = clicks(torch.randint(NUM_USERS, (8,), generator=g), g)
    bare = ItemCorpus(corpus().features)
    with pytest.raises(ValueError, match="no log_p"):
        model()(users, item_idx, bare, g)
    assert torch.isfinite(model(logq=False)(users, item_idx, bare, g).total)


def test_corpus_rejects_non_finite_log_p_naming_the_item():
    features = corpus().features
    log_p = torch.full((NUM_ITEMS,), -4.0)
    log_p[7] = -float("inf")
    with pytest.raises(ValueError, match="first item_idx 7"):
        ItemCorpus(features, log_p)


def item_tower_inputs(m: TwoTowerSSL) -> list[dict[str, torch.Tensor]]:
    """Every feature batch the item tower is called with (a forward hook: what the tower really sees)."""
    seen: list[dict[str, torch.Tensor]] = []
    m.towers.item_tower.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    return seen


def test_id_dropout_masks_a_share_r_of_the_click_batch_ids_and_never_the_ssl_views():
    rate, n = 0.3, 4000
    m = model(augmentation="dropout", alpha=1.0, id_dropout=rate, mixed_negatives=0)
    seen = item_tower_inputs(m)
    g = torch.Generator().manual_seed(7)
    users, item_idx = clicks(torch.randint(NUM_USERS, (n,), generator=g), g)
    m(users, item_idx, corpus(), g)
    ids = seen[-1]["item"]
    clicked, ssl_views = ids[:n], ids[n:]
    masked = int((clicked == DEFAULT).sum())
    sd = (n * rate * (1 - rate)) ** 0.5
    assert abs(masked - n * rate) < 5 * sd, masked  # binomial(n, r): 5 standard deviations
    torch.testing.assert_close(clicked[clicked != DEFAULT], 3 + item_idx[clicked != DEFAULT])  # the others keep their id
    assert ssl_views.numel() == 2 * 32 and not (ssl_views == DEFAULT).any()  # "dropout" SSL never masks an id

    m.eval()  # evaluation embeds every clicked item with its own id
    m(users, item_idx, corpus(), g)
    assert not (seen[-1]["item"][:n] == DEFAULT).any()


def test_id_dropout_zero_leaves_the_click_batch_as_it_was():
    seen = item_tower_inputs(m := model(augmentation="dropout", id_dropout=0.0, mixed_negatives=0))
    g = torch.Generator().manual_seed(8)
    users, item_idx = clicks(torch.randint(NUM_USERS, (64,), generator=g), g)
    m(users, item_idx, corpus(), g)
    torch.testing.assert_close(seen[-1]["item"][:64], 3 + item_idx)
