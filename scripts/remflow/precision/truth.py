"""Truth RMSE (simulated samples): the distance of each fitted column from its true position.

Formula: ``truth_rmse_{raw,restored}_px = sqrt(mean(|r_fit - r_true|**2))`` over every column
with a matched true position (see :func:`match_nearest`, one to one within half the spacing,
from the common starting positions) whose fit succeeded on both images (border columns
included: recomputable from columns.csv alone).

Assumptions: the true positions are known (synthetic images, ``truth`` column of the sheet).
It measures accuracy: a systematic shift that restoration puts into every column counts,
and so does scan jitter (it moves the imaged column away from the specimen's).

What it cannot see: nothing about precision is hidden, but it exists only for simulations.

Validation: recomputed independently from columns.csv with numpy in ``tests/test_precision.py``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from remflow.precision.selection import away_from_border
from remflow.precision.stats import KINDS

#: A true column counts as missed only this many spacings inside the image: atomap's peak
#: finder ignores peaks within 0.75 spacing of the edge, and a B site needs all four A
#: corners of its cell, so columns nearer the edge are not found by design (raw and
#: restored alike, as they share their starts).
MISSED_BORDER_SPACINGS = 1.5

def match_nearest(points: np.ndarray, targets: np.ndarray, radius: float) -> np.ndarray:
    """One-to-one matching: for each point the index of its target, -1 when none.

    Pairs closer than ``radius`` are taken closest first, each point and each target at
    most once (so a doubled peak on one column gives one match and one unmatched point).
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1, 2)
    matched = np.full(len(points), -1, dtype=int)
    if len(points) == 0 or len(targets) == 0:
        return matched
    pairs = cKDTree(points).sparse_distance_matrix(cKDTree(targets), radius, output_type="ndarray")
    taken = np.zeros(len(targets), dtype=bool)
    for pair in np.sort(pairs, order=["v", "i", "j"]):
        point, target = int(pair["i"]), int(pair["j"])
        if matched[point] < 0 and not taken[target]:
            matched[point], taken[target] = target, True
    return matched

def with_truth_columns(table: pd.DataFrame, truth: pd.DataFrame, separation_px: float) -> pd.DataFrame:
    """The table with x_true_px, y_true_px; kept when present (fit_columns matched its starts),
    else matched here from the restored positions (one to one, within half the spacing)."""
    if {"x_true_px", "y_true_px"} <= set(table.columns):
        return table
    out = table.copy()
    true_xy = truth[["x_px", "y_px"]].to_numpy(float)
    match = match_nearest(table[["x_restored_px", "y_restored_px"]].to_numpy(float), true_xy, 0.5 * separation_px)
    found = match >= 0
    out["x_true_px"], out["y_true_px"] = np.nan, np.nan
    out.loc[found, "x_true_px"] = true_xy[match[found], 0]
    out.loc[found, "y_true_px"] = true_xy[match[found], 1]
    return out

def truth_error_vectors(table: pd.DataFrame, *, image_shape: tuple[int, int],
                        separation_px: float) -> dict[str, np.ndarray]:
    """(dx, dy) fitted minus matched true position, raw and restored, on the same columns:
    every column with a true position whose fit succeeded on both images. Border columns
    stay in (unlike the lattice RMS, no lattice fit needs them out), so the figure is the
    plain RMS over the matched rows of columns.csv with fit_ok_raw and fit_ok_restored."""
    ok = table["fit_ok_raw"].astype(bool).to_numpy() & table["fit_ok_restored"].astype(bool).to_numpy()
    rows = table[ok & table["x_true_px"].notna().to_numpy()]
    true_xy = rows[["x_true_px", "y_true_px"]].to_numpy(float)
    return {kind: rows[[f"x_{kind}_px", f"y_{kind}_px"]].to_numpy(float) - true_xy for kind in KINDS}

def detection_counts(table: pd.DataFrame, which: str, *, truth: pd.DataFrame, image_shape: tuple[int, int],
                     separation_px: float) -> tuple[int, int]:
    """(missed, spurious) for one image.

    Well-fitted columns of ``which`` are matched one to one to *all* true positions
    (also those at or beyond the edge) within half the spacing. Missed: true positions at
    least MISSED_BORDER_SPACINGS spacings inside the image with no match. Spurious:
    well-fitted columns with no match.
    """
    true_xy = truth[["x_px", "y_px"]].to_numpy(float)
    fitted = table.loc[table[f"fit_ok_{which}"].astype(bool), [f"x_{which}_px", f"y_{which}_px"]].to_numpy(float)
    match = match_nearest(fitted, true_xy, 0.5 * separation_px)
    matched_true = np.zeros(len(true_xy), dtype=bool)
    matched_true[match[match >= 0]] = True
    inside = away_from_border(true_xy, image_shape, MISSED_BORDER_SPACINGS * separation_px)
    return int(np.sum(inside & ~matched_true)), int(np.sum(match < 0))

def truth_errors(table: pd.DataFrame, which: str, *, separation_px: float, truth: pd.DataFrame,
                 image_shape: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """(per-column distance from the true position (px), n_missed, n_spurious) for ``which``.

    Decision: the pairing of fitted and true columns is the table's ``x_true_px``,
    ``y_true_px`` (written by fit_columns from the common starting positions, so raw and
    restored are compared on the same pairs; matched here from the restored positions
    if the table lacks them). Missed and spurious columns need the full truth table
    (``x_px``, ``y_px``), which must therefore be given, with the image shape for the border.
    """
    if which not in KINDS:
        raise ValueError(f"which must be 'raw' or 'restored', not '{which}'")
    table = with_truth_columns(table, truth, separation_px)
    vectors = truth_error_vectors(table, image_shape=image_shape, separation_px=separation_px)[which]
    missed, spurious = detection_counts(table, which, truth=truth, image_shape=image_shape,
                                        separation_px=separation_px)
    return np.hypot(vectors[:, 0], vectors[:, 1]), missed, spurious
