"""The S3-Rec item json (`<Name>_item2attributes.json`) as items rows, by the preparation's brand/category rule
(etl/amazon.py, docs/tables.md). Apart from the Spark reader and without pyspark, so that `towerssl embed-items`
parses new items by the very rule the ETL used, on a node that has no Spark."""

from __future__ import annotations

import json
from typing import Any

from towerssl.errors import UsageError


class _Object(list):
    """A JSON object as its (key, value) pairs, in order, repeated keys kept."""


def _well_formed(attributes: Any) -> bool:
    return isinstance(attributes, list) and all(type(a) is int and a >= 0 for a in attributes)


def item_rows(text: str, source: str) -> list[tuple[str | None, ...]]:
    """The json's entries as items rows (amazon.ITEMS_SCHEMA: item_id, brand, categories, corrupt, raw, source) by the brand/category rule; UsageError when the file
    is not one JSON object (nothing in it can be read as items then)."""
    try:
        entries = json.loads(text, object_pairs_hook=_Object)
    except json.JSONDecodeError as error:
        raise UsageError(f"{source}: not valid JSON ({error})") from error
    if not isinstance(entries, _Object):
        raise UsageError(f"{source}: expected one JSON object (item id -> list of attribute ids)")
    lists = [attributes for _, attributes in entries if _well_formed(attributes)]
    categories = {a for attributes in lists for a in attributes[1:]}
    rows = []
    for item, attributes in entries:
        raw = json.dumps({item: attributes})
        if not _well_formed(attributes):
            rows.append((item, None, None, raw, raw, source))
            continue
        brand = str(attributes[0]) if attributes and attributes[0] not in categories else None
        kept = "|".join(str(a) for a in dict.fromkeys(a for a in attributes if a in categories))
        rows.append((item, brand, kept or None, None, raw, source))
    return rows
