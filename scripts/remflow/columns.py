"""Atom-column positions on the raw and the restored image, fitted from the same start.

Columns are found once, on the restored image (it is cleaner), and the same starting
positions are refined independently on the raw and on the restored image: centre of
mass, then a 2D Gaussian, as atomap does. Only then is the comparison fair.

Coordinates: ``x`` is the column (horizontal) pixel index, ``y`` the row index, and
pixel ``i`` is centred at ``i`` (atomap's and HyperSpy's convention).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

COLUMN_FIELDS = [
    "column_id", "sublattice",
    "x_raw_px", "y_raw_px", "x_restored_px", "y_restored_px",
    "sigma_x_raw_px", "sigma_y_raw_px", "sigma_x_restored_px", "sigma_y_restored_px",
    "amplitude_raw", "amplitude_restored", "fit_ok_raw", "fit_ok_restored",
]
TRUTH_FIELDS = ["x_true_px", "y_true_px"]

#: Mask radius of atomap's refinements, as a fraction of the nearest-neighbour distance.
PERCENT_TO_NN = 0.4
#: The autocorrelation of a lattice image has side peaks at least this high (of the
#: zero-lag peak); noise and amorphous images stay well below.
MIN_LATTICE_CORRELATION = 0.2
#: Starting separation for atomap's peak finder, as a fraction of the column spacing.
SEPARATION_FRACTION = 0.75

log = logging.getLogger(__name__)


@dataclass
class RefinedColumns:
    """Per-column results of one refinement, arrays of equal length."""

    x: np.ndarray
    y: np.ndarray
    sigma_x: np.ndarray
    sigma_y: np.ndarray
    amplitude: np.ndarray
    ok: np.ndarray


@dataclass
class ColumnFit:
    table: pd.DataFrame
    status: str
    separation_px: float | None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """atomap and HyperSpy print progress and warnings per column; keep the logs readable."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def _autocorrelation(image: np.ndarray) -> np.ndarray:
    """Normalised, centred autocorrelation (zero lag = 1)."""
    values = np.asarray(image, dtype=np.float64)
    values = values - values.mean()
    power = np.abs(np.fft.fft2(values, s=[2 * n for n in values.shape])) ** 2  # zero-padded: no wrap-around
    corr = np.fft.fftshift(np.real(np.fft.ifft2(power)))
    zero = corr[corr.shape[0] // 2, corr.shape[1] // 2]
    return corr / zero if zero > 0 else np.zeros_like(corr)


def lattice_peaks(image: np.ndarray, max_distance: float | None = None) -> list[tuple[float, float]]:
    """(distance px, correlation) of the autocorrelation's side peaks, nearest first."""
    from skimage.feature import peak_local_max

    corr = _autocorrelation(image)
    centre = np.array(corr.shape) // 2
    limit = max_distance or min(image.shape) / 3
    peaks = peak_local_max(corr, min_distance=2, threshold_abs=0.05, exclude_border=False)
    found = []
    for peak in peaks:
        distance = float(np.hypot(*(peak - centre)))
        if 2.5 <= distance <= limit:
            found.append((distance, float(corr[tuple(peak)])))
    return sorted(found)


def estimate_separation(image: np.ndarray, *, strongest_shell: bool = False) -> float | None:
    """Nearest column spacing (px) from the autocorrelation; None when the image shows no lattice.

    With ``strongest_shell`` the spacing of the strongest of the near peaks is given
    instead: for a perovskite, the A-A spacing rather than the A-B one.
    """
    peaks = [(d, c) for d, c in lattice_peaks(image) if c >= MIN_LATTICE_CORRELATION]
    if not peaks:
        return None
    nearest = peaks[0][0]
    if strongest_shell:
        near = [(d, c) for d, c in peaks if d <= 1.6 * nearest]
        return max(near, key=lambda p: p[1])[0]
    return nearest


def find_columns(image: np.ndarray, spacing_px: float) -> np.ndarray:
    """Starting positions (N, 2) as (x, y), from atomap's peak finder."""
    import atomap.api as am
    import hyperspy.api as hs

    separation = max(2, int(round(SEPARATION_FRACTION * spacing_px)))
    with _quiet():
        positions = am.get_atom_positions(hs.signals.Signal2D(np.asarray(image, dtype=np.float64)), separation)
    return np.asarray(positions, dtype=np.float64).reshape(-1, 2)


def refine_positions(image: np.ndarray, xy: np.ndarray, *, separation_px: float, method: str = "atomap") -> RefinedColumns:
    """Centre of mass then 2D Gaussian refinement of the given starting positions.

    ``method`` "atomap" is the reference (atomap's per-column HyperSpy fits);
    "batched" fits all columns at once with the same model and region.
    """
    if method == "batched":
        from remflow.fastfit import refine_positions_batched

        return refine_positions_batched(image, xy, separation_px=separation_px, percent_to_nn=PERCENT_TO_NN)
    if method != "atomap":
        raise ValueError(f"unknown refinement method '{method}'; use 'atomap' or 'batched'")
    import atomap.api as am

    data = np.asarray(image, dtype=np.float64)
    with _quiet():
        sublattice = am.Sublattice(np.asarray(xy, dtype=np.float64), image=data)
        sublattice.find_nearest_neighbors()
        sublattice.refine_atom_positions_using_center_of_mass(percent_to_nn=PERCENT_TO_NN, show_progressbar=False)
        sublattice.refine_atom_positions_using_2d_gaussian(percent_to_nn=PERCENT_TO_NN, show_progressbar=False)
    atoms = sublattice.atom_list
    x = np.array([a.pixel_x for a in atoms])
    y = np.array([a.pixel_y for a in atoms])
    amplitude = np.array([a.amplitude_gaussian for a in atoms], dtype=np.float64)
    return RefinedColumns(x=x, y=y, sigma_x=np.array([a.sigma_x for a in atoms]),
                          sigma_y=np.array([a.sigma_y for a in atoms]), amplitude=amplitude,
                          ok=fit_ok(x, y, np.asarray(xy), amplitude, data.shape, separation_px))


def fit_ok(x: np.ndarray, y: np.ndarray, start: np.ndarray, amplitude: np.ndarray,
           shape: tuple[int, int], separation_px: float) -> np.ndarray:
    """A fit failed when atomap fell back to centre of mass (amplitude 0), left the image,
    or moved more than half the column spacing from its start."""
    moved = np.hypot(x - start[:, 0], y - start[:, 1])
    inside = (x >= 0) & (y >= 0) & (x <= shape[1] - 1) & (y <= shape[0] - 1)
    return (amplitude != 0) & np.isfinite(x) & np.isfinite(y) & inside & (moved <= 0.5 * separation_px)


def second_sublattice_starts(a_xy: np.ndarray, spacing_a: float) -> np.ndarray:
    """Cell centres of sublattice A: midpoints of diagonal A-A pairs, merged (perovskite B sites)."""
    tree = cKDTree(a_xy)
    pairs = np.array(sorted(tree.query_pairs(1.65 * spacing_a)))
    if pairs.size == 0:
        return np.empty((0, 2))
    lengths = np.linalg.norm(a_xy[pairs[:, 0]] - a_xy[pairs[:, 1]], axis=1)
    diagonal = pairs[(lengths >= 1.2 * spacing_a)]
    midpoints = 0.5 * (a_xy[diagonal[:, 0]] + a_xy[diagonal[:, 1]])
    # Both diagonals of a cell give its centre: merge points closer than a quarter spacing.
    merged: list[np.ndarray] = []
    taken = np.zeros(len(midpoints), dtype=bool)
    mid_tree = cKDTree(midpoints)
    for index in np.lexsort((midpoints[:, 0], midpoints[:, 1])):
        if taken[index]:
            continue
        group = mid_tree.query_ball_point(midpoints[index], 0.25 * spacing_a)
        taken[group] = True
        merged.append(midpoints[group].mean(axis=0))
    return np.array(merged)


def _subtract_sublattice(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Image with sublattice A's fitted Gaussians removed (atomap's two-sublattice recipe)."""
    import atomap.api as am
    from atomap.tools import remove_atoms_from_image_using_2d_gaussian

    data = np.asarray(image, dtype=np.float64)
    with _quiet():
        sublattice = am.Sublattice(xy, image=data)
        sublattice.find_nearest_neighbors()
        sublattice.refine_atom_positions_using_2d_gaussian(percent_to_nn=PERCENT_TO_NN, show_progressbar=False)
        return remove_atoms_from_image_using_2d_gaussian(data, sublattice, percent_to_nn=PERCENT_TO_NN,
                                                         show_progressbar=False)


def _sorted_starts(xy: np.ndarray) -> np.ndarray:
    """Stable order: by row, then column (rounded so sub-pixel noise does not reorder)."""
    if len(xy) == 0:
        return xy.reshape(0, 2)
    order = np.lexsort((np.round(xy[:, 0], 3), np.round(xy[:, 1], 3)))
    return xy[order]


def _match_truth(xy: np.ndarray, truth: pd.DataFrame | None, spacing: float) -> np.ndarray:
    """True position matched to each column: the nearest within half the spacing, else NaN."""
    matched = np.full((len(xy), 2), np.nan)
    if truth is None or len(truth) == 0 or len(xy) == 0:
        return matched
    true_xy = truth[["x_px", "y_px"]].to_numpy(dtype=np.float64)
    distance, index = cKDTree(true_xy).query(xy, distance_upper_bound=0.5 * spacing)
    found = np.isfinite(distance)
    matched[found] = true_xy[index[found]]
    return matched


def empty_table(with_truth: bool) -> pd.DataFrame:
    return pd.DataFrame(columns=COLUMN_FIELDS + (TRUTH_FIELDS if with_truth else []))


def fit_columns(raw: np.ndarray, restored: np.ndarray, *, separation_px: float | None = None,
                second_sublattice: bool = False, refine: str = "atomap", min_columns: int = 20,
                truth: pd.DataFrame | None = None) -> ColumnFit:
    """Find columns on ``restored``, refine the same starts on ``raw`` and ``restored``."""
    raw = np.asarray(raw, dtype=np.float64)
    restored = np.asarray(restored, dtype=np.float64)
    if raw.shape != restored.shape:
        raise ValueError(f"raw {raw.shape} and restored {restored.shape} differ in shape")
    with_truth = truth is not None
    if np.ptp(restored) == 0:
        return ColumnFit(empty_table(with_truth), "no lattice found: the image is constant", separation_px)
    # A lattice must show in the autocorrelation, whatever separation the user gives.
    measured = estimate_separation(restored, strongest_shell=second_sublattice)
    if measured is None:
        return ColumnFit(empty_table(with_truth), "no lattice found: no periodic peaks in the image's autocorrelation",
                         separation_px)
    spacing = float(separation_px) if separation_px else measured
    starts = _sorted_starts(find_columns(restored, spacing))
    if len(starts) < min_columns:
        return ColumnFit(empty_table(with_truth),
                         f"no lattice found: {len(starts)} columns (need at least {min_columns})", spacing)
    groups = [("A", starts, raw, restored)]
    if second_sublattice:
        b_starts = _sorted_starts(second_sublattice_starts(starts, spacing))
        b_starts = b_starts[(b_starts[:, 0] >= 0) & (b_starts[:, 1] >= 0)]
        if len(b_starts):
            groups.append(("B", b_starts, _subtract_sublattice(raw, starts), _subtract_sublattice(restored, starts)))
    frames = []
    for name, xy, raw_image, restored_image in groups:
        group_spacing = spacing  # B sites (cell centres) repeat with A's spacing
        fits = {kind: refine_positions(image, xy, separation_px=group_spacing, method=refine)
                for kind, image in (("raw", raw_image), ("restored", restored_image))}
        frame = pd.DataFrame({
            "sublattice": [name] * len(xy),
            **{f"{axis}_{kind}_px": getattr(fits[kind], axis) for kind in ("raw", "restored") for axis in ("x", "y")},
            **{f"sigma_{axis}_{kind}_px": getattr(fits[kind], f"sigma_{axis}") for kind in ("raw", "restored")
               for axis in ("x", "y")},
            "amplitude_raw": fits["raw"].amplitude, "amplitude_restored": fits["restored"].amplitude,
            "fit_ok_raw": fits["raw"].ok, "fit_ok_restored": fits["restored"].ok,
        })
        if with_truth:
            matched = _match_truth(xy, truth, group_spacing)
            frame["x_true_px"], frame["y_true_px"] = matched[:, 0], matched[:, 1]
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    table.insert(0, "column_id", np.arange(len(table)))
    table = table[COLUMN_FIELDS + (TRUTH_FIELDS if with_truth else [])]
    log.info("%d columns, spacing %.3f px", len(table), spacing)
    return ColumnFit(table, "ok", spacing)
