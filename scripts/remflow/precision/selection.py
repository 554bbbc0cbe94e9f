"""Which fitted columns enter the precision figures (shared by every estimator)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def away_from_border(xy: np.ndarray, image_shape: tuple[int, int], margin: float) -> np.ndarray:
    """(M,) bool: positions (M, 2) at least ``margin`` px from every image edge (pixel i centred at i)."""
    rows, cols = image_shape
    return ((xy[:, 0] >= margin) & (xy[:, 1] >= margin)
            & (xy[:, 0] <= cols - 1 - margin) & (xy[:, 1] <= rows - 1 - margin))


def usable_columns(table: pd.DataFrame, image_shape: tuple[int, int], separation_px: float) -> np.ndarray:
    """(N,) bool: columns fitted well on both images and at least one spacing from the edge (by
    restored position; nearer the edge atomap's fitting region is cut)."""
    if len(table) == 0:
        return np.zeros(0, dtype=bool)
    xy = table[["x_restored_px", "y_restored_px"]].to_numpy(float)
    ok = table["fit_ok_raw"].astype(bool).to_numpy() & table["fit_ok_restored"].astype(bool).to_numpy()
    return ok & away_from_border(xy, image_shape, separation_px)
