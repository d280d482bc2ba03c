"""Config objects from a YAML file with command-line overrides (flags win over the file)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from towerssl.errors import UsageError

T = TypeVar("T")


class ConfigError(UsageError):
    """A config file or option that cannot be used; the message names the file and key."""


def build_config(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None, section: str | None = None) -> T:
    """Build dataclass `cls` from defaults, then the YAML file (optionally one section of it), then overrides.

    Overrides whose value is None are ignored, so unset argparse flags do not mask the file.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        if section is not None:
            loaded = loaded.get(section, {}) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping{f' under {section!r}' if section else ''}")
        values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f"config file {path}" if path is not None else "options"
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return cls(**values)


def config_dict(config: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a config dataclass (recorded with tables and models)."""
    return dataclasses.asdict(config)
