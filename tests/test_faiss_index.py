"""The FAISS export serves the ranking that evaluation measured: inner product on L2-normalized vectors."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
import torch
from deltalake import DeltaTable

from towerssl.lake import commit_metadata
from towerssl.trainer.ranking import top_k_items
from towerssl.trainer.faiss_index import (
    build_flat_index,
    build_ivf_index,
    load_index,
    read_item_embeddings,
    recall_vs_exact,
    save_index,
    search,
    unit_vectors,
    write_item_embeddings,
)

IVF_RECALL_FLOOR = 0.9  # nlist=32, nprobe=8 on 2,000 clustered items; measured 0.963


def clustered_unit_vectors(rng: np.random.Generator, n: int, dim: int, clusters: int) -> np.ndarray:
    """Item-like vectors: tight groups around random centres, L2-normalized (what the towers output)."""
    centres = rng.normal(size=(clusters, dim))
    vectors = centres[rng.integers(0, clusters, size=n)] + 0.35 * rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def catalogue():
    rng = np.random.default_rng(11)
    items = clustered_unit_vectors(rng, 2000, 32, 40)
    queries = clustered_unit_vectors(rng, 200, 32, 40)
    return items, queries


def test_item_embeddings_round_trip_through_delta_and_the_flat_index_equals_exact_search(spark, tmp_path, catalogue):
    items, queries = catalogue
    item_idx = np.arange(len(items), dtype=np.int32)
    item_id = (item_idx.astype(np.int64) * 7919) + 10**12
    order = np.random.default_rng(0).permutation(len(items))  # written in any row order
    write_item_embeddings(tmp_path, "item_embeddings", item_idx[:5], item_id[:5], items[:5], "run-41", {"dim": 32})
    write_item_embeddings(tmp_path, "item_embeddings", item_idx[order], item_id[order], torch.from_numpy(items[order]), "run-42", {"dim": 32})

    # Written by delta-rs, read by the project's SparkSession: the latest version, its schema and commit record.
    table = spark.read.format("delta").load(str(tmp_path / "item_embeddings"))
    assert [(f.name, f.dataType.simpleString(), f.nullable) for f in table.schema.fields] == [("item_idx", "int", False), ("item_id", "bigint", False), ("embedding", "array<float>", False)]
    assert commit_metadata(spark, tmp_path, "item_embeddings") == {"run_id": "run-42", "config": {"dim": 32}}
    by_spark = {r.item_idx: (r.item_id, r.embedding) for r in table.collect()}
    assert len(by_spark) == len(items) and by_spark[17] == (item_id[17], items[17].tolist())
    # ... and by delta-rs itself.
    delta = DeltaTable(str(tmp_path / "item_embeddings"))
    assert delta.version() == 1 and json.loads(delta.history(1)[0]["userMetadata"])["run_id"] == "run-42"
    assert delta.to_pyarrow_table().num_rows == len(items)
    read_idx, read_id, exported = read_item_embeddings(tmp_path, "item_embeddings")
    np.testing.assert_array_equal(read_idx, item_idx)
    np.testing.assert_array_equal(read_id, item_id)
    np.testing.assert_array_equal(exported, items)  # bit for bit

    index = build_flat_index(exported)
    scores, found = search(index, queries, 100)
    exact = top_k_items(queries, exported, 100).numpy()
    assert_same_ranking(found, exact, queries.astype(np.float64) @ exported.T.astype(np.float64))
    np.testing.assert_allclose(scores, (queries.astype(np.float64) @ exported.T.astype(np.float64))[np.arange(len(queries))[:, None], exact], atol=1e-6)
    assert recall_vs_exact(index, queries, exported, 100) >= 0.999


def assert_same_ranking(found: np.ndarray, exact: np.ndarray, scores: np.ndarray) -> None:
    """Same ranked lists, except that FAISS (float32 sums) may swap items whose exact scores differ by
    less than float32 resolution: rank by rank, the exact scores of both lists agree within 1e-6."""
    rows = np.arange(len(found))[:, None]
    np.testing.assert_allclose(scores[rows, found], scores[rows, exact], rtol=0, atol=1e-6)
    differing = (found != exact).mean()
    print(f"flat index vs exact: {differing:.5f} of ranks hold a different item (float32 near-ties only)")
    assert differing < 1e-3


def test_ivf_recall_is_measured_against_exact_search(catalogue):
    items, queries = catalogue
    ivf = build_ivf_index(items, nlist=32, nprobe=8)
    recall = recall_vs_exact(ivf, queries, items, 50)
    print(f"IVF nlist=32 nprobe=8: recall@50 vs exact = {recall:.4f} (floor {IVF_RECALL_FLOOR})")
    assert IVF_RECALL_FLOOR <= recall < 1.0
    ivf.nprobe = 32  # every cell searched: exhaustive, hence exact
    assert recall_vs_exact(ivf, queries, items, 50) == 1.0


def test_saved_index_loads_with_its_settings_and_a_non_inner_product_index_is_refused(tmp_path, catalogue):
    items, queries = catalogue
    ivf = build_ivf_index(items, nlist=16, nprobe=4, seed=3)
    loaded = load_index(save_index(ivf, tmp_path / "index" / "items.faiss"))
    assert faiss.extract_index_ivf(loaded).nprobe == 4 and loaded.ntotal == len(items)
    for before, after in zip(search(ivf, queries, 20), search(loaded, queries, 20)):
        np.testing.assert_array_equal(before, after)
    l2 = faiss.IndexFlatL2(items.shape[1])
    l2.add(items)
    faiss.write_index(l2, str(tmp_path / "l2.faiss"))
    with pytest.raises(ValueError, match="not inner product"):
        load_index(tmp_path / "l2.faiss")


def test_vectors_must_be_unit_norm_unless_normalization_is_asked_for():
    raw = np.array([[3.0, 4.0], [0.0, 2.0]])
    with pytest.raises(ValueError, match="row 0 has L2 norm 5.000000"):
        build_flat_index(raw)
    np.testing.assert_allclose(unit_vectors(raw, "items", normalize=True), [[0.6, 0.8], [0.0, 1.0]], rtol=1e-7)
    index = build_flat_index(raw, normalize=True)
    scores, found = search(index, np.array([[10.0, 0.0]]), 2)  # the query scale does not change the ranking
    np.testing.assert_array_equal(found, [[0, 1]])
    np.testing.assert_allclose(scores, [[0.6, 0.0]], atol=1e-7)
    with pytest.raises(ValueError, match="row 1 is zero"):
        unit_vectors(np.array([[1.0, 0.0], [0.0, 0.0]]), "items", normalize=True)
    with pytest.raises(ValueError, match="nprobe"):
        build_ivf_index(unit_vectors(raw, "items", normalize=True), nlist=3, nprobe=1)
