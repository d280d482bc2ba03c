"""Raw input as the ETL sees it: string-typed records that still carry their source file and raw text.

Every reader (the generic raw layout, the MovieLens formats) produces a RawInput; validation, encoding and
the rejects table then work the same for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from typing import TYPE_CHECKING

from towerssl.fields import OWNERS

if TYPE_CHECKING:  # only annotations: the reason strings below are imported where there is no Spark
    from pyspark.sql import Column, DataFrame

SOURCE_COL = "_source"  # the file a record came from
RAW_COL = "_raw"  # the record's original text (for the rejects table)
CORRUPT_COL = "_corrupt"  # optional: set by a reader when a record could not be split into its columns
LINE_COL = "_line"  # a line of a text input, before parsing (RawInput.interaction_lines filters on it)
# Optional: set by a reader that checks each record's syntax and bytes itself, to the reason the record is
# unusable (null when it is fine). Without it, validation takes CORRUPT_COL as malformed and U+FFFD in the
# raw text as invalid UTF-8 (what a reader that decodes with replacement leaves).
REASON_COL = "_reason"
WRONG_COLUMNS = "malformed record (wrong number of columns)"
INVALID_UTF8 = "invalid UTF-8"


@dataclass(frozen=True)
class FieldDef:
    """One feature field of the raw data. Multi-valued fields arrive as one string joined by `sep`.

    The raw input's contract, not the encoded one: the ETL turns it into a towerssl.fields.FieldSpec."""

    name: str
    owner: str
    multi: bool = False
    sep: str = "|"
    max_len: int | None = None  # None: the ETL config's default length for multi-valued fields

    def __post_init__(self) -> None:
        if self.owner not in OWNERS:
            raise ValueError(f"field {self.name!r}: owner must be one of {OWNERS}, got {self.owner!r}")


@dataclass(frozen=True)
class RawInput:
    """String columns plus SOURCE_COL and RAW_COL on every frame.

    interactions: user_id, item_id, timestamp (unix seconds).
    items: item_id + one column per item field. users: user_id + one column per user field, or None.
    interaction_lines: for a text input, the interactions rows of only the lines where a condition on
    LINE_COL holds; filtering the text before parsing makes a re-read for a few rows cheap. None: the
    reader has no such shortcut, and a re-read scans `interactions` whole.
    """

    interactions: DataFrame
    items: DataFrame
    users: DataFrame | None
    fields: tuple[FieldDef, ...]
    interaction_lines: Callable[[Column], DataFrame] | None = None

    def fields_of(self, owner: str) -> tuple[FieldDef, ...]:
        return tuple(f for f in self.fields if f.owner == owner)
