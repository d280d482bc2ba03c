"""Listwise softmax losses: the logQ-corrected in-batch loss (Yi et al. 2019) and the SSL loss (Yao et al. 2021).

Both are one softmax cross-entropy over candidate columns, s_ij = cos(q_i, c_j) / temperature - log Q_j, where
Q_j is the probability that column j was drawn (the logQ correction); a repeat of row i's positive item in
another column is an accidental hit and is not a negative.

The [n, m] logits are never kept more than once per loss (issue 19): `softmax_loss` walks row
chunks, folds the column correction and a per-row shift into the product itself (two extra dimensions of
the GEMM), and either keeps exp(logits - shift) of every chunk for the backward pass (when the whole matrix
fits `keep_elements`) or recomputes each chunk in backward (then only one chunk lives at a time). Under
autocast the chunk lives in the autocast dtype: the products accumulate in float32 inside the GEMM, the
exponentials of s - shift (at most e^60, and near 1 where they matter) are stored in bf16, and their row sums,
the positive logit and the log-sum-exp are float32. On an H200 a bf16-output product at 16,384 x 16,384 x 72
took 0.25 ms against 0.90 ms for torch.mm(..., out_dtype=torch.float32), and every float32 pass over that
matrix costs about 0.25 ms per read of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

# exp(x) overflows float32 above 88.7; shifting every row so its largest possible logit is at most this far
# above zero keeps a sum over millions of columns finite (m * e^60 < 3e38 for m < 2e12).
_HEADROOM = 60.0


@dataclass(frozen=True)
class ChunkBudget:
    """Memory budget of softmax_loss, in logits (elements of [rows, columns]).

    chunk_elements: rows per chunk = chunk_elements // columns (at least 1).
    keep_elements: keep the exponentiated logits for backward when rows * columns fits (one copy, float32 or
    bf16 under autocast; saves recomputing the product); beyond it, backward recomputes chunk by chunk.
    """

    chunk_elements: int = 1 << 26  # 256 MiB of float32 logits: few enough chunks that the GPU never waits for Python
    keep_elements: int = 1 << 29  # 1 GiB in bf16: batch 16,384 x 32,768 columns is kept, 65,536 x 65,536 is not


def _gemm_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """bf16 when bf16 autocast is on for this device, else the inputs' own dtype.

    Not fp16: exp(s - shift) reaches e^60, far beyond fp16's 65504; bf16 has float32's exponent range.
    """
    if dtype != torch.float64 and torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.bfloat16:
        return torch.bfloat16
    return dtype


def _exact_parts(x: torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor]:
    """x [k] as columns in `dtype` whose sum is x to about float32 precision (hi + lo when dtype is narrower)."""
    hi = x.to(dtype)
    if dtype == x.dtype:
        return [hi[:, None]]
    return [hi[:, None], (x - hi.to(x.dtype)).to(dtype)[:, None]]


def _fold(queries: torch.Tensor, shift: torch.Tensor, columns: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[rows, K]: queries, ones for the bias, -shift (hi/lo), padded; so _fold(...) @ columns.T = q c^T - bias - shift."""
    shift_parts = _exact_parts(-shift, dtype)
    ones = queries.new_ones(queries.shape[0], len(shift_parts), dtype=dtype)
    folded = torch.cat([queries.to(dtype), ones, *shift_parts], dim=1)
    return F.pad(folded, (0, columns.shape[1] - folded.shape[1]))


def _fold_columns(candidates: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[m, K]: candidates, -bias (hi/lo), ones for the shift, zero-padded to a multiple of 8 (aligned GEMM rows)."""
    bias_parts = _exact_parts(-bias, dtype)
    ones = candidates.new_ones(candidates.shape[0], len(bias_parts), dtype=dtype)
    columns = torch.cat([candidates.to(dtype), *bias_parts, ones], dim=1)
    return F.pad(columns, (0, -columns.shape[1] % 8))


class _ChunkedSoftmax(torch.autograd.Function):
    """loss_i = logsumexp_j(s_ij) - s_i,label_i over the visible columns, and whether the label is the row's maximum."""

    @staticmethod
    def forward(ctx, q, c, bias, labels, hit_rows, hit_cols, gemm_dtype, budget):  # noqa: ANN001 - autograd signature
        n, m = q.shape[0], c.shape[0]
        acc = torch.promote_types(q.dtype, torch.float32)
        columns = _fold_columns(c, bias, gemm_dtype)
        positive = (q * c[labels]).sum(dim=1) - bias[labels]  # exact, in the inputs' precision
        # an upper bound on every logit of the row; the shift keeps exp() below e^_HEADROOM
        bound = q.norm(dim=1) * c.norm(dim=1).max() - bias.min()
        shift = torch.maximum(positive, bound - _HEADROOM)
        rows = max(1, budget.chunk_elements // max(m, 1))
        starts = list(range(0, n, rows))
        hit_bounds = torch.searchsorted(hit_rows, torch.tensor([*starts, n], device=hit_rows.device)).tolist()
        keep = n * m <= budget.keep_elements
        total = torch.empty(n, dtype=acc, device=q.device)
        best_negative = torch.empty(n, dtype=acc, device=q.device)
        kept = []
        for k, start in enumerate(starts):
            end = min(start + rows, n)
            chunk = _fold(q[start:end], shift[start:end], columns, gemm_dtype) @ columns.T
            local = torch.arange(end - start, device=q.device)
            chunk[hit_rows[hit_bounds[k] : hit_bounds[k + 1]] - start, hit_cols[hit_bounds[k] : hit_bounds[k + 1]]] = float("-inf")
            chunk[local, labels[start:end]] = float("-inf")
            best_negative[start:end] = chunk.amax(dim=1)
            chunk.exp_()  # the label's entry is 0 now; its term is added exactly, in float32
            total[start:end] = chunk.sum(dim=1, dtype=acc) + torch.exp(positive[start:end] - shift[start:end])
            if keep:
                kept.append(chunk)
        lse = shift + total.log()
        # every term of a row underflowed (temperature far below 1 / 150): recompute those rows exactly
        lost = (total < torch.finfo(acc).tiny).nonzero().flatten()
        if lost.numel():
            logits = (q[lost] @ c.T - bias).to(acc)
            position = torch.full((n,), -1, device=q.device).index_copy_(0, lost, torch.arange(len(lost), device=q.device))
            in_lost = position[hit_rows] >= 0
            logits[position[hit_rows[in_lost]], hit_cols[in_lost]] = float("-inf")
            lse[lost] = torch.logsumexp(logits, dim=1)
            kept = []  # the kept chunks hold zeros for those rows: backward recomputes with the exact shift
        correct = best_negative + shift < positive
        ctx.save_for_backward(q, c, bias, labels, hit_rows, hit_cols, positive, shift, lse)
        ctx.kept, ctx.gemm_dtype, ctx.rows, ctx.hit_bounds = kept, gemm_dtype, rows, hit_bounds
        ctx.mark_non_differentiable(correct)
        return lse - positive, correct

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss, _grad_correct):  # noqa: ANN001 - autograd signature
        with torch.autocast(device_type=grad_loss.device.type, enabled=False):  # the dtypes below are explicit
            return _ChunkedSoftmax._backward(ctx, grad_loss)

    @staticmethod
    def _backward(ctx, grad_loss):  # noqa: ANN001, ANN205
        q, c, bias, labels, hit_rows, hit_cols, positive, shift, lse = ctx.saved_tensors
        acc, dtype = lse.dtype, ctx.gemm_dtype
        columns = _fold_columns(c, bias, dtype) if not ctx.kept else None
        c_gemm, q_gemm = c.to(dtype), q.to(dtype)
        grad_q = torch.empty_like(q, dtype=acc)
        grad_c = torch.zeros_like(c, dtype=acc)
        for k, start in enumerate(range(0, q.shape[0], ctx.rows)):
            end = min(start + ctx.rows, q.shape[0])
            g = grad_loss[start:end].to(acc)
            if ctx.kept:  # exp(s - shift) -> softmax * g, in place
                probs = ctx.kept[k].mul_((g * torch.exp(shift[start:end] - lse[start:end]))[:, None])
                ctx.kept[k] = None
            else:
                probs = _fold(q[start:end], lse[start:end], columns, dtype) @ columns.T
                probs[hit_rows[ctx.hit_bounds[k] : ctx.hit_bounds[k + 1]] - start, hit_cols[ctx.hit_bounds[k] : ctx.hit_bounds[k + 1]]] = float("-inf")
                probs.exp_().mul_(g[:, None])
            local = torch.arange(end - start, device=q.device)
            probs[local, labels[start:end]] = (g * torch.expm1(positive[start:end] - lse[start:end])).to(dtype)  # softmax - 1 at the label
            grad_q[start:end] = probs @ c_gemm
            grad_c += probs.T @ q_gemm[start:end]
        ctx.kept = []
        return grad_q.to(q.dtype), grad_c.to(c.dtype), None, None, None, None, None, None


def accidental_hits(query_ids: torch.Tensor, candidate_ids: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, columns) where column j holds row i's positive item again but is not its label, sorted by row.

    Found by sorting the column ids once (n log m), so the [n, m] equality mask is never built.
    """
    sorted_ids, order = torch.sort(candidate_ids)
    first = torch.searchsorted(sorted_ids, query_ids, side="left")
    counts = torch.searchsorted(sorted_ids, query_ids, side="right") - first
    rows = torch.repeat_interleave(torch.arange(len(query_ids), device=query_ids.device), counts)
    before = torch.cumsum(counts, 0) - counts  # pairs of earlier rows
    columns = order[torch.arange(len(rows), device=rows.device) + (first - before)[rows]]
    hit = columns != labels[rows]
    return rows[hit], columns[hit]


def softmax_loss(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    temperature: float,
    labels: torch.Tensor | None = None,
    log_q: torch.Tensor | None = None,
    query_ids: torch.Tensor | None = None,
    candidate_ids: torch.Tensor | None = None,
    budget: ChunkBudget = ChunkBudget(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row i: -log softmax_j(cos(q_i, c_j) / temperature - log_q_j) at j = labels[i], and whether it is the top logit.

    labels default to the diagonal; log_q None is no correction; with ids, a column j != labels[i] holding
    row i's item (candidate_ids[j] == query_ids[i]) is hidden. Returns (loss [n], correct [n] bool).
    """
    n, m = queries.shape[0], candidates.shape[0]
    dtype = torch.promote_types(torch.promote_types(queries.dtype, candidates.dtype), torch.float32)
    gemm_dtype = _gemm_dtype(queries.device, dtype)
    with torch.autocast(device_type=queries.device.type, enabled=False):
        q = F.normalize(queries.to(dtype), dim=-1) / temperature  # scaling [n, D] costs less than scaling [n, m]
        c = F.normalize(candidates.to(dtype), dim=-1)
        labels = torch.arange(n, device=q.device) if labels is None else labels
        bias = torch.zeros(m, dtype=dtype, device=q.device) if log_q is None else log_q.to(dtype)
        if query_ids is None:
            hit_rows = hit_cols = torch.zeros(0, dtype=torch.long, device=q.device)
        else:
            hit_rows, hit_cols = accidental_hits(query_ids, candidate_ids, labels)
        return _ChunkedSoftmax.apply(q, c, bias, labels, hit_rows, hit_cols, gemm_dtype, budget)


def distinct_log_q(log_p: torch.Tensor, draws: int) -> torch.Tensor:
    """log P(item j is in a batch of `draws` clicks) = log(1 - (1 - p_j)^draws), computed without cancellation."""
    return torch.log(-torch.expm1(draws * torch.log1p(-torch.exp(log_p.double())))).to(log_p.dtype)


def main_loss(
    user_embeddings: torch.Tensor,
    item_embeddings: torch.Tensor,
    temperature: float,
    log_p: torch.Tensor | None = None,
    item_ids: torch.Tensor | None = None,
    negative_embeddings: torch.Tensor | None = None,
    negative_ids: torch.Tensor | None = None,
    corpus_size: int | None = None,
    distinct_items: bool = False,
    budget: ChunkBudget = ChunkBudget(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_main per row [n] and whether the clicked item has the top logit [n], over the batch's items and M extra negatives.

    Each column is corrected by the distribution it was drawn from (log_p None turns the correction off):
    - per row (default): column j is click j, drawn with probability p_j: - log p_j.
    - distinct_items: one column per distinct clicked item (its first occurrence's embedding), present in the
      batch with probability 1 - (1 - p_j)^n: - log(1 - (1 - p_j)^n). The label is the row's item's column.
    - extra negatives, drawn uniformly from the corpus of N items: - log(1/N) per row, - log(n/N) with
      distinct_items (both keep a rare item's correction the same whichever way it was drawn: n p_j ~ 1 - (1 - p_j)^n).
    item_ids (and negative_ids) enable the accidental-hit rule.
    """
    n = user_embeddings.shape[0]
    if negative_embeddings is not None:
        if log_p is not None and corpus_size is None:
            raise ValueError("extra negatives with logQ need corpus_size: they are corrected by log(1/N)")
        if (item_ids is None) != (negative_ids is None):
            raise ValueError("extra negatives need negative_ids exactly when the in-batch items have item_ids")
    labels, columns, column_ids, log_q = None, item_embeddings, item_ids, log_p
    if distinct_items:
        if item_ids is None:
            raise ValueError("distinct_items needs item_ids")
        column_ids, labels = torch.unique(item_ids, return_inverse=True)
        first = torch.full_like(column_ids, n).scatter_reduce_(0, labels, torch.arange(n, device=labels.device), reduce="amin")
        columns = item_embeddings[first]
        log_q = None if log_p is None else distinct_log_q(log_p[first], n)
    if negative_embeddings is not None:
        columns = torch.cat([columns, negative_embeddings.to(columns.dtype)])
        column_ids = None if item_ids is None else torch.cat([column_ids, negative_ids])
        if log_q is not None:
            uniform = math.log((n if distinct_items else 1) / corpus_size)
            log_q = torch.cat([log_q, log_q.new_full((negative_embeddings.shape[0],), uniform)])
    return softmax_loss(user_embeddings, columns, temperature, labels, log_q, item_ids, column_ids, budget)


def ssl_loss(
    view_one: torch.Tensor, view_two: torch.Tensor, temperature: float, item_ids: torch.Tensor | None = None, budget: ChunkBudget = ChunkBudget()
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_self per row [m]: softmax over cos(b'_i, b''_j) / temperature, no logQ (uniform sampling); item_ids hides repeats."""
    return softmax_loss(view_one, view_two, temperature, None, None, item_ids, item_ids, budget)
