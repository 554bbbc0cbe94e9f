"""Scratch validation of the local precision against the truth (not a test, not a benchmark).

Real fits (remflow.columns, batched refinement) of synthetic images from remflow.synthetic whose
true columns carry smooth structure, imaged with shot noise, line jitter and drift. For each
case: the local raw figure vs the truth RMSE of raw over the same interior columns (fit ok on
both, at least one spacing from the edge), and the global lattice RMS for contrast.
The "restored" image is the noiseless image (a perfect restoration), used only to find the
starts; raw figures do not depend on it otherwise.

Run: PYTHONPATH=scripts .venv/bin/python tests/benchmarks/validate_local.py [--quick]
Prints one JSON line per case.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from remflow.columns import fit_columns
from remflow.precision import precision_summary
from remflow.synthetic import Degradation, LatticeSpec, degrade, render, true_positions

STRUCTURE = {"strain_gradient": 0.015, "bend_px": 1.0, "domain_angle_deg": 8.0}
CASES = [
    ("perfect", {}, {}),
    ("structure", STRUCTURE, {}),
    ("structure+drift", STRUCTURE, {"drift_px": 3.0}),
    ("jitter0.3", {}, {"line_jitter_px": 0.3}),
    ("structure+jitter0.2", STRUCTURE, {"line_jitter_px": 0.2}),
    ("static0.1", {"position_jitter_px": 0.1}, {}),
    ("perovskite+structure", {"kind": "perovskite", **STRUCTURE}, {}),
    ("rotated30", {"domain_angle_deg": 30.0}, {}),
]


def run(name: str, lattice: dict, degradation: dict, dose: float, seed: int, shape=(256, 256)) -> dict:
    spec = LatticeSpec(shape=shape, spacing_px=12.0, sigma_px=2.5, seed=seed, **lattice)
    truth = true_positions(spec)
    clean = render(spec, truth)
    raw = degrade(clean, Degradation(dose_e_per_A2=dose, seed=seed + 100, **degradation)).astype(float)
    fit = fit_columns(raw, clean, separation_px=12.0, refine="batched", truth=truth,
                      second_sublattice=spec.kind == "perovskite")
    summary = precision_summary(fit.table, image_shape=shape, separation_px=12.0, pixel_size_pm=None, n_boot=300)
    t = fit.table
    x, y = t["x_restored_px"], t["y_restored_px"]
    interior = (t.fit_ok_raw & t.fit_ok_restored & t.x_true_px.notna() & (x >= 12) & (y >= 12)
                & (x <= shape[1] - 13) & (y <= shape[0] - 13))
    rows = t[interior]
    truth_rmse = float(np.sqrt(np.mean((rows.x_raw_px - rows.x_true_px) ** 2 + (rows.y_raw_px - rows.y_true_px) ** 2)))
    # Slow drift is a smooth imaging error: compare also with where it put each column.
    drift = degradation.get("drift_px", 0.0) * rows.y_true_px / (shape[0] - 1)
    imaged_rmse = float(np.sqrt(np.mean((rows.x_raw_px - rows.x_true_px - drift) ** 2
                                        + (rows.y_raw_px - rows.y_true_px) ** 2)))
    local = summary["local_precision_raw_px"]
    return {"case": name, "dose": dose, "seed": seed, "status": fit.status, "n_columns": len(t),
            "n_local": summary["n_columns_local"], "truth_rmse_raw_px": round(truth_rmse, 4),
            "truth_rmse_less_drift_px": round(imaged_rmse, 4),
            "local_raw_px": None if local is None else round(local, 4),
            "local_ci": [None if v is None else round(v, 4) for v in (summary["local_precision_raw_px_ci_low"],
                                                                      summary["local_precision_raw_px_ci_high"])],
            "ratio_local_truth": None if local is None else round(local / imaged_rmse, 3),
            "global_lattice_raw_px": None if summary["global_lattice_rms_raw_px"] is None
            else round(summary["global_lattice_rms_raw_px"], 4),
            "outlier_pairs": summary["local_pairs"]["outliers_left_out"]}


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    for name, lattice, degradation in CASES[:3] if quick else CASES:
        for dose in (300.0, 5000.0):
            for seed in (0,) if quick else (0, 1):
                print(json.dumps(run(name, lattice, degradation, dose, seed)), flush=True)
