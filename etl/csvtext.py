"""CSV text split into RFC 4180 records, each either well-formed (its fields) or with the reason it is not.

Why our own parser: Spark's CSV reader takes a backslash as an escape, splits a quoted field at a line break,
and accepts an unclosed quote or a quote inside an unquoted field; the ETL must reject those with a reason
(docs/tables.md, "CSV dialect"). The layout reader uses this parser for every file that holds a quote past
its header or bytes that are not UTF-8; files with neither are read by Spark's line reader, which agrees with
this parser on them (both skip blank lines and end a line at LF, CRLF or a lone CR).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

UNCLOSED_QUOTE = "malformed record (unclosed quote)"
QUOTE_IN_FIELD = "malformed record (quote inside an unquoted field)"
TEXT_AFTER_QUOTE = "malformed record (text after a closing quote)"
BLANK = "".join(map(chr, range(33)))  # what Java's String.trim removes: Spark skips lines of only these

_QUOTED = re.compile(r'"([^"]*(?:""[^"]*)*)"')  # a quoted field; "" inside stands for one quote
_PLAIN = re.compile(r'[^,"\r\n]*')
_LINE_END = re.compile(r"\r\n|\n|\r")


@dataclass(frozen=True)
class Record:
    """fields: the record's values, or None when it is not well-formed (problem says why). text: the record
    as written, without its line break (a quoted field may hold line breaks); a malformed record's text is
    its first line, and the next record starts on the line after it."""

    fields: list[str] | None
    text: str
    problem: str | None = None


def records(text: str) -> Iterator[Record]:
    """Every record of `text` in order; blank lines are not records."""
    pos, n = 0, len(text)
    while pos < n:
        line_break = _LINE_END.search(text, pos)
        line_end, next_line = (line_break.start(), line_break.end()) if line_break else (n, n)
        if not text[pos:line_end].strip(BLANK):
            pos = next_line
            continue
        fields, end, problem = _fields(text, pos)
        if problem is not None:
            yield Record(None, text[pos:line_end], problem)
            pos = next_line
            continue
        yield Record(fields, text[pos:end])
        after = _LINE_END.match(text, end)
        pos = after.end() if after else n


def _fields(text: str, pos: int) -> tuple[list[str], int, str | None]:
    """The fields of the record starting at `pos`, where it ends (at its line break or the end), or a problem."""
    fields, n = [], len(text)
    while True:
        if text.startswith('"', pos):
            quoted = _QUOTED.match(text, pos)
            if quoted is None:
                return fields, pos, UNCLOSED_QUOTE
            fields.append(quoted.group(1).replace('""', '"'))
            pos = quoted.end()
            if pos < n and text[pos] not in ",\r\n":
                return fields, pos, TEXT_AFTER_QUOTE
        else:
            plain = _PLAIN.match(text, pos)
            fields.append(plain.group())
            pos = plain.end()
            if pos < n and text[pos] == '"':
                return fields, pos, QUOTE_IN_FIELD
        if pos < n and text[pos] == ",":
            pos += 1
            continue
        return fields, pos, None
