"""The feature spec the towers are built from (the index contract lives in towerssl.indices).

The spec mirrors the ETL's `fields` Delta table, so a model is always built from the vocabularies it will
be fed; the towers never guess a cardinality or a padded length.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from towerssl.indices import DEFAULT, FIRST_VALUE, PAD  # noqa: F401 (the model imports them from here)

OWNERS = ("item", "user")
ITEM_ID_FIELD = "item"
USER_ID_FIELD = "user"

Features = dict[str, torch.Tensor]  # field name -> LongTensor [B] (single-valued) or [B, L] (multi-valued)


@dataclass(frozen=True)
class FieldSpec:
    """One encoded field: who owns it, whether it holds a padded list of values, and its vocabulary size."""

    name: str
    owner: str
    multi: bool
    length: int
    cardinality: int

    def __post_init__(self) -> None:
        if self.owner not in OWNERS:
            raise ValueError(f"field {self.name!r}: owner must be one of {OWNERS}, got {self.owner!r}")
        if self.length < 1 or (not self.multi and self.length != 1):
            raise ValueError(f"field {self.name!r}: length must be 1 for a single-valued field and >= 1 otherwise, got {self.length}")
        if self.cardinality < FIRST_VALUE:
            raise ValueError(f"field {self.name!r}: cardinality {self.cardinality} leaves no room for the reserved indices 0..2")


@dataclass(frozen=True)
class FeatureSpec:
    """All fields in their stable order; the item and user towers each take the fields they own."""

    fields: tuple[FieldSpec, ...]

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"feature spec: duplicate field(s) {', '.join(duplicates)}")
        owners = {f.name: f.owner for f in self.fields}
        for name, owner in ((ITEM_ID_FIELD, "item"), (USER_ID_FIELD, "user")):
            if owners.get(name) != owner:
                raise ValueError(f"feature spec: the id field {name!r} must be present and owned by {owner} (the ETL adds it)")

    @property
    def item_fields(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.owner == "item")

    @property
    def user_fields(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.owner == "user")

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> FeatureSpec:
        """Build from rows shaped like the `fields` Delta table (field, owner, multi, length, cardinality, position)."""
        keys = ("field", "owner", "multi", "length", "cardinality", "position")
        rows = list(rows)
        for number, row in enumerate(rows):
            missing = [k for k in keys if k not in row]
            if missing:
                raise ValueError(f"fields table row {number} ({row.get('field', '?')!r}): missing column(s) {', '.join(missing)}")
        ordered = sorted(rows, key=lambda r: int(r["position"]))
        return cls(
            tuple(
                FieldSpec(str(r["field"]), str(r["owner"]), bool(r["multi"]), int(r["length"]), int(r["cardinality"]))
                for r in ordered
            )
        )


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
