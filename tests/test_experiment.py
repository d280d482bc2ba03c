"""`towerssl experiment`: the plan, the statistics of the report against float64 references, and a tiny grid
end to end on the synthetic lake (real training and evaluation), stopped and resumed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

from towerssl.config import ConfigError
from towerssl.errors import UsageError
from towerssl.experiment.config import DEFAULT_CONFIG, ExperimentConfig
from towerssl.experiment.report import summarize, verdict

VARIANTS = {"no SSL": {"alpha": 0.0, "augmentation": "none"}, "CFM": {"augmentation": "cfm"}}


def test_default_config_plans_every_dataset_split_and_tunes_what_each_variant_leaves_open():
    config = ExperimentConfig.load(DEFAULT_CONFIG)
    assert [c.name for c in config.cells()] == [f"{d}/{s}" for d in ("ml-100k", "ml-latest-small", "ml-1m") for s in ("global", "per-user")]
    assert {p for point in config.grid_points("no SSL") for p, _ in point} == {"temperature"}  # alpha is fixed at 0
    assert len(config.grid_points("CFM")) == len(config.grid["temperature"]) * len(config.grid["alpha"])
    cell = config.cells()[0]
    tuning = config.tuning_runs(cell)
    assert len(tuning) == sum(len(config.grid_points(v)) for v in config.variants)
    assert len({run.directory(DEFAULT_CONFIG.parent) for run in tuning}) == len(tuning)  # one directory per run
    chosen = {v: config.grid_points(v)[0] for v in config.variants}
    finals = config.final_runs(cell, chosen)
    assert len(finals) == len(config.variants) * len(config.seeds)
    assert config.train_config("CFM", dict(chosen["CFM"]), 2).model.augmentation == "cfm"


def test_a_dataset_can_fix_model_settings_that_the_grid_then_leaves_alone(tmp_path):
    """The same data under two new-item paths: the old one fixes id_dropout at 0, the new one tunes it."""
    path = tmp_path / "paths.yaml"
    path.write_text(yaml.safe_dump({
        "datasets": {
            "toys": {"input": "raw", "format": "raw"},
            "toys unknown id": {"input": "raw", "format": "raw", "etl": {"untrained_id": "unknown"}, "model": {"id_dropout": 0.0}},
        },
        "splits": ["per-user"], "seeds": [0], "variants": VARIANTS, "grid": {"id_dropout": [0.0, 0.3], "temperature": [0.1]},
    }))
    config = ExperimentConfig.load(path)
    new, old = config.datasets
    assert [dict(p) for p in config.grid_points("CFM", new)] == [{"id_dropout": 0.0, "temperature": 0.1}, {"id_dropout": 0.3, "temperature": 0.1}]
    assert [dict(p) for p in config.grid_points("CFM", old)] == [{"temperature": 0.1}]
    assert config.train_config("CFM", {"temperature": 0.1}, 0, old).model.id_dropout == 0.0
    assert len(config.tuning_runs(config.cells()[0])) == 2 * len(VARIANTS) and len(config.tuning_runs(config.cells()[1])) == len(VARIANTS)


def test_refit_trains_the_chosen_settings_on_a_lake_without_validation_for_the_chosen_steps(tmp_path):
    from towerssl.experiment.runner import chosen_steps

    path = tmp_path / "refit.yaml"
    path.write_text(yaml.safe_dump({"datasets": {"toys": {"input": "raw"}}, "splits": ["leave-last-out"], "seeds": [0, 1, 2], "tuning_seeds": 2,
                                    "variants": VARIANTS, "grid": {"temperature": [0.05, 0.1]}, "refit": True}))
    config = ExperimentConfig.load(path)
    (cell,) = config.cells()
    tuning = config.tuning_runs(cell)
    chosen = {"no SSL": (("temperature", 0.1),), "CFM": (("temperature", 0.05),)}
    best_steps = {("no SSL", 0): 400, ("no SSL", 1): 600, ("CFM", 0): 1000, ("CFM", 1): 1400}
    for run in tuning:
        run.directory(tmp_path).mkdir(parents=True)
        best = best_steps.get((run.variant, run.seed), 1) if run.params == chosen[run.variant] else 9999  # other points: not used
        (run.directory(tmp_path) / "train_summary.json").write_text(json.dumps({"best_step": best}))
    steps = chosen_steps(tuning, chosen, tmp_path)
    assert steps == {"no SSL": 500, "CFM": 1200}  # the mean over the tuning seeds
    finals = config.final_runs(cell, chosen, steps)
    assert len(finals) == len(VARIANTS) * 3 and {run.cell.slug for run in finals} == {"toys-leave-last-out-refit"}
    assert not {run.directory(tmp_path) for run in finals} & {run.directory(tmp_path) for run in tuning}
    planned = config.train_config("CFM", dict(chosen["CFM"]), 2, cell.dataset, steps["CFM"])
    assert (planned.max_steps, planned.eval_every, planned.model.temperature) == (1200, 0, 0.05)  # no early stopping on the refit


@pytest.mark.parametrize(
    "change, message",
    [
        ({"splits": ["weekly"]}, "split 'weekly'"),
        ({"variants": {"bad": {"augmentation": "rotate"}}}, "variant 'bad'"),
        ({"tuning_seeds": 4}, "tuning_seeds"),
        ({"datasets": {"x": {"input": "a", "lake": "b"}}}, "exactly one of input"),
        ({"datasets": {"x": {"lake": "b"}}, "refit": True}, "refit needs raw input"),
    ],
)
def test_config_errors_name_what_is_wrong(tmp_path, change, message):
    raw = {"datasets": {"x": {"input": "raw"}}, "variants": VARIANTS, "seeds": [0, 1, 2], **change}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.load(path)


def test_summarize_matches_a_float64_reference():
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 7):
        values = [float(v) for v in rng.random(n)]
        with_gaps = values + [None]
        result = summarize(with_gaps)
        mean = sum(values) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        assert result["mean"] == pytest.approx(mean, abs=1e-15)
        assert result["std"] == pytest.approx(std, abs=1e-15)
        assert result["values"] == with_gaps
    assert summarize([None, None]) == {"mean": None, "std": None, "values": [None, None]}


def _variant(overall: float, tail: float, new: float, std: float) -> dict:
    return {"test": {"recall@50": {"overall": {"mean": overall, "std": std}, "tail": {"mean": tail, "std": std}, "new": {"mean": new, "std": std}}}}


def test_verdict_applies_each_condition_of_the_target():
    base = _variant(0.30, 0.10, 0.05, 0.001)
    variants = {
        "no SSL": base,
        "meets": _variant(0.298, 0.12, 0.06, 0.001),  # tail +20%, overall -0.67%, new +0.01
        "noisy": _variant(0.30, 0.12, 0.06, 0.02),  # same means, but spreads overlap
        "costly": _variant(0.29, 0.12, 0.06, 0.001),  # overall -3.3%
    }
    result = verdict(variants)
    assert result["meets"]["tail_relative_gain"] == pytest.approx(0.12 / 0.10 - 1)
    assert result["meets"]["overall_relative_change"] == pytest.approx(0.298 / 0.30 - 1)
    assert result["meets"]["new_difference"] == pytest.approx(0.01)
    assert result["meets"]["target_met"]
    assert not result["noisy"]["tail_gain_at_least_10pct"] and not result["noisy"]["target_met"]
    assert not result["costly"]["overall_within_1pct"] and not result["costly"]["target_met"]


def test_a_lake_built_with_other_etl_settings_is_refused(tmp_path):
    from towerssl.config import config_dict
    from towerssl.etl.job import EtlConfig
    from towerssl.experiment.runner import LAKE_MARKER, prepare_lake

    raw = {"datasets": {"d": {"input": str(tmp_path)}}, "variants": VARIANTS, "splits": ["global"], "etl": {"id_min_count": 3}}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = ExperimentConfig.load(path)
    (cell,) = config.cells()
    out = tmp_path / "out"
    lake = out / "lakes" / cell.slug
    lake.mkdir(parents=True)
    built = EtlConfig(input=str(tmp_path), lake=str(lake), split="global")  # id_min_count 1, not 3
    (lake / LAKE_MARKER).write_text(json.dumps({"etl_config": config_dict(built)}))
    with pytest.raises(UsageError, match="built with other ETL settings"):
        prepare_lake(cell, config, out)
    (lake / LAKE_MARKER).write_text(json.dumps({"etl_config": config_dict(EtlConfig(**{**config_dict(built), "id_min_count": 3}))}))
    assert prepare_lake(cell, config, out) == lake  # the same settings: the finished lake is reused, no ETL


@pytest.mark.slow
def test_tiny_experiment_runs_reports_and_resumes(synthetic_lake, tmp_path):
    from towerssl.experiment.runner import run_experiment

    raw = {
        "datasets": {"synthetic": {"lake": str(synthetic_lake)}, "absent": {"input": str(tmp_path / "nowhere"), "format": "raw"}},
        "splits": ["global"],
        "variants": VARIANTS,
        "seeds": [0, 1],
        "grid": {"temperature": [0.1, 0.2]},
        "train": {"batch_size": 128, "max_steps": 16, "eval_every": 8, "checkpoint_every": 8, "tensorboard": False, "workers": 1,
                  "model": {"embedding_dim": 8, "hidden_dims": [16], "output_dim": 8, "ssl_batch_size": 64}},
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = ExperimentConfig.load(path)
    out = tmp_path / "out"
    first = run_experiment(config, out)

    cell = first["cells"]["synthetic"]
    assert set(cell["variants"]) == set(VARIANTS)
    cell_obj = config.cells()[0]  # the lake dataset; the absent one is skipped
    valid_scores = {}
    for run in config.tuning_runs(cell_obj):
        metrics = json.loads((run.directory(out) / "valid" / "metrics.json").read_text())
        valid_scores.setdefault(run.variant, {})[run.params] = metrics["recall@50"]["overall"]
    for variant, data in cell["variants"].items():
        best = max(valid_scores[variant], key=valid_scores[variant].get)
        assert data["params"] == dict(best)  # chosen on valid_clicks
        runs = config.final_runs(cell_obj, {variant: best})
        tests = [json.loads((run.directory(out) / "test" / "metrics.json").read_text()) for run in runs]
        assert data["test"]["recall@50"]["tail"]["values"] == [t["recall@50"]["tail"] for t in tests]
        for not_chosen in set(valid_scores[variant]) - {best}:  # the test window is only scored for the chosen point
            assert not any((r.directory(out) / "test").exists() for r in config.final_runs(cell_obj, {variant: not_chosen}))
    report = (out / "results.md").read_text()
    assert "## synthetic" in report and "**recall@50**" in report
    assert "## absent/global: skipped" in report and "does not exist" in report
    assert (out / "recall50_by_slice.png").stat().st_size > 0

    # Stop one run mid-way: its summary and metrics go, its checkpoint stays. The rerun finishes only that run.
    stopped = config.final_runs(cell_obj, {"CFM": tuple(cell["variants"]["CFM"]["params"].items())})[1]
    for name in ("train_summary.json", "test/metrics.json", "valid/metrics.json"):
        (stopped.directory(out) / name).unlink()
    untouched = config.final_runs(cell_obj, {"no SSL": tuple(cell["variants"]["no SSL"]["params"].items())})[1].directory(out) / "test" / "metrics.json"
    stamp = untouched.stat().st_mtime_ns
    second = run_experiment(config, out)
    assert json.loads((stopped.directory(out) / "timing.json").read_text())["resumed"] is True
    assert json.loads((stopped.directory(out) / "train_summary.json").read_text())["steps"] == 16
    assert untouched.stat().st_mtime_ns == stamp
    assert second["cells"]["synthetic"]["variants"]["no SSL"] == cell["variants"]["no SSL"]

    # Asking for other settings in the same --out is refused, naming the run, rather than mixing two budgets.
    raw["train"]["max_steps"] = 32
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UsageError, match="trained with other settings"):
        run_experiment(ExperimentConfig.load(path), out)
