"""Listwise softmax losses: the logQ-corrected in-batch loss (Yi et al. 2019) and the SSL loss (Yao et al. 2021).

Both share one temperature handling: logits are cos(x, y) / temperature, computed in at least float32 even
under autocast, the diagonal is the positive, and a repeat of the positive item is not used as a negative.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def cosine_logits(queries: torch.Tensor, candidates: torch.Tensor, temperature: float) -> torch.Tensor:
    """cos(q_i, c_j) / temperature as [n, m], in float32 (or float64 when the inputs are)."""
    dtype = torch.promote_types(queries.dtype, torch.float32)
    with torch.autocast(device_type=queries.device.type, enabled=False):
        q = F.normalize(queries.to(dtype), dim=-1) / temperature  # scaling [n, D] costs less than scaling [n, m]
        c = F.normalize(candidates.to(dtype), dim=-1)
        return q @ c.T


def hide_repeats_(logits: torch.Tensor, positive_ids: torch.Tensor, candidate_ids: torch.Tensor, skip_diagonal: bool) -> torch.Tensor:
    """Set logits[i, j] to -inf, in place, where candidate j is row i's positive item again (an accidental hit).

    skip_diagonal keeps the diagonal, which is the positive itself when the candidates are the batch's items.
    In place because the [n, m] logits are large and always a fresh product here.
    """
    repeats = positive_ids[:, None] == candidate_ids[None, :]
    if skip_diagonal:
        repeats.fill_diagonal_(False)
    return logits.masked_fill_(repeats, float("-inf"))


def main_logits(
    user_embeddings: torch.Tensor,
    item_embeddings: torch.Tensor,
    temperature: float,
    log_p: torch.Tensor | None = None,
    item_ids: torch.Tensor | None = None,
    negative_embeddings: torch.Tensor | None = None,
    negative_log_p: torch.Tensor | None = None,
    negative_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits [n, n + M]: cos(a_i, b_j) / temperature - log p_j over the batch's items, then M extra negatives.

    log_p None turns the logQ correction off (then negative_log_p must be None too); item_ids (and negative_ids)
    enable the accidental-hit rule. Extra negatives are corrected by their own log p, the same way.
    """
    if negative_embeddings is not None:
        if (log_p is None) != (negative_log_p is None):
            raise ValueError("extra negatives need negative_log_p exactly when the in-batch items have log_p")
        if (item_ids is None) != (negative_ids is None):
            raise ValueError("extra negatives need negative_ids exactly when the in-batch items have item_ids")
    logits = cosine_logits(user_embeddings, item_embeddings, temperature)
    if log_p is not None:
        logits = logits - log_p.to(logits.dtype)[None, :]
    if item_ids is not None:
        logits = hide_repeats_(logits, item_ids, item_ids, skip_diagonal=True)
    if negative_embeddings is None:
        return logits
    extra = cosine_logits(user_embeddings, negative_embeddings, temperature)
    if negative_log_p is not None:
        extra = extra - negative_log_p.to(extra.dtype)[None, :]
    if negative_ids is not None:
        extra = hide_repeats_(extra, item_ids, negative_ids, skip_diagonal=False)
    return torch.cat([logits, extra], dim=1)


def listwise_loss(logits: torch.Tensor) -> torch.Tensor:
    """-log softmax_j(logits[i, j]) at j = i, per row [n]."""
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device), reduction="none")


def in_batch_accuracy(logits: torch.Tensor) -> torch.Tensor:
    """Share of rows whose highest logit is their own positive (the diagonal)."""
    return (logits.argmax(dim=1) == torch.arange(logits.shape[0], device=logits.device)).float().mean()


def ssl_logits(view_one: torch.Tensor, view_two: torch.Tensor, temperature: float, item_ids: torch.Tensor | None = None) -> torch.Tensor:
    """cos(b'_i, b''_j) / temperature [m, m]; item_ids hides a repeated item (uniform sampling draws with replacement)."""
    logits = cosine_logits(view_one, view_two, temperature)
    if item_ids is not None:
        logits = hide_repeats_(logits, item_ids, item_ids, skip_diagonal=True)
    return logits
