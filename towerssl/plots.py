"""One way to make a PNG: headless matplotlib, a grid of axes, saved and closed even when drawing fails."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def saved_figure(path: str | Path, rows: int = 1, columns: int = 1, size: tuple[float, float] = (7, 4)) -> Iterator[tuple[Any, Any]]:
    """Yields (figure, axes[rows][columns]); on leaving, lays out and writes path (dpi 120)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(rows, columns, figsize=size, squeeze=False)
    try:
        yield figure, axes
        figure.tight_layout()
        figure.savefig(path, dpi=120)
    finally:
        plt.close(figure)
