"""Listing a raw input's files without Spark, for the ETL and for `towerssl embed-items` alike.

The job lists inputs itself because Spark's listing skips names starting with '_' or '.' without a word
(docs/tables.md, "Which files are read").
"""

from __future__ import annotations

from pathlib import Path

from towerssl.errors import UsageError

HIDDEN = ("_", ".")  # Spark's file listing skips names starting with these


class RawInputError(UsageError):
    """The raw input cannot be used at all (missing file or column, empty input); names what is wrong."""


def input_files(path: Path, kind: str) -> list[Path]:
    """The files of one input: the path itself, or every file under its directory (sorted).

    The job lists them itself because Spark's listing skips names starting with '_' or '.' without a word:
    such a file stops the job here, named, unless it holds no rows (empty, like _SUCCESS) or is Hadoop's
    checksum of a file beside it (.NAME.crc)."""
    root = path if path.is_dir() else path.parent
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    hidden = {p for p in files if any(part.startswith(HIDDEN) for part in p.relative_to(root).parts)}
    unread = [str(p.relative_to(root)) for p in sorted(hidden) if p.stat().st_size and not _is_checksum(p)]
    if unread:
        raise RawInputError(f"{path}: the {kind} input holds files whose names start with '_' or '.', which Spark would not read: "
                            f"{', '.join(unread)} (rename or remove them)")
    data = [p for p in files if p not in hidden]
    if not data:
        raise RawInputError(f"{path}: the {kind} input holds no files")
    return data


def _is_checksum(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".crc") and (path.parent / path.name[1:-4]).is_file()
