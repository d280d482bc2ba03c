"""Typed configuration and whole-input errors: one line naming the key (or file), the value and what is
expected, exit 2, before any Spark or torch work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from towerssl.cli import main
from towerssl.config import ConfigError, build_config
from towerssl.etl.job import EtlConfig
from towerssl.experiment.config import ExperimentConfig
from towerssl.model.config import ModelConfig
from towerssl.stats.job import StatsConfig
from towerssl.trainer.config import TrainConfig

from rawdata import clean_dataset, write_raw


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ('train: {max_steps: "100"}', r"train\.max_steps = '100': expected an integer$"),
        ("train: {lr: fast}", r"train\.lr = 'fast': expected a number$"),
        ("train: {batch_size: 256.7}", r"train\.batch_size = 256\.7: expected an integer$"),
        ('train: {deterministic: "no"}', r"train\.deterministic = 'no': expected true or false$"),
        ('train: {tensorboard: "false"}', r"train\.tensorboard = 'false': expected true or false$"),
        ("train: {bf16: 1}", r"train\.bf16 = 1: expected true or false$"),
        ("train: {max_steps: true}", r"train\.max_steps = True: expected an integer$"),
        ("train: {model: {temperature: hot}}", r"train\.model\.temperature = 'hot': expected a number$"),
        ("train: {model: {hidden_dims: [64, '32']}}", r"train\.model\.hidden_dims\[1\] = '32': expected an integer$"),
        ("train: {model: {mask_rates: {genre: high}}}", r"train\.model\.mask_rates\['genre'\] = 'high': expected a number$"),
        ("train: {model: [1, 2]}", r"train\.model = \[1, 2\]: expected a mapping of its keys$"),
        ("train: {model: {depth: 3}}", r"train\.model: unknown key\(s\) depth; known: "),
        ("train: {max_steps: 0}", r"max_steps must be >= 1, got 0"),
        ("train: {weight_decay: -0.1}", r"weight_decay must be >= 0, got -0\.1"),
        ("train: {model: {dropout_rate: 1.5}}", r"dropout_rate must be in \[0, 1\), got 1\.5"),
    ],
)
def test_train_values_are_checked_against_their_type_and_range(tmp_path, text, message):
    path = config_file(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as caught:
        build_config(TrainConfig, path, section="train")
    assert str(caught.value).startswith(f"config file {path}: ")
    assert "\n" not in str(caught.value)


def test_well_typed_values_are_kept_in_their_declared_form(tmp_path):
    path = config_file(tmp_path, "train: {lr: 1e-3, weight_decay: 0, deterministic: false, tensorboard: true, model: {hidden_dims: [64, 32], temperature: 1}}")
    config = build_config(TrainConfig, path, section="train")
    assert config.lr == 0.001 and isinstance(config.weight_decay, float) and config.deterministic is False and config.tensorboard is True
    assert config.model.hidden_dims == (64, 32) and config.model.temperature == 1.0 and isinstance(config.model.temperature, float)
    assert TrainConfig(**config.to_dict()) == config  # a recorded config.json (lists, nested dict) reads back the same


@pytest.mark.parametrize(
    "cls, section, text, message",
    [
        (EtlConfig, "etl", "etl: {min_count: '2'}", r"etl\.min_count = '2': expected an integer$"),
        (EtlConfig, "etl", "etl: {valid_fraction: ten}", r"etl\.valid_fraction = 'ten': expected a number$"),
        (EtlConfig, "etl", "etl: {test_from: 12.5}", r"etl\.test_from = 12\.5: expected an integer or null$"),
        (EtlConfig, "etl", "etl: {min_count: 0}", r"min_count and id_min_count must be >= 1, got 3, 0, 1"),
        (StatsConfig, "stats", "stats: {new_item_floor: low}", r"stats\.new_item_floor = 'low': expected a number$"),
        (StatsConfig, "stats", "stats: {report_dir: 5}", r"stats\.report_dir = 5: expected a string or null$"),
    ],
)
def test_etl_and_stats_values_are_checked(tmp_path, cls, section, text, message):
    overrides = {"input": "raw", "lake": str(tmp_path / "lake")} if cls is EtlConfig else {}
    with pytest.raises(ConfigError, match=message):
        build_config(cls, config_file(tmp_path, text), overrides, section=section)


def test_a_model_config_made_in_code_is_checked_too():
    with pytest.raises(ConfigError, match=r"train\.model\.output_dim = '64': expected an integer"):
        ModelConfig(output_dim="64")


@pytest.mark.parametrize(
    "text, message",
    [
        ("etl: [1, 2]\n", r"expected a mapping under 'etl', got a list$"),
        ("- etl\n- stats\n", r"expected a mapping of keys to values, got a list$"),
        ("etl: {min_count: 2\n", r"invalid YAML at line 2, column 1: expected ',' or '}', but got '<stream end>'$"),
        ("etl:\n  min_count: 2\n   id_min_count: 3\n", r"invalid YAML at line 3, column 16: mapping values are not allowed here$"),
    ],
)
def test_a_config_that_is_not_a_mapping_of_keys_is_one_line(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as caught:
        build_config(StatsConfig, config_file(tmp_path, text), section="etl")
    assert "\n" not in str(caught.value)


def test_experiment_file_values_are_typed(tmp_path):
    base = {"datasets": {"x": {"input": "raw"}}, "variants": {"no SSL": {"alpha": 0.0}}}
    for change, message in (({"seeds": [0, "1"]}, r"experiment\.seeds\[1\] = '1': expected an integer"),
                            ({"tuning_seeds": 1.0}, r"experiment\.tuning_seeds = 1\.0: expected an integer"),
                            ({"datasets": {"x": {"input": 3}}}, r"experiment\.datasets\.x\.input = 3: expected a string or null"),
                            ({"datasets": ["x"]}, r"datasets must map each name to a mapping"),
                            ({"train": {"max_steps": "100"}}, r"train\.max_steps = '100': expected an integer")):
        path = tmp_path / "experiment.yaml"
        path.write_text(yaml.safe_dump({**base, **change}))
        with pytest.raises(ConfigError, match=message):
            ExperimentConfig.load(path)
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping of keys to values, got a list"):
        ExperimentConfig.load(tmp_path / "list.yaml")


def test_train_cli_refuses_a_badly_typed_config_with_exit_2(tmp_path, capsys):
    path = config_file(tmp_path, 'train: {tensorboard: "false"}')
    assert main(["train", "--lake", str(tmp_path / "lake"), "--run", str(tmp_path / "run"), "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"towerssl train: error: config file {path}: train.tensorboard = 'false': expected true or false\n"
    assert not (tmp_path / "run").exists()


# Whole-input errors, each through the CLI in its own process. TOWERSSL_SPARK_MASTER names no Spark master, so
# a job that got as far as starting Spark would fail with Spark's error, not with the one line checked here.
def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOWERSSL_SPARK_MASTER": "no-such-master://"}
    return subprocess.run([sys.executable, "-m", "towerssl.cli", *args], capture_output=True, text=True, env=env, timeout=300)


def assert_one_line_exit_2(result: subprocess.CompletedProcess, message: str) -> None:
    """Exit 2 with the message as the one error line (progress log lines may come before it; no traceback)."""
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.strip().splitlines() if " INFO " not in line]
    assert len(errors) == 1 and message in errors[0], result.stderr


@pytest.fixture
def raw(tmp_path):
    return write_raw(tmp_path / "raw", *clean_dataset())


def test_etl_cli_whole_input_errors(tmp_path, raw):
    lake = tmp_path / "lake"
    schema = raw / "schema.yaml"
    text = schema.read_text()

    schema.write_text("format: csv\ninteractions: [interactions\n")
    assert_one_line_exit_2(cli("etl", "--input", str(raw), "--lake", str(lake)), f"schema file {schema}: invalid YAML at line 3")
    schema.write_text("- interactions\n- items\n")
    assert_one_line_exit_2(cli("etl", "--input", str(raw), "--lake", str(lake)), f"schema file {schema}: expected a mapping of keys to values, got a list")
    schema.write_text(text.replace("interactions: interactions", "interactions: [interactions]"))
    assert_one_line_exit_2(cli("etl", "--input", str(raw), "--lake", str(lake)), f"{schema}: interactions must be a path relative to the schema file")
    schema.unlink()
    schema.mkdir()
    assert_one_line_exit_2(cli("etl", "--input", str(raw), "--lake", str(lake)), f"schema file {schema} is a directory, not a YAML file")
    schema.rmdir()
    schema.write_text(text)

    (tmp_path / "afile").write_text("not a lake")
    for bad_lake in (tmp_path / "afile", tmp_path / "afile" / "lake"):
        assert_one_line_exit_2(cli("etl", "--input", str(raw), "--lake", str(bad_lake)), f"{tmp_path / 'afile'} is a file, not a directory")
    assert_one_line_exit_2(cli("etl", "--input", str(raw), "--lake", str(lake), "--test-from", "3000"),
                           "valid_from and test_from go together, with valid_from < test_from (got None and 3000)")
    assert_one_line_exit_2(cli("etl", "--input", str(raw), "--lake", str(lake), "--valid-from", "3000", "--test-from", "3000"), "valid_from < test_from")
    config = config_file(tmp_path, "etl: {multi_length: [8]}\n")
    assert_one_line_exit_2(cli("etl", "--input", str(raw), "--lake", str(lake), "--config", str(config)), "etl.multi_length = [8]: expected an integer")
    config.write_text("etl: {multi_length: 8\n")
    assert_one_line_exit_2(cli("etl", "--input", str(raw), "--lake", str(lake), "--config", str(config)), f"config file {config}: invalid YAML at line 2")
    assert not lake.exists()


def test_stats_and_train_cli_refuse_a_lake_that_is_a_file_or_holds_no_complete_run(tmp_path):
    assert_one_line_exit_2(cli("stats", "--lake", str(tmp_path / "empty")), f"lake {tmp_path / 'empty'} holds no complete ETL run")
    (tmp_path / "afile").write_text("not a lake")
    assert_one_line_exit_2(cli("stats", "--lake", str(tmp_path / "afile")), f"lake {tmp_path / 'afile'} is a file, not a lake directory")
    assert_one_line_exit_2(cli("train", "--lake", str(tmp_path / "afile"), "--run", str(tmp_path / "run")), f"lake {tmp_path / 'afile'} is a file, not a lake directory")
