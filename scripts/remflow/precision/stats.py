"""Shared statistics of the precision estimators: paired bootstrap intervals, RMS, gain, verdict.

Gain = RMS raw / RMS restored (> 1: restoration made positions more precise). Its 95%
interval is a paired percentile bootstrap over columns: each resample draws the same
column indices for raw and restored, so the interval accounts for their correlation.
The bootstrap treats columns as independent: errors shared by neighbouring columns
(e.g. a restoration artefact spanning several, or the local estimator's shared
neighbours) make the interval too narrow. The verdict is "helps" when the whole interval
is above 1, "hurts" when below 1, else "inconclusive". Seeds are fixed: the same input gives
the same numbers (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

KINDS = ("raw", "restored")

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
    stats = np.array([statistic(values[rows]) for rows in _resamples(len(values), n_boot, seed)], dtype=np.float64)
    return _percentile_interval(stats, level)


def _resamples(rows: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, rows) row indices of the resamples: one generator seeded with ``seed``."""
    return np.random.default_rng(seed).integers(0, rows, size=(n_boot, rows))


def _percentile_interval(stats: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(stats, [tail, 100 - tail])
    return float(low), float(high)

#: Resamples whose means are computed at once (bounds the memory: chunk x rows x columns floats).
_MEANS_CHUNK = 100


def bootstrap_ci_of_means(values: np.ndarray, statistic_of_means: Callable[[np.ndarray], np.ndarray], *,
                          n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """:func:`bootstrap_ci` for a statistic that depends on a resample only through its column
    means: the same resamples (same seed, same rows), the means computed in blocks, and
    ``statistic_of_means`` applied to all of them at once ((n_boot,) or (n_boot, columns) ->
    (n_boot,)). Why: the per-resample Python loop of :func:`bootstrap_ci` was 90 % of the
    precision step (0.2 s of CPU per image at 2000 resamples); this gives the same interval
    (up to rounding in the last digits) in a tenth of the time.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return float("nan"), float("nan")
    draws = _resamples(len(values), n_boot, seed)
    means = np.empty((n_boot, *values.shape[1:]), dtype=np.float64)
    for start in range(0, n_boot, _MEANS_CHUNK):
        means[start:start + _MEANS_CHUNK] = values[draws[start:start + _MEANS_CHUNK]].mean(axis=1)
    return _percentile_interval(np.asarray(statistic_of_means(means), dtype=np.float64), level)


def _rms_of_means(means: np.ndarray) -> np.ndarray:
    return np.sqrt(means)


def _ratio_of_rms_of_means(means: np.ndarray) -> np.ndarray:
    """sqrt(mean raw / mean restored) per resample; infinite where the restored mean is 0 (as _ratio_of_rms)."""
    ratio = np.full(len(means), np.inf)
    positive = means[:, 1] > 0
    ratio[positive] = np.sqrt(means[positive, 0]) / np.sqrt(means[positive, 1])
    return ratio


def _rms_of(squared: np.ndarray) -> float:
    return float(np.sqrt(np.mean(squared)))

def _ratio_of_rms(squared_pairs: np.ndarray) -> float:
    """RMS of column 0 over RMS of column 1 (raw over restored)."""
    denominator = np.sqrt(np.mean(squared_pairs[:, 1]))
    return float(np.sqrt(np.mean(squared_pairs[:, 0])) / denominator) if denominator > 0 else float("inf")

def prediction_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float] | None:
    """Interval for one further draw of a positive quantity of which ``samples`` (R,) are draws.

    Log-normal model: with m, s the mean and standard deviation (ddof 1) of log samples, the
    interval is exp(m -+ t s sqrt(1 + 1/R)), t the Student-t quantile at (1 + level)/2 with
    R - 1 degrees of freedom (the textbook prediction interval of a normal sample, on the log
    scale, so that it stays positive and a ratio's interval is the ratio of its ends).
    Assumes independent draws. None for fewer than two finite positive samples.
    """
    from scipy import stats

    values = np.asarray(samples, dtype=np.float64)
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) < 2:
        return None
    logs = np.log(values)
    half = float(stats.t.ppf(0.5 + level / 2, len(logs) - 1)) * float(logs.std(ddof=1)) * math.sqrt(1 + 1 / len(logs))
    return float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half))


def verdict(ci_low: float | None, ci_high: float | None) -> str:
    """helps: the whole interval of the gain is above 1; hurts: below 1; else inconclusive."""
    if ci_low is not None and np.isfinite(ci_low) and ci_low > 1:
        return "helps"
    if ci_high is not None and np.isfinite(ci_high) and ci_high < 1:
        return "hurts"
    return "inconclusive"


def scaled(vectors: np.ndarray, pixel_size_pm: float | tuple[float, float]) -> np.ndarray:
    """Displacements (M, 2) = (dx, dy) in px to pm, per component (x and y pixel sizes may differ)."""
    return vectors * np.broadcast_to(np.asarray(pixel_size_pm, dtype=np.float64), (2,))


def paired_figures_from_squares(squared: np.ndarray, *, n_boot: int, seed: int) -> dict[str, Any]:
    """RMS of raw (column 0) and restored (column 1) squared errors (M, 2), with 95% intervals,
    and the gain RMS raw / RMS restored with its paired interval."""
    figures: dict[str, Any] = {}
    for column, kind in enumerate(KINDS):
        figures[kind] = _rms_of(squared[:, column])
        figures[f"{kind}_ci"] = bootstrap_ci_of_means(squared[:, column], _rms_of_means, n_boot=n_boot, seed=seed)
    figures["gain"] = _ratio_of_rms(squared)
    figures["gain_ci"] = bootstrap_ci_of_means(squared, _ratio_of_rms_of_means, n_boot=n_boot, seed=seed)
    return figures


def paired_figures(raw: np.ndarray, restored: np.ndarray, *, n_boot: int, seed: int) -> dict[str, Any]:
    """:func:`paired_figures_from_squares` of displacement vectors (M, 2) raw and restored (radial RMS)."""
    squared = np.column_stack([np.sum(raw**2, axis=1), np.sum(restored**2, axis=1)])
    return paired_figures_from_squares(squared, n_boot=n_boot, seed=seed)


def json_number(value: Any) -> Any:
    """Plain Python numbers for JSON; NaN and infinity become None."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
