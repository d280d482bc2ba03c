"""The feature MI heatmap PNG: raw MI (nats) beside the normalized MI the trainer ranks by."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def plot_mi_heatmap(mi: np.ndarray, nmi: np.ndarray, fields: Sequence[str], path: str | Path) -> Path:
    from towerssl.plots import saved_figure

    k = len(fields)
    size = max(4.0, 0.6 * k + 2)
    with saved_figure(path, columns=2, size=(2 * size + 1, size)) as (figure, axes):
        for axis, matrix, title in ((axes[0][0], mi, "MI (nats), diagonal H(U)"), (axes[0][1], nmi, "normalized MI / sqrt(H(U) H(V))")):
            image = axis.imshow(matrix, cmap="viridis", vmin=0)
            axis.set_xticks(range(k), fields, rotation=45, ha="right")
            axis.set_yticks(range(k), fields)
            axis.set_title(title)
            if k <= 16:
                for a in range(k):
                    for b in range(k):
                        axis.text(b, a, f"{matrix[a, b]:.2f}", ha="center", va="center", fontsize=7, color="white" if matrix[a, b] < 0.6 * matrix.max() else "black")
            figure.colorbar(image, ax=axis, fraction=0.046)
    return Path(path)
