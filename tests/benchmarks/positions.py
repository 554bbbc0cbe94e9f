"""How far a change in restoration arithmetic (bfloat16, TF32 on a GPU) moves fitted column positions.

Both restored images are refined from the SAME starting positions (found on the reference
restoration), so the difference is the arithmetic's alone, not a different set of columns.
The yardstick is the width of the 95% confidence interval of the reference's own precision
figure (truth RMSE where the truth is known, else lattice RMS): a move far below it cannot
change any number remflow reports.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from common import EXP_HRSTEM, LOW_DOSE_FRAME

#: The workflow's default synthetic dose sweep (config/config.yaml benchmark).
DOSES = (50.0, 500.0, 5000.0, 50000.0)
SWEEP_SETTINGS = {"kind": "square", "shape": [128, 128], "spacing_px": 12.0, "sigma_px": 2.5, "b_ratio": 0.5,
                  "position_jitter_px": 0.0, "pixel_size_pm": 20.0, "detector_noise_sigma": 0.0,
                  "line_jitter_px": 0.0, "seed": 0}


def dose_sweep(doses: tuple[float, ...] = DOSES, shape: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """The synthetic dose-sweep images with their true positions: [{name, image, truth}]."""
    from remflow.synthetic import degrade, render, true_positions
    from remflow.synthetic_samples import benchmark_models

    settings = dict(SWEEP_SETTINGS, shape=list(shape or SWEEP_SETTINGS["shape"]))
    cases = []
    for dose in doses:
        spec, degradation = benchmark_models(settings, dose)
        positions = true_positions(spec)
        image = degrade(render(spec, positions), degradation).astype(np.float32)
        cases.append({"name": f"dose_{dose:g}", "image": image, "truth": positions})
    return cases


def low_dose_frame() -> dict[str, Any]:
    """exp_hrstem_4, the low-dose SrTiO3 frame of tk_r_em's test data (no truth)."""
    from remflow.ingest import read_image, resolve_path

    image = read_image(resolve_path(EXP_HRSTEM), dataset="x", frame=LOW_DOSE_FRAME).signal.data
    return {"name": "exp_hrstem_4", "image": np.asarray(image, dtype=np.float32), "truth": None}


def reference_fit(raw: np.ndarray, restored: np.ndarray, truth: pd.DataFrame | None) -> dict[str, Any]:
    """Columns and precision of the reference restoration (the workflow's own fit and figures)."""
    from remflow.columns import fit_columns
    from remflow.precision import precision_summary

    fit = fit_columns(raw, restored, refine="batched", truth=truth)
    if fit.status != "ok":
        return {"status": fit.status}
    figures = precision_summary(fit.table, image_shape=raw.shape, separation_px=fit.separation_px,
                                pixel_size_pm=None, truth=truth, n_boot=1000)
    name = "truth_rmse_restored_px" if truth is not None else "global_lattice_rms_restored_px"
    width = figures.get(f"{name}_ci_high"), figures.get(f"{name}_ci_low")
    # Start every refinement where the reference fit ended: both then see the same columns.
    return {"status": "ok", "separation_px": fit.separation_px, "figure": name, "value_px": figures.get(name),
            "ci_width_px": None if None in width else float(width[0] - width[1]),
            "starts": fit.table[["x_restored_px", "y_restored_px"]].to_numpy(dtype=np.float64)}


def position_shift(reference: np.ndarray, other: np.ndarray, starts: np.ndarray, separation_px: float) -> dict[str, Any]:
    """Max and RMS distance (px) between columns refined on ``reference`` and on ``other`` from ``starts``."""
    from remflow.columns import refine_positions

    a = refine_positions(reference, starts, separation_px=separation_px, method="batched")
    b = refine_positions(other, starts, separation_px=separation_px, method="batched")
    ok = a.ok & b.ok
    distance = np.hypot(a.x[ok] - b.x[ok], a.y[ok] - b.y[ok])
    return {"columns": int(ok.sum()), "max_shift_px": float(distance.max()) if ok.any() else None,
            "rms_shift_px": float(np.sqrt(np.mean(distance**2))) if ok.any() else None}
