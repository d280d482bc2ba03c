"""`towerssl experiment`: the grid of variants, tuning and seeds behind docs/experiments.md."""
