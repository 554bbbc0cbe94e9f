"""How precise are the fitted column positions, raw vs restored, and is the difference real?

Two measures, both computed on the same columns for raw and restored:

- lattice RMS: RMS distance of the fitted positions from the best-fitting ideal 2D
  lattice (per sublattice: integer indices from the restored fit, then origin and two
  lattice vectors fitted by least squares); border columns (within one spacing of the
  edge) and columns whose fit failed on either image are left out. It contains real
  lattice distortions as well as noise, so it is an upper bound on the imprecision.
- truth RMSE (when true positions are given): RMS distance from the true position of
  the column each fitted column was matched to (nearest within half the spacing).

The 95% confidence intervals come from a paired bootstrap over columns: each resample
draws the same columns for raw and restored, so the interval of the gain raw/restored
accounts for their correlation. Seeds are fixed: same input, same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

KINDS = ("raw", "restored")
_FIGURES = ["lattice_rms_raw_px", "lattice_rms_restored_px", "truth_rmse_raw_px", "truth_rmse_restored_px"]
SUMMARY_FIELDS = (
    ["sample", "status", "network", "pixel_size_pm", "n_columns", "n_columns_used"]
    + [f"{name}{suffix}" for name in _FIGURES for suffix in ("", "_ci_low", "_ci_high")]
    + ["n_missed_raw", "n_spurious_raw", "n_missed_restored", "n_spurious_restored"]
    + ["precision_gain", "precision_gain_ci_low", "precision_gain_ci_high", "gain_basis", "verdict"]
    + [f"{name.removesuffix('_px')}_pm{suffix}" for name in _FIGURES for suffix in ("", "_ci_low", "_ci_high")]
)


@dataclass
class IdealLattice:
    origin: np.ndarray  # (2,) x, y
    a: np.ndarray  # (2,)
    b: np.ndarray  # (2,)
    indices: np.ndarray  # (N, 2) integer (i, j) of each position; rows of unindexable positions are -99999
    indexed: np.ndarray  # (N,) bool

    def ideal(self, indices: np.ndarray) -> np.ndarray:
        return self.origin + indices[:, :1] * self.a + indices[:, 1:] * self.b


def basis_vectors(xy: np.ndarray, spacing_px: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The two shortest lattice vectors, averaged over all nearest-neighbour pairs."""
    tree = cKDTree(xy)
    distance, index = tree.query(xy, k=min(7, len(xy)))
    vectors = (xy[index[:, 1:]] - xy[:, None, :]).reshape(-1, 2)
    lengths = distance[:, 1:].ravel()
    shortest = float(np.median(distance[:, 1])) if spacing_px is None else spacing_px
    keep = (lengths > 0.7 * shortest) & (lengths < 1.3 * shortest)
    vectors = vectors[keep]
    if len(vectors) < 2:
        raise ValueError("too few neighbours to find lattice vectors")
    # Fold into one half-plane so that v and -v count as one direction.
    flip = (vectors[:, 1] < 0) | ((vectors[:, 1] == 0) & (vectors[:, 0] < 0))
    vectors[flip] *= -1
    angles = np.arctan2(vectors[:, 1], vectors[:, 0])  # in [0, pi]
    # The first direction is the most common one; the second the most common one at > 30 degrees from it.
    histogram, edges = np.histogram(angles, bins=36, range=(0, np.pi))
    first = 0.5 * (edges[histogram.argmax()] + edges[histogram.argmax() + 1])
    separation = np.abs(np.angle(np.exp(2j * (angles - first)))) / 2  # angle between directions, mod pi
    a_vectors = vectors[separation < np.deg2rad(15)]
    others = vectors[separation > np.deg2rad(30)]
    if len(others) == 0:
        raise ValueError("all neighbours lie along one direction: not a 2D lattice")
    other_angles = np.arctan2(others[:, 1], others[:, 0])
    histogram, edges = np.histogram(other_angles, bins=36, range=(0, np.pi))
    second = 0.5 * (edges[histogram.argmax()] + edges[histogram.argmax() + 1])
    b_vectors = others[np.abs(np.angle(np.exp(2j * (other_angles - second)))) / 2 < np.deg2rad(15)]
    a = _mean_direction(a_vectors, first)
    b = _mean_direction(b_vectors, second)
    return a, b


def _mean_direction(vectors: np.ndarray, angle: float) -> np.ndarray:
    reference = np.array([np.cos(angle), np.sin(angle)])
    signs = np.sign(vectors @ reference)
    signs[signs == 0] = 1
    return (vectors * signs[:, None]).mean(axis=0)


def fit_ideal_lattice(xy: np.ndarray, *, separation_px: float | None = None) -> IdealLattice:
    """Index positions to integers (i, j) and fit origin + i a + j b by least squares."""
    xy = np.asarray(xy, dtype=np.float64)
    a, b = basis_vectors(xy, separation_px)
    # Start from the column nearest the centre so that rounding errors do not pile up.
    origin = xy[np.argmin(np.linalg.norm(xy - xy.mean(axis=0), axis=1))]
    for _ in range(3):  # index, refit, re-index: lattice vectors get more exact each pass
        fractional = np.linalg.solve(np.column_stack([a, b]), (xy - origin).T).T
        indices = np.round(fractional)
        indexed = np.all(np.abs(fractional - indices) < 0.3, axis=1)
        if indexed.sum() < 3:
            raise ValueError("fewer than 3 columns fit a lattice")
        design = np.column_stack([np.ones(indexed.sum()), indices[indexed]])
        coefficients, *_ = np.linalg.lstsq(design, xy[indexed], rcond=None)
        origin, a, b = coefficients[0], coefficients[1], coefficients[2]
    return IdealLattice(origin=origin, a=a, b=b, indices=indices.astype(int), indexed=indexed)


def _usable(table: pd.DataFrame, image_shape: tuple[int, int], separation_px: float) -> np.ndarray:
    """Columns fitted on both images and at least one spacing away from the image edge."""
    x, y = table["x_restored_px"].to_numpy(float), table["y_restored_px"].to_numpy(float)
    inside = ((x >= separation_px) & (y >= separation_px)
              & (x <= image_shape[1] - 1 - separation_px) & (y <= image_shape[0] - 1 - separation_px))
    ok = table["fit_ok_raw"].astype(bool).to_numpy() & table["fit_ok_restored"].astype(bool).to_numpy()
    return inside & ok


def lattice_residual_vectors(table: pd.DataFrame, *, image_shape: tuple[int, int],
                             separation_px: float) -> dict[str, np.ndarray]:
    """Per-column (dx, dy) from the ideal lattice for raw and restored, on the same usable columns.

    Returns arrays of shape (M, 2) under "raw" and "restored" and the table row indices under "rows".
    """
    usable = _usable(table, image_shape, separation_px)
    out: dict[str, list[np.ndarray]] = {"raw": [], "restored": [], "rows": []}
    for sublattice, group in table[usable].groupby("sublattice", sort=True):
        spacing = separation_px  # B sites (cell centres) repeat with A's spacing
        if len(group) < 4:
            continue
        restored_xy = group[["x_restored_px", "y_restored_px"]].to_numpy(float)
        try:
            reference = fit_ideal_lattice(restored_xy, separation_px=spacing)
        except ValueError:
            continue
        keep = reference.indexed
        indices = reference.indices[keep]
        for kind in KINDS:
            xy = group[[f"x_{kind}_px", f"y_{kind}_px"]].to_numpy(float)[keep]
            # Each image gets its own best lattice (same indices): a uniform shift or
            # strain between raw and restored is not counted as imprecision.
            design = np.column_stack([np.ones(len(indices)), indices])
            coefficients, *_ = np.linalg.lstsq(design, xy, rcond=None)
            out[kind].append(xy - design @ coefficients)
        out["rows"].append(group.index.to_numpy()[keep])
    return {key: (np.concatenate(value) if value else np.empty((0, 2) if key != "rows" else 0))
            for key, value in out.items()}


def lattice_residuals(table: pd.DataFrame, which: str, *, image_shape: tuple[int, int],
                      separation_px: float) -> np.ndarray:
    """Per-column distance (px) from the best ideal lattice, for "raw" or "restored"."""
    vectors = lattice_residual_vectors(table, image_shape=image_shape, separation_px=separation_px)[which]
    return np.hypot(vectors[:, 0], vectors[:, 1])


def truth_error_vectors(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """(dx, dy) from the matched true position, for columns with a match and good fits on both images."""
    matched = table["x_true_px"].notna() & table["fit_ok_raw"].astype(bool) & table["fit_ok_restored"].astype(bool)
    rows = table[matched]
    true_xy = rows[["x_true_px", "y_true_px"]].to_numpy(float)
    return {kind: rows[[f"x_{kind}_px", f"y_{kind}_px"]].to_numpy(float) - true_xy for kind in KINDS}


def detection_counts(table: pd.DataFrame, truth: pd.DataFrame, image_shape: tuple[int, int],
                     separation_px: float) -> dict[str, int]:
    """Missed true columns and spurious fitted ones, for raw and restored.

    A true column inside the image (one spacing from its edge, where columns are
    fitted and counted) is missed when no
    successful fit lies within half the spacing of it; a fitted column is spurious when
    no true column lies within half the spacing.
    """
    true_xy = truth[["x_px", "y_px"]].to_numpy(float)
    margin = separation_px
    inside = ((true_xy[:, 0] >= margin) & (true_xy[:, 1] >= margin)
              & (true_xy[:, 0] <= image_shape[1] - 1 - margin) & (true_xy[:, 1] <= image_shape[0] - 1 - margin))
    true_xy = true_xy[inside]
    counts = {}
    for kind in KINDS:
        fitted = table.loc[table[f"fit_ok_{kind}"].astype(bool), [f"x_{kind}_px", f"y_{kind}_px"]].to_numpy(float)
        if len(fitted) == 0 or len(true_xy) == 0:
            counts[f"n_missed_{kind}"], counts[f"n_spurious_{kind}"] = len(true_xy), len(fitted)
            continue
        near_true, _ = cKDTree(fitted).query(true_xy, distance_upper_bound=0.5 * separation_px)
        near_fit, _ = cKDTree(true_xy).query(fitted, distance_upper_bound=0.5 * separation_px)
        counts[f"n_missed_{kind}"] = int(np.sum(~np.isfinite(near_true)))
        counts[f"n_spurious_{kind}"] = int(np.sum(~np.isfinite(near_fit)))
    return counts


def _rms(vectors: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(vectors**2, axis=-1)))) if len(vectors) else float("nan")


def _scaled(vectors: np.ndarray, pixel_size_pm: float | tuple[float, float]) -> np.ndarray:
    scale = np.broadcast_to(np.asarray(pixel_size_pm, dtype=np.float64), (2,))
    return vectors * scale


def paired_bootstrap(raw: np.ndarray, restored: np.ndarray, *, n_boot: int, seed: int,
                     level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile intervals of RMS raw, RMS restored and their ratio, resampling columns in pairs."""
    count = len(raw)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, count, size=(n_boot, count))
    raw_sq = np.sum(raw**2, axis=1)
    restored_sq = np.sum(restored**2, axis=1)
    rms_raw = np.sqrt(raw_sq[draws].mean(axis=1))
    rms_restored = np.sqrt(restored_sq[draws].mean(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = rms_raw / rms_restored
    tail = 100 * (1 - level) / 2
    return {name: tuple(float(v) for v in np.nanpercentile(values, [tail, 100 - tail]))
            for name, values in (("raw", rms_raw), ("restored", rms_restored), ("gain", ratio))}


def bootstrap_ci(values: np.ndarray, statistic: Any, *, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over resampled rows of ``values``."""
    values = np.asarray(values)
    rng = np.random.default_rng(seed)
    stats = [statistic(values[rng.integers(0, len(values), len(values))]) for _ in range(n_boot)]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def verdict(ci_low: float, ci_high: float) -> str:
    """helps: the whole interval of the gain is above 1; hurts: below 1; else inconclusive."""
    if np.isfinite(ci_low) and ci_low > 1:
        return "helps"
    if np.isfinite(ci_high) and ci_high < 1:
        return "hurts"
    return "inconclusive"


def precision_summary(table: pd.DataFrame, *, image_shape: tuple[int, int], separation_px: float,
                      pixel_size_pm: float | tuple[float, float] | None, truth: pd.DataFrame | None = None,
                      seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """All precision figures of one sample as a flat JSON-ready dict (see module docs)."""
    result: dict[str, Any] = {name: None for name in SUMMARY_FIELDS if name not in ("sample", "network", "pixel_size_pm")}
    result["n_columns"] = int(len(table))
    pairs: dict[str, dict[str, np.ndarray]] = {}
    lattice = lattice_residual_vectors(table, image_shape=image_shape, separation_px=separation_px)
    if len(lattice["raw"]) >= 3:
        pairs["lattice"] = lattice
    result["n_columns_used"] = int(len(lattice["raw"]))
    has_truth = truth is not None and "x_true_px" in table.columns
    if has_truth:
        errors = truth_error_vectors(table)
        if len(errors["raw"]) >= 3:
            pairs["truth"] = errors
        result.update(detection_counts(table, truth, image_shape, separation_px))
    for basis, prefix in (("lattice", "lattice_rms"), ("truth", "truth_rmse")):
        if basis not in pairs:
            continue
        scales = [("px", None)] + ([("pm", pixel_size_pm)] if pixel_size_pm is not None else [])
        for unit, scale in scales:
            raw = pairs[basis]["raw"] if scale is None else _scaled(pairs[basis]["raw"], scale)
            restored = pairs[basis]["restored"] if scale is None else _scaled(pairs[basis]["restored"], scale)
            intervals = paired_bootstrap(raw, restored, n_boot=n_boot, seed=seed)
            for kind, vectors in (("raw", raw), ("restored", restored)):
                name = f"{prefix}_{kind}_{unit}"
                result[name] = _rms(vectors)
                result[f"{name}_ci_low"], result[f"{name}_ci_high"] = intervals[kind]
            if unit == "px":
                result[f"_{basis}_gain_ci"] = intervals["gain"]
    basis = "truth" if "truth" in pairs else ("lattice" if "lattice" in pairs else None)
    if basis is None:
        result["status"] = "too few usable columns for precision figures"
        result["verdict"] = "inconclusive"
    else:
        prefix = "truth_rmse" if basis == "truth" else "lattice_rms"
        raw_value, restored_value = result[f"{prefix}_raw_px"], result[f"{prefix}_restored_px"]
        result["precision_gain"] = raw_value / restored_value if restored_value > 0 else float("inf")
        result["precision_gain_ci_low"], result["precision_gain_ci_high"] = result[f"_{basis}_gain_ci"]
        result["gain_basis"] = basis
        result["verdict"] = verdict(result["precision_gain_ci_low"], result["precision_gain_ci_high"])
        result["status"] = "ok"
    for key in [k for k in result if k.startswith("_")]:
        del result[key]
    return result
