"""The torch side of the feature spec (towerssl.fields): the tensors a tower takes, and the masked value."""

from __future__ import annotations

import torch

from towerssl.fields import FieldSpec
from towerssl.indices import DEFAULT, PAD

Features = dict[str, torch.Tensor]  # field name -> LongTensor [B] (single-valued) or [B, L] (multi-valued)


def mask_rows(field: FieldSpec, values: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """`values` with the rows where `masked` [B] is True replaced by the masked value.

    The masked value is DEFAULT, or for a multi-valued field the row [DEFAULT, PAD, ..., PAD], so pooling
    yields exactly the learned DEFAULT embedding.
    """
    if not field.multi:
        return torch.where(masked, DEFAULT, values)
    masked_row = torch.full((field.length,), PAD, dtype=values.dtype, device=values.device)
    masked_row[0] = DEFAULT
    return torch.where(masked[:, None], masked_row, values)
