"""All precision figures of one sample, assembled for results/precision/{sample}.json and the summary.

Three figures, each computed on the same columns for raw and restored (a *paired* comparison):

- ``local_precision_*`` (:mod:`remflow.precision.local`): each column against the midpoint of
  its opposite neighbours. Needs no ground truth; the default figure.
- ``global_lattice_rms_*`` (:mod:`remflow.precision.lattice`): distance from one ideal lattice
  fitted to the whole image; includes strain, domains and scan distortion.
- ``truth_rmse_*`` (:mod:`remflow.precision.truth`): distance from the true positions
  (simulations only).

The gain (raw / restored) and verdict are based on the truth RMSE when ground truth is given,
else on the local precision: ``gain_basis`` says which ("truth" or "local"). ``local_gain``
is always the local figure's gain, for comparison.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from remflow.precision.lattice import lattice_residual_vectors
from remflow.precision.local import local_errors
from remflow.precision.stats import KINDS, json_number, paired_figures_from_squares, scaled, verdict
from remflow.precision.truth import detection_counts, truth_error_vectors, with_truth_columns

#: (basis name, figure prefix) in the order they appear in the summary.
FIGURES = (("local", "local_precision"), ("global_lattice", "global_lattice_rms"), ("truth", "truth_rmse"))
_PX_FIGURES = [f"{prefix}_{kind}_px" for _, prefix in FIGURES for kind in KINDS]
_CI = ("", "_ci_low", "_ci_high")
_COUNTS = ["n_missed_raw", "n_spurious_raw", "n_missed_restored", "n_spurious_restored"]
#: Fewer columns than this give no figure.
MIN_FIGURE_COLUMNS = 3


def _pm_name(px_name: str) -> str:
    """local_precision_raw_px -> local_precision_raw_pm."""
    return px_name.removesuffix("_px") + "_pm"


#: Column order of results/summary.csv (sample, network and pixel_size_pm are added by the caller).
SUMMARY_FIELDS: list[str] = (
    ["sample", "status", "network", "pixel_size_pm", "n_columns", "n_columns_used", "n_columns_local",
     "n_not_significant", "n_fit_failed_raw", "n_fit_failed_restored"]
    + [f"{name}{suffix}" for name in _PX_FIGURES for suffix in _CI]
    + _COUNTS
    + [f"{_pm_name(name)}{suffix}" for name in _PX_FIGURES for suffix in _CI]
    + ["precision_gain", "precision_gain_ci_low", "precision_gain_ci_high", "verdict", "gain_basis",
       "local_gain", "local_gain_ci_low", "local_gain_ci_high"]
)


def precision_summary(table: pd.DataFrame, *, image_shape: tuple[int, int], separation_px: float,
                      pixel_size_pm: float | tuple[float, float] | None, truth: pd.DataFrame | None = None,
                      seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """All precision figures of one sample as a flat, JSON-ready dict (see the module docs).

    ``table``: columns.csv rows (px); ``image_shape`` (rows, cols); ``pixel_size_pm`` a number,
    an (x, y) pair, or None (uncalibrated: ``_pm`` figures None). Keys: status, n_columns,
    n_columns_used (columns behind the gain), n_columns_local, n_fit_failed_raw/restored,
    ``{local_precision,global_lattice_rms}_{raw,restored}_px`` (+ _ci_low, _ci_high), with truth
    also truth_rmse_* and n_missed/n_spurious_{raw,restored}; precision_gain (+ CIs),
    gain_basis, verdict, local_gain (+ CIs); ``_pm`` twins; ``local_precision_by_sublattice``
    and ``local_pairs`` details. Figures that cannot be computed are None.
    """
    caller_fields = ("sample", "network", "pixel_size_pm", "n_not_significant")
    result: dict[str, Any] = {name: None for name in SUMMARY_FIELDS if name not in caller_fields}
    result["n_columns"] = len(table)
    result["n_fit_failed_raw"] = int((~table["fit_ok_raw"].astype(bool)).sum()) if len(table) else 0
    result["n_fit_failed_restored"] = int((~table["fit_ok_restored"].astype(bool)).sum()) if len(table) else 0
    units = [("px", None)] + ([("pm", pixel_size_pm)] if pixel_size_pm is not None else [])
    squares: dict[str, dict[str, np.ndarray]] = {"local": {}, "global_lattice": {}, "truth": {}}
    local_px = local_errors(table, image_shape=image_shape, separation_px=separation_px)
    result["n_columns_local"] = len(local_px.rows)
    result["local_pairs"] = {"used": local_px.n_pairs, "outliers_left_out": local_px.n_pairs_excluded,
                             "sublattices_without_cross_line_pairs": local_px.all_directions}
    lattice = lattice_residual_vectors(table, image_shape=image_shape, separation_px=separation_px)
    if truth is not None:
        table = with_truth_columns(table, truth, separation_px)
        truth_vectors = truth_error_vectors(table, image_shape=image_shape, separation_px=separation_px)
        for kind in KINDS:
            result[f"n_missed_{kind}"], result[f"n_spurious_{kind}"] = detection_counts(
                table, kind, truth=truth, image_shape=image_shape, separation_px=separation_px)
    for unit, scale in units:
        local = local_px if scale is None else local_errors(table, image_shape=image_shape,
                                                             separation_px=separation_px, pixel_size_pm=scale)
        squares["local"][unit] = local.squared
        vectors = {"global_lattice": lattice}
        if truth is not None:
            vectors["truth"] = truth_vectors
        for basis, source in vectors.items():
            raw, restored = (source[kind] if scale is None else scaled(source[kind], scale) for kind in KINDS)
            squares[basis][unit] = np.column_stack([np.sum(raw**2, axis=1), np.sum(restored**2, axis=1)])
        if scale is None and len(local.rows):
            by_sublattice = {}
            for name in np.unique(local.sublattice):
                pick = local.sublattice == name
                part = paired_figures_from_squares(local.squared[pick], n_boot=n_boot, seed=seed)
                by_sublattice[str(name)] = {f"{kind}_px": part[kind] for kind in KINDS} | {
                    f"{kind}_px_ci": list(part[f"{kind}_ci"]) for kind in KINDS} | {"n_columns": int(pick.sum())}
            result["local_precision_by_sublattice"] = by_sublattice
    gains: dict[str, dict[str, Any]] = {}
    for basis, prefix in FIGURES:
        for unit, _ in units:
            squared = squares[basis].get(unit)
            if squared is None or len(squared) < MIN_FIGURE_COLUMNS:
                continue
            figures = paired_figures_from_squares(squared, n_boot=n_boot, seed=seed)
            for kind in KINDS:
                name = f"{prefix}_{kind}_{unit}"
                result[name] = figures[kind]
                result[f"{name}_ci_low"], result[f"{name}_ci_high"] = figures[f"{kind}_ci"]
            # pm last when calibrated: with non-square pixels the gain is that of physical displacements.
            gains[basis] = {"gain": figures["gain"], "ci": figures["gain_ci"], "n": len(squared)}
    if "local" in gains:
        result["local_gain"] = gains["local"]["gain"]
        result["local_gain_ci_low"], result["local_gain_ci_high"] = gains["local"]["ci"]
    basis = "truth" if "truth" in gains else ("local" if "local" in gains else None)
    if basis is None:
        result["status"] = ("too few usable columns with lattice neighbours for precision figures "
                            f"({result['n_columns_local']} columns with opposite neighbours)")
        result["n_columns_used"] = 0
        result["verdict"] = "inconclusive"
    else:
        result["status"] = "ok"
        result["gain_basis"] = basis
        result["n_columns_used"] = gains[basis]["n"]
        result["precision_gain"] = gains[basis]["gain"]
        result["precision_gain_ci_low"], result["precision_gain_ci_high"] = gains[basis]["ci"]
        result["verdict"] = verdict(result["precision_gain_ci_low"], result["precision_gain_ci_high"])
    return {key: (json_number(value) if not isinstance(value, (dict, list)) else value)
            for key, value in result.items()}
