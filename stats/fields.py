"""The item feature fields the statistics run over, read from the `fields` table and checked against `items`."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql.types import ArrayType, IntegerType

from towerssl.errors import UsageError
from towerssl.fields import FieldSpec


def item_fields(fields_table: DataFrame, items: DataFrame) -> list[FieldSpec]:
    """Item fields in `fields.position` order, the id field included; each must match its `items` column."""
    rows = fields_table.where("owner = 'item'").orderBy("position").collect()
    if not rows:
        raise UsageError("table fields: no field with owner 'item'")
    try:
        fields = [FieldSpec.from_row(r.asDict()) for r in rows]
    except ValueError as error:  # a row the contract rejects is a bad input table, not a bug
        raise UsageError(f"table fields: {error}") from error
    types = {f.name: f.dataType for f in items.schema.fields}
    for field in fields:
        expected = ArrayType(IntegerType()) if field.multi else IntegerType()
        actual = types.get(field.name)
        if actual is None:
            raise UsageError(f"table items: no column for item field {field.name!r} (columns: {', '.join(types)})")
        if type(actual) is not type(expected) or (field.multi and actual.elementType != IntegerType()):
            raise UsageError(f"table items: field {field.name!r} has type {actual.simpleString()}, expected {expected.simpleString()}")
    return fields
