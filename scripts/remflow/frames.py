"""Frame series: register the frames, find the columns once, refine them on every frame.

A frame series (sample sheet ``frame: all`` on a stack) is a stack of raw frames of one
area, each restored on its own. Its columns are fitted so that every frame is measured
from the same starting positions, as a single image's raw and restored fits are:

1. **Coarse registration** (:func:`frame_shifts`): each restored frame is registered to the
   one before it by phase correlation (scikit-image's ``phase_cross_correlation``, 1/10 px)
   of Hann-windowed frames, and the shifts are chained. The window makes the correlation
   peak nearest zero shift the strongest, so a lattice, whose correlation repeats every
   lattice vector, is registered to the nearest copy: frame-to-frame drift must stay below
   half a column spacing (accumulated drift over the series may be larger) for the drift to
   be right. Beyond that the starts land on neighbouring columns, the same lattice vector for
   every column of a frame, which the series estimator's drift correction absorbs on a regular
   lattice (7 px steps at 12 px spacing: series precision 0.152 px, truth RMSE 0.156 px).
2. **Columns found once** (:func:`fit_series`): on the mean of the registered restored frames
   (frame 0's coordinates), with :func:`remflow.columns.fit_columns` (the same finder,
   lattice checks and second-sublattice recipe as a single image); its restored fit gives the
   starting positions.
3. **Refined on every frame**: the starts, moved by the frame's coarse shift, are refined on
   every raw and every restored frame (:func:`remflow.columns.refine_positions`; for a second
   sublattice each frame's own fitted A model is subtracted first, as for a single image).

The fine drift (each frame's mean column shift) and the scatter across frames are the
estimator's business: :mod:`remflow.precision.series`.

Shapes: stacks are (n_frames, rows, cols); positions (x, y) in pixels of the frame, x the
column index, pixel ``i`` centred at ``i``. Shifts are (dx, dy) of a frame's content relative
to frame 0 (content at ``p`` in frame 0 is at ``p + shift`` in the frame).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from remflow.columns import COLUMN_FIELDS, TRUTH_FIELDS, fit_columns, model_image, refine_positions

log = logging.getLogger(__name__)

#: Sub-pixel resolution of the coarse registration (1/n px); the fits need only ~0.5 px.
REGISTRATION_UPSAMPLE = 10


@dataclass
class SeriesFit:
    """Result of :func:`fit_series`."""

    table: pd.DataFrame  # one row per (frame, column): "frame" + COLUMN_FIELDS (+ TRUTH_FIELDS)
    status: str  # "ok" or "no lattice found: <why>" (from the mean frame)
    separation_px: float | None
    shifts_px: np.ndarray  # (n_frames, 2) coarse (dx, dy) of each frame relative to frame 0
    n_frames: int


def frame_shifts(stack: np.ndarray) -> np.ndarray:
    """Coarse (dx, dy) shift (px) of every frame's content relative to frame 0, shape (n_frames, 2).

    Consecutive frames are registered by phase correlation of Hann-windowed frames
    (``skimage.registration.phase_cross_correlation``, upsampled 10x) and the shifts summed.
    Accurate to about 0.1 px on lattice images; valid while frame-to-frame drift stays below
    half the column spacing. Raises ValueError unless ``stack`` is 3D.
    """
    from skimage.filters import window
    from skimage.registration import phase_cross_correlation

    stack = np.asarray(stack, dtype=np.float64)
    if stack.ndim != 3:
        raise ValueError(f"expected a stack (n_frames, rows, cols), got shape {stack.shape}")
    hann = window("hann", stack.shape[1:])
    windowed = [(frame - frame.mean()) * hann for frame in stack]
    shifts = np.zeros((len(stack), 2))
    for index in range(1, len(stack)):
        # The returned (row, col) shift registers the moving frame onto the reference:
        # the content moved by its negative.
        step, _, _ = phase_cross_correlation(windowed[index - 1], windowed[index],
                                             upsample_factor=REGISTRATION_UPSAMPLE, normalization=None)
        shifts[index] = shifts[index - 1] - np.asarray(step)[::-1]
    return shifts


def registered_mean(stack: np.ndarray, shifts_px: np.ndarray) -> np.ndarray:
    """Mean of the frames moved back by their (dx, dy) shifts into frame 0's coordinates (rows, cols).

    Cubic-spline shifts; each pixel averages the frames that cover it, so edges uncovered by
    drift are not smeared; a pixel no frame covers takes the mean of the whole image.
    """
    stack = np.asarray(stack, dtype=np.float64)
    total = np.zeros(stack.shape[1:])
    count = np.zeros(stack.shape[1:])
    for frame, (dx, dy) in zip(stack, np.asarray(shifts_px, dtype=np.float64)):
        moved = ndimage.shift(frame, (-dy, -dx), order=3, mode="constant", cval=np.nan)
        valid = np.isfinite(moved)
        total[valid] += moved[valid]
        count[valid] += 1
    mean = np.full(total.shape, np.nan)
    np.divide(total, count, out=mean, where=count > 0)
    mean[count == 0] = np.nanmean(mean) if np.isfinite(mean).any() else float(stack.mean())
    return mean


def _truth_of_frame(truth: pd.DataFrame | None, frame: int) -> np.ndarray | None:
    """True (x, y) of one frame: rows with that ``frame`` when the truth has a frame column, else all."""
    if truth is None:
        return None
    rows = truth[truth["frame"] == frame] if "frame" in truth.columns else truth
    return rows[["x_px", "y_px"]].to_numpy(dtype=np.float64)


def fit_series(raw: np.ndarray, restored: np.ndarray, *, separation_px: float | None = None,
               second_sublattice: bool = False, refine: str = "atomap", min_columns: int = 20,
               truth: pd.DataFrame | None = None, contrast: str = "bright", **find_options: Any) -> SeriesFit:
    """Columns of a frame series, fitted from the same starts on every raw and restored frame.

    ``raw`` and ``restored``: stacks (n_frames, rows, cols) of one shape, n_frames >= 2.
    Other arguments as :func:`remflow.columns.fit_columns`, which finds the columns on the
    mean frames (``find_options`` are passed on to it, e.g. a region of interest);
    ``contrast`` "dark": columns are minima, every frame is negated before refinement (and
    the finder is told). ``truth`` may carry a ``frame`` column (true positions per frame,
    e.g. with drift), else the same positions hold in every frame. Rows are sorted by frame,
    then column_id; a column has the same column_id in every frame. Raises ValueError for
    stacks of another shape or with fewer than 2 frames.
    """
    from remflow.precision import match_nearest

    raw = np.asarray(raw, dtype=np.float64)
    restored = np.asarray(restored, dtype=np.float64)
    if raw.shape != restored.shape or raw.ndim != 3 or raw.shape[0] < 2:
        raise ValueError(f"raw {raw.shape} and restored {restored.shape} must be stacks of >= 2 frames of one shape")
    n_frames = raw.shape[0]
    with_truth = truth is not None
    shifts = frame_shifts(restored)
    log.info("coarse drift over %d frames: %s px", n_frames, np.round(shifts, 2).tolist())
    if contrast != "bright":  # only then: a finder without dark-column support must not be asked
        find_options["contrast"] = contrast
    mean_fit = fit_columns(registered_mean(raw, shifts), registered_mean(restored, shifts),
                           separation_px=separation_px, second_sublattice=second_sublattice, refine=refine,
                           min_columns=min_columns, **find_options)
    empty = pd.DataFrame(columns=["frame"] + COLUMN_FIELDS + (TRUTH_FIELDS if with_truth else []))
    if not mean_fit.status.startswith("ok") or len(mean_fit.table) == 0:
        return SeriesFit(empty, mean_fit.status, mean_fit.separation_px, shifts, n_frames)
    spacing = float(mean_fit.separation_px)
    found = mean_fit.table[mean_fit.table["fit_ok_restored"].astype(bool)]
    groups = [(name, group[["x_restored_px", "y_restored_px"]].to_numpy(np.float64))
              for name, group in found.groupby("sublattice", sort=True) if len(group) >= 2]
    if contrast == "dark":  # atomap's recipe for dark columns: fit the negated image
        raw, restored = -raw, -restored
    frames = []
    for index in range(n_frames):
        offset = shifts[index]
        parts: dict[str, list[np.ndarray]] = {}
        for kind, stack in (("raw", raw), ("restored", restored)):
            image = stack[index]
            fits = []
            for name, starts in groups:
                # Second sublattice: this frame minus its own fitted A model (atomap's recipe).
                target = image if name == groups[0][0] else image - model_image(image.shape, fits[0])
                fits.append(refine_positions(target, starts + offset, separation_px=spacing, method=refine))
            parts[kind] = fits
        rows = []
        for position, (name, starts) in enumerate(groups):
            block = pd.DataFrame({"frame": index, "sublattice": name}, index=range(len(starts)))
            for kind in ("raw", "restored"):
                fit = parts[kind][position]
                block[f"x_{kind}_px"], block[f"y_{kind}_px"] = fit.x, fit.y
                block[f"sigma_x_{kind}_px"], block[f"sigma_y_{kind}_px"] = fit.sigma_x, fit.sigma_y
                block[f"amplitude_{kind}"] = fit.amplitude
                block[f"fit_ok_{kind}"] = np.asarray(fit.ok, dtype=bool)
            if with_truth:
                true_xy = _truth_of_frame(truth, index)
                match = match_nearest(starts + offset, true_xy, 0.5 * spacing)
                matched = np.full((len(starts), 2), np.nan)
                matched[match >= 0] = true_xy[match[match >= 0]]
                block["x_true_px"], block["y_true_px"] = matched[:, 0], matched[:, 1]
            rows.append(block)
        frame_table = pd.concat(rows, ignore_index=True)
        frame_table.insert(1, "column_id", np.arange(len(frame_table)))
        frames.append(frame_table)
    table = pd.concat(frames, ignore_index=True)[["frame"] + COLUMN_FIELDS + (TRUTH_FIELDS if with_truth else [])]
    log.info("%d columns refined on %d raw and %d restored frames, spacing %.3f px",
             len(frames[0]), n_frames, n_frames, spacing)
    return SeriesFit(table, mean_fit.status, spacing, shifts, n_frames)


def mean_frame_view(raw: np.ndarray, restored: np.ndarray, table: pd.DataFrame, *, separation_px: float | None,
                    coarse_shifts_px: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """What the per-sample figure shows of a series: the registered mean raw and restored frames
    (the first used frame's coordinates) and one row per column of the series figure
    (:func:`remflow.precision.series.series_observations`), at its drift-corrected mean position
    (COLUMN_FIELDS; sigma and amplitude averaged over its frames).

    Each kind is registered with its own fine drift (mean column shift); without usable
    columns, with ``coarse_shifts_px`` (or none) and an empty table.
    """
    from remflow.precision.series import mean_positions, series_observations

    raw = np.asarray(raw, dtype=np.float64)
    restored = np.asarray(restored, dtype=np.float64)
    columns, frames, observed = (series_observations(table, image_shape=raw.shape[1:], separation_px=separation_px)
                                 if separation_px and len(table) else (np.empty(0, dtype=int), [], None))
    if len(columns) < 3 or len(frames) < 2:
        shifts = np.zeros((len(raw), 2)) if coarse_shifts_px is None else np.asarray(coarse_shifts_px, dtype=np.float64)
        return registered_mean(raw, shifts), registered_mean(restored, shifts), pd.DataFrame(columns=COLUMN_FIELDS)
    means = []
    view = table[(table["frame"] == frames[0]) & table["column_id"].isin(columns)]
    view = view.sort_values("column_id").reset_index(drop=True)[COLUMN_FIELDS].copy()
    chosen = table[table["column_id"].isin(columns) & table["frame"].isin(frames)]
    for kind, stack in (("raw", raw), ("restored", restored)):
        xy, drift = mean_positions(table, kind, columns, frames, observed)
        means.append(registered_mean(stack[frames], drift))
        view[f"x_{kind}_px"], view[f"y_{kind}_px"] = xy[:, 0], xy[:, 1]
        for name in (f"sigma_x_{kind}_px", f"sigma_y_{kind}_px", f"amplitude_{kind}"):
            view[name] = chosen.groupby("column_id")[name].mean().loc[columns].to_numpy()
    view["fit_ok_raw"] = view["fit_ok_restored"] = True
    return means[0], means[1], view
