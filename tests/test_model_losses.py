"""The losses against a direct float64 implementation of the formulas, written with plain loops over rows and columns.

The reference builds each row's list of visible logits one by one and takes a max-shifted log-sum-exp, in
float64 torch so that autograd also gives the reference gradients. The chunked loss must match it in value and
gradient: float64 to 1e-10, float32 to 1e-5 relative, bf16 within the bound derived in test_bf16_products_*.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from towerssl.model.losses import ChunkBudget, accidental_hits, distinct_log_q, main_loss, ssl_loss

# one chunk kept for backward (the default's behaviour at small sizes) and 5-row chunks recomputed in backward
BUDGETS = {"kept": ChunkBudget(), "chunked": ChunkBudget(chunk_elements=5 * 20, keep_elements=0)}


def cos(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x @ y / torch.sqrt(x @ x) / torch.sqrt(y @ y)


def reference_main_loss(a, b, tau, log_p=None, ids=None, negatives=None, negative_ids=None, corpus_size=None, distinct=False):
    """L_main[i] = -log softmax(visible logits of row i) at its positive; returns (losses [n], positive is the strict max [n]).

    Columns: every click j (corrected by log p_j), or with `distinct` each distinct item once (its first
    click's embedding, corrected by log(1 - (1 - p_j)^n)); then the uniform negatives (log(1/N), or log(n/N)
    with distinct). A column holding row i's item is hidden unless it is row i's own positive column.
    """
    n = len(a)
    if distinct:
        firsts = [j for j in range(n) if int(ids[j]) not in [int(x) for x in ids[:j]]]
        columns = [(b[j], ids[j], None if log_p is None else math.log(1 - (1 - math.exp(log_p[j])) ** n)) for j in firsts]
    else:
        columns = [(b[j], None if ids is None else ids[j], None if log_p is None else float(log_p[j])) for j in range(n)]
    positive_column = [firsts.index(next(j for j in firsts if ids[j] == ids[i])) if distinct else i for i in range(n)]
    if negatives is not None:
        uniform = math.log((n if distinct else 1) / corpus_size) if log_p is not None else None
        columns += [(negatives[k], None if ids is None else negative_ids[k], uniform) for k in range(len(negatives))]
    losses, correct = [], []
    for i in range(n):
        visible = []
        for j, (c, item, log_q) in enumerate(columns):
            if j != positive_column[i] and ids is not None and int(item) == int(ids[i]):
                continue  # an accidental hit
            visible.append((j, cos(a[i], c) / tau - (log_q if log_q is not None else 0.0)))
        logits = torch.stack([s for _, s in visible])
        positive = next(s for j, s in visible if j == positive_column[i])
        losses.append(torch.logsumexp(logits, dim=0) - positive)
        correct.append(all(bool(s < positive) for j, s in visible if j != positive_column[i]))
    return torch.stack(losses), torch.tensor(correct)


def reference_ssl_loss(one, two, tau, ids=None):
    """L_self[i] = -log(exp(cos(b'_i, b''_i)/tau) / sum_j exp(cos(b'_i, b''_j)/tau)); repeats of item i skipped."""
    losses = []
    for i in range(len(one)):
        logits = [cos(one[i], two[j]) / tau for j in range(len(two)) if j == i or ids is None or ids[j] != ids[i]]
        losses.append(torch.logsumexp(torch.stack(logits), dim=0) - cos(one[i], two[i]) / tau)
    return torch.stack(losses)


@pytest.fixture
def batch():
    rng = np.random.default_rng(7)
    n, m, d = 12, 5, 6
    return {
        "a": torch.from_numpy(rng.normal(size=(n, d))),
        "b": torch.from_numpy(rng.normal(size=(n, d))),
        "log_p": torch.from_numpy(np.log(rng.dirichlet(np.ones(n)))),
        "ids": torch.tensor([0, 1, 2, 1, 3, 4, 0, 5, 6, 7, 1, 8]),  # item 1 three times, item 0 twice
        "negatives": torch.from_numpy(rng.normal(size=(m, d))),
        "negative_ids": torch.tensor([9, 1, 10, 0, 11]),  # two of them are positives of some rows
        "corpus_size": 40,
    }


def leaves(*tensors: torch.Tensor | None, dtype: torch.dtype, device: str = "cpu") -> list[torch.Tensor | None]:
    return [None if x is None else x.detach().to(device, dtype).requires_grad_() for x in tensors]


def main_case(batch, logq, accidental_hits, extra_negatives, distinct):
    return {
        "log_p": batch["log_p"] if logq else None,
        "ids": batch["ids"] if accidental_hits or distinct else None,
        "negatives": batch["negatives"] if extra_negatives else None,
        "negative_ids": batch["negative_ids"] if (accidental_hits or distinct) and extra_negatives else None,
        "corpus_size": batch["corpus_size"],
        "distinct": distinct,
    }


def run_main_loss(batch, case, tau, dtype, budget=ChunkBudget(), device="cpu"):
    a, b, negatives = leaves(batch["a"], batch["b"], case["negatives"], dtype=dtype, device=device)
    loss, correct = main_loss(
        a,
        b,
        tau,
        log_p=None if case["log_p"] is None else case["log_p"].to(device, dtype),
        item_ids=None if case["ids"] is None else case["ids"].to(device),
        negative_embeddings=negatives,
        negative_ids=None if case["negative_ids"] is None else case["negative_ids"].to(device),
        corpus_size=case["corpus_size"],
        distinct_items=case["distinct"],
        budget=budget,
    )
    inputs = [x for x in (a, b, negatives) if x is not None]
    return loss.cpu(), correct.cpu(), [g.cpu() for g in torch.autograd.grad(loss.sum(), inputs)]


def run_reference(batch, case, tau):
    a, b, negatives = leaves(batch["a"], batch["b"], case["negatives"], dtype=torch.float64)
    loss, correct = reference_main_loss(a, b, tau, case["log_p"], case["ids"], negatives, case["negative_ids"], case["corpus_size"], case["distinct"])
    inputs = [x for x in (a, b, negatives) if x is not None]
    return loss, correct, torch.autograd.grad(loss.sum(), inputs)


def assert_close_to(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    """Relative to each value, with the scale of the whole tensor as the floor (gradients cross zero)."""
    torch.testing.assert_close(actual.double(), expected, rtol=rtol, atol=rtol * float(expected.detach().abs().max()))


@pytest.mark.parametrize("budget", BUDGETS.values(), ids=BUDGETS.keys())
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["float64", "float32"])
@pytest.mark.parametrize("logq", [False, True])
@pytest.mark.parametrize("accidental_hits", [False, True])
@pytest.mark.parametrize("extra_negatives", [False, True])
def test_main_loss_and_gradients_match_float64_reference(batch, budget, dtype, rtol, logq, accidental_hits, extra_negatives):
    case = main_case(batch, logq, accidental_hits, extra_negatives, distinct=False)
    loss, correct, grads = run_main_loss(batch, case, 0.1, dtype, budget)
    expected_loss, expected_correct, expected_grads = run_reference(batch, case, 0.1)
    assert loss.dtype == dtype
    assert_close_to(loss, expected_loss, rtol)
    for grad, expected in zip(grads, expected_grads, strict=True):
        assert_close_to(grad, expected, rtol)
    assert torch.equal(correct, expected_correct)


@pytest.mark.parametrize("budget", BUDGETS.values(), ids=BUDGETS.keys())
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["float64", "float32"])
@pytest.mark.parametrize("logq", [False, True])
@pytest.mark.parametrize("extra_negatives", [False, True])
def test_distinct_item_columns_match_float64_reference(batch, budget, dtype, rtol, logq, extra_negatives):
    case = main_case(batch, logq, True, extra_negatives, distinct=True)
    loss, correct, grads = run_main_loss(batch, case, 0.05, dtype, budget)
    expected_loss, expected_correct, expected_grads = run_reference(batch, case, 0.05)
    assert_close_to(loss, expected_loss, rtol)
    for grad, expected in zip(grads, expected_grads, strict=True):
        assert_close_to(grad, expected, rtol)
    assert torch.equal(correct, expected_correct)


def test_mixed_negatives_are_corrected_by_the_uniform_draw_not_by_popularity(batch):
    """Issue 16: the extra columns were drawn uniformly, so their logit is cos/tau - log(1/N) whatever their p is."""
    n, corpus_size = len(batch["a"]), batch["corpus_size"]
    one = batch["negatives"][:1]
    loss, _ = main_loss(batch["a"], batch["b"], 0.1, log_p=batch["log_p"], negative_embeddings=one, corpus_size=corpus_size)
    without, _ = main_loss(batch["a"], batch["b"], 0.1, log_p=batch["log_p"])
    # adding one column with logit s_i multiplies row i's partition by (1 + exp(s_i) / Z_i)
    a, b = torch.nn.functional.normalize(batch["a"], dim=1), torch.nn.functional.normalize(batch["b"], dim=1)
    extra = (a @ torch.nn.functional.normalize(one, dim=1).T)[:, 0] / 0.1 + math.log(corpus_size)
    partition = torch.logsumexp(a @ b.T / 0.1 - batch["log_p"][None, :], dim=1)
    torch.testing.assert_close(loss, without + torch.log1p(torch.exp(extra - partition)), rtol=0, atol=1e-12)
    assert loss.shape == (n,)


def test_accidental_hits_change_the_loss_only_for_rows_with_repeats(batch):
    ids = batch["ids"]
    plain, _ = main_loss(batch["a"], batch["b"], 0.1)
    hidden, _ = main_loss(batch["a"], batch["b"], 0.1, item_ids=ids)
    repeated = (ids[:, None] == ids[None, :]).sum(dim=1) > 1
    assert torch.equal(plain[~repeated], hidden[~repeated])
    assert (hidden[repeated] < plain[repeated]).all()  # fewer negatives, smaller loss


@pytest.mark.parametrize("budget", BUDGETS.values(), ids=BUDGETS.keys())
@pytest.mark.parametrize("with_repeats", [False, True])
def test_ssl_loss_and_gradients_match_float64_reference(batch, budget, with_repeats):
    ids = batch["ids"] if with_repeats else None
    for dtype, rtol in [(torch.float64, 1e-10), (torch.float32, 1e-5)]:
        one, two = leaves(batch["a"], batch["b"], dtype=dtype)
        loss, _ = ssl_loss(one, two, 0.2, ids, budget=budget)
        ref_one, ref_two = leaves(batch["a"], batch["b"], dtype=torch.float64)
        expected = reference_ssl_loss(ref_one, ref_two, 0.2, ids)
        assert_close_to(loss, expected, rtol)
        for grad, expected_grad in zip(torch.autograd.grad(loss.sum(), [one, two]), torch.autograd.grad(expected.sum(), [ref_one, ref_two])):
            assert_close_to(grad, expected_grad, rtol)


@pytest.mark.parametrize("budget", BUDGETS.values(), ids=BUDGETS.keys())
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))])
def test_bf16_products_stay_within_the_rounding_bound(batch, device, budget):
    """Under bf16 autocast the products take bf16 inputs (relative rounding 2^-9 per element of the unit vectors).

    A logit cos/tau then moves by at most about 2 * 2^-9 / tau (both vectors rounded; |q|=|c|=1 and
    Cauchy-Schwarz), and the product's own bf16 output rounding adds at most 2^-9 of |logit - shift|, which is
    below 2/tau + the range of log Q: so every logit is within delta = (3 * 2^-9) * (2/tau + range) of exact.
    The exponentials are stored in bf16 (2^-9 each) and summed in float32, and the positive logit is exact,
    so the loss is within delta + 2^-8. Each gradient entry (softmax weights scaled by at most e^delta - 1, the
    weights rounded twice in bf16, the two gradient products' bf16 outputs) is within e^delta - 1 + 2^-7 of
    the largest gradient. Here delta is about 0.17 (d = 6); measured: 0.07 on the loss, 2% of the largest gradient.
    """
    tau = 0.1
    case = main_case(batch, logq=True, accidental_hits=True, extra_negatives=True, distinct=False)
    log_q_range = float(batch["log_p"].max() - batch["log_p"].min()) + math.log(batch["corpus_size"])
    delta = 3 * 2**-9 * (2 / tau + log_q_range)
    expected_loss, _, expected_grads = run_reference(batch, case, tau)
    with torch.autocast(device, dtype=torch.bfloat16):
        loss, _, grads = run_main_loss(batch, case, tau, torch.float32, budget, device=device)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), expected_loss, rtol=0, atol=delta + 2**-8)
    for grad, expected in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad.double(), expected, rtol=0, atol=(math.expm1(delta) + 2**-7) * float(expected.detach().abs().max()))
    # and the rounding is visible: this is not the float32 path
    float32_loss, _, _ = run_main_loss(batch, case, tau, torch.float32, device=device)
    assert not torch.equal(loss, float32_loss)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.parametrize("budget", BUDGETS.values(), ids=BUDGETS.keys())
@pytest.mark.parametrize("distinct", [False, True])
def test_cuda_float32_matches_float64_reference(batch, budget, distinct):
    case = main_case(batch, logq=True, accidental_hits=True, extra_negatives=True, distinct=distinct)
    loss, correct, grads = run_main_loss(batch, case, 0.1, torch.float32, budget, device="cuda")
    expected_loss, expected_correct, expected_grads = run_reference(batch, case, 0.1)
    assert_close_to(loss, expected_loss, 1e-5)
    for grad, expected in zip(grads, expected_grads, strict=True):
        assert_close_to(grad, expected, 1e-5)
    assert torch.equal(correct, expected_correct)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_tiny_temperature_stays_finite_and_exact(dtype):
    """At tau = 0.001 logits span thousands: every term of a row can underflow after the a-priori shift.

    Queries point along e1 and every candidate almost against it, so all cosines are near -1 while the bound
    the shift starts from is +1 / tau; those rows are recomputed exactly.
    """
    generator = torch.Generator().manual_seed(3)
    a = torch.zeros(8, 4, dtype=torch.float64)
    a[:, 0] = 1
    b = -a + 0.05 * torch.randn(8, 4, generator=generator, dtype=torch.float64)
    ref_a, ref_b = leaves(a, b, dtype=torch.float64)
    expected = reference_ssl_loss(ref_a, ref_b, 0.001)
    one, two = leaves(a, b, dtype=dtype)
    loss, _ = ssl_loss(one, two, 0.001, budget=BUDGETS["chunked"])
    assert torch.isfinite(loss).all()
    # a float32 logit of size 1 / tau carries an absolute rounding error of a few eps / tau (here ~1e-4)
    torch.testing.assert_close(loss.double(), expected, rtol=0, atol=8 * torch.finfo(dtype).eps / 0.001)
    for grad, expected_grad in zip(torch.autograd.grad(loss.sum(), [one, two]), torch.autograd.grad(expected.sum(), [ref_a, ref_b])):
        assert_close_to(grad, expected_grad, 1e-10 if dtype == torch.float64 else 1e-4)


def test_accidental_hits_are_every_repeat_but_the_label():
    generator = torch.Generator().manual_seed(0)
    query_ids = torch.randint(0, 6, (30,), generator=generator)
    candidate_ids = torch.randint(0, 6, (25,), generator=generator)
    labels = torch.randint(0, 25, (30,), generator=generator)
    rows, columns = accidental_hits(query_ids, candidate_ids, labels)
    expected = {(i, j) for i in range(30) for j in range(25) if query_ids[i] == candidate_ids[j] and j != labels[i]}
    assert set(zip(rows.tolist(), columns.tolist())) == expected and len(rows) == len(expected)
    assert torch.equal(rows, rows.sort().values)


def test_distinct_log_q_is_the_probability_of_being_in_the_batch():
    p = torch.tensor([1e-9, 1e-5, 0.01, 0.3, 1.0], dtype=torch.float64)
    for draws in (1, 7, 16384):
        expected = [math.log(1 - (1 - float(x)) ** draws) for x in p]
        np.testing.assert_allclose(distinct_log_q(torch.log(p), draws).numpy(), expected, rtol=1e-6)


def test_extra_negatives_need_the_corpus_size_for_their_correction(batch):
    with pytest.raises(ValueError, match="corpus_size"):
        main_loss(batch["a"], batch["b"], 0.1, log_p=batch["log_p"], negative_embeddings=batch["negatives"])
