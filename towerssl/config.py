"""Config objects from a YAML file with command-line overrides (flags win over the file), each value checked
against its declared type when the config object is made."""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from towerssl.errors import UsageError

T = TypeVar("T")


class ConfigError(UsageError, ValueError):
    """A config file or option that cannot be used; the message names the file and key."""


class _Loader(yaml.SafeLoader):
    """YAML 1.2 floats: PyYAML (YAML 1.1) reads `lr: 1e-3` as the string "1e-3", which the type check would
    then refuse although the user wrote a number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def load_yaml_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The YAML file's top-level mapping ({} for an empty file); anything else is a one-line ConfigError."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a directory, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except UnicodeDecodeError as error:
        raise ConfigError(f"{what} {path}: not UTF-8 text ({error.reason} at byte {error.start})") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{what} {path}: invalid YAML{where}: {getattr(error, 'problem', None) or error}") from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {path}: expected a mapping of keys to values, got {_kind(loaded)}")
    return loaded


def build_config(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None, section: str | None = None) -> T:
    """Build dataclass `cls` from defaults, then the YAML file (optionally one section of it), then overrides.

    Overrides whose value is None are ignored, so unset argparse flags do not mask the file.
    """
    values: dict[str, Any] = {}
    if path is not None:
        loaded = load_yaml_mapping(path)
        if section is not None:
            loaded = loaded.get(section)
            if loaded is None:
                loaded = {}
            elif not isinstance(loaded, dict):
                raise ConfigError(f"config file {path}: expected a mapping under {section!r}, got {_kind(loaded)}")
        values.update(loaded)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return from_mapping(cls, values, section or cls.__name__)
    except UsageError as error:  # a bad value: name the file it may have come from (flags are typed by argparse)
        if path is None:
            raise
        raise ConfigError(f"config file {path}: {error}") from error


def from_mapping(cls: type[T], values: dict[str, Any], name: str) -> T:
    """Dataclass `cls` from a mapping whose keys must all be fields of it (`name` labels it in errors)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known, key=str)
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {', '.join(map(str, unknown))}; known: {', '.join(sorted(known))}")
    return cls(**values)


def check_types(config: Any, name: str) -> None:
    """Check every field of dataclass instance `config` against its type hint, in __post_init__, before any
    range check: a wrong type is a one-line ConfigError naming `name`.key, the value and the type expected.

    bool takes only true/false (never "no" or "false" as text), int no float or bool, float an int or float;
    a nested dataclass is made from a mapping (with its own checks), a tuple from a list. Values are stored in
    their declared form (float(3) for a float, a tuple for a list)."""
    hints = _hints(type(config))
    for f in dataclasses.fields(config):
        object.__setattr__(config, f.name, _typed(getattr(config, f.name), hints[f.name], f"{name}.{f.name}"))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


class _Mismatch(Exception):
    """A value that does not have the type it must have (caught by _typed to name the key)."""


def _typed(value: Any, hint: Any, key: str) -> Any:
    try:
        return _convert(value, hint, key)
    except _Mismatch:
        raise ConfigError(f"{key} = {value!r}: expected {_describe(hint)}") from None


def _convert(value: Any, hint: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, key)
            except _Mismatch:
                pass
        raise _Mismatch
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise _Mismatch
        return from_mapping(hint, value, key)  # the nested class checks its own values
    if hint is bool:
        if not isinstance(value, bool):
            raise _Mismatch
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Mismatch
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _Mismatch
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        item = args[0] if args else Any
        return origin(_typed(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        key_hint, value_hint = args or (Any, Any)
        return {_typed(k, key_hint, f"{key} key"): _typed(v, value_hint, f"{key}[{k!r}]") for k, v in value.items()}
    raise TypeError(f"{key}: check_types does not know the type {hint!r}")  # a new kind of field: teach _convert


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if dataclasses.is_dataclass(hint):
        return "a mapping of its keys"
    if origin in (tuple, list):
        return f"a list of {_describe(args[0]) if args else 'values'}"
    if origin is dict:
        return f"a mapping to {_describe(args[1])}" if args else "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, repr(hint))


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "an integer", float: "a number", bool: "true/false"}.get(type(value), type(value).__name__)


def config_dict(config: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a config dataclass (recorded with tables and models)."""
    return dataclasses.asdict(config)
