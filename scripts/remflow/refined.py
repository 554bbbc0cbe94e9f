"""The result of one column refinement, shared by :mod:`remflow.columns` and :mod:`remflow.fastfit`.

Lives in its own module so that neither of the two imports the other at import time
(``columns`` chooses ``fastfit`` as a refiner; ``fastfit`` returns these results).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RefinedColumns:
    """Per-column results of one refinement, arrays of equal length N (pixels)."""

    x: np.ndarray
    y: np.ndarray
    sigma_x: np.ndarray
    sigma_y: np.ndarray
    amplitude: np.ndarray  # HyperSpy Gaussian2D "A" (volume above the local background); 0 = failed fit
    ok: np.ndarray  # bool, see fit_ok
    rotation: np.ndarray | None = None  # radians; None = 0 (used only to draw the model image)


def fit_ok(x: np.ndarray, y: np.ndarray, start: np.ndarray, amplitude: np.ndarray,
           shape: tuple[int, int], separation_px: float) -> np.ndarray:
    """(N,) bool: False where atomap fell back to centre of mass (amplitude 0), or the position is
    not finite, outside the image, or moved more than half the column spacing from its start."""
    start = np.asarray(start, dtype=np.float64).reshape(-1, 2)
    with np.errstate(invalid="ignore"):
        moved = np.hypot(x - start[:, 0], y - start[:, 1])
        inside = (x >= -0.5) & (y >= -0.5) & (x <= shape[1] - 0.5) & (y <= shape[0] - 0.5)
        return (np.asarray(amplitude) != 0) & np.isfinite(x) & np.isfinite(y) & inside & (moved <= 0.5 * separation_px)
