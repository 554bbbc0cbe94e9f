"""Series precision: how far each column's fitted position scatters from frame to frame.

A frame series (sample sheet ``frame: all``) images one area several times; the columns are
refined on every raw and every restored frame from the same starts
(:func:`remflow.frames.fit_series`). Needs no ground truth and no lattice model.

Formula. An observation is a column in a frame where its fit succeeded on both the raw and
the restored frame and it lies at least one column spacing from the edge (restored position):
raw and restored use the same observations. Columns observed in fewer than half the frames
(at least 2) are left out, then frames with fewer than 3 columns. With ``p[f, c]`` the fitted
(x, y) of column ``c`` in frame ``f``, for each image kind (raw, restored) separately:

- ``p[f, c] = m[c] + d[f] + r[f, c]``, fitted by least squares over the observations: ``m[c]``
  the column's mean position, ``d[f]`` the frame's drift (its mean column shift; with every
  column in every frame ``d[f] = mean_c p[f, c]`` exactly, else by alternating means), ``r``
  the residual. ``d[f] - d[0]`` is reported (``series_drift_*``);
- ``series_precision = sqrt(sum |r[f, c]|**2 / (N - C - F + 1))``, N observations: each axis
  loses one degree of freedom per column mean and per drift (less one shared constant), so for
  independent errors of variance ``v`` per axis ``E[sum |r|**2] = 2 v (N - C - F + 1)`` and the
  figure is a radial (2D) RMS error, comparable with the truth RMSE and the other radial
  figures (per axis: divide by sqrt(2)). With every column in every frame (N = F C) this is
  the RMS over columns of each column's scatter ``s[c]**2 = k**2 mean_f |r[f, c]|**2`` with
  ``k**2 = F/(F-1) * C/(C-1)``;
- per frame, ``sqrt(mean_c |r[f, c]|**2 * N / (N - C - F + 1))`` (``series_frame_rms_*``)
  scatters about the series figure when every frame is alike; an outlying frame (a jump, a
  focus change) shows.

Gain ``series_gain`` = raw / restored on the same observations; 95% intervals by a paired
percentile bootstrap over columns (each resample draws the same columns for raw and
restored, with all their frames), seeded; ``series_verdict`` as
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
300 e/Å²: series 0.249 px vs truth 0.261 px (-5%); 10000 e/Å²: 0.0546 vs 0.0554 px (-1%).
Whole workflow (each frame restored by ``sfr_hrstem``) at 1000 e/Å²: raw 0.153 px vs truth
0.156 px (-2%); restored 0.075 px vs its truth RMSE 0.083 px (-9%: the restored error repeats
in part from frame to frame, as the prior does), truths over the same observations. The series figure runs slightly below the
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


#: A column enters the series figure when it is observed in at least this fraction of the frames.
MIN_FRAME_FRACTION = 0.5


def series_observations(table: pd.DataFrame, *, image_shape: tuple[int, int],
                        separation_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(column_ids (C,), frames (F,), observed (F, C) bool) of the series figure (see the module docs).

    Observed: fitted well on raw and restored and one spacing inside the border in that frame.
    Columns observed in fewer than max(2, half the frames) are dropped, then frames with fewer
    than 3 columns; each is sorted.
    """
    if len(table) == 0:
        return np.empty(0, dtype=int), np.empty(0, dtype=int), np.zeros((0, 0), dtype=bool)
    usable = pd.Series(usable_columns(table, image_shape, separation_px), index=table.index)
    grid = usable.groupby([table["frame"], table["column_id"]]).any().unstack(fill_value=False)
    grid = grid.sort_index().sort_index(axis=1)
    needed = max(2, int(np.ceil(MIN_FRAME_FRACTION * len(grid.index))))
    grid = grid.loc[:, grid.sum(axis=0) >= needed]
    grid = grid.loc[grid.sum(axis=1) >= 3]
    return (grid.columns.to_numpy(dtype=int), grid.index.to_numpy(dtype=int), grid.to_numpy(dtype=bool))


def series_columns(table: pd.DataFrame, *, image_shape: tuple[int, int], separation_px: float) -> np.ndarray:
    """column_ids that enter the series figure (see :func:`series_observations`)."""
    return series_observations(table, image_shape=image_shape, separation_px=separation_px)[0]


def series_positions(table: pd.DataFrame, kind: str, column_ids: np.ndarray,
                     frames: np.ndarray | None = None) -> np.ndarray:
    """Fitted (x, y) of ``column_ids`` in ``frames`` (default: every frame), (F, C, 2); NaN where absent."""
    frames = np.sort(table["frame"].unique()) if frames is None else np.asarray(frames)
    chosen = table[table["column_id"].isin(column_ids) & table["frame"].isin(frames)]
    out = np.full((len(frames), len(column_ids), 2), np.nan)
    f = np.searchsorted(frames, chosen["frame"].to_numpy())
    c = np.searchsorted(column_ids, chosen["column_id"].to_numpy())
    out[f, c] = chosen[[f"x_{kind}_px", f"y_{kind}_px"]].to_numpy(np.float64)
    return out


def series_decomposition(positions: np.ndarray, observed: np.ndarray | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Least-squares ``p[f, c] = m[c] + d[f] + r[f, c]`` over the observed entries of ``positions`` (F, C, 2).

    Returns (residuals (F, C, 2), 0 where not observed; drift d - d[0] (F, 2); column means
    m + d[0] (C, 2), i.e. in frame 0's coordinates; degrees of freedom per axis N - C - F + 1).
    ``observed`` defaults to every entry. Alternating means, exact after one pass when every
    entry is observed.
    """
    positions = np.asarray(positions, dtype=np.float64)
    n_frames, n_columns = positions.shape[:2]
    observed = np.ones((n_frames, n_columns), dtype=bool) if observed is None else np.asarray(observed, dtype=bool)
    weight = observed[..., None].astype(np.float64)
    values = np.where(observed[..., None], positions, 0.0)
    per_column = np.maximum(weight.sum(axis=0), 1.0)  # (C, 1)
    per_frame = np.maximum(weight.sum(axis=1), 1.0)  # (F, 1)
    drift = np.zeros((n_frames, 2))
    for _ in range(500):
        means = ((values - drift[:, None, :]) * weight).sum(axis=0) / per_column
        updated = ((values - means[None, :, :]) * weight).sum(axis=1) / per_frame
        converged = np.max(np.abs(updated - drift)) < 1e-12
        drift = updated
        if converged:
            break
    means = ((values - drift[:, None, :]) * weight).sum(axis=0) / per_column
    residuals = (values - means[None] - drift[:, None]) * weight
    dof = int(observed.sum()) - n_columns - n_frames + 1
    return residuals, drift - drift[0], means + drift[0], dof


def series_residuals(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(residuals r (F, C, 2), drift d - d[0] (F, 2), scale k) of fully observed positions (F, C, 2)."""
    n_frames, n_columns = positions.shape[:2]
    residuals, drift, _, _ = series_decomposition(positions)
    return residuals, drift, float(np.sqrt(n_frames / (n_frames - 1) * n_columns / (n_columns - 1)))


def mean_positions(table: pd.DataFrame, kind: str, column_ids: np.ndarray, frames: np.ndarray,
                   observed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(each column's mean (x, y) in frame 0's coordinates (C, 2), drift (F, 2)) over its observations."""
    _, drift, means, _ = series_decomposition(series_positions(table, kind, column_ids, frames), observed)
    return means, drift


def _pooled(rows: np.ndarray, column: int, n_frames: int) -> float:
    """sqrt(sum of squared residuals / dof) of per-column rows [squares raw, squares restored, count]."""
    dof = rows[:, 2].sum() - len(rows) - n_frames + 1
    return float(np.sqrt(rows[:, column].sum() / dof)) if dof > 0 else float("nan")


def series_precision(table: pd.DataFrame, *, image_shape: tuple[int, int], separation_px: float,
                     pixel_size_pm: float | tuple[float, float] | None = None, seed: int = 0,
                     n_boot: int = 2000) -> dict[str, Any]:
    """The series figures of one frame-series table (columns.csv with a ``frame`` column).

    Returns SERIES_FIELDS (``series_n_frames``: frames used; the figures None where not
    computable: fewer than 2 frames, 3 columns or 1 degree of freedom) plus per-frame lists
    for the figure: ``series_frames`` (frame numbers used), ``series_drift_{raw,restored}_px``
    ([dx, dy] per frame, relative to the first) and ``series_frame_rms_{raw,restored}_px``.
    ``image_shape`` is one frame's (rows, cols); ``pixel_size_pm`` a number or (x_pm, y_pm).
    """
    result: dict[str, Any] = {name: None for name in SERIES_FIELDS}
    columns, frames, observed = series_observations(table, image_shape=image_shape, separation_px=separation_px)
    result["series_n_frames"] = int(len(frames))
    result["series_n_columns_used"] = int(len(columns))
    result["series_verdict"] = "inconclusive"
    if len(frames) < 2 or len(columns) < 3 or observed.sum() - len(columns) - len(frames) + 1 < 1:
        return result
    residuals = {}
    result["series_frames"] = [int(f) for f in frames]
    for kind in KINDS:
        residuals[kind], drift, _, dof = series_decomposition(series_positions(table, kind, columns, frames), observed)
        scale = observed.sum() / dof  # on mean squares: N / (N - C - F + 1)
        result[f"series_drift_{kind}_px"] = [[float(v) for v in row] for row in drift]
        result[f"series_frame_rms_{kind}_px"] = [
            float(np.sqrt(scale * np.sum(frame**2) / max(int(seen.sum()), 1)))
            for frame, seen in zip(residuals[kind], observed)]
    units = [("px", np.ones(2))]
    if pixel_size_pm is not None:
        units.append(("pm", np.broadcast_to(np.asarray(pixel_size_pm, dtype=np.float64), (2,))))
    n_frames = len(frames)
    for unit, factor in units:
        # Per column: sums of squared residuals raw and restored, and its number of frames (C, 3).
        rows = np.column_stack([np.sum((residuals[kind] * factor) ** 2, axis=(0, 2)) for kind in KINDS]
                               + [observed.sum(axis=0)])
        for index, kind in enumerate(KINDS):
            name = f"series_precision_{kind}_{unit}"
            statistic = (lambda chosen, index=index: _pooled(chosen, index, n_frames))
            result[name] = statistic(rows)
            result[f"{name}_ci_low"], result[f"{name}_ci_high"] = bootstrap_ci(
                rows, statistic, n_boot=n_boot, seed=seed)

        def gain(chosen: np.ndarray) -> float:
            restored = _pooled(chosen, 1, n_frames)
            return _pooled(chosen, 0, n_frames) / restored if restored > 0 else float("inf")

        # The gain of the last unit (pm when calibrated: physical displacements, as elsewhere).
        result["series_gain"] = gain(rows)
        result["series_gain_ci_low"], result["series_gain_ci_high"] = bootstrap_ci(
            rows, gain, n_boot=n_boot, seed=seed)
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
