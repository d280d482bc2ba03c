"""Retrieval metrics: Recall@K and NDCG@K per popularity slice (head / torso / tail / new items, and cold
users), the popularity baseline in the same shape, and recall by popularity decile.

Definitions and the metrics.json shape are in docs/evaluation.md; the rankings come from trainer/ranking.py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from towerssl.trainer.ranking import ArrayLike, UserItems, checked_index, popularity_top_k, top_k_items

log = logging.getLogger(__name__)

KS: tuple[int, ...] = (10, 50, 100)
ITEM_SLICES: tuple[str, ...] = ("head", "torso", "tail", "new")
OVERALL = "overall"
COLD_USERS = "cold_users"
SPLITS = {"test": "test_clicks", "valid": "valid_clicks"}
NO_DECILE = 0  # item_stats.decile of a new item; clicked items have deciles 1 (most clicked) .. 10


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


def ranking_metrics(
    top: ArrayLike, relevant: UserItems, item_slice: np.ndarray | None = None, ks: Sequence[int] = KS
) -> tuple[dict[str, dict[str, float | None]], dict[str, dict[str, int]]]:
    """Recall@K and NDCG@K per slice, and the users/pairs/items counted per slice.

    top: [U, >= max(ks)] ranked item indices (-1 = nothing); relevant: the U users' evaluation items;
    item_slice: the slice label of every item. Slices: "overall" and each of ITEM_SLICES, or "overall" alone
    when item_slice is None (training's validation, which has no slices).
    Recall@K(s) = found pairs of s / all pairs of s. NDCG@K(s) = mean over users with a pair in s of
    DCG/IDCG, DCG = sum of 1/log2(rank + 1) over ranks <= K holding an item of u's pairs in s,
    IDCG = the same for min(#pairs of u in s, K) hits at the first ranks. Empty slices give None.
    """
    top = _as_ranking(top, relevant.n_rows, ks)
    hits = relevant.contains(top)
    pair_rows = relevant.rows()
    slices = {OVERALL: (np.ones(pair_rows.shape, bool), hits)}  # name: (its pairs, its hits)
    if item_slice is not None:
        ranked = np.where(top >= 0, top, 0)
        for name in ITEM_SLICES:
            member = item_slice == name
            slices[name] = (member[relevant.indices], hits & member[ranked])
    discount = 1.0 / np.log2(np.arange(2, max(ks) + 2, dtype=np.float64))
    ideal = np.concatenate(([0.0], np.cumsum(discount)))  # ideal[n] = IDCG of n hits
    metrics: dict[str, dict[str, float | None]] = {}
    counts: dict[str, dict[str, int]] = {}
    for name, (in_slice, slice_hits) in slices.items():
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
    hits = relevant.contains(top)
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
        train_items_checked = checked_index(train_items, n_items, "train_clicks.item_idx")
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

    @property
    def warm_users(self) -> np.ndarray:
        """user_idx of users with an evaluation click and a training click."""
        return np.flatnonzero((self.evaluation.counts() > 0) & (self.train.counts() > 0))

    @property
    def cold_users(self) -> np.ndarray:
        """user_idx of users with an evaluation click and no training click (embedded from their features)."""
        return np.flatnonzero((self.evaluation.counts() > 0) & (self.train.counts() == 0))


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
    user_idx = checked_index(user_idx, data.train.n_rows, "user_idx") if len(user_idx) else np.zeros(0, np.int64)
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

    seen = data.train.take(warm)
    relevant = data.evaluation.take(warm).without(seen, data.n_items)
    tops = {
        "model": top_k_items(user_emb[row_of_user[warm]], item_emb, kmax, seen, chunk_users),
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
            "model": top_k_items(user_emb[row_of_user[cold]], item_emb, kmax, None, chunk_users),
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
