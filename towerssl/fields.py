"""The encoded-field contract: one row of the ETL's `fields` table (docs/tables.md), defined once for the ETL
that writes it, the statistics that read the item fields and the model built from it.

The model is built from this table, so the towers never guess a cardinality or a padded length. Free of
torch and Spark: the statistics run on Spark executors, the model on machines without Spark.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from towerssl.indices import FIRST_VALUE

OWNERS = ("item", "user")
ITEM_ID_FIELD = "item"  # the item id as a feature; by the index contract each known index belongs to one item
USER_ID_FIELD = "user"
FIELDS_COLUMNS = {"field": "string", "owner": "string", "multi": "boolean", "length": "int", "cardinality": "int", "position": "int"}
FIELDS_SCHEMA = ", ".join(f"{name} {kind}" for name, kind in FIELDS_COLUMNS.items())  # the table's Spark DDL


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

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> FieldSpec:
        """From one row of the `fields` table (its `position` is the caller's to order by)."""
        return cls(str(row["field"]), str(row["owner"]), bool(row["multi"]), int(row["length"]), int(row["cardinality"]))


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
        rows = list(rows)
        for number, row in enumerate(rows):
            missing = [k for k in FIELDS_COLUMNS if k not in row]
            if missing:
                raise ValueError(f"fields table row {number} ({row.get('field', '?')!r}): missing column(s) {', '.join(missing)}")
        return cls(tuple(FieldSpec.from_row(r) for r in sorted(rows, key=lambda r: int(r["position"]))))

    def rows(self) -> list[dict[str, Any]]:
        """The `fields` table rows, position = order in the spec (from_rows reads them back)."""
        return [
            {"field": f.name, "owner": f.owner, "multi": f.multi, "length": f.length, "cardinality": f.cardinality, "position": position}
            for position, f in enumerate(self.fields)
        ]
