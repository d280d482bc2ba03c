"""Retrieval evaluation: exact top-K over all items, Recall@K and NDCG@K per popularity slice, a popularity
baseline in the same shape, and recall by popularity decile (JSON + PNG).

Model-independent: it takes embeddings (torch tensors or numpy arrays) and index arrays, so the same code
scores any tower variant. Definitions and the metrics.json shape are in docs/evaluation.md.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from towerssl.delta_rs import snapshot
from towerssl.lake import read_snapshot

log = logging.getLogger(__name__)

KS: tuple[int, ...] = (10, 50, 100)
ITEM_SLICES: tuple[str, ...] = ("head", "torso", "tail", "new")
OVERALL = "overall"
COLD_USERS = "cold_users"
SPLITS = {"test": "test_clicks", "valid": "valid_clicks"}
NO_DECILE = 0  # item_stats.decile of a new item; clicked items have deciles 1 (most clicked) .. 10

ArrayLike = torch.Tensor | np.ndarray


# ----------------------------------------------------------------------------------------------------------
# Per-user item sets


@dataclass(frozen=True)
class UserItems:
    """Distinct items per user in CSR form: the items of row u are indices[indptr[u]:indptr[u+1]], sorted.

    Sorted rows make the flat keys row * n_items + item sorted too, so membership is one searchsorted.
    """

    indptr: np.ndarray  # int64 [n_rows + 1]
    indices: np.ndarray  # int64 [nnz]

    @classmethod
    def from_pairs(cls, rows: np.ndarray, items: np.ndarray, n_rows: int, n_items: int, what: str = "pairs") -> UserItems:
        """Deduplicated (row, item) pairs; out-of-range values raise an error naming the array and position."""
        rows = _checked_index(rows, n_rows, f"{what}.user_idx")
        items = _checked_index(items, n_items, f"{what}.item_idx")
        if rows.shape != items.shape:
            raise ValueError(f"{what}: {rows.size} user_idx values but {items.size} item_idx values")
        keys = np.unique(rows * n_items + items)
        counts = np.bincount(keys // n_items, minlength=n_rows)
        return cls(np.concatenate(([0], np.cumsum(counts))).astype(np.int64), keys % n_items)

    @classmethod
    def from_lists(cls, lists: Sequence[ArrayLike]) -> UserItems:
        """One array of item indices per user (duplicates allowed)."""
        arrays = [np.unique(np.asarray(items, dtype=np.int64)) for items in lists]
        counts = np.array([a.size for a in arrays], dtype=np.int64)
        indices = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
        return cls(np.concatenate(([0], np.cumsum(counts))).astype(np.int64), indices.astype(np.int64))

    @classmethod
    def empty(cls, n_rows: int) -> UserItems:
        return cls(np.zeros(n_rows + 1, dtype=np.int64), np.zeros(0, dtype=np.int64))

    @property
    def n_rows(self) -> int:
        return self.indptr.size - 1

    def counts(self) -> np.ndarray:
        return np.diff(self.indptr)

    def rows(self) -> np.ndarray:
        """The row of every stored item."""
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), self.counts())

    def keys(self, n_items: int) -> np.ndarray:
        """Sorted flat keys row * n_items + item."""
        return self.rows() * n_items + self.indices

    def slice_rows(self, start: int, stop: int) -> UserItems:
        lo, hi = self.indptr[start], self.indptr[stop]
        return UserItems(self.indptr[start : stop + 1] - lo, self.indices[lo:hi])

    def take(self, rows: np.ndarray) -> UserItems:
        """The given rows, in the given order."""
        rows = np.asarray(rows, dtype=np.int64)
        counts = self.indptr[rows + 1] - self.indptr[rows]
        indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        gather = np.repeat(self.indptr[rows] - indptr[:-1], counts) + np.arange(indptr[-1], dtype=np.int64)
        return UserItems(indptr, self.indices[gather])

    def without(self, other: UserItems, n_items: int) -> UserItems:
        """Pairs of self that are not pairs of other (same rows)."""
        keep = ~np.isin(self.keys(n_items), other.keys(n_items), assume_unique=True)
        counts = np.bincount(self.rows()[keep], minlength=self.n_rows)
        return UserItems(np.concatenate(([0], np.cumsum(counts))).astype(np.int64), self.indices[keep])


Exclusion = UserItems | tuple[np.ndarray, np.ndarray] | Sequence[ArrayLike]


def as_user_items(exclude: Exclusion, n_rows: int, n_items: int) -> UserItems:
    """A tuple is read as CSR (indptr, indices); a list (or other sequence) as one item array per user."""
    if isinstance(exclude, tuple):
        indptr, indices = (np.asarray(a, dtype=np.int64) for a in exclude)
        rows = np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))
        result = UserItems.from_pairs(rows, indices, indptr.size - 1, n_items, what="exclude")
    elif isinstance(exclude, UserItems):
        result = exclude
    else:
        result = UserItems.from_lists(exclude)
    if result.n_rows != n_rows:
        raise ValueError(f"exclude has {result.n_rows} users but there are {n_rows} user embeddings")
    if result.indices.size and (result.indices.min() < 0 or result.indices.max() >= n_items):
        raise ValueError(f"exclude holds item indices outside 0..{n_items - 1}")
    return result


def _checked_index(values: ArrayLike, size: int, what: str) -> np.ndarray:
    values = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{what}: expected a 1-d integer array, got shape {values.shape} dtype {values.dtype}")
    bad = np.flatnonzero((values < 0) | (values >= size))
    if bad.size:
        raise ValueError(f"{what}[{bad[0]}] = {values[bad[0]]} is outside 0..{size - 1} ({bad.size} such rows)")
    return values.astype(np.int64, copy=False)


# ----------------------------------------------------------------------------------------------------------
# Exact top-K


def _as_matrix(x: ArrayLike, what: str) -> torch.Tensor:
    tensor = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if tensor.ndim != 2:
        raise ValueError(f"{what}: expected a 2-d matrix, got shape {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{what}: holds NaN or infinite values (row {int((~torch.isfinite(tensor)).any(1).nonzero()[0])})")
    return tensor.detach()


def _rank_exactly(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k best items per row by (score descending, item index ascending).

    Used for the rows whose k-th and (k+1)-th scores tie, where topk's choice among equal scores is not
    specified. Each float32 bit pattern is mapped to an order-preserving int32 (negatives flip their
    magnitude bits; adding +0.0 folds -0.0 into +0.0) and the reversed item index fills the low 32 bits,
    so all keys are distinct and one topk decides.
    """
    bits = (scores + 0.0).view(torch.int32)
    ordered = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)
    tie_rank = torch.arange(scores.shape[1] - 1, -1, -1, dtype=torch.int64, device=scores.device)
    return (ordered.to(torch.int64) * (1 << 32) + tie_rank).topk(k, dim=1).indices


def _order_by_score_then_index(values: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """chosen [R, k] reordered by value descending, ties by lower index (two stable sorts)."""
    by_index, permutation = chosen.sort(dim=1)
    _, by_value = values.gather(1, permutation).sort(dim=1, descending=True, stable=True)
    return by_index.gather(1, by_value)


def top_k_items(
    user_emb: ArrayLike,
    item_emb: ArrayLike,
    k: int,
    exclude: Exclusion | None = None,
    chunk_users: int = 1024,
) -> torch.Tensor:
    """Exact inner-product top-k items of every user: LongTensor [U, k] on the CPU, best first.

    Scores are computed chunk_users users at a time on user_emb's device (peak about
    12 * chunk_users * n_items bytes), each user's excluded items (their training items) are never
    returned, ties go to the lower item index, and the result does not depend on chunk_users: scores are
    accumulated in float64 and rounded to float32, so the last-bit differences between the BLAS kernels
    picked for different chunk shapes do not reorder items, and equal float32 scores are ordered by index.
    Positions beyond the user's rankable items (k > items not excluded) hold -1.
    """
    users = _as_matrix(user_emb, "user_emb")
    items = _as_matrix(item_emb, "item_emb").to(users.device, torch.float64)
    if users.shape[1] != items.shape[1]:
        raise ValueError(f"user_emb has dimension {users.shape[1]} but item_emb has {items.shape[1]}")
    if k < 1 or chunk_users < 1:
        raise ValueError(f"k and chunk_users must be positive, got k={k}, chunk_users={chunk_users}")
    n_users, n_items = users.shape[0], items.shape[0]
    excluded = as_user_items(exclude, n_users, n_items) if exclude is not None else None
    k_ranked = min(k, n_items)
    top = torch.full((n_users, k), -1, dtype=torch.int64)
    started = time.perf_counter()
    for start in tqdm(range(0, n_users, chunk_users), desc="top-k", unit="chunk", disable=None, leave=False):
        stop = min(start + chunk_users, n_users)
        scores = (users[start:stop].to(torch.float64) @ items.T).to(torch.float32)
        if excluded is not None:
            block = excluded.slice_rows(start, stop)
            rows = torch.from_numpy(block.rows()).to(users.device)
            scores[rows, torch.from_numpy(block.indices).to(users.device)] = -math.inf
        values, chosen = scores.topk(min(k_ranked + 1, n_items), dim=1)
        chosen = _order_by_score_then_index(values[:, :k_ranked], chosen[:, :k_ranked])
        if k_ranked < n_items:  # a tie across the k-th place: which tied items made it is not specified
            tied = (values[:, k_ranked - 1] == values[:, k_ranked]).nonzero().squeeze(1)
            chosen[tied] = _rank_exactly(scores[tied], k_ranked)
        chosen[scores.gather(1, chosen) == -math.inf] = -1
        top[start:stop, :k_ranked] = chosen.cpu()
    elapsed = time.perf_counter() - started
    log.info("top-%d of %d items for %d users in %.2fs (%.0f users/s)", k, n_items, n_users, elapsed, n_users / max(elapsed, 1e-9))
    return top


def popularity_top_k(item_clicks: ArrayLike, k: int, n_users: int, exclude: Exclusion | None = None, chunk_users: int = 4096) -> torch.Tensor:
    """The popularity baseline's top-k: items by training clicks descending (ties: lower index), each
    user's excluded items skipped. LongTensor [n_users, k]; -1 past the user's rankable items.

    A user's top-k lies within the first k + |excluded| items of the global order, so each chunk only
    looks at that prefix.
    """
    clicks = np.asarray(item_clicks)
    n_items = clicks.size
    order = np.lexsort((np.arange(n_items), np.negative(clicks)))
    excluded = as_user_items(exclude, n_users, n_items) if exclude is not None else UserItems.empty(n_users)
    counts = excluded.counts()
    top = np.full((n_users, k), -1, dtype=np.int64)
    for start in range(0, n_users, chunk_users):
        stop = min(start + chunk_users, n_users)
        block = excluded.slice_rows(start, stop)
        width = min(n_items, k + int(counts[start:stop].max(initial=0)))
        candidates = np.broadcast_to(order[:width], (stop - start, width))
        keys = np.arange(stop - start, dtype=np.int64)[:, None] * n_items + candidates
        is_excluded = _contains(block.keys(n_items), keys)
        first = np.argsort(is_excluded, axis=1, kind="stable")[:, :k]  # rankable items first, in order
        chosen = np.take_along_axis(candidates, first, 1)
        top[start:stop, : first.shape[1]] = np.where(np.take_along_axis(is_excluded, first, 1), -1, chosen)
    return torch.from_numpy(top)


def _contains(sorted_keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Elementwise membership of queries in a sorted key array."""
    if sorted_keys.size == 0:
        return np.zeros(queries.shape, dtype=bool)
    position = np.searchsorted(sorted_keys, queries).clip(max=sorted_keys.size - 1)
    return sorted_keys[position] == queries


# ----------------------------------------------------------------------------------------------------------
# Metrics


def _as_ranking(top: ArrayLike, n_rows: int, ks: Sequence[int]) -> np.ndarray:
    """top as int64 numpy, checked: one row per user, at least max(ks) ranks, no item twice in a row."""
    top = np.asarray(top.cpu() if isinstance(top, torch.Tensor) else top, dtype=np.int64)
    if top.ndim != 2 or top.shape[0] != n_rows or top.shape[1] < max(ks):
        raise ValueError(f"top has shape {top.shape}; expected ({n_rows}, >= {max(ks)})")
    ordered = np.sort(top, axis=1)
    repeated = np.flatnonzero(((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any(axis=1))
    if repeated.size:
        raise ValueError(f"top: row {repeated[0]} ranks an item twice")
    return top


def _hits(top: np.ndarray, relevant: UserItems, n_items: int) -> np.ndarray:
    """hits[u, r]: the item at rank r of user u is one of u's relevant items."""
    keys = np.arange(top.shape[0], dtype=np.int64)[:, None] * n_items + top
    return _contains(relevant.keys(n_items), keys) & (top >= 0)


def ranking_metrics(
    top: ArrayLike, relevant: UserItems, item_slice: np.ndarray, ks: Sequence[int] = KS
) -> tuple[dict[str, dict[str, float | None]], dict[str, dict[str, int]]]:
    """Recall@K and NDCG@K per slice, and the users/pairs/items counted per slice.

    top: [U, >= max(ks)] ranked item indices (-1 = nothing); relevant: the U users' evaluation items;
    item_slice: the slice label of every item. Slices: "overall" and each of ITEM_SLICES.
    Recall@K(s) = found pairs of s / all pairs of s. NDCG@K(s) = mean over users with a pair in s of
    DCG/IDCG, DCG = sum of 1/log2(rank + 1) over ranks <= K holding an item of u's pairs in s,
    IDCG = the same for min(#pairs of u in s, K) hits at the first ranks. Empty slices give None.
    """
    top = _as_ranking(top, relevant.n_rows, ks)
    n_items = item_slice.size
    hits = _hits(top, relevant, n_items)
    slice_code = np.full(n_items, -1, dtype=np.int8)
    for code, name in enumerate(ITEM_SLICES):
        slice_code[item_slice == name] = code
    top_slice = slice_code[np.where(top >= 0, top, 0)]
    pair_rows, pair_slice = relevant.rows(), slice_code[relevant.indices]
    discount = 1.0 / np.log2(np.arange(2, max(ks) + 2, dtype=np.float64))
    ideal = np.concatenate(([0.0], np.cumsum(discount)))  # ideal[n] = IDCG of n hits
    metrics: dict[str, dict[str, float | None]] = {}
    counts: dict[str, dict[str, int]] = {}
    for code, name in enumerate((OVERALL, *ITEM_SLICES), start=-1):
        in_slice = np.ones(pair_slice.shape, bool) if name == OVERALL else pair_slice == code
        slice_hits = hits if name == OVERALL else hits & (top_slice == code)
        per_user = np.bincount(pair_rows[in_slice], minlength=relevant.n_rows)
        users = per_user > 0
        counts[name] = {"users": int(users.sum()), "items": int(np.unique(relevant.indices[in_slice]).size), "pairs": int(per_user.sum())}
        for k in ks:
            found = slice_hits[:, :k]
            recall = found.sum() / per_user.sum() if users.any() else None
            dcg = (found * discount[:k]).sum(axis=1)
            ndcg = float(np.mean(dcg[users] / ideal[np.minimum(per_user[users], k)])) if users.any() else None
            metrics.setdefault(f"recall@{k}", {})[name] = None if recall is None else float(recall)
            metrics.setdefault(f"ndcg@{k}", {})[name] = ndcg
    return metrics, counts


def recall_by_decile(top: ArrayLike, relevant: UserItems, item_decile: np.ndarray, ks: Sequence[int] = KS) -> dict[str, dict[int, float | None]]:
    """{"recall@K": {decile: found pairs whose item is in the decile / pairs in the decile}} over the
    positive deciles; items with decile NO_DECILE (new items) are left out (they are the "new" slice)."""
    top = _as_ranking(top, relevant.n_rows, ks)
    hits = _hits(top, relevant, item_decile.size)
    top_decile = np.where(hits, item_decile[np.where(top >= 0, top, 0)], NO_DECILE)
    pair_decile = item_decile[relevant.indices]
    deciles = np.unique(item_decile[item_decile > NO_DECILE])
    pairs = {int(d): int((pair_decile == d).sum()) for d in deciles}
    return {
        f"recall@{k}": {
            int(d): (float((top_decile[:, :k] == d).sum() / pairs[int(d)]) if pairs[int(d)] else None) for d in deciles
        }
        for k in ks
    }


# ----------------------------------------------------------------------------------------------------------
# Evaluation data and the full evaluation


@dataclass(frozen=True)
class EvaluationData:
    """Everything evaluation needs besides embeddings, indexed by user_idx / item_idx."""

    n_items: int
    train: UserItems  # distinct training items per user_idx
    evaluation: UserItems  # distinct evaluation items per user_idx (same rows as train)
    item_clicks: np.ndarray  # training clicks per item (the popularity baseline's score)
    item_bucket: np.ndarray  # head / torso / tail / new per item
    item_decile: np.ndarray  # item_stats.decile per item: 1..10, NO_DECILE for new items

    @classmethod
    def from_arrays(
        cls,
        train_users: np.ndarray,
        train_items: np.ndarray,
        eval_users: np.ndarray,
        eval_items: np.ndarray,
        item_bucket: np.ndarray,
        item_decile: np.ndarray,
        split: str = "test",
    ) -> EvaluationData:
        n_items = len(item_bucket)
        item_bucket = np.asarray(item_bucket).astype(str)
        unknown = np.flatnonzero(~np.isin(item_bucket, ITEM_SLICES))
        if unknown.size:
            raise ValueError(f"item_stats.bucket of item_idx {unknown[0]} is {item_bucket[unknown[0]]!r}; expected one of {ITEM_SLICES}")
        item_decile = np.asarray(item_decile, dtype=np.int64)
        if item_decile.shape != (n_items,):
            raise ValueError(f"item_stats.decile has {item_decile.size} values for {n_items} items")
        train_items_checked = _checked_index(train_items, n_items, "train_clicks.item_idx")
        train_users = np.asarray(train_users)
        eval_users = np.asarray(eval_users)
        n_users = int(max(train_users.max(initial=-1), eval_users.max(initial=-1))) + 1
        return cls(
            n_items=n_items,
            train=UserItems.from_pairs(train_users, train_items_checked, n_users, n_items, "train_clicks"),
            evaluation=UserItems.from_pairs(eval_users, eval_items, n_users, n_items, SPLITS.get(split, split)),
            item_clicks=np.bincount(train_items_checked, minlength=n_items),
            item_bucket=item_bucket,
            item_decile=item_decile,
        )

    @classmethod
    def from_lake(cls, lake: str | Path, split: str = "test") -> EvaluationData:
        """Read train_clicks, <split>_clicks (test by default, or valid), items and item_stats (latest versions,
        with delta-rs: no Spark)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        item_idx = _read_columns(lake, "items", ["item_idx"])["item_idx"]
        n_items = int(item_idx.max(initial=-1)) + 1
        if item_idx.size != n_items:
            raise ValueError(f"items: item_idx is not dense 0..{n_items - 1} ({item_idx.size} rows)")
        stats = _read_columns(lake, "item_stats", ["item_idx", "bucket", "decile"])
        stats_idx = _checked_index(stats["item_idx"], n_items, "item_stats.item_idx")
        missing = np.setdiff1d(np.arange(n_items), stats_idx)
        if missing.size or stats_idx.size != n_items:
            raise ValueError(f"item_stats does not hold each of the {n_items} items once (missing e.g. item_idx {missing[:5].tolist()}); rerun `towerssl stats`")
        bucket = np.empty(n_items, dtype=object)
        bucket[stats_idx] = stats["bucket"]
        decile = np.full(n_items, NO_DECILE, dtype=np.int64)
        decile[stats_idx] = np.nan_to_num(stats["decile"].astype(np.float64), nan=NO_DECILE).astype(np.int64)
        train = _read_columns(lake, "train_clicks", ["user_idx", "item_idx"])
        evaluation = _read_columns(lake, SPLITS[split], ["user_idx", "item_idx"])
        return cls.from_arrays(train["user_idx"], train["item_idx"], evaluation["user_idx"], evaluation["item_idx"], bucket, decile, split)

    @property
    def warm_users(self) -> np.ndarray:
        """user_idx of users with an evaluation click and a training click."""
        return np.flatnonzero((self.evaluation.counts() > 0) & (self.train.counts() > 0))

    @property
    def cold_users(self) -> np.ndarray:
        """user_idx of users with an evaluation click and no training click (embedded from their features)."""
        return np.flatnonzero((self.evaluation.counts() > 0) & (self.train.counts() == 0))


def _read_columns(lake: str | Path, table: str, columns: list[str]) -> dict[str, np.ndarray]:
    """Columns of the latest version of a Delta table, read from its files with Arrow."""
    data = read_snapshot(snapshot(lake, table), columns)
    return {c: data.column(c).to_numpy(zero_copy_only=False) for c in columns}


@dataclass(frozen=True)
class Evaluation:
    """metrics: the metrics.json object; deciles: {"model"|"baseline": {"recall@K": {decile: recall}}}."""

    metrics: dict[str, Any]
    deciles: dict[str, dict[str, dict[int, float | None]]]


def evaluate(
    data: EvaluationData,
    item_emb: ArrayLike,
    user_idx: ArrayLike,
    user_emb: ArrayLike,
    ks: Sequence[int] = KS,
    chunk_users: int = 1024,
) -> Evaluation:
    """Score the model and the popularity baseline on every item, for the warm users and, when their
    embeddings are given, the cold users.

    item_emb: [n_items, D], row = item_idx (new items included). user_emb: [n, D] with row j the user
    user_idx[j]; it must cover every warm user (data.warm_users) and either all or none of data.cold_users.
    Pairs whose item is among the user's training items are dropped (they are excluded from ranking).
    """
    user_idx = _checked_index(user_idx, data.train.n_rows, "user_idx") if len(user_idx) else np.zeros(0, np.int64)
    if np.unique(user_idx).size != user_idx.size:
        raise ValueError("user_idx lists a user twice")
    if len(user_idx) != len(user_emb):
        raise ValueError(f"user_idx has {len(user_idx)} entries but user_emb has {len(user_emb)} rows")
    if len(item_emb) != data.n_items:
        raise ValueError(f"item_emb has {len(item_emb)} rows but there are {data.n_items} items (new items included)")
    row_of_user = np.full(data.train.n_rows, -1, dtype=np.int64)
    row_of_user[user_idx] = np.arange(user_idx.size)
    warm, cold = data.warm_users, data.cold_users
    _require_embedded(warm, row_of_user, "warm")
    with_cold = cold.size > 0 and bool((row_of_user[cold] >= 0).any())
    if with_cold:
        _require_embedded(cold, row_of_user, "cold")
    kmax = max(ks)
    user_emb_t = _as_matrix(user_emb, "user_emb")

    seen = data.train.take(warm)
    relevant = data.evaluation.take(warm).without(seen, data.n_items)
    tops = {
        "model": top_k_items(user_emb_t[torch.from_numpy(row_of_user[warm])], item_emb, kmax, seen, chunk_users),
        "baseline": popularity_top_k(data.item_clicks, kmax, warm.size, seen),
    }
    results: dict[str, dict[str, dict[str, float | None]]] = {}
    counts: dict[str, dict[str, int]] = {}
    deciles: dict[str, dict[str, dict[int, float | None]]] = {}
    for name, top in tops.items():
        results[name], counts = ranking_metrics(top, relevant, data.item_bucket, ks)
        deciles[name] = recall_by_decile(top, relevant, data.item_decile, ks)
    if with_cold:
        cold_relevant = data.evaluation.take(cold)
        cold_tops = {
            "model": top_k_items(user_emb_t[torch.from_numpy(row_of_user[cold])], item_emb, kmax, None, chunk_users),
            "baseline": popularity_top_k(data.item_clicks, kmax, cold.size),
        }
        for name, top in cold_tops.items():
            cold_metrics, cold_counts = ranking_metrics(top, cold_relevant, data.item_bucket, ks)
            for metric, slices in cold_metrics.items():
                results[name][metric][COLD_USERS] = slices[OVERALL]
        counts[COLD_USERS] = cold_counts[OVERALL]
    metrics: dict[str, Any] = {**results["model"], "baseline": results["baseline"], "counts": counts}
    log.info(
        "evaluated %d warm and %d cold users: recall@%d %s (baseline %s)",
        counts[OVERALL]["users"], counts.get(COLD_USERS, {}).get("users", 0), kmax,
        _fmt(metrics[f"recall@{kmax}"][OVERALL]), _fmt(metrics["baseline"][f"recall@{kmax}"][OVERALL]),
    )
    return Evaluation(metrics=metrics, deciles=deciles)


def _require_embedded(users: np.ndarray, row_of_user: np.ndarray, kind: str) -> None:
    missing = users[row_of_user[users] < 0]
    if missing.size:
        raise ValueError(f"{missing.size} {kind} users have no embedding (e.g. user_idx {missing[:5].tolist()})")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


# ----------------------------------------------------------------------------------------------------------
# Outputs


def write_metrics(metrics: Mapping[str, Any], path: str | Path) -> Path:
    """metrics.json: {"recall@K": {slice: value}, "ndcg@K": {...}, "baseline": {...}, "counts": {...}}."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    return path


def plot_recall_by_decile(curves: Mapping[str, Mapping[int | str, float | None]], metric: str, path: str | Path) -> Path:
    """PNG of recall by popularity decile, one line per named model (baseline included by the caller)."""
    from towerssl.plots import saved_figure

    with saved_figure(path) as (_, axes):
        axis = axes[0][0]
        for name, by_decile in curves.items():
            deciles = sorted(by_decile, key=int)  # int keys, or the string keys of recall_by_decile.json
            values = [np.nan if by_decile[d] is None else by_decile[d] for d in deciles]
            axis.plot([int(d) for d in deciles], values, marker="o", label=name)
        axis.set_xticks(sorted({int(d) for by_decile in curves.values() for d in by_decile}))
        axis.set_xlabel("item popularity decile (1 = the most clicked items holding a tenth of training clicks)")
        axis.set_ylabel(metric)
        axis.set_title(f"{metric} by item popularity decile")
        axis.grid(True, alpha=0.3)
        axis.legend()
    return Path(path)


def write_evaluation(evaluation: Evaluation, out_dir: str | Path, plot_k: int = 50) -> dict[str, Path]:
    """metrics.json, recall_by_decile.json and recall_by_decile.png (model vs baseline at plot_k)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metric = f"recall@{plot_k}"
    deciles_path = out_dir / "recall_by_decile.json"
    deciles_path.write_text(json.dumps(evaluation.deciles, indent=2, allow_nan=False) + "\n")
    return {
        "metrics": write_metrics(evaluation.metrics, out_dir / "metrics.json"),
        "deciles": deciles_path,
        "plot": plot_recall_by_decile(
            {"model": evaluation.deciles["model"][metric], "popularity baseline": evaluation.deciles["baseline"][metric]}, metric, out_dir / "recall_by_decile.png"
        ),
    }
