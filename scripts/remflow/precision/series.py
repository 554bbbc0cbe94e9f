"""Series precision: how far each column's fitted position scatters from frame to frame.

A frame series (sample sheet ``frame: all``) images one area several times; the columns are
refined on every raw and every restored frame from the same starts
(:func:`remflow.frames.fit_series`). Needs no ground truth and no lattice model.

Formula. Take the C columns fitted well (both images) and at least one column spacing from
the edge in *every* one of the F frames. For each image kind (raw, restored) separately, with
``p[f, c]`` the fitted (x, y) of column ``c`` in frame ``f``:

- drift of frame ``f``: its mean column position, ``d[f] = mean_c p[f, c]``; reported
  relative to frame 0 (``series_drift_*``);
- drift-corrected position ``q[f, c] = p[f, c] - d[f]``; column mean ``m[c] = mean_f q[f, c]``;
- residual ``r[f, c] = q[f, c] - m[c]`` (a two-way, column + frame, decomposition);
- per column, the radial scatter ``s[c]**2 = k**2 * mean_f |r[f, c]|**2`` with
  ``k**2 = F/(F-1) * C/(C-1)``: the residuals lose one degree of freedom per column (its
  mean) and one per frame (its drift), so for independent errors of variance ``v`` per axis
  ``E[sum |r|**2] = 2 v (F-1)(C-1)`` and ``k`` makes ``s[c]**2`` unbiased for ``2 v``;
- ``series_precision = sqrt(mean_c s[c]**2)``: a radial (2D) RMS error, comparable with the
  truth RMSE and the other radial figures (per axis: divide by sqrt(2)).
- Per frame, ``k * sqrt(mean_c |r[f, c]|**2)`` (``series_frame_rms_*``) scatters about the
  series figure when every frame is alike; an outlying frame (a jump, a focus change) shows.

Gain ``series_gain`` = raw / restored on the same columns; 95% intervals by a paired
percentile bootstrap over columns (each resample draws the same columns for raw and restored,
keeping all frames of a drawn column), seeded; ``series_verdict`` as
:func:`remflow.precision.verdict`. ``_pm`` twins scale each residual component by its pixel
size before the norm.

Assumptions: the specimen is the same in every frame (no beam damage, no moving atoms); the
frames differ by a rigid translation (drift) plus independent errors; errors of different
frames are independent; enough frames (F >= 2; with F frames the figure's relative
statistical error is about 1 / sqrt(2 (F-1)(C-1))).

What it sees: frame-to-frame repeatability: shot and detector noise, fit error, scan jitter,
and any drift that is not a rigid translation of the whole frame and differs between frames
(a shear from drift during the scan, a magnification change): these count as imprecision.

What it cannot see: any error repeated in every frame. Static bias of the fit (e.g. a
neighbour's tail pulling every frame's fit the same way), a restoration prior that puts a
column at the same wrong place in every frame (the network sees similar frames and may make
similar mistakes: a restored series precision can look better than the restored accuracy),
scan distortions identical in every frame, and real static displacements (structure) are
invisible; so is a uniform error of the drift itself. It measures precision, not accuracy.

Validation (measured, ``tests/test_series.py``; ``PYTHONPATH=scripts .venv/bin/python -m pytest
tests/test_series.py -s``): synthetic 5-frame series of a 120x120 px square lattice (12 px
spacing, 2.5 px wide columns, 20 pm pixels), drifting ~1 px per frame ((0, 0) ... (3.6, -2.2)
px), independent shot noise per frame; the truth RMSE of the raw fits is taken over the same
columns and frames. Raw fits from shared starts (``fit_series`` on the raw frames):
300 e/Å²: series 0.247 px vs truth 0.261 px (-5%); 10000 e/Å²: 0.0539 vs 0.0554 px (-3%).
Whole workflow (each frame restored by ``sfr_hrstem``) at 1000 e/Å²: raw 0.152 px vs truth
0.155 px (-2%); restored 0.071 px vs its truth RMSE 0.079 px (-10%: the restored error repeats
in part from frame to frame, as the prior does). The series figure runs slightly below the
truth because a static part of the error (a neighbour's tail, pixel phase) is invisible to it.
A formula check with set independent errors (0.1 px per axis, 196 columns, 5 frames) gives the
set value within 5% and is unchanged by static per-column offsets.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from remflow.precision import bootstrap_ci, precision_summary, usable_columns, verdict

KINDS = ("raw", "restored")
#: The series figures of results/summary.csv (``_pm`` twins empty for uncalibrated images).
SERIES_FIELDS: list[str] = (
    ["series_n_frames", "series_n_columns_used"]
    + [f"series_precision_{kind}_{unit}{suffix}" for unit in ("px", "pm") for kind in KINDS
       for suffix in ("", "_ci_low", "_ci_high")]
    + ["series_gain", "series_gain_ci_low", "series_gain_ci_high", "series_verdict"]
)


def series_columns(table: pd.DataFrame, *, image_shape: tuple[int, int], separation_px: float) -> np.ndarray:
    """column_ids usable in every frame: fitted well on raw and restored, one spacing from the edge."""
    if len(table) == 0:
        return np.empty(0, dtype=int)
    n_frames = table["frame"].nunique()
    usable = usable_columns(table, image_shape, separation_px)
    counts = table.loc[usable, "column_id"].value_counts()
    return np.sort(counts.index[counts == n_frames].to_numpy(dtype=int))


def series_positions(table: pd.DataFrame, kind: str, column_ids: np.ndarray) -> np.ndarray:
    """Fitted (x, y) of ``column_ids`` in every frame, shape (n_frames, n_columns, 2), frames in order."""
    chosen = table[table["column_id"].isin(column_ids)].sort_values(["frame", "column_id"])
    n_frames = chosen["frame"].nunique()
    return chosen[[f"x_{kind}_px", f"y_{kind}_px"]].to_numpy(np.float64).reshape(n_frames, len(column_ids), 2)


def series_residuals(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(residuals r (F, C, 2), drift d - d[0] (F, 2), scale k) of positions (F, C, 2); see the module docs."""
    n_frames, n_columns = positions.shape[:2]
    drift = positions.mean(axis=1)  # (F, 2)
    corrected = positions - drift[:, None, :]
    residuals = corrected - corrected.mean(axis=0, keepdims=True)
    scale = float(np.sqrt(n_frames / (n_frames - 1) * n_columns / (n_columns - 1)))
    return residuals, drift - drift[0], scale


def mean_positions(table: pd.DataFrame, kind: str, column_ids: np.ndarray) -> np.ndarray:
    """Each column's drift-corrected mean (x, y) over frames in frame 0's coordinates, (C, 2)."""
    positions = series_positions(table, kind, column_ids)
    _, drift, _ = series_residuals(positions)
    return (positions - drift[:, None, :]).mean(axis=0)


def _rms(squared: np.ndarray) -> float:
    return float(np.sqrt(np.mean(squared)))


def _ratio(squared_pairs: np.ndarray) -> float:
    low = np.sqrt(np.mean(squared_pairs[:, 1]))
    return float(np.sqrt(np.mean(squared_pairs[:, 0])) / low) if low > 0 else float("inf")


def series_precision(table: pd.DataFrame, *, image_shape: tuple[int, int], separation_px: float,
                     pixel_size_pm: float | tuple[float, float] | None = None, seed: int = 0,
                     n_boot: int = 2000) -> dict[str, Any]:
    """The series figures of one frame-series table (columns.csv with a ``frame`` column).

    Returns SERIES_FIELDS (None where not computable: fewer than 2 frames or 3 usable
    columns) plus per-frame lists for the figure: ``series_drift_{raw,restored}_px``
    ([dx, dy] per frame, relative to frame 0) and ``series_frame_rms_{raw,restored}_px``.
    ``image_shape`` is one frame's (rows, cols); ``pixel_size_pm`` a number or (x_pm, y_pm).
    """
    result: dict[str, Any] = {name: None for name in SERIES_FIELDS}
    n_frames = int(table["frame"].nunique()) if len(table) else 0
    result["series_n_frames"] = n_frames
    columns = series_columns(table, image_shape=image_shape, separation_px=separation_px)
    result["series_n_columns_used"] = int(len(columns))
    if n_frames < 2 or len(columns) < 3:
        result["series_verdict"] = "inconclusive"
        return result
    residuals = {}
    for kind in KINDS:
        residuals[kind], drift, scale = series_residuals(series_positions(table, kind, columns))
        result[f"series_drift_{kind}_px"] = [[float(v) for v in row] for row in drift]
        result[f"series_frame_rms_{kind}_px"] = [
            float(scale * np.sqrt(np.mean(np.sum(frame**2, axis=1)))) for frame in residuals[kind]]
    units = [("px", np.ones(2))]
    if pixel_size_pm is not None:
        units.append(("pm", np.broadcast_to(np.asarray(pixel_size_pm, dtype=np.float64), (2,))))
    for unit, factor in units:
        # Per column: k^2 * mean over frames of |r|^2, raw and restored side by side (C, 2).
        squared = np.column_stack([scale**2 * np.mean(np.sum((residuals[kind] * factor) ** 2, axis=2), axis=0)
                                   for kind in KINDS])
        for index, kind in enumerate(KINDS):
            name = f"series_precision_{kind}_{unit}"
            result[name] = _rms(squared[:, index])
            result[f"{name}_ci_low"], result[f"{name}_ci_high"] = bootstrap_ci(
                squared[:, index], _rms, n_boot=n_boot, seed=seed)
        # The gain of the last unit (pm when calibrated: physical displacements, as elsewhere).
        result["series_gain"] = _ratio(squared)
        result["series_gain_ci_low"], result["series_gain_ci_high"] = bootstrap_ci(
            squared, _ratio, n_boot=n_boot, seed=seed)
    result["series_verdict"] = verdict(result["series_gain_ci_low"], result["series_gain_ci_high"])
    return result


def series_summary(table: pd.DataFrame, *, image_shape: tuple[int, int], separation_px: float,
                   pixel_size_pm: float | tuple[float, float] | None, truth: pd.DataFrame | None = None,
                   seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """All precision figures of a frame series: the single-image figures of frame 0
    (:func:`remflow.precision.precision_summary`) plus :func:`series_precision`.

    Without ground truth the gain and verdict are the series figure's (``gain_basis``
    "series"; a truth-free figure that needs no lattice model); with truth they stay
    truth-based. ``n_columns`` is the number of columns of one frame. Frame 0's truth rows
    are used when the truth has a ``frame`` column.
    """
    first = table[table["frame"] == table["frame"].min()].drop(columns="frame").reset_index(drop=True)
    if truth is not None and "frame" in truth.columns:
        truth = truth[truth["frame"] == truth["frame"].min()].reset_index(drop=True)
    result = precision_summary(first, image_shape=image_shape, separation_px=separation_px,
                               pixel_size_pm=pixel_size_pm, truth=truth, seed=seed, n_boot=n_boot)
    series = series_precision(table, image_shape=image_shape, separation_px=separation_px,
                              pixel_size_pm=pixel_size_pm, seed=seed, n_boot=n_boot)
    result.update(series)
    if result.get("gain_basis") != "truth" and series["series_gain"] is not None:
        result["status"] = "ok"
        result["gain_basis"] = "series"
        result["n_columns_used"] = series["series_n_columns_used"]
        result["precision_gain"] = series["series_gain"]
        result["precision_gain_ci_low"] = series["series_gain_ci_low"]
        result["precision_gain_ci_high"] = series["series_gain_ci_high"]
        result["verdict"] = series["series_verdict"]
    return {key: _plain(value) for key, value in result.items()}


def _plain(value: Any) -> Any:
    """JSON-ready: numpy numbers to Python, NaN/inf to None (lists pass through)."""
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value
