"""A trained run as its towers: the config, pinned inputs and best weights of RUN_DIR, ready for inference."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


from towerssl.errors import UsageError
from towerssl.model.towers import TwoTowers
from towerssl.trainer import checkpoint
from towerssl.trainer.config import TrainConfig
from towerssl.trainer.inputs import Manifest, feature_spec


@dataclass
class TrainedRun:
    run_dir: Path
    config: TrainConfig
    manifest: Manifest
    towers: TwoTowers

    @classmethod
    def load(cls, run_dir: str | Path, weights: str = checkpoint.BEST) -> TrainedRun:
        run_dir = Path(run_dir)
        path = run_dir / weights
        if not path.is_file():
            raise UsageError(f"{path} not found: train the run first (`towerssl train --run {run_dir}`)")
        config = TrainConfig(**json.loads((run_dir / "config.json").read_text()))
        manifest = Manifest.load(run_dir)
        towers = TwoTowers(feature_spec(manifest), config.model)
        state = checkpoint.load(path)["model"]
        try:
            towers.load_state_dict({k.removeprefix("towers."): v for k, v in state.items() if k.startswith("towers.")})
        except RuntimeError as error:
            first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
            raise UsageError(f"{path} does not match the feature spec of {run_dir / 'manifest.json'}: {first}") from error
        towers.eval()
        return cls(run_dir, config, manifest, towers)

    def code_version(self) -> str:
        from towerssl import __version__

        return __version__
