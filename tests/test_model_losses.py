"""The losses against a direct float64 implementation of the slide formulas, written with plain Python loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from towerssl.model.losses import cosine_logits, listwise_loss, main_logits, ssl_logits


def cos(x: np.ndarray, y: np.ndarray) -> float:
    return float(x @ y / math.sqrt(x @ x) / math.sqrt(y @ y))


def reference_main_loss(a, b, tau, log_p=None, ids=None, negatives=None, negative_log_p=None, negative_ids=None) -> list[float]:
    """L_main[i] = -log softmax_j(cos(a_i, b_j)/tau - log p_j) at j = i; a repeat of item i is no negative."""
    losses = []
    for i in range(len(a)):
        def logit(x, lp):
            return cos(a[i], x) / tau - (lp if lp is not None else 0.0)

        positive = logit(b[i], None if log_p is None else log_p[i])
        others = [
            logit(b[j], None if log_p is None else log_p[j])
            for j in range(len(b))
            if j != i and not (ids is not None and ids[j] == ids[i])
        ]
        if negatives is not None:
            others += [
                logit(negatives[k], None if negative_log_p is None else negative_log_p[k])
                for k in range(len(negatives))
                if not (ids is not None and negative_ids[k] == ids[i])
            ]
        denominator = math.exp(positive) + sum(math.exp(s) for s in others)
        losses.append(-math.log(math.exp(positive) / denominator))
    return losses


def reference_ssl_loss(one, two, tau, ids=None) -> list[float]:
    """L_self[i] = -log(exp(cos(b'_i, b''_i)/tau) / sum_j exp(cos(b'_i, b''_j)/tau)); repeats of item i skipped."""
    losses = []
    for i in range(len(one)):
        denominator = sum(
            math.exp(cos(one[i], two[j]) / tau) for j in range(len(two)) if j == i or ids is None or ids[j] != ids[i]
        )
        losses.append(-math.log(math.exp(cos(one[i], two[i]) / tau) / denominator))
    return losses


@pytest.fixture
def batch():
    rng = np.random.default_rng(7)
    n, m, d = 12, 5, 6
    return {
        "a": rng.normal(size=(n, d)),
        "b": rng.normal(size=(n, d)),
        "log_p": np.log(rng.dirichlet(np.ones(n))),
        "ids": np.array([0, 1, 2, 1, 3, 4, 0, 5, 6, 7, 1, 8]),  # item 1 three times, item 0 twice
        "negatives": rng.normal(size=(m, d)),
        "negative_log_p": np.log(rng.uniform(1e-3, 1e-1, size=m)),
        "negative_ids": np.array([9, 1, 10, 0, 11]),  # two of them are positives of some rows
    }


def t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x)


@pytest.mark.parametrize("logq", [False, True])
@pytest.mark.parametrize("accidental_hits", [False, True])
@pytest.mark.parametrize("extra_negatives", [False, True])
def test_main_loss_matches_float64_formula(batch, logq, accidental_hits, extra_negatives):
    tau = 0.1
    kwargs = {
        "log_p": batch["log_p"] if logq else None,
        "ids": batch["ids"] if accidental_hits else None,
        "negatives": batch["negatives"] if extra_negatives else None,
        "negative_log_p": batch["negative_log_p"] if logq and extra_negatives else None,
        "negative_ids": batch["negative_ids"] if accidental_hits and extra_negatives else None,
    }
    expected = reference_main_loss(batch["a"], batch["b"], tau, **kwargs)
    logits = main_logits(
        t(batch["a"]),
        t(batch["b"]),
        tau,
        log_p=None if kwargs["log_p"] is None else t(kwargs["log_p"]),
        item_ids=None if kwargs["ids"] is None else t(kwargs["ids"]),
        negative_embeddings=None if kwargs["negatives"] is None else t(kwargs["negatives"]),
        negative_log_p=None if kwargs["negative_log_p"] is None else t(kwargs["negative_log_p"]),
        negative_ids=None if kwargs["negative_ids"] is None else t(kwargs["negative_ids"]),
    )
    assert logits.dtype == torch.float64
    np.testing.assert_allclose(listwise_loss(logits).numpy(), expected, rtol=0, atol=1e-6)


def test_accidental_hits_change_the_loss_only_for_rows_with_repeats(batch):
    ids = t(batch["ids"])
    plain = listwise_loss(main_logits(t(batch["a"]), t(batch["b"]), 0.1))
    hidden = listwise_loss(main_logits(t(batch["a"]), t(batch["b"]), 0.1, item_ids=ids))
    repeated = (ids[:, None] == ids[None, :]).sum(dim=1) > 1
    assert torch.equal(plain[~repeated], hidden[~repeated])
    assert (hidden[repeated] < plain[repeated]).all()  # fewer negatives, smaller loss


def test_logq_shifts_every_logit_by_exactly_minus_log_p(batch):
    common = {"negative_embeddings": t(batch["negatives"]), "item_ids": t(batch["ids"]), "negative_ids": t(batch["negative_ids"])}
    without = main_logits(t(batch["a"]), t(batch["b"]), 0.1, **common)
    with_correction = main_logits(t(batch["a"]), t(batch["b"]), 0.1, log_p=t(batch["log_p"]), negative_log_p=t(batch["negative_log_p"]), **common)
    shift = torch.cat([t(batch["log_p"]), t(batch["negative_log_p"])])
    assert torch.equal(with_correction, without - shift[None, :])
    # logQ subtracts: a frequent item's logit goes down relative to a rare one's
    frequent, rare = int(np.argmax(batch["log_p"])), int(np.argmin(batch["log_p"]))
    delta = (with_correction - without)[2]  # item 2 occurs once, so its row hides no logit
    assert delta[frequent] < delta[rare]


@pytest.mark.parametrize("with_repeats", [False, True])
def test_ssl_loss_matches_float64_formula(batch, with_repeats):
    ids = batch["ids"] if with_repeats else None
    expected = reference_ssl_loss(batch["a"], batch["b"], 0.2, ids)
    logits = ssl_logits(t(batch["a"]), t(batch["b"]), 0.2, None if ids is None else t(ids))
    np.testing.assert_allclose(listwise_loss(logits).numpy(), expected, rtol=0, atol=1e-6)


def test_logits_stay_float32_under_bf16_autocast(batch):
    a, b = t(batch["a"]).float(), t(batch["b"]).float()
    exact = cosine_logits(a, b, 0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = cosine_logits(a, b, 0.05)
        from_bf16 = cosine_logits(a.bfloat16(), b.bfloat16(), 0.05)
    assert autocast.dtype == torch.float32 and from_bf16.dtype == torch.float32
    torch.testing.assert_close(autocast, exact)


def test_extra_negatives_need_consistent_correction(batch):
    with pytest.raises(ValueError, match="negative_log_p"):
        main_logits(t(batch["a"]), t(batch["b"]), 0.1, log_p=t(batch["log_p"]), negative_embeddings=t(batch["negatives"]))
