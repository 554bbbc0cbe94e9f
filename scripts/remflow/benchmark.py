"""What restoration does to the physics: position error, displacements and polar shifts per method.

The same noisy synthetic images (:mod:`remflow.synthetic`) go through every method of
:mod:`remflow.methods`; on each method's output the columns are found once (atomap's peak
finder, :func:`remflow.columns.find_columns`, with the known column spacing) and refined as the
workflow does (centre of mass then 2D Gaussian, ``fit.refine: batched``; a perovskite's B
sublattice from A's cell centres after subtracting A's fitted model, atomap's recipe). Each
method finds its own columns, so missed and spurious columns are the method's.

Truth kinds (:data:`TRUTH_KINDS`): square or perovskite lattices whose columns are *not* on a
perfect lattice (static random displacements, a strain gradient with bending, polar B shifts
that flip sign between two domains, a vacuum edge, a particle), one perfect lattice as the
reference, and one with strong scan distortions. On top, the S(T)EM noise models of Lobato,
Friedrich & Van Aert (2023): Poisson shot noise at the dose, Gaussian detector noise, fast-scan
line jitter and slow drift.

Metrics of one method on one image (columns matched one to one to the true columns within
half the nearest-neighbour distance, :func:`remflow.precision.match_nearest`; ``M`` matched
columns with a successful fit, fitted position ``f_i``, true ``t_i``, ideal-lattice site ``l_i``):

- ``truth_rmse_px = sqrt(mean_i |f_i - t_i|^2)`` (radial), with a 95 % bootstrap interval over
  columns (:func:`remflow.precision.bootstrap_ci`);
- ``crlb_px = sqrt(mean_i (var_x,i + var_y,i))`` over the same columns, the Cramér–Rao bound on
  that radial RMS for any unbiased estimator using the raw image
  (:func:`remflow.crlb.lattice_position_crlbs`; shot and detector noise, not jitter or drift);
  ``crlb_ratio = truth_rmse_px / crlb_px`` (below 1 only with prior knowledge, or bias that
  happens to help);
- displacement fidelity, with true displacements ``u_i = t_i - l_i`` and measured
  ``v_i = f_i - l_i`` (x and y components pooled): ``fidelity_slope = sum(u . v) / sum(u . u)``
  (a least-squares slope through the origin: 1 = the displacement is kept, 0 = erased) and
  ``fidelity_r`` the Pearson correlation of the pooled components. Both are NaN (undefined,
  not an error) when every true displacement is zero or the components do not vary;
- ``polar_recovered``: for every B column with its four A neighbours (by ideal position)
  matched, the local polar displacement ``p = y_B - mean(y_A of the four)`` measured and true;
  ``sum(p_meas p_true) / sum(p_true^2)`` (1 = the full polar shift is measured). NaN without
  polar shifts;
- ``n_missed`` (true columns at least ``MISSED_BORDER_SPACINGS`` spacings inside the image
  without a match), ``n_spurious`` (successful fits without a true column), ``n_fit_failed``;
- ``psnr_db``, ``ssim`` of the method's image against the noise-free expected counts
  (no jitter, no drift), ``data_range`` = the range of that reference (:mod:`skimage.metrics`),
  the paper's image-quality metrics.

What it cannot see: the truths are Gaussian columns of one width, so model mismatch of real
columns (channelling, probe tails) is absent; the network was trained on other simulations;
the CRLB assumes unbiased estimators, a known width and no scan distortions.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from remflow.crlb import lattice_position_crlbs
from remflow.methods import MethodSet
from remflow.precision import MISSED_BORDER_SPACINGS, bootstrap_ci, match_nearest
from remflow.synthetic import Degradation, LatticeSpec, degrade, expected_counts, render, true_positions

log = logging.getLogger(__name__)

#: Bootstrap resamples for a per-image interval of the truth RMSE, and their seed.
N_BOOTSTRAP = 1000
BOOTSTRAP_SEED = 0
#: Detector noise (counts) and line jitter (px) of every truth kind unless it sets its own.
BASE_DETECTOR_NOISE = 0.3
BASE_LINE_JITTER_PX = 0.05


@dataclass(frozen=True)
class TruthKind:
    """A named truth: LatticeSpec fields plus the scan distortions of its images."""

    name: str
    description: str
    lattice: dict[str, Any] = field(default_factory=dict)
    line_jitter_px: float = BASE_LINE_JITTER_PX
    drift_px: float = 0.0
    detector_noise_sigma: float = BASE_DETECTOR_NOISE


#: The truth kinds of the benchmark, in table order.
TRUTH_KINDS: dict[str, TruthKind] = {kind.name: kind for kind in (
    TruthKind("perfect", "square lattice, no displacement (fidelity undefined): the bound's reference"),
    TruthKind("static", "square lattice, static random displacements N(0, 0.2 px) per column and axis",
              {"position_jitter_px": 0.2}),
    TruthKind("strain", "square lattice, strain gradient 0.04 across the image (u_x up to 0.64 px) and "
              "bending 0.5 px", {"strain_gradient": 0.04, "bend_px": 0.5}),
    TruthKind("polar", "perovskite (B at half amplitude), B columns shifted by +-0.4 px along y in two "
              "domains (180 degree wall in the middle)", {"kind": "perovskite", "polar_shift_px": 0.4}),
    TruthKind("vacuum_edge", "square lattice with static displacements N(0, 0.2 px) over the left half, "
              "vacuum on the right", {"position_jitter_px": 0.2, "region": "vacuum", "crystal_fraction": 0.5}),
    TruthKind("particle", "round particle (diameter 0.7 of the image) with static displacements "
              "N(0, 0.2 px) in vacuum", {"position_jitter_px": 0.2, "region": "particle", "crystal_fraction": 0.7}),
    TruthKind("scan", "static displacements N(0, 0.2 px) imaged with strong scan distortions: line jitter "
              "0.3 px and slow drift 1 px over the frame", {"position_jitter_px": 0.2},
              line_jitter_px=0.3, drift_px=1.0),
)}


@dataclass(frozen=True)
class BenchmarkSize:
    """Which truths, doses (e/Å²) and how many images (replicates) per dose."""

    kinds: tuple[str, ...]
    doses: tuple[float, ...]
    replicates: int


#: ``small`` runs in the default workflow (under 2 minutes on 2 cores); ``full`` on request.
SIZES: dict[str, BenchmarkSize] = {
    "small": BenchmarkSize(("static", "strain", "polar"), (200.0, 20000.0), 1),
    "full": BenchmarkSize(tuple(TRUTH_KINDS), (50.0, 200.0, 1000.0, 5000.0, 50000.0), 3),
}

#: Columns of methods.csv, in order.
METRIC_COLUMNS = ["truth_rmse_px", "truth_rmse_px_ci_low", "truth_rmse_px_ci_high", "crlb_px", "crlb_ratio",
                  "fidelity_slope", "fidelity_r", "polar_recovered", "n_true", "n_matched", "n_missed",
                  "n_spurious", "n_fit_failed", "psnr_db", "ssim"]
TABLE_COLUMNS = ["method", "truth_kind", "dose_e_per_A2", "replicate", *METRIC_COLUMNS]
#: Metrics averaged over replicates in methods_summary.csv (each with a 95 % t interval).
SUMMARY_METRICS = ["truth_rmse_px", "crlb_px", "crlb_ratio", "fidelity_slope", "fidelity_r", "polar_recovered",
                   "n_missed", "n_spurious", "psnr_db", "ssim"]


def truth_models(kind: str, dose: float, replicate: int, settings: dict[str, Any]) -> tuple[LatticeSpec, Degradation]:
    """LatticeSpec and Degradation of one image. ``settings`` (config ``benchmark``) gives
    ``shape``, ``spacing_px``, ``sigma_px``, ``b_ratio``, ``pixel_size_pm``, ``seed``; replicate ``r``
    uses seed ``seed + r`` for truth and noise, so all doses of a replicate share one truth and
    one set of random streams (common random numbers: doses differ by the dose alone)."""
    if kind not in TRUTH_KINDS:
        raise ValueError(f"unknown truth kind '{kind}'; expected one of {', '.join(TRUTH_KINDS)}")
    truth = TRUTH_KINDS[kind]
    seed = int(settings.get("seed", 0)) + int(replicate)
    lattice = {"kind": "square", "shape": tuple(settings.get("shape", (128, 128))),
               "spacing_px": float(settings.get("spacing_px", 12.0)), "sigma_px": float(settings.get("sigma_px", 2.5)),
               "b_ratio": float(settings.get("b_ratio", 0.5)), "seed": seed, **truth.lattice}
    degradation = Degradation(dose_e_per_A2=float(dose), pixel_size_pm=float(settings.get("pixel_size_pm", 20.0)),
                              detector_noise_sigma=truth.detector_noise_sigma, line_jitter_px=truth.line_jitter_px,
                              drift_px=truth.drift_px, seed=seed)
    return LatticeSpec(**lattice), degradation


def nearest_neighbour_px(spec: LatticeSpec) -> float:
    """Distance between nearest columns of the ideal lattice: the spacing, or spacing / sqrt(2) (perovskite A-B)."""
    return spec.spacing_px / math.sqrt(2.0) if spec.kind == "perovskite" else spec.spacing_px


# --------------------------------------------------------------------------- fitting


def fit_image(image: np.ndarray, spec: LatticeSpec) -> pd.DataFrame:
    """Columns of one image, found once and refined as the workflow does (``fit.refine: batched``).

    Starts from atomap's peak finder with the known spacing ``spec.spacing_px``; for a
    perovskite, B starts are A's cell centres and B is refined on the image minus A's fitted
    model (as :func:`remflow.columns.fit_columns`). Returns ``x_px, y_px, sublattice, ok``.
    """
    from remflow.columns import find_columns, model_image, refine_positions, second_sublattice_starts

    image = np.asarray(image, dtype=np.float64)
    empty = pd.DataFrame({"x_px": [], "y_px": [], "sublattice": [], "ok": []})
    if np.ptp(image) == 0:
        return empty
    starts = find_columns(image, spec.spacing_px)
    if len(starts) < 2:
        return empty
    fit_a = refine_positions(image, starts, separation_px=spec.spacing_px, method="batched")
    frames = [pd.DataFrame({"x_px": fit_a.x, "y_px": fit_a.y, "sublattice": "A", "ok": fit_a.ok})]
    if spec.kind == "perovskite":
        a_xy = np.column_stack([fit_a.x, fit_a.y])[fit_a.ok]
        b_starts = second_sublattice_starts(a_xy, image) if len(a_xy) >= 4 else np.empty((0, 2))
        if len(b_starts) >= 2:
            fit_b = refine_positions(image - model_image(image.shape, fit_a), b_starts,
                                     separation_px=spec.spacing_px, method="batched")
            frames.append(pd.DataFrame({"x_px": fit_b.x, "y_px": fit_b.y, "sublattice": "B", "ok": fit_b.ok}))
    table = pd.concat(frames, ignore_index=True)
    table["ok"] = table["ok"].astype(bool)
    return table


# --------------------------------------------------------------------------- metrics


def displacement_fidelity(measured: np.ndarray, true: np.ndarray, ideal: np.ndarray) -> tuple[float, float]:
    """(slope, r) of measured against true displacement from the ideal lattice.

    ``measured``, ``true``, ``ideal``: (M, 2) positions (px). With ``u = true - ideal`` and
    ``v = measured - ideal``, x and y components pooled: slope ``sum(u v) / sum(u^2)``
    (through the origin), r the Pearson correlation. NaN where undefined (no columns, all
    true displacements zero, or no variation), without warnings.
    """
    measured, true, ideal = (np.asarray(a, dtype=np.float64).reshape(-1, 2) for a in (measured, true, ideal))
    u = (true - ideal).ravel()
    v = (measured - ideal).ravel()
    good = np.isfinite(u) & np.isfinite(v)
    u, v = u[good], v[good]
    if u.size == 0:
        return math.nan, math.nan
    scale = float(np.sum(u * u))
    slope = float(np.sum(u * v) / scale) if scale > 0 else math.nan
    du, dv = u - u.mean(), v - v.mean()
    spread = math.sqrt(float(np.sum(du * du)) * float(np.sum(dv * dv)))
    r = float(np.sum(du * dv) / spread) if spread > 0 else math.nan
    return slope, r


def polar_pairs(truth: pd.DataFrame, spec: LatticeSpec) -> tuple[np.ndarray, np.ndarray]:
    """For each B column of ``truth``: indices (into ``truth``) of its four A neighbours by ideal
    position, and whether all four are real cell corners (within 0.8 spacing). Returns
    (B indices (K,), A indices (K, 4)) for the complete cells only."""
    a_rows = np.flatnonzero(truth["sublattice"].to_numpy() == "A")
    b_rows = np.flatnonzero(truth["sublattice"].to_numpy() == "B")
    if len(a_rows) < 4 or len(b_rows) == 0:
        return np.empty(0, dtype=int), np.empty((0, 4), dtype=int)
    ideal = truth[["x_ideal_px", "y_ideal_px"]].to_numpy(float)
    distance, index = cKDTree(ideal[a_rows]).query(ideal[b_rows], k=4)
    complete = (distance <= 0.8 * spec.spacing_px).all(axis=1)
    return b_rows[complete], a_rows[index[complete]]


def polar_recovered(fitted_of_truth: np.ndarray, truth: pd.DataFrame, spec: LatticeSpec) -> float:
    """Measured / true local polar shift (see the module docstring); NaN without polar shifts.

    ``fitted_of_truth`` (len(truth), 2): each true column's fitted position, NaN where unmatched.
    """
    b, a = polar_pairs(truth, spec)
    if len(b) == 0:
        return math.nan
    true_y = truth["y_px"].to_numpy(float)
    measured_y = fitted_of_truth[:, 1]
    complete = np.isfinite(measured_y[b]) & np.isfinite(measured_y[a]).all(axis=1)
    if not complete.any():
        return math.nan
    b, a = b[complete], a[complete]
    p_true = true_y[b] - true_y[a].mean(axis=1)
    p_measured = measured_y[b] - measured_y[a].mean(axis=1)
    scale = float(np.sum(p_true * p_true))
    # Below (1e-6 px)^2 per column there is no polar shift, only rounding.
    return float(np.sum(p_true * p_measured) / scale) if scale > 1e-12 * len(b) else math.nan


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(values))) if len(values) else math.nan


def image_metrics(fits: pd.DataFrame, truth: pd.DataFrame, spec: LatticeSpec, crlb_var: np.ndarray,
                  image: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """The metrics of one method on one image (formulas in the module docstring).

    ``fits``: :func:`fit_image` output; ``truth``: :func:`remflow.synthetic.true_positions`;
    ``crlb_var`` (len(truth),): var_x + var_y (px²) of each true column centred in the image, NaN
    for the others; ``image`` the method's output, ``reference`` the noise-free expected counts.
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rows, cols = spec.shape
    true_xy = truth[["x_px", "y_px"]].to_numpy(float)
    ideal_xy = truth[["x_ideal_px", "y_ideal_px"]].to_numpy(float)
    ok = fits["ok"].to_numpy(bool)
    fitted = fits.loc[ok, ["x_px", "y_px"]].to_numpy(float)
    match = match_nearest(fitted, true_xy, 0.5 * nearest_neighbour_px(spec))
    found = match >= 0
    fitted_of_truth = np.full_like(true_xy, np.nan)
    fitted_of_truth[match[found]] = fitted[found]
    matched = match[found]
    squared = np.sum((fitted[found] - true_xy[matched]) ** 2, axis=1)
    rmse = _rms(squared)
    low, high = (bootstrap_ci(squared, _rms, n_boot=N_BOOTSTRAP, seed=BOOTSTRAP_SEED) if len(squared)
                 else (math.nan, math.nan))
    crlb = _rms(crlb_var[matched]) if len(matched) else math.nan
    slope, r = displacement_fidelity(fitted[found], true_xy[matched], ideal_xy[matched])
    margin = MISSED_BORDER_SPACINGS * spec.spacing_px
    inside = ((true_xy[:, 0] >= margin) & (true_xy[:, 1] >= margin)
              & (true_xy[:, 0] <= cols - 1 - margin) & (true_xy[:, 1] <= rows - 1 - margin))
    data_range = float(np.ptp(reference))
    with np.errstate(divide="ignore"):  # an image equal to the reference has PSNR = inf, not a warning
        psnr = float(peak_signal_noise_ratio(reference, image, data_range=data_range))
    return {
        "truth_rmse_px": rmse, "truth_rmse_px_ci_low": low, "truth_rmse_px_ci_high": high,
        "crlb_px": crlb, "crlb_ratio": rmse / crlb if crlb > 0 else math.nan,
        "fidelity_slope": slope, "fidelity_r": r,
        "polar_recovered": polar_recovered(fitted_of_truth, truth, spec) if spec.polar_shift_px else math.nan,
        "n_true": int(np.sum(truth["in_image"].to_numpy(bool))), "n_matched": int(found.sum()),
        "n_missed": int(np.sum(inside & np.isnan(fitted_of_truth[:, 0]))),
        "n_spurious": int(np.sum(~found)), "n_fit_failed": int(np.sum(~ok)),
        "psnr_db": psnr,
        "ssim": float(structural_similarity(reference, image, data_range=data_range)),
    }


def crlb_variances(spec: LatticeSpec, degradation: Degradation, truth: pd.DataFrame) -> np.ndarray:
    """var_x + var_y (px²) of the Cramér–Rao bound for every row of ``truth`` centred in the image
    (all columns fitted jointly, :func:`remflow.crlb.lattice_position_crlbs`), NaN for the others."""
    table = lattice_position_crlbs(spec, degradation)
    variances = np.full(len(truth), np.nan)
    inside = np.flatnonzero(truth["in_image"].to_numpy(bool))
    variances[inside] = table["crlb_x_px"].to_numpy() ** 2 + table["crlb_y_px"].to_numpy() ** 2
    return variances


# --------------------------------------------------------------------------- the sweep


@dataclass
class BenchmarkResult:
    """methods.csv rows, the images of one panel (low dose) for the figure, and the wall time
    (s) per method, summed over images: method, fit and metrics (the first ``cnn`` image also
    loads the network, the first image imports atomap). Times are kept out of the table so
    that the same settings give the same table."""

    table: pd.DataFrame
    panel: dict[str, np.ndarray]
    panel_info: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def run_benchmark(settings: dict[str, Any], size: str | BenchmarkSize = "small", *,
                  method_set: MethodSet | None = None,
                  progress: Callable[[str], None] | None = None) -> BenchmarkResult:
    """Every method on every image of ``size`` (a name of :data:`SIZES` or a BenchmarkSize).

    One row per method, truth kind, dose and replicate (:data:`TABLE_COLUMNS`). The panel holds
    the noise-free reference, the noisy image and every method's output for the first truth
    kind's first replicate at the lowest dose.
    """
    plan = SIZES[size] if isinstance(size, str) else size
    method_set = method_set or MethodSet()
    panel_kind = "polar" if "polar" in plan.kinds else plan.kinds[0]
    panel_dose = min(plan.doses)
    rows: list[dict[str, Any]] = []
    panel: dict[str, np.ndarray] = {}
    seconds = dict.fromkeys(method_set.methods, 0.0)
    for kind in plan.kinds:
        for replicate in range(plan.replicates):
            for dose in plan.doses:
                spec, degradation = truth_models(kind, dose, replicate, settings)
                truth = true_positions(spec)
                clean = render(spec, truth)
                noisy = degrade(clean, degradation).astype(np.float64)
                reference = expected_counts(clean, degradation)
                variances = crlb_variances(spec, degradation, truth)
                keep_panel = kind == panel_kind and replicate == 0 and dose == panel_dose
                if keep_panel:
                    panel = {"reference": reference, "noisy": noisy}
                for method in method_set.methods:
                    start = time.perf_counter()
                    output = method_set.apply(method, noisy)
                    fits = fit_image(output, spec)
                    metrics = image_metrics(fits, truth, spec, variances, output, reference)
                    rows.append({"method": method, "truth_kind": kind, "dose_e_per_A2": float(dose),
                                 "replicate": replicate, **metrics})
                    seconds[method] += time.perf_counter() - start
                    if keep_panel:
                        panel[method] = output
                if progress is not None:
                    progress(f"{kind} replicate {replicate} dose {dose:g}: done")
    info = {"truth_kind": panel_kind, "dose_e_per_A2": float(panel_dose), "replicate": 0,
            "methods": list(method_set.methods)}
    return BenchmarkResult(pd.DataFrame(rows, columns=TABLE_COLUMNS), panel, info, seconds)


def _t_interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval of the finite values (NaN interval for fewer than two)."""
    from scipy import stats

    values = values[np.isfinite(values)]
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def summarise(table: pd.DataFrame, metrics: Iterable[str] = SUMMARY_METRICS) -> pd.DataFrame:
    """One row per method, truth kind and dose: the mean of each metric over the replicates
    with a 95 % Student-t interval (``_ci_low``/``_ci_high``; NaN with one replicate), and
    ``n_images``. Methods, kinds and doses keep the order of ``table``."""
    metrics = list(metrics)
    out = []
    keys = ["method", "truth_kind", "dose_e_per_A2"]
    for key, group in table.groupby(keys, sort=False):
        row: dict[str, Any] = dict(zip(keys, key))
        row["n_images"] = len(group)
        for metric in metrics:
            mean, low, high = _t_interval(group[metric].to_numpy(dtype=np.float64))
            row[metric], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = mean, low, high
        out.append(row)
    return pd.DataFrame(out)
