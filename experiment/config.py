"""The experiment as data: datasets x splits x variants x tuning grid x seeds, from one YAML file.

A plan is the list of runs that file implies. Each run has a stable directory name built from what it
trains, so a second invocation finds the runs that are done and only does the rest.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from towerssl.config import ConfigError, check_types, load_yaml_mapping
from towerssl.etl.job import FORMATS
from towerssl.etl.split import STRATEGIES
from towerssl.trainer.config import TrainConfig

DEFAULT_CONFIG = Path(__file__).with_name("movielens.yaml")
BASELINE = "popularity baseline"  # reported beside the variants; it comes with every evaluation


@dataclass(frozen=True)
class Dataset:
    """Raw input put through the ETL once per split strategy (input + format), or a lake used as it is."""

    name: str
    input: str | None = None
    format: str = "raw"
    lake: str | None = None
    etl: dict[str, Any] = field(default_factory=dict)  # EtlConfig keys for this dataset's lakes, over the file's etl
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig keys fixed for its runs (not tuned), over the variant's

    def __hash__(self) -> int:
        return hash((self.name, self.input, self.format, self.lake))

    def __post_init__(self) -> None:
        check_types(self, f"experiment.datasets.{self.name}")
        if (self.input is None) == (self.lake is None):
            raise ConfigError(f"dataset {self.name!r}: give exactly one of input (raw data) or lake (an existing lake)")
        if self.format not in FORMATS:
            raise ConfigError(f"dataset {self.name!r}: format must be one of {', '.join(FORMATS)}, got {self.format!r}")


@dataclass(frozen=True)
class Cell:
    """One dataset under one split strategy: one lake, one results table."""

    dataset: Dataset
    split: str | None  # None for a dataset given as a lake (its split is whatever built it)
    refit: bool = False  # the lake without validation clicks, for the final fit on train + valid

    @property
    def name(self) -> str:
        return self.dataset.name if self.split is None else f"{self.dataset.name}/{self.split}"

    @property
    def slug(self) -> str:
        return self.name.replace("/", "-") + ("-refit" if self.refit else "")


@dataclass(frozen=True)
class Run:
    cell: Cell
    variant: str
    params: tuple[tuple[str, Any], ...]  # the tuned model settings of this run, in grid order
    seed: int
    steps: int | None = None  # a refit's step count, chosen on valid_clicks; None: the train section's, with early stopping

    @property
    def params_slug(self) -> str:
        return "_".join(f"{key}={value}" for key, value in self.params) or "default"

    def directory(self, out: Path) -> Path:
        return out / "runs" / self.cell.slug / slug(self.variant) / self.params_slug / f"seed-{self.seed}"


@dataclass
class ExperimentConfig:
    datasets: list[Dataset]
    variants: dict[str, dict[str, Any]]  # name -> model settings (ModelConfig keys)
    splits: list[str] = field(default_factory=lambda: ["global", "per-user"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    grid: dict[str, list[Any]] = field(default_factory=dict)  # model settings tuned per variant on valid_clicks
    selection: str = "recall@50"  # overall, on valid_clicks, averaged over the tuning seed(s)
    tuning_seeds: int = 1  # the first N seeds score every grid point; the chosen point then runs on all seeds
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig keys (model: ModelConfig keys)
    etl: dict[str, Any] = field(default_factory=dict)  # EtlConfig keys other than input, lake, format, split
    # Final runs train on train + valid clicks (a second lake without the validation hold-out) for the steps the
    # tuning run stopped at, as published protocols that train on every click but the test ones do.
    refit: bool = False

    def __post_init__(self) -> None:
        check_types(self, "experiment")
        problems = [f"split {s!r} is not one of {', '.join(STRATEGIES)}" for s in self.splits if s not in STRATEGIES]
        problems += [] if self.variants else ["no variants"]
        problems += [] if self.seeds and 1 <= self.tuning_seeds <= len(self.seeds) else ["need seeds and 1 <= tuning_seeds <= len(seeds)"]
        problems += [f"grid key {key!r} is set by the train section's model, not tuned" for key in self.grid if key in self.train.get("model", {})]
        problems += [f"refit needs raw input to build a lake without validation; dataset {d.name!r} is a lake" for d in self.datasets if self.refit and d.lake]
        if problems:
            raise ConfigError("experiment config: " + "; ".join(problems))
        for dataset in self.datasets or [None]:  # fail before any run: every variant at every grid point must be valid
            for name in self.variants:
                for params in self.grid_points(name, dataset):
                    self.train_config(name, dict(params), self.seeds[0], dataset)

    @classmethod
    def load(cls, path: str | Path) -> ExperimentConfig:
        raw = load_yaml_mapping(path, "experiment config")
        specs = raw.pop("datasets", None) or {}
        if not isinstance(specs, dict) or not all(isinstance(spec, dict) for spec in specs.values()):
            raise ConfigError(f"experiment config {path}: datasets must map each name to a mapping (input or lake, format), got {specs!r}")
        try:
            return cls(datasets=[Dataset(name, **spec) for name, spec in specs.items()], **raw)
        except TypeError as error:
            raise ConfigError(f"experiment config {path}: {error}") from error

    def cells(self) -> list[Cell]:
        return [Cell(d, None) for d in self.datasets if d.lake] + [Cell(d, s) for d in self.datasets if d.input for s in self.splits]

    def grid_points(self, variant: str, dataset: Dataset | None = None) -> list[tuple[tuple[str, Any], ...]]:
        """Every combination of the grid keys that neither the variant nor the dataset sets (no SSL fixes alpha = 0)."""
        fixed = {**self.variants[variant], **(dataset.model if dataset else {})}
        keys = [key for key in self.grid if key not in fixed]
        return [tuple(zip(keys, values)) for values in itertools.product(*(self.grid[key] for key in keys))]

    def train_config(self, variant: str, params: dict[str, Any], seed: int, dataset: Dataset | None = None, steps: int | None = None) -> TrainConfig:
        model = {**self.train.get("model", {}), **self.variants[variant], **(dataset.model if dataset else {}), **params}
        fixed_steps = {} if steps is None else {"max_steps": steps, "eval_every": 0}
        try:
            return TrainConfig(**{**self.train, **fixed_steps, "seed": seed, "model": model})
        except (TypeError, ValueError) as error:
            raise ConfigError(f"experiment config, variant {variant!r} {params}: {error}") from error

    def tuning_runs(self, cell: Cell) -> list[Run]:
        return [Run(cell, v, p, s) for v in self.variants for p in self.grid_points(v, cell.dataset) for s in self.seeds[: self.tuning_seeds]]

    def final_runs(self, cell: Cell, chosen: dict[str, tuple[tuple[str, Any], ...]], steps: dict[str, int] | None = None) -> list[Run]:
        """The chosen grid point of each variant named in `chosen`, on every seed; with refit, on the cell's
        lake without validation for the variant's `steps`."""
        if self.refit:
            refit = Cell(cell.dataset, cell.split, refit=True)
            return [Run(refit, v, params, s, steps[v]) for v, params in chosen.items() for s in self.seeds]
        return [Run(cell, v, params, s) for v, params in chosen.items() for s in self.seeds]


def slug(name: str) -> str:
    return "-".join(name.lower().split())
