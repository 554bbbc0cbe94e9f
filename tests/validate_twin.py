"""Validation of the noise twin on synthetic lattices with known static displacements.

Not a test (it takes minutes): prints, for each dose and each choice of the twin's true
positions, the truth RMSE of raw and restored fits (recomputed from the fitted table and
the true positions) next to the twin's figures. The README's table comes from it:

    PYTHONPATH=scripts .venv/bin/python tests/validate_twin.py [--replicas 4] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd

from remflow.columns import fit_columns
from remflow.precision import bootstrap_ci, verdict
from remflow.precision.basis import spread_unresolved
from remflow.precision.twin import TRUTH_CHOICES, fit_replicas, plan_twin, twin_figures
from remflow.restore import Restorer
from remflow.synthetic import Degradation, LatticeSpec, degrade, render, true_positions

NETWORK = "sfr_hrstem"


def truth_figures(table: pd.DataFrame, truth: pd.DataFrame, spacing: float) -> dict:
    """Truth RMSE raw and restored with the paired gain interval (recomputed here from the table)."""
    from remflow.precision import match_nearest

    start = table[["x_restored_px", "y_restored_px"]].to_numpy(float)
    true_xy = truth[["x_px", "y_px"]].to_numpy(float)
    match = match_nearest(start, true_xy, 0.5 * spacing)
    ok = table["fit_ok_raw"].to_numpy(bool) & table["fit_ok_restored"].to_numpy(bool) & (match >= 0)
    t = true_xy[match[ok]]
    sq = np.column_stack([np.sum((table.loc[ok, [f"x_{k}_px", f"y_{k}_px"]].to_numpy(float) - t) ** 2, axis=1)
                          for k in ("raw", "restored")])
    rms = np.sqrt(sq.mean(axis=0))
    low, high = bootstrap_ci(sq, lambda s: float(np.sqrt(s[:, 0].mean() / s[:, 1].mean())), n_boot=1000)
    return {"truth_raw": rms[0], "truth_restored": rms[1], "truth_gain": rms[0] / rms[1],
            "truth_verdict": verdict(low, high), "n": int(ok.sum())}


def _plan(raw: np.ndarray, table: pd.DataFrame, truth: pd.DataFrame, spacing: float, choice: str, replicas: int,
          pixel_size_pm: float, separation_px: float):
    """plan_twin for a truth choice; ``true``, a diagnostic, gives the twin the real true positions
    (each column's nearest within half a spacing of its restored fit; the raw fit where none), so
    that what is left between twin and truth is the image and noise model's doing."""
    if choice != "true":
        return plan_twin(raw, table, separation_px=separation_px, replicas=replicas, seed=0, truth=choice,
                         pixel_size_pm=pixel_size_pm)
    import remflow.precision.twin as twin_module
    from remflow.precision import match_nearest

    true_xy = truth[["x_px", "y_px"]].to_numpy(float)
    match = match_nearest(table[["x_restored_px", "y_restored_px"]].to_numpy(float), true_xy, 0.5 * spacing)
    given = np.where((match >= 0)[:, None], true_xy[np.clip(match, 0, None)],
                     table[["x_raw_px", "y_raw_px"]].to_numpy(float))
    original = twin_module.twin_truth_positions
    twin_module.twin_truth_positions = lambda _table, _choice, _separation: given
    try:  # "smoothed" is the path that takes its positions from twin_truth_positions; images within max_pixels only
        return plan_twin(raw, table, separation_px=separation_px, replicas=replicas, seed=0, truth="smoothed",
                         pixel_size_pm=pixel_size_pm)
    finally:
        twin_module.twin_truth_positions = original


def run_case(restorer: Restorer, spec: LatticeSpec, degradation: Degradation, choices, replicas: int) -> list[dict]:
    truth = true_positions(spec)
    raw = degrade(render(spec, truth), degradation).astype(np.float64)
    restored = restorer.restore(raw)
    fit = fit_columns(raw, restored, separation_px=spec.spacing_px, refine="batched", min_columns=10,
                      second_sublattice=spec.kind == "perovskite")
    if len(fit.table) == 0:
        print(json.dumps({"dose": degradation.dose_e_per_A2, "seed": spec.seed, "status": fit.status}), flush=True)
        return []
    base = truth_figures(fit.table, truth[truth["in_image"]], spec.spacing_px)
    rows = []
    for choice in choices:
        started = time.perf_counter()
        plan = _plan(raw, fit.table, truth[truth["in_image"]], spec.spacing_px, choice, replicas,
                     degradation.pixel_size_pm, fit.separation_px)
        restored_replicas = restorer.restore_many(list(plan.replicas))
        fits = fit_replicas(plan.columns, plan.replicas, np.array(restored_replicas), separation_px=fit.separation_px)
        figures = twin_figures(plan.columns, fits, separation_px=fit.separation_px, n_boot=1000)
        rows.append({"dose": degradation.dose_e_per_A2, "seed": spec.seed, "choice": choice, **base,
                     "twin_raw": figures["twin_error_raw_px"], "twin_restored": figures["twin_error_restored_px"],
                     "twin_restored_ci": [round(figures["twin_error_restored_px_ci_low"], 4),
                                          round(figures["twin_error_restored_px_ci_high"], 4)],
                     # one image's 95 % prediction interval (from the replicas' own RMSEs) and whether it holds the truth
                     "twin_restored_pi": [round(figures.get("twin_error_restored_px_pi_low", float("nan")), 4),
                                          round(figures.get("twin_error_restored_px_pi_high", float("nan")), 4)],
                     "restored_pi_holds": bool(figures.get("twin_error_restored_px_pi_low", np.inf) <= base["truth_restored"]
                                               <= figures.get("twin_error_restored_px_pi_high", -np.inf)),
                     "raw_pi_holds": bool(figures.get("twin_error_raw_px_pi_low", np.inf) <= base["truth_raw"]
                                          <= figures.get("twin_error_raw_px_pi_high", -np.inf)),
                     "twin_gain_pi": [round(figures.get("twin_gain_pi_low", float("nan")), 3),
                                      round(figures.get("twin_gain_pi_high", float("nan")), 3)],
                     "gain_pi_holds": bool(figures.get("twin_gain_pi_low", np.inf) <= base["truth_gain"]
                                           <= figures.get("twin_gain_pi_high", -np.inf)),
                     "twin_gain": figures["twin_gain"], "twin_verdict": figures["twin_verdict"],
                     "replica_shrinks": [round(k, 3) for k in plan.figures.get("twin_replica_shrinks", [])],
                     "gain_fit": plan.figures["noise_gain"], "read": plan.figures["noise_read_sigma"],
                     "chi2": plan.figures["noise_reduced_chi_square"], "method": plan.figures["noise_method"],
                     "crlb_radial": plan.figures["crlb_radial_px"],
                     # D_L^2 - S_0 and its error: the twin_note flags an unresolved spread within 2 errors of 0
                     "spread_px2": plan.figures.get("twin_displacement_sq_px2"),
                     "spread_error_px2": plan.figures.get("twin_displacement_sq_error_px2"),
                     "spread_unresolved": spread_unresolved(plan.figures),
                     # remflow.precision.basis.MIN_RAW_ERROR_OVER_CRLB refuses the twin below 0.9
                     "raw_high_over_bound": figures["twin_error_raw_px_ci_high"] / plan.figures["crlb_radial_px"]
                     if plan.figures.get("crlb_radial_px") else None,
                     "seconds": time.perf_counter() - started})
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()}), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--doses", type=float, nargs="+", default=[300.0, 30000.0])
    parser.add_argument("--jitter", type=float, default=0.15)
    parser.add_argument("--choices", nargs="+", default=list(TRUTH_CHOICES),
                        help="twin truth choices; 'true' (diagnostic) gives the twin the real true positions")
    # Lattice variants beyond the README's table (square, 128^2, spacing 12 px, width 2.5 px, no read noise).
    parser.add_argument("--kind", default="square", choices=["square", "perovskite"])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--spacing", type=float, default=12.0)
    parser.add_argument("--sigma", type=float, default=2.5)
    parser.add_argument("--detector-noise", type=float, default=0.0, help="Gaussian read noise (counts)")
    args = parser.parse_args()
    restorer = Restorer(NETWORK)
    rows = []
    for seed in args.seeds:
        for dose in args.doses:
            spec = LatticeSpec(kind=args.kind, shape=(args.size, args.size), spacing_px=args.spacing,
                               sigma_px=args.sigma, position_jitter_px=args.jitter, seed=seed)
            degradation = Degradation(dose_e_per_A2=dose, detector_noise_sigma=args.detector_noise, seed=seed)
            rows += run_case(restorer, spec, degradation, args.choices, args.replicas)
    if not rows:
        return
    table = pd.DataFrame(rows)
    for column in ("raw", "restored"):
        table[f"ratio_{column}"] = table[f"twin_{column}"] / table[f"truth_{column}"]
    print(table.groupby(["dose", "choice"])[["truth_raw", "twin_raw", "ratio_raw", "truth_restored", "twin_restored",
                                             "ratio_restored", "truth_gain", "twin_gain"]].mean().round(3).to_string())


if __name__ == "__main__":
    main()
