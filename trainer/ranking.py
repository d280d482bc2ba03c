"""Exact ranking: each user's top-K items by inner product, with a tie rule that makes the result
independent of chunking and hardware, and the popularity baseline's ranking in the same shape.

Model-independent: it takes embeddings (torch tensors or numpy arrays) and index arrays. docs/evaluation.md
states the rules.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

log = logging.getLogger(__name__)

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
        rows = checked_index(rows, n_rows, f"{what}.user_idx")
        items = checked_index(items, n_items, f"{what}.item_idx")
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

    def contains(self, items: np.ndarray) -> np.ndarray:
        """contains[r, j]: items[r, j] is one of row r's items; -1 (no item) never is. One searchsorted."""
        n = int(max(items.max(initial=-1), self.indices.max(initial=-1))) + 1
        keys = self.keys(n)
        if keys.size == 0:
            return np.zeros(items.shape, dtype=bool)
        queries = np.arange(items.shape[0], dtype=np.int64)[:, None] * n + items
        return (keys[np.searchsorted(keys, queries).clip(max=keys.size - 1)] == queries) & (items >= 0)

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


def checked_index(values: ArrayLike, size: int, what: str) -> np.ndarray:
    """values as int64 numpy, refused with the array's name and the first bad position when one is outside 0..size-1."""
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
        is_excluded = block.contains(candidates)
        first = np.argsort(is_excluded, axis=1, kind="stable")[:, :k]  # rankable items first, in order
        chosen = np.take_along_axis(candidates, first, 1)
        top[start:stop, : first.shape[1]] = np.where(np.take_along_axis(is_excluded, first, 1), -1, chosen)
    return torch.from_numpy(top)
