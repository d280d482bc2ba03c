"""Each default lives in its dataclass; docs/configuration.md and the CLI help restate them, and fail here as
soon as one of them drifts from the dataclass."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
from pathlib import Path

import pytest

from towerssl.cli import COMMANDS
from towerssl.etl.job import EtlConfig
from towerssl.model.config import ModelConfig
from towerssl.stats.job import StatsConfig
from towerssl.trainer.config import TrainConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
SECTIONS = {"etl": EtlConfig, "stats": StatsConfig, "train": TrainConfig, "train: model": ModelConfig}
COMMAND_CONFIGS = {"etl": (EtlConfig,), "stats": (StatsConfig,), "train": (TrainConfig, ModelConfig)}


def defaults(config: type) -> dict[str, object]:
    """Field -> default of a config dataclass (MISSING for a required field); nested configs left out."""
    out = {}
    for f in dataclasses.fields(config):
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if not dataclasses.is_dataclass(value):
            out[f.name] = value
    return out


def documented(section: str) -> dict[str, str]:
    """key -> default column of the table under '### `section`' in docs/configuration.md."""
    text = DOC.read_text().split(f"### `{section}`\n", 1)[1].split("\n#", 1)[0]
    return dict(re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", text, flags=re.MULTILINE))


@pytest.mark.parametrize("section", SECTIONS)
def test_configuration_md_lists_every_key_with_its_dataclass_default(section):
    expected = {key: "(required)" if value is dataclasses.MISSING else str(value) for key, value in defaults(SECTIONS[section]).items()}
    found = documented(section)
    drift = {key: (found.get(key, "missing"), expected.get(key, "no such key")) for key in {*found, *expected} if found.get(key) != expected.get(key)}
    assert not drift, f"docs/configuration.md, {section}: key -> (documented, dataclass default): {drift}"


def stated_default(help_text: str) -> str | None:
    """The default a flag's help names: "... (default 2000)", "(default: raw)", or "global (default; ...)"."""
    match = re.search(r"\(default:? ([^\s;,)]+)\)", help_text) or re.search(r"(\S+) \(default[;:)]", help_text)
    return match.group(1) if match else None


@pytest.mark.parametrize("command", COMMAND_CONFIGS)
def test_cli_help_states_the_dataclass_defaults(command):
    parser = argparse.ArgumentParser()
    importlib.import_module(COMMANDS[command][0]).add_arguments(parser)
    known = {key: value for config in reversed(COMMAND_CONFIGS[command]) for key, value in defaults(config).items()}
    checked = 0
    for action in parser._actions:
        stated = stated_default(action.help or "")
        default = known.get(action.dest)
        if stated is None or default is None or default is dataclasses.MISSING:
            continue  # no default named, no config key, or a None whose meaning the help spells out
        same = stated == str(default) if isinstance(default, bool) else type(default)(stated) == default
        assert same, f"towerssl {command} {action.option_strings[0]}: help says default {stated}, the config {default!r}"
        checked += 1
    assert checked >= 2  # the pattern still finds the help's defaults
