"""The item feature fields the statistics run over, read from the `fields` table and checked against `items`."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql.types import ArrayType, IntegerType

from towerssl.errors import UsageError

ID_FIELD = "item"  # the item id used as a feature; by the contract each known index belongs to one item


@dataclass(frozen=True)
class ItemField:
    """One item field: its column in `items` is an int, or an int array of `length` slots if `multi`."""

    name: str
    multi: bool
    length: int


def item_fields(fields_table: DataFrame, items: DataFrame) -> list[ItemField]:
    """Item fields in `fields.position` order, the id field included; each must match its `items` column."""
    rows = fields_table.where("owner = 'item'").orderBy("position").select("field", "multi", "length").collect()
    fields = [ItemField(r["field"], bool(r["multi"]), int(r["length"])) for r in rows]
    if not fields:
        raise UsageError("table fields: no field with owner 'item'")
    types = {f.name: f.dataType for f in items.schema.fields}
    for field in fields:
        expected = ArrayType(IntegerType()) if field.multi else IntegerType()
        actual = types.get(field.name)
        if actual is None:
            raise UsageError(f"table items: no column for item field {field.name!r} (columns: {', '.join(types)})")
        if type(actual) is not type(expected) or (field.multi and actual.elementType != IntegerType()):
            raise UsageError(f"table items: field {field.name!r} has type {actual.simpleString()}, expected {expected.simpleString()}")
        if field.length < 1:
            raise UsageError(f"table fields: field {field.name!r} has length {field.length}, expected >= 1")
    return fields
