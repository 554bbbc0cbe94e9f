"""How precise are the fitted column positions, raw vs restored, and is the difference real?

Two measures, each computed on the same columns for raw and restored (a *paired* comparison):

- **lattice RMS** (needs no ground truth): per sublattice, every column is given integer
  lattice indices ``(i, j)`` from its *restored* position (two basis vectors from the
  nearest-neighbour vectors, so raw and restored share one indexing); then, separately
  for raw and for restored, ``origin + i a + j b`` is fitted by least squares and each
  column's residual is its distance from its ideal point. Border columns (within one
  column spacing of the image edge: their fitting region is cut) and columns whose fit
  failed on either image are left out. Real lattice distortions (strain, defects, scan
  distortions) stay in the residuals, so the lattice RMS is an upper bound on the
  imprecision and the raw/restored ratio is pulled towards 1 by them.
- **truth RMSE** (simulated samples): RMS distance of each fitted column from the true
  position it was matched to (see :func:`match_nearest`), over every matched column fitted
  on both images (border columns included: recomputable from columns.csv alone).

The truth RMSE measures accuracy: a systematic shift that restoration puts into every
column counts. The lattice RMS measures precision only: a uniform shift or strain of a
whole image is fitted away. A column whose fit failed on either image is left out of
both (pairing needs it on both); ``n_fit_failed_raw``/``_restored`` say how many, since
dropping failures flatters the noisier image.

Both are *radial* (2D) RMS values: ``sqrt(mean(dx**2 + dy**2))``. The precision per axis
(the usual sigma_x = sigma_y of a column position, and what a per-axis Cramér-Rao bound
gives) is this divided by sqrt(2). The lattice fit uses 6 parameters per sublattice, so
the lattice RMS is low by a factor ``sqrt(1 - 3/n)`` (under 3% for n >= 50 columns, the
same for raw and restored, so the gain is unaffected); it is not corrected.

Calibrated figures (``*_pm``): each displacement component is scaled by its pixel size
(``pixel_size_pm`` a number, or ``(x_pm, y_pm)`` for non-square pixels) *before* the norm is
taken. With non-square pixels the gain is computed from these physical displacements.

Gain = RMS raw / RMS restored (> 1: restoration made positions more precise). Its 95%
interval is a paired percentile bootstrap over columns: each resample draws the same
column indices for raw and restored, so the interval accounts for their correlation.
The bootstrap treats columns as independent: errors shared by neighbouring columns
(e.g. a restoration artefact spanning several) make the interval too narrow. The
verdict is "helps" when the whole interval is above 1, "hurts" when below 1, else
"inconclusive". The gain is based on the truth RMSE when ground truth is given, else on
the lattice RMS. Seeds are fixed: the same input gives the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

KINDS = ("raw", "restored")
#: A position is indexed when it lies within this fraction of a cell of an ideal lattice point.
INDEX_TOLERANCE = 0.3
#: A true column counts as missed only this many spacings inside the image: atomap's peak
#: finder ignores peaks within 0.75 spacing of the edge, and a B site needs all four A
#: corners of its cell, so columns nearer the edge are not found by design (raw and
#: restored alike, as they share their starts).
MISSED_BORDER_SPACINGS = 1.5
#: Lattice vectors are estimated from at most this many positions (those nearest the centroid).
MAX_BASIS_POSITIONS = 400
_PX_FIGURES = ["lattice_rms_raw_px", "lattice_rms_restored_px", "truth_rmse_raw_px", "truth_rmse_restored_px"]
_CI = ("", "_ci_low", "_ci_high")
_COUNTS = ["n_missed_raw", "n_spurious_raw", "n_missed_restored", "n_spurious_restored"]


def _pm_name(px_name: str) -> str:
    """lattice_rms_raw_px -> lattice_rms_raw_pm."""
    return px_name.removesuffix("_px") + "_pm"


#: Column order of results/summary.csv (sample, network and pixel_size_pm are added by the caller).
SUMMARY_FIELDS: list[str] = (
    ["sample", "status", "network", "pixel_size_pm", "n_columns", "n_columns_used",
     "n_fit_failed_raw", "n_fit_failed_restored"]
    + [f"{name}{suffix}" for name in _PX_FIGURES for suffix in _CI]
    + _COUNTS
    + [f"{_pm_name(name)}{suffix}" for name in _PX_FIGURES for suffix in _CI]
    + ["precision_gain", "precision_gain_ci_low", "precision_gain_ci_high", "verdict", "gain_basis"]
)


# --------------------------------------------------------------------------- lattice


@dataclass
class IdealLattice:
    """``origin + i a + j b``; positions are (x, y) in pixels."""

    origin: np.ndarray  # (2,)
    a: np.ndarray  # (2,)
    b: np.ndarray  # (2,)
    indices: np.ndarray  # (N, 2) integer (i, j) nearest to each position
    indexed: np.ndarray  # (N,) bool: within INDEX_TOLERANCE of its ideal point

    def ideal(self, indices: np.ndarray) -> np.ndarray:
        """Ideal (x, y) of integer indices (M, 2)."""
        indices = np.asarray(indices, dtype=np.float64)
        return self.origin + indices[:, :1] * self.a + indices[:, 1:] * self.b


def _fold(vectors: np.ndarray) -> np.ndarray:
    """Map v and -v to one representative (upper half-plane), so both count for one direction."""
    flip = (vectors[:, 1] < 0) | ((vectors[:, 1] == 0) & (vectors[:, 0] < 0))
    out = vectors.copy()
    out[flip] *= -1
    return out


def _cluster_vectors(vectors: np.ndarray, tolerance: float) -> list[tuple[np.ndarray, int]]:
    """Greedy clusters (mean vector, count) of vectors closer than ``tolerance``, shortest first."""
    order = np.lexsort((np.arctan2(vectors[:, 1], vectors[:, 0]), np.round(np.hypot(*vectors.T), 9)))
    sums = np.zeros((len(vectors), 2))
    counts = np.zeros(len(vectors), dtype=int)
    n_clusters = 0
    for vector in vectors[order]:
        if n_clusters:
            centres = sums[:n_clusters] / counts[:n_clusters, None]
            gaps = np.hypot(centres[:, 0] - vector[0], centres[:, 1] - vector[1])
            nearest = int(np.argmin(gaps))
            if gaps[nearest] < tolerance:
                sums[nearest] += vector
                counts[nearest] += 1
                continue
        sums[n_clusters], counts[n_clusters] = vector, 1
        n_clusters += 1
    return [(sums[k] / counts[k], int(counts[k])) for k in range(n_clusters)]


def basis_vectors(xy: np.ndarray, separation_px: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The two shortest non-parallel lattice vectors, from the vectors between near neighbours.

    Vectors to the 12 nearest neighbours (up to 2.5 nearest-neighbour distances) are
    folded so that v and -v coincide and clustered; clusters seen at least a quarter as
    often as the most common one are lattice vectors. ``a`` is the shortest, ``b`` the
    shortest at more than 20 degrees from ``a``. Works for square, rectangular (aspect up
    to 2.5), hexagonal and oblique lattices. Raises ValueError when there is no 2D lattice.
    """
    xy = np.asarray(xy, dtype=np.float64)
    if len(xy) < 4:
        raise ValueError(f"{len(xy)} positions are too few to find lattice vectors")
    # The positions nearest the centroid suffice (and are least affected by distortion).
    xy = xy[np.argsort(np.linalg.norm(xy - xy.mean(axis=0), axis=1), kind="stable")[:MAX_BASIS_POSITIONS]]
    distance, index = cKDTree(xy).query(xy, k=min(13, len(xy)))
    nearest = float(np.median(distance[:, 1])) if separation_px is None else float(separation_px)
    if not nearest > 0:
        raise ValueError("positions coincide")
    vectors = (xy[index[:, 1:]] - xy[:, None, :]).reshape(-1, 2)
    lengths = distance[:, 1:].ravel()
    keep = np.isfinite(lengths) & (lengths > 0.5 * nearest) & (lengths < 2.5 * nearest)
    if keep.sum() < 4:
        raise ValueError("too few neighbour vectors to find lattice vectors")
    clusters = _cluster_vectors(_fold(vectors[keep]), tolerance=0.2 * nearest)
    most = max(count for _, count in clusters)
    frequent = [centre for centre, count in clusters if count >= 0.25 * most]
    frequent.sort(key=lambda v: (round(float(np.hypot(*v)), 9), float(np.arctan2(v[1], v[0]))))
    a = frequent[0]
    for candidate in frequent[1:]:
        sine = abs(a[0] * candidate[1] - a[1] * candidate[0]) / (np.hypot(*a) * np.hypot(*candidate))
        if sine > math.sin(math.radians(20)):
            return a, candidate
    raise ValueError("all neighbour vectors lie along one direction: not a 2D lattice")


def _lattice_fit(xy: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares origin, a, b of ``xy ~ origin + i a + j b``."""
    design = np.column_stack([np.ones(len(indices)), indices])
    coefficients, *_ = np.linalg.lstsq(design, xy, rcond=None)
    return coefficients[0], coefficients[1], coefficients[2]


def _index(xy: np.ndarray, origin: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest integer indices and whether each position is within the index tolerance."""
    fractional = np.linalg.solve(np.column_stack([a, b]), (xy - origin).T).T
    indices = np.round(fractional)
    return indices, np.all(np.abs(fractional - indices) < INDEX_TOLERANCE, axis=1)


def fit_ideal_lattice(xy: np.ndarray, *, separation_px: float | None = None) -> IdealLattice:
    """Index positions to integers (i, j) and fit ``origin + i a + j b`` by least squares.

    Indexing starts at the position nearest the centroid and grows outwards (2.5 cells,
    then 1.6 times more each step), refitting the lattice each step, so that a slightly
    wrong starting basis or a mild distortion does not shift indices far from the centre.
    Raises ValueError when fewer than 3 positions fit a lattice.
    """
    xy = np.asarray(xy, dtype=np.float64)
    a, b = basis_vectors(xy, separation_px)
    origin = xy[np.argmin(np.linalg.norm(xy - xy.mean(axis=0), axis=1))]
    distance_from_origin = np.linalg.norm(xy - origin, axis=1)
    radius = 2.5 * max(np.hypot(*a), np.hypot(*b))
    while True:
        near = distance_from_origin <= radius
        indices, indexed = _index(xy, origin, a, b)
        fit_set = indexed & near
        if fit_set.sum() < 3 or np.linalg.matrix_rank(np.column_stack([np.ones(fit_set.sum()), indices[fit_set]])) < 3:
            raise ValueError("fewer than 3 non-collinear positions fit a lattice")
        origin, a, b = _lattice_fit(xy[fit_set], indices[fit_set])
        if near.all():
            break
        radius *= 1.6
    indices, indexed = _index(xy, origin, a, b)  # final indexing with the whole-image lattice
    if indexed.sum() >= 3:
        origin, a, b = _lattice_fit(xy[indexed], indices[indexed])
    return IdealLattice(origin=origin, a=a, b=b, indices=indices.astype(int), indexed=indexed)


def lattice_fraction(xy: np.ndarray, *, separation_px: float | None = None) -> float:
    """Fraction of positions with at least 2 of their 4 lattice neighbours (+-a, +-b) where expected.

    A local test (tolerance a quarter of the shortest lattice vector), so strain or scan
    distortion across the image does not matter. A lattice gives about 1 (edge and corner
    columns still have 2 neighbours); peaks found in noise or an amorphous image give
    about 0.2 or less. 0 when no lattice vectors can be found.
    """
    xy = np.asarray(xy, dtype=np.float64)
    try:
        a, b = basis_vectors(xy, separation_px)
    except ValueError:
        return 0.0
    tree = cKDTree(xy)
    tolerance = 0.25 * min(np.hypot(*a), np.hypot(*b))
    found = np.zeros(len(xy), dtype=int)
    for step in (a, -a, b, -b):
        distance, _ = tree.query(xy + step, distance_upper_bound=tolerance)
        found += np.isfinite(distance)
    return float(np.mean(found >= 2))


# --------------------------------------------------------------------------- selection


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


def _away_from_border(xy: np.ndarray, image_shape: tuple[int, int], margin: float) -> np.ndarray:
    """Positions at least ``margin`` px from every image edge (pixel i centred at i)."""
    rows, cols = image_shape
    return ((xy[:, 0] >= margin) & (xy[:, 1] >= margin)
            & (xy[:, 0] <= cols - 1 - margin) & (xy[:, 1] <= rows - 1 - margin))


def usable_columns(table: pd.DataFrame, image_shape: tuple[int, int], separation_px: float) -> np.ndarray:
    """Columns fitted well on both images and at least one spacing from the edge (by restored position)."""
    if len(table) == 0:
        return np.zeros(0, dtype=bool)
    xy = table[["x_restored_px", "y_restored_px"]].to_numpy(float)
    ok = table["fit_ok_raw"].astype(bool).to_numpy() & table["fit_ok_restored"].astype(bool).to_numpy()
    return ok & _away_from_border(xy, image_shape, separation_px)


def lattice_residual_vectors(table: pd.DataFrame, *, image_shape: tuple[int, int],
                             separation_px: float) -> dict[str, np.ndarray]:
    """Per-column (dx, dy) from the ideal lattice, raw and restored, on the same columns.

    Returns (M, 2) arrays under "raw" and "restored" and the table's row labels under "rows".
    Each sublattice is indexed once (restored positions); each image then gets its own
    best lattice for those indices, so a uniform shift or strain between raw and
    restored is not counted as imprecision.
    """
    usable = usable_columns(table, image_shape, separation_px)
    out: dict[str, list[np.ndarray]] = {"raw": [], "restored": [], "rows": []}
    for _, group in table[usable].groupby("sublattice", sort=True):
        if len(group) < 4:
            continue
        try:
            reference = fit_ideal_lattice(group[["x_restored_px", "y_restored_px"]].to_numpy(float),
                                          separation_px=None)
        except ValueError:
            continue
        indices = reference.indices[reference.indexed]
        if len(indices) < 4:
            continue
        for kind in KINDS:
            xy = group[[f"x_{kind}_px", f"y_{kind}_px"]].to_numpy(float)[reference.indexed]
            origin, a, b = _lattice_fit(xy, indices)
            out[kind].append(xy - (origin + indices[:, :1] * a + indices[:, 1:] * b))
        out["rows"].append(group.index.to_numpy()[reference.indexed])
    empty = {"raw": np.empty((0, 2)), "restored": np.empty((0, 2)), "rows": np.empty(0, dtype=int)}
    return {key: (np.concatenate(value) if value else empty[key]) for key, value in out.items()}


def lattice_residuals(table: pd.DataFrame, which: str, *, image_shape: tuple[int, int],
                      separation_px: float) -> np.ndarray:
    """Per-column distance (px) from the best ideal lattice, for ``which`` = "raw" or "restored".

    Only usable columns (see :func:`usable_columns`) that index onto their sublattice's
    lattice; in the order of :func:`lattice_residual_vectors` (by sublattice, then table order).
    """
    if which not in KINDS:
        raise ValueError(f"which must be 'raw' or 'restored', not '{which}'")
    vectors = lattice_residual_vectors(table, image_shape=image_shape, separation_px=separation_px)[which]
    return np.hypot(vectors[:, 0], vectors[:, 1])


# --------------------------------------------------------------------------- truth


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
    inside = _away_from_border(true_xy, image_shape, MISSED_BORDER_SPACINGS * separation_px)
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


# --------------------------------------------------------------------------- statistics


def bootstrap_ci(values: np.ndarray, statistic: Callable[[np.ndarray], float], *, n_boot: int = 2000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over resampled rows of ``values``.

    Resample ``k`` draws row indices ``rng.integers(0, n, n)`` from one generator seeded
    with ``seed``: calls with the same seed and row count use the same resamples, so
    statistics of paired columns (raw and restored in one array) stay paired.
    """
    values = np.asarray(values)
    if len(values) == 0:
        return float("nan"), float("nan")
    draws = np.random.default_rng(seed).integers(0, len(values), size=(n_boot, len(values)))
    stats = np.array([statistic(values[rows]) for rows in draws], dtype=np.float64)
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def _rms_of(squared: np.ndarray) -> float:
    return float(np.sqrt(np.mean(squared)))


def _ratio_of_rms(squared_pairs: np.ndarray) -> float:
    """RMS of column 0 over RMS of column 1 (raw over restored)."""
    denominator = np.sqrt(np.mean(squared_pairs[:, 1]))
    return float(np.sqrt(np.mean(squared_pairs[:, 0])) / denominator) if denominator > 0 else float("inf")


def verdict(ci_low: float | None, ci_high: float | None) -> str:
    """helps: the whole interval of the gain is above 1; hurts: below 1; else inconclusive."""
    if ci_low is not None and np.isfinite(ci_low) and ci_low > 1:
        return "helps"
    if ci_high is not None and np.isfinite(ci_high) and ci_high < 1:
        return "hurts"
    return "inconclusive"


def _scaled(vectors: np.ndarray, pixel_size_pm: float | tuple[float, float]) -> np.ndarray:
    """Displacements (dx, dy) in px to pm, per component."""
    return vectors * np.broadcast_to(np.asarray(pixel_size_pm, dtype=np.float64), (2,))


def _paired_figures(raw: np.ndarray, restored: np.ndarray, *, n_boot: int, seed: int) -> dict[str, Any]:
    """RMS of raw and restored displacements with intervals, and the gain with its interval."""
    squared = np.column_stack([np.sum(raw**2, axis=1), np.sum(restored**2, axis=1)])
    figures: dict[str, Any] = {}
    for column, kind in enumerate(KINDS):
        figures[kind] = _rms_of(squared[:, column])
        figures[f"{kind}_ci"] = bootstrap_ci(squared[:, column], _rms_of, n_boot=n_boot, seed=seed)
    figures["gain"] = _ratio_of_rms(squared)
    figures["gain_ci"] = bootstrap_ci(squared, _ratio_of_rms, n_boot=n_boot, seed=seed)
    return figures


def _json_number(value: Any) -> Any:
    """Plain Python numbers for JSON; NaN and infinity become None."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def precision_summary(table: pd.DataFrame, *, image_shape: tuple[int, int], separation_px: float,
                      pixel_size_pm: float | tuple[float, float] | None, truth: pd.DataFrame | None = None,
                      seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """All precision figures of one sample as a flat, JSON-ready dict (see the module docs).

    Keys: status, n_columns, n_columns_used (columns behind the gain), n_fit_failed_raw/restored,
    lattice_rms_{raw,restored}_px (+ _ci_low, _ci_high), with truth also
    truth_rmse_{raw,restored}_px (+ CIs) and n_missed/n_spurious_{raw,restored};
    precision_gain (+ CIs), gain_basis, verdict; ``_pm`` twins of every ``_px`` figure
    (None when uncalibrated). Figures that cannot be computed are None.
    """
    caller_fields = ("sample", "network", "pixel_size_pm")
    result: dict[str, Any] = {name: None for name in SUMMARY_FIELDS if name not in caller_fields}
    result["n_columns"] = len(table)
    result["n_fit_failed_raw"] = int((~table["fit_ok_raw"].astype(bool)).sum()) if len(table) else 0
    result["n_fit_failed_restored"] = int((~table["fit_ok_restored"].astype(bool)).sum()) if len(table) else 0
    bases: dict[str, dict[str, np.ndarray]] = {}
    lattice = lattice_residual_vectors(table, image_shape=image_shape, separation_px=separation_px)
    bases["lattice"] = {kind: lattice[kind] for kind in KINDS}
    if truth is not None:
        table = with_truth_columns(table, truth, separation_px)
        bases["truth"] = truth_error_vectors(table, image_shape=image_shape, separation_px=separation_px)
        for kind in KINDS:
            result[f"n_missed_{kind}"], result[f"n_spurious_{kind}"] = detection_counts(
                table, kind, truth=truth, image_shape=image_shape, separation_px=separation_px)
    gains: dict[str, dict[str, Any]] = {}
    for basis, prefix in (("lattice", "lattice_rms"), ("truth", "truth_rmse")):
        if basis not in bases or len(bases[basis]["raw"]) < 3:
            continue
        units = [("px", None)] + ([("pm", pixel_size_pm)] if pixel_size_pm is not None else [])
        for unit, scale in units:
            raw, restored = (bases[basis][kind] if scale is None else _scaled(bases[basis][kind], scale)
                             for kind in KINDS)
            figures = _paired_figures(raw, restored, n_boot=n_boot, seed=seed)
            for kind in KINDS:
                name = f"{prefix}_{kind}_{unit}"
                result[name] = figures[kind]
                result[f"{name}_ci_low"], result[f"{name}_ci_high"] = figures[f"{kind}_ci"]
            gains[basis] = {"gain": figures["gain"], "ci": figures["gain_ci"], "n": len(raw)}  # pm last if calibrated
    basis = "truth" if "truth" in gains else ("lattice" if "lattice" in gains else None)
    if basis is None:
        result["status"] = "too few usable columns for precision figures"
        result["n_columns_used"] = 0
        result["verdict"] = "inconclusive"
    else:
        result["status"] = "ok"
        result["gain_basis"] = basis
        result["n_columns_used"] = gains[basis]["n"]
        result["precision_gain"] = gains[basis]["gain"]
        result["precision_gain_ci_low"], result["precision_gain_ci_high"] = gains[basis]["ci"]
        result["verdict"] = verdict(result["precision_gain_ci_low"], result["precision_gain_ci_high"])
    return {key: _json_number(value) for key, value in result.items()}

# The frame-series estimator lives in its own module (formula, assumptions, validation there).
from remflow.precision.series import SERIES_FIELDS, series_precision, series_summary  # noqa: E402,F401
