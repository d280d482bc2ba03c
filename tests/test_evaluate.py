"""Retrieval evaluation against float64 references written straight from the definitions (docs/evaluation.md)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from towerssl.trainer.metrics import COLD_USERS, ITEM_SLICES, KS, NO_DECILE, OVERALL, EvaluationData, evaluate, ranking_metrics, recall_by_decile
from towerssl.trainer.ranking import UserItems, popularity_top_k, top_k_items
from towerssl.trainer.reporting import plot_recall_by_decile, write_evaluation

SLICES = (OVERALL, *ITEM_SLICES)


# ---------------------------------------------------------------------------- references (float64, loops)


def reference_top_k(user_emb: np.ndarray, item_emb: np.ndarray, k: int, excluded: list[set[int]]) -> np.ndarray:
    """Full sort of every user's float64 scores: score descending, then item index ascending."""
    top = np.full((len(user_emb), k), -1)
    for u, user in enumerate(user_emb.astype(np.float64)):
        scores = [float(np.sum(user * item)) for item in item_emb.astype(np.float64)]
        ranked = sorted((i for i in range(len(item_emb)) if i not in excluded[u]), key=lambda i: (-scores[i], i))[:k]
        top[u, : len(ranked)] = ranked
    return top


def reference_popularity(clicks: np.ndarray, k: int, excluded: list[set[int]]) -> np.ndarray:
    ranked = sorted(range(len(clicks)), key=lambda i: (-clicks[i], i))
    top = np.full((len(excluded), k), -1)
    for u, seen in enumerate(excluded):
        kept = [i for i in ranked if i not in seen][:k]
        top[u, : len(kept)] = kept
    return top


def reference_metrics(top: np.ndarray, relevant: list[set[int]], bucket: np.ndarray, k: int, name: str) -> tuple[float | None, float | None]:
    """Recall@k and NDCG@k of one slice, pair by pair."""
    in_slice = (lambda i: True) if name == OVERALL else (lambda i: bucket[i] == name)
    found = total = 0
    ndcgs = []
    for u, items in enumerate(relevant):
        pairs = {i for i in items if in_slice(i)}
        if not pairs:
            continue
        total += len(pairs)
        dcg = 0.0
        for rank, item in enumerate(top[u, :k], start=1):
            if item in pairs:
                found += 1
                dcg += 1.0 / math.log2(rank + 1)
        ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(pairs), k) + 1))
        ndcgs.append(dcg / ideal)
    return (found / total, sum(ndcgs) / len(ndcgs)) if total else (None, None)


def assert_close(actual: float | None, expected: float | None) -> None:
    assert (actual is None) == (expected is None), (actual, expected)
    if expected is not None:
        assert actual == pytest.approx(expected, rel=1e-12, abs=1e-15)


# ---------------------------------------------------------------------------- data


def random_sets(rng: np.random.Generator, n_rows: int, n_items: int, most: int) -> list[set[int]]:
    return [set(rng.choice(n_items, size=rng.integers(0, most + 1), replace=False).tolist()) for _ in range(n_rows)]


def csr(sets: list[set[int]]) -> UserItems:
    return UserItems.from_lists([np.array(sorted(s), dtype=np.int64) for s in sets])


@pytest.fixture(scope="module")
def dataset():
    """A random catalogue with every bucket, duplicate clicks, re-clicked training items, new items
    (never in training), warm users and cold users (evaluation clicks, no training click)."""
    rng = np.random.default_rng(7)
    n_users, n_items, dim = 60, 150, 12
    bucket = rng.choice(["head", "torso", "tail"], size=n_items)
    new_items = rng.choice(n_items, size=15, replace=False)
    bucket[new_items] = "new"
    decile = rng.integers(1, 11, size=n_items)
    decile[new_items] = NO_DECILE
    trained = np.setdiff1d(np.arange(n_items), new_items)
    cold = np.arange(50, 60)
    train_users = rng.choice(np.arange(50), size=900)
    train_items = rng.choice(trained, size=900, p=np.linspace(2, 1, trained.size) / np.linspace(2, 1, trained.size).sum())
    eval_users = rng.choice(n_users, size=400)
    eval_items = rng.integers(0, n_items, size=400)
    eval_users[:5], eval_items[:5] = train_users[:5], train_items[:5]  # re-clicks of training items
    data = EvaluationData.from_arrays(train_users, train_items, eval_users, eval_items, bucket, decile)
    assert data.cold_users.size and set(data.cold_users) <= set(cold)
    item_emb = rng.normal(size=(n_items, dim)).astype(np.float32)
    user_emb = rng.normal(size=(n_users, dim)).astype(np.float32)
    return data, item_emb, user_emb, (train_users, train_items, eval_users, eval_items)


# ---------------------------------------------------------------------------- top-K


def test_top_k_equals_full_sort_with_exclusion_for_every_chunk_size():
    rng = np.random.default_rng(0)
    n_users, n_items, dim, k = 23, 57, 8, 20
    item_emb = rng.normal(size=(n_items, dim)).astype(np.float32)
    item_emb[40] = item_emb[5]  # an exact tie: the lower index must come first
    user_emb = rng.normal(size=(n_users, dim)).astype(np.float32)
    excluded = random_sets(rng, n_users, n_items, 8)
    excluded[3] = set(range(n_items - 10))  # fewer rankable items than k: the rest is -1
    expected = reference_top_k(user_emb, item_emb, k, excluded)
    assert (expected[3, 10:] == -1).all()
    assert any(5 in row and 40 in row for row in expected)  # the tie is inside some top-k lists
    forms = {
        "csr tuple": (csr(excluded).indptr, csr(excluded).indices),
        "per-user list": [np.array(sorted(s), dtype=np.int64) for s in excluded],
        "UserItems": csr(excluded),
    }
    for form, exclude in forms.items():
        for chunk in (1, 7, n_users):
            top = top_k_items(torch.from_numpy(user_emb), item_emb, k, exclude, chunk_users=chunk)
            assert top.dtype == torch.int64 and top.shape == (n_users, k)
            np.testing.assert_array_equal(top.numpy(), expected, err_msg=f"{form}, chunk {chunk}")


def test_top_k_breaks_ties_by_lower_item_index_including_signed_zeros():
    items = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [2.0, 0.0]])
    users = np.zeros((3, 2))  # every score is +0.0 or -0.0: all tied
    top = top_k_items(users, items, 3, [np.array([1]), np.array([], dtype=np.int64), np.array([0, 2])], chunk_users=2)
    np.testing.assert_array_equal(top.numpy(), [[0, 2, 3], [0, 1, 2], [1, 3, 4]])


def test_top_k_rejects_bad_input():
    with pytest.raises(ValueError, match="dimension"):
        top_k_items(np.ones((2, 3)), np.ones((4, 2)), 2)
    with pytest.raises(ValueError, match="NaN or infinite"):
        top_k_items(np.array([[np.nan, 1.0]]), np.ones((4, 2)), 2)
    with pytest.raises(ValueError, match="outside 0..3"):
        top_k_items(np.ones((1, 2)), np.ones((4, 2)), 2, [np.array([4])])


def test_popularity_top_k_equals_reference():
    rng = np.random.default_rng(1)
    n_users, n_items, k = 31, 40, 12
    clicks = rng.integers(0, 6, size=n_items)  # many ties
    excluded = random_sets(rng, n_users, n_items, 15)
    excluded[0] = set(range(35))  # only 5 rankable
    expected = reference_popularity(clicks, k, excluded)
    for chunk in (1, 7, n_users):
        np.testing.assert_array_equal(popularity_top_k(clicks, k, n_users, csr(excluded), chunk_users=chunk).numpy(), expected)
    np.testing.assert_array_equal(popularity_top_k(clicks, k, 2).numpy(), reference_popularity(clicks, k, [set(), set()]))


# ---------------------------------------------------------------------------- metrics


def test_ranking_metrics_equal_pair_by_pair_reference():
    rng = np.random.default_rng(2)
    n_users, n_items = 40, 130
    bucket = rng.choice(np.array(ITEM_SLICES), size=n_items)
    top = np.stack([rng.permutation(n_items)[: max(KS)] for _ in range(n_users)])
    top[0, 60:] = -1  # a user with few rankable items
    relevant = random_sets(rng, n_users, n_items, 40)
    relevant[1] = set()
    relevant[2] = {int(i) for i in top[2, :15]}  # some certain hits
    metrics, counts = ranking_metrics(torch.from_numpy(top), csr(relevant), bucket, KS)
    for k in KS:
        for name in SLICES:
            recall, ndcg = reference_metrics(top, relevant, bucket, k, name)
            assert_close(metrics[f"recall@{k}"][name], recall)
            assert_close(metrics[f"ndcg@{k}"][name], ndcg)
    for name in SLICES:
        pairs = [{i for i in s if name == OVERALL or bucket[i] == name} for s in relevant]
        assert counts[name] == {"users": sum(1 for p in pairs if p), "items": len(set().union(*pairs)), "pairs": sum(map(len, pairs))}
    # Without slice labels (training's validation): the same overall numbers, and no other slice.
    overall, overall_counts = ranking_metrics(top, csr(relevant), ks=KS)
    assert overall == {metric: {OVERALL: by_slice[OVERALL]} for metric, by_slice in metrics.items()}
    assert overall_counts == {OVERALL: counts[OVERALL]}


def test_empty_slice_gives_none_and_a_repeated_item_is_refused():
    bucket = np.array(["head", "tail", "head", "torso"])
    top = np.full((2, 100), -1)
    top[:, :4] = [[0, 1, 2, 3], [3, 1, 2, 0]]
    metrics, counts = ranking_metrics(top, csr([{0}, {1, 3}]), bucket, KS)
    assert metrics["recall@10"]["new"] is None and metrics["ndcg@10"]["new"] is None
    assert counts["new"] == {"users": 0, "items": 0, "pairs": 0}
    assert metrics["recall@10"]["overall"] == 1.0 and metrics["ndcg@10"]["overall"] == 1.0
    top[1, 5] = 2
    with pytest.raises(ValueError, match="row 1 ranks an item twice"):
        ranking_metrics(top, csr([{0}, {1, 3}]), bucket, KS)


def test_recall_by_decile_equals_reference():
    rng = np.random.default_rng(3)
    n_users, n_items = 30, 120
    decile = rng.integers(1, 11, size=n_items)
    decile[:7] = NO_DECILE
    top = np.stack([rng.permutation(n_items)[:100] for _ in range(n_users)])
    relevant = random_sets(rng, n_users, n_items, 30)
    result = recall_by_decile(top, csr(relevant), decile, KS)
    for k in KS:
        assert sorted(result[f"recall@{k}"]) == list(range(1, 11))
        for d in range(1, 11):
            pairs = [(u, i) for u, s in enumerate(relevant) for i in s if decile[i] == d]
            found = sum(1 for u, i in pairs if i in top[u, :k])
            assert_close(result[f"recall@{k}"][d], found / len(pairs) if pairs else None)


# ---------------------------------------------------------------------------- full evaluation


def test_evaluate_equals_reference_and_does_not_depend_on_chunk_size(dataset):
    data, item_emb, user_emb, (train_users, train_items, eval_users, eval_items) = dataset
    n_users = data.train.n_rows
    train_sets = [set(train_items[train_users == u].tolist()) for u in range(n_users)]
    eval_sets = [set(eval_items[eval_users == u].tolist()) for u in range(n_users)]
    warm = [u for u in range(n_users) if train_sets[u] and eval_sets[u]]
    cold = [u for u in range(n_users) if not train_sets[u] and eval_sets[u]]
    np.testing.assert_array_equal(data.warm_users, warm)
    np.testing.assert_array_equal(data.cold_users, cold)
    relevant = [eval_sets[u] - train_sets[u] for u in warm]  # re-clicked training items are dropped
    clicks = np.bincount(train_items, minlength=len(item_emb))

    shuffled = np.random.default_rng(0).permutation(n_users)  # embedding rows in any user order
    runs = [evaluate(data, item_emb, shuffled, user_emb[shuffled], chunk_users=chunk) for chunk in (1, 7, n_users)]
    assert runs[0] == runs[1] == runs[2]
    metrics = runs[0].metrics

    tops = {
        "model": reference_top_k(user_emb[warm], item_emb, max(KS), [train_sets[u] for u in warm]),
        "baseline": reference_popularity(clicks, max(KS), [train_sets[u] for u in warm]),
    }
    cold_tops = {
        "model": reference_top_k(user_emb[cold], item_emb, max(KS), [set()] * len(cold)),
        "baseline": reference_popularity(clicks, max(KS), [set()] * len(cold)),
    }
    for name, shaped in (("model", metrics), ("baseline", metrics["baseline"])):
        for k in KS:
            for slice_name in SLICES:
                recall, ndcg = reference_metrics(tops[name], relevant, data.item_bucket, k, slice_name)
                assert_close(shaped[f"recall@{k}"][slice_name], recall)
                assert_close(shaped[f"ndcg@{k}"][slice_name], ndcg)
            recall, ndcg = reference_metrics(cold_tops[name], [eval_sets[u] for u in cold], data.item_bucket, k, OVERALL)
            assert_close(shaped[f"recall@{k}"][COLD_USERS], recall)
            assert_close(shaped[f"ndcg@{k}"][COLD_USERS], ndcg)
    assert metrics["counts"][OVERALL]["pairs"] == sum(map(len, relevant))
    assert metrics["counts"][COLD_USERS] == {"users": len(cold), "items": len(set().union(*(eval_sets[u] for u in cold))), "pairs": sum(len(eval_sets[u]) for u in cold)}
    assert metrics["counts"]["new"]["pairs"] > 0


def test_evaluate_without_cold_embeddings_has_no_cold_slice_and_needs_every_warm_user(dataset):
    data, item_emb, user_emb, _ = dataset
    warm = data.warm_users
    metrics = evaluate(data, item_emb, warm, user_emb[warm]).metrics
    assert COLD_USERS not in metrics["recall@10"] and COLD_USERS not in metrics["counts"]
    with pytest.raises(ValueError, match="warm users have no embedding"):
        evaluate(data, item_emb, warm[1:], user_emb[warm[1:]])
    with pytest.raises(ValueError, match="cold users have no embedding"):
        with_one_cold = np.append(warm, data.cold_users[0])
        evaluate(data, item_emb, with_one_cold, user_emb[with_one_cold])
    with pytest.raises(ValueError, match="new items included"):
        evaluate(data, item_emb[:-1], warm, user_emb[warm])


def test_evaluation_data_rejects_bad_input():
    bucket = np.array(["head", "tail", "new"])
    with pytest.raises(ValueError, match=r"test_clicks.item_idx\[1\] = 3 is outside 0..2"):
        EvaluationData.from_arrays(np.array([0]), np.array([0]), np.array([0, 0]), np.array([1, 3]), bucket, np.zeros(3))
    with pytest.raises(ValueError, match="bucket of item_idx 1 is 'warm'"):
        EvaluationData.from_arrays(np.array([0]), np.array([0]), np.array([0]), np.array([1]), np.array(["head", "warm", "new"]), np.zeros(3))


def test_write_evaluation_has_the_documented_shape(dataset, tmp_path):
    data, item_emb, user_emb, _ = dataset
    evaluation = evaluate(data, item_emb, np.arange(len(user_emb)), user_emb)
    paths = write_evaluation(evaluation, tmp_path / "eval", plot_k=50)
    metrics = json.loads(paths["metrics"].read_text())
    metric_names = [f"{m}@{k}" for k in KS for m in ("recall", "ndcg")]
    slices = {*SLICES, COLD_USERS}
    assert set(metrics) == {*metric_names, "baseline", "counts"}
    assert set(metrics["baseline"]) == set(metric_names)
    for shaped in (metrics, metrics["baseline"]):
        for name in metric_names:
            assert set(shaped[name]) == slices
            assert all(0.0 <= v <= 1.0 for v in shaped[name].values())
    assert set(metrics["counts"]) == slices
    assert all(set(c) == {"users", "items", "pairs"} and all(isinstance(v, int) for v in c.values()) for c in metrics["counts"].values())
    deciles = json.loads(paths["deciles"].read_text())
    assert set(deciles) == {"model", "baseline"} and set(deciles["model"]["recall@50"]) == {str(d) for d in range(1, 11)}
    png = paths["plot"].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    # Several named variants from the JSON (string decile keys) on one figure.
    curves = {"variant A": deciles["model"]["recall@50"], "variant B": deciles["model"]["recall@10"], "popularity": deciles["baseline"]["recall@50"]}
    variants = plot_recall_by_decile(curves, "recall@50", tmp_path / "variants.png")
    assert variants.read_bytes().startswith(b"\x89PNG") and variants.stat().st_size > 5000
