"""SSL augmentations (Yao et al. 2021): two views of a batch of items, made on the features' device.

Every function is pure: it reads a features dict and a torch.Generator (on the same device) and returns new
tensors. Randomness is drawn for the whole batch at once; the only Python loops run over the handful of
fields, each step vectorized over the batch. A masking scheme yields a boolean matrix [B, k] per view over
the k item fields (True: masked); `apply_masks` turns it into features that hold DEFAULT there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from towerssl.fields import FieldSpec
from towerssl.indices import PAD
from towerssl.model.config import ModelConfig
from towerssl.model.features import Features, mask_rows

Views = tuple[Features, Features]


def batch_size_and_device(features: Features) -> tuple[int, torch.device]:
    first = next(iter(features.values()))
    return first.shape[0], first.device


def apply_masks(features: Features, fields: Sequence[FieldSpec], masked: torch.Tensor) -> Features:
    """Features with field j of example i set to its masked value wherever masked[i, j]; other keys pass through."""
    out = dict(features)
    for j, field in enumerate(fields):
        out[field.name] = mask_rows(field, features[field.name], masked[:, j])
    return out


def drop_field(features: Features, field: FieldSpec, rate: float, generator: torch.Generator) -> Features:
    """Mask `field` in each example independently with probability `rate`.

    The main task's id dropout (DropoutNet, Volkovs et al. 2017): a clicked item whose id is masked must be
    scored from its content, through the same DEFAULT value that SSL masking and new items use.
    """
    n, device = batch_size_and_device(features)
    masked = torch.rand(n, generator=generator, device=device) < rate
    return {**features, field.name: mask_rows(field, features[field.name], masked)}


def drop_values(features: Features, fields: Sequence[FieldSpec], rate: float, generator: torch.Generator) -> Features:
    """Drop each real value of every multi-valued field independently with probability `rate` (to PAD).

    A field that had values and loses all of them becomes masked ([DEFAULT, PAD, ...]), never silently empty:
    the tower then sees exactly what it sees for a masked field.
    """
    out = dict(features)
    for field in fields:
        if not field.multi:
            continue
        values = features[field.name]
        keep = torch.rand(values.shape, generator=generator, device=values.device) >= rate
        dropped = torch.where(keep, values, PAD)
        emptied = (dropped == PAD).all(dim=1) & (values != PAD).any(dim=1)
        out[field.name] = mask_rows(field, dropped, emptied)
    return out


def independent_masks(batch_size: int, rates: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each field of each example masked independently with its own probability rates[j], per view (not in
    the paper: its random feature masking is rfm_masks)."""
    draws = torch.rand((2, batch_size, rates.shape[0]), generator=generator, device=rates.device)
    masked = draws < rates
    return masked[0], masked[1]


def rfm_masks(batch_size: int, num_fields: int, generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random feature masking (RFM, Yao et al.): a random half of the fields (floor(k/2)) masked in view one,
    the complementary half in view two, per example."""
    ranks = torch.rand((batch_size, num_fields), generator=generator, device=device).argsort(dim=1).argsort(dim=1)
    first = ranks < num_fields // 2
    return first, ~first


def cfm_groups(mi: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Boolean [k, k]: row s marks seed field s and its floor(k/2) - 1 highest-MI partners.

    Ties go to the earlier field (stable sort); the diagonal is ignored (the seed always belongs to its group).
    """
    mi = torch.as_tensor(mi, dtype=torch.float64)
    k = mi.shape[0]
    if mi.shape != (k, k) or k < 2:
        raise ValueError(f"CFM needs a k x k MI matrix over k >= 2 item fields, got shape {tuple(mi.shape)}")
    off_diagonal = ~torch.eye(k, dtype=torch.bool)
    if not torch.isfinite(mi[off_diagonal]).all():
        raise ValueError("CFM: the MI matrix has non-finite entries off the diagonal")
    scores = mi.masked_fill(~off_diagonal, float("inf"))
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, : k // 2]
    return torch.zeros((k, k), dtype=torch.bool).scatter_(1, order, True)


def cfm_masks(batch_size: int, groups: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Correlated feature masking: a uniform seed per example; its group masked in view one, the rest in view two."""
    seeds = torch.randint(groups.shape[0], (batch_size,), generator=generator, device=groups.device)
    first = groups[seeds]
    return first, ~first


class Augmenter:
    """Makes the two SSL views the config asks for: (features, generator) -> (view one, view two).

    Dropout runs first and, with config.dropout_with_masking, composes with every masking scheme (a masked
    field is masked whatever dropout did to it). "dropout" alone uses no masking.
    """

    def __init__(self, fields: Sequence[FieldSpec], config: ModelConfig, mi: np.ndarray | None = None, nmi: np.ndarray | None = None) -> None:
        self.fields = tuple(fields)
        self.scheme = config.scheme
        drops = self.scheme == "dropout" or (self.scheme != "none" and config.dropout_with_masking)
        self.dropout_rate = config.dropout_rate if drops else 0.0
        unknown = sorted(set(config.mask_rates) - {f.name for f in self.fields})
        if unknown:
            raise ValueError(f"mask_rates names field(s) that are no item field: {', '.join(unknown)}")
        self.mask_rates = torch.tensor([config.mask_rates.get(f.name, config.mask_rate) for f in self.fields])
        if self.scheme in ("rfm", "cfm") and len(self.fields) < 2:
            raise ValueError(f"augmentation {self.scheme!r} splits the item fields in two and needs at least 2, got {len(self.fields)}")
        self.groups: torch.Tensor | None = None
        if self.scheme == "cfm":
            chosen = nmi if config.mi_ranking == "nmi" else mi
            if chosen is None:
                raise ValueError(f"augmentation 'cfm' ranks by {config.mi_ranking!r} but no such matrix was given (run `towerssl stats`)")
            if np.shape(chosen) != (len(self.fields),) * 2:
                raise ValueError(f"CFM: the {config.mi_ranking} matrix is {np.shape(chosen)}, expected {len(self.fields)} x {len(self.fields)} over the item fields")
            self.groups = cfm_groups(chosen)

    def masks(self, batch_size: int, generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The two [B, k] masks of the configured scheme ("independent-mask", "rfm" or "cfm")."""
        if self.scheme == "independent-mask":
            return independent_masks(batch_size, self.mask_rates.to(device), generator)
        if self.scheme == "rfm":
            return rfm_masks(batch_size, len(self.fields), generator, device)
        assert self.groups is not None
        return cfm_masks(batch_size, self.groups.to(device), generator)

    def __call__(self, features: Features, generator: torch.Generator) -> Views:
        one, two = features, features
        if self.dropout_rate > 0:
            one, two = drop_values(one, self.fields, self.dropout_rate, generator), drop_values(two, self.fields, self.dropout_rate, generator)
        if self.scheme in ("independent-mask", "rfm", "cfm"):
            batch_size, device = batch_size_and_device(features)
            masked_one, masked_two = self.masks(batch_size, generator, device)
            one, two = apply_masks(one, self.fields, masked_one), apply_masks(two, self.fields, masked_two)
        return one, two
