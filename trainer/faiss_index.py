"""Export of the item tower: item embeddings as a Delta table and a FAISS index for serving.

Training scores user-item pairs by the inner product of L2-normalized vectors, so the index is an
inner-product index over unit vectors (inner product = cosine); any other metric would serve a different
ranking than the one evaluated. Index label = row = item_idx.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import torch

from towerssl.delta_rs import snapshot, write_arrow
from towerssl.lake import read_snapshot
from towerssl.trainer.ranking import ArrayLike, top_k_items

log = logging.getLogger(__name__)

UNIT_NORM_TOLERANCE = 1e-3


def unit_vectors(x: ArrayLike, what: str, normalize: bool = False) -> np.ndarray:
    """float32 C-contiguous unit rows. normalize=False requires rows already unit-norm (the towers'
    output) and only removes rounding drift; normalize=True scales any non-zero row to unit norm."""
    array = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{what}: expected a 2-d matrix, got shape {array.shape}")
    norms = np.linalg.norm(array, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if bad.size:
        raise ValueError(f"{what}: row {bad[0]} is zero or not finite ({bad.size} such rows)")
    drift = np.abs(norms - 1.0)
    if not normalize and drift.max(initial=0.0) > UNIT_NORM_TOLERANCE:
        row = int(drift.argmax())
        raise ValueError(
            f"{what}: row {row} has L2 norm {norms[row]:.6f}; inner product = cosine needs L2-normalized vectors "
            "(normalize=True to scale them)"
        )
    return np.ascontiguousarray(array / norms[:, None], dtype=np.float32)


def build_flat_index(item_emb: ArrayLike, normalize: bool = False) -> faiss.IndexFlatIP:
    """Exact inner-product index over the unit item vectors."""
    vectors = unit_vectors(item_emb, "item_emb", normalize)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def build_ivf_index(item_emb: ArrayLike, nlist: int, nprobe: int, normalize: bool = False, seed: int = 0) -> faiss.IndexIVFFlat:
    """Approximate inner-product index: k-means into nlist cells, nprobe cells searched per query.
    Measure its recall with recall_vs_exact before serving it."""
    vectors = unit_vectors(item_emb, "item_emb", normalize)
    if not 1 <= nlist <= vectors.shape[0] or not 1 <= nprobe <= nlist:
        raise ValueError(f"need 1 <= nprobe <= nlist <= n_items, got nprobe={nprobe}, nlist={nlist}, n_items={vectors.shape[0]}")
    quantizer = faiss.IndexFlatIP(vectors.shape[1])
    index = faiss.IndexIVFFlat(quantizer, vectors.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(vectors)
    index.add(vectors)
    index.nprobe = nprobe
    index.own_fields = True  # keep the quantizer alive with the index
    quantizer.this.disown()
    return index


def search(index: faiss.Index, queries: ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(cosine scores [Q, k], item_idx [Q, k]); queries are normalized (a ranking-invariant scaling)."""
    return index.search(unit_vectors(queries, "queries", normalize=True), k)


def recall_vs_exact(index: faiss.Index, queries: ArrayLike, item_emb: ArrayLike, k: int, normalize: bool = False) -> float:
    """Share of the exact top-k (inner product on the same unit vectors) that the index returns."""
    vectors = unit_vectors(item_emb, "item_emb", normalize)
    if index.ntotal != vectors.shape[0]:
        raise ValueError(f"the index holds {index.ntotal} vectors but item_emb has {vectors.shape[0]} rows")
    unit_queries = unit_vectors(queries, "queries", normalize=True)
    exact = top_k_items(unit_queries, vectors, k).numpy()
    _, found = index.search(unit_queries, k)
    hits = (exact[:, :, None] == found[:, None, :]).any(axis=2)
    return float(hits.mean())


def save_index(index: faiss.Index, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(path))
    return path


def load_index(path: str | Path) -> faiss.Index:
    """Read an index and refuse one whose metric is not inner product."""
    index = faiss.read_index(str(path))
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ValueError(f"{path}: FAISS metric {index.metric_type} is not inner product; training ranks by inner product")
    return index


ITEM_EMBEDDINGS_SCHEMA = pa.schema(
    [
        pa.field("item_idx", pa.int32(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("embedding", pa.list_(pa.field("element", pa.float32(), nullable=False)), nullable=False),
    ]
)


def write_item_embeddings(
    lake_or_dir: str | Path,
    table: str,
    item_idx: ArrayLike,
    item_id: ArrayLike,
    emb: ArrayLike,
    run_id: str,
    config: dict[str, Any],
) -> None:
    """Item embeddings as a Delta table (item_idx int, item_id long, embedding array<float>), one delta-rs
    commit recording run_id and config (no JVM; Spark reads it too). The vectors are written as given (float32)."""
    vectors = np.asarray(emb.detach().cpu() if isinstance(emb, torch.Tensor) else emb, dtype=np.float32)
    idx = np.asarray(item_idx, dtype=np.int32)
    ids = np.asarray(item_id, dtype=np.int64)
    if vectors.ndim != 2 or not (vectors.shape[0] == idx.size == ids.size):
        raise ValueError(f"{table}: {idx.size} item_idx, {ids.size} item_id and embedding shape {vectors.shape} disagree")
    if not np.isfinite(vectors).all():
        raise ValueError(f"{table}: embedding of row {int(np.flatnonzero(~np.isfinite(vectors).all(1))[0])} is not finite")
    flat = pa.array(np.ascontiguousarray(vectors).reshape(-1), type=pa.float32())
    offsets = pa.array(np.arange(idx.size + 1, dtype=np.int32) * vectors.shape[1])
    embedding = pa.ListArray.from_arrays(offsets, flat, type=ITEM_EMBEDDINGS_SCHEMA.field("embedding").type)
    data = pa.Table.from_arrays([pa.array(idx), pa.array(ids), embedding], schema=ITEM_EMBEDDINGS_SCHEMA)
    write_arrow(data, lake_or_dir, table, run_id, config)
    log.info("wrote %d item embeddings of dimension %d to %s", idx.size, vectors.shape[1], table)


def read_item_embeddings(lake_or_dir: str | Path, table: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item_idx [n], item_id [n], embedding float32 [n, D]) of the latest version, ordered by item_idx."""
    data = read_snapshot(snapshot(lake_or_dir, table), ["item_idx", "item_id", "embedding"], rerun="export")
    order = np.argsort(data.column("item_idx").to_numpy(), kind="stable")
    flat = data.column("embedding").combine_chunks()
    dim = len(flat[0]) if len(flat) else 0
    vectors = flat.flatten().to_numpy().reshape(len(flat), dim).astype(np.float32)
    return data.column("item_idx").to_numpy()[order], data.column("item_id").to_numpy()[order], vectors[order]
