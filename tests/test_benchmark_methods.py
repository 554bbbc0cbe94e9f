"""Restoration methods benchmark: real TensorFlow, real atomap peak finding and batched fits, small images."""

from __future__ import annotations

import math
import warnings
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import cdist

from remflow.benchmark import (BenchmarkSize, crlb_variances, displacement_fidelity, fit_image, image_metrics,
                               run_benchmark, summarise, truth_models)
from remflow.crlb import lattice_position_crlbs
from remflow.methods import MethodSet, available_methods, bragg_filter
from remflow.synthetic import Degradation, LatticeSpec, degrade, expected_counts, render, true_positions

SETTINGS = {"shape": [96, 96], "spacing_px": 12.0, "sigma_px": 2.5, "pixel_size_pm": 20.0, "seed": 0}


def _image(kind: str, dose: float, settings: dict = SETTINGS):
    spec, degradation = truth_models(kind, dose, 0, settings)
    truth = true_positions(spec)
    clean = render(spec, truth)
    return spec, degradation, truth, degrade(clean, degradation).astype(np.float64), expected_counts(clean, degradation)


def test_every_method_returns_a_finite_image_of_the_input_shape():
    spec, _, _, noisy, _ = _image("polar", 2000, {**SETTINGS, "shape": [50, 66]})
    methods = MethodSet()
    assert set(methods.methods) == set(available_methods()) >= {"raw", "cnn", "gaussian", "nlm", "tv", "bragg"}
    outputs = methods.apply_all(noisy)
    for name, output in outputs.items():
        assert output.shape == noisy.shape == (50, 66), name
        assert np.isfinite(output).all(), name
    np.testing.assert_array_equal(outputs["raw"], noisy)
    for name in ("cnn", "gaussian", "nlm", "tv", "bragg"):
        assert not np.allclose(outputs[name], noisy), f"{name} left the image unchanged"
    with pytest.raises(ValueError):
        methods.apply("sharpen", noisy)


def test_bragg_filter_keeps_a_noise_free_perfect_lattice():
    spec = LatticeSpec(shape=(96, 96), seed=3)
    clean = render(spec, true_positions(spec))
    filtered = bragg_filter(clean)
    # Only the edges (the image is not periodic) and the reflections' tails differ.
    inner = (slice(12, -12), slice(12, -12))
    assert np.abs(filtered - clean)[inner].max() < 0.05 * np.ptp(clean)


def _greedy_match(fitted: np.ndarray, true: np.ndarray, radius: float) -> dict[int, int]:
    """Closest pairs first, each point once: written here without remflow's matcher."""
    distance = cdist(fitted, true)
    pairs = sorted((distance[i, j], i, j) for i, j in zip(*np.nonzero(distance < radius)))
    used_f, used_t, match = set(), set(), {}
    for _, i, j in pairs:
        if i not in used_f and j not in used_t:
            match[i] = j
            used_f.add(i)
            used_t.add(j)
    return match


def test_metrics_recomputed_independently_on_one_image():
    spec, degradation, truth, noisy, reference = _image("static", 3000)
    fits = fit_image(noisy, spec)
    metrics = image_metrics(fits, truth, spec, crlb_variances(spec, degradation, truth), noisy, reference)

    ok = fits[fits["ok"]]
    fitted = ok[["x_px", "y_px"]].to_numpy()
    true_xy = truth[["x_px", "y_px"]].to_numpy()
    match = _greedy_match(fitted, true_xy, 0.5 * spec.spacing_px)
    f = np.array([fitted[i] for i in match])
    t = np.array([true_xy[j] for j in match.values()])
    ideal = truth[["x_ideal_px", "y_ideal_px"]].to_numpy()[list(match.values())]
    assert metrics["n_matched"] == len(match) and metrics["n_spurious"] == len(fitted) - len(match)
    rmse = math.sqrt(np.mean(np.sum((f - t) ** 2, axis=1)))
    assert metrics["truth_rmse_px"] == pytest.approx(rmse, rel=1e-9)
    assert metrics["truth_rmse_px_ci_low"] <= rmse <= metrics["truth_rmse_px_ci_high"]
    # The bound of the same columns, looked up by position in the CRLB table.
    bounds = lattice_position_crlbs(spec, degradation)
    nearest = cdist(t, bounds[["x_px", "y_px"]].to_numpy()).argmin(axis=1)
    var = bounds["crlb_x_px"].to_numpy()[nearest] ** 2 + bounds["crlb_y_px"].to_numpy()[nearest] ** 2
    crlb = math.sqrt(np.mean(var))
    assert metrics["crlb_px"] == pytest.approx(crlb, rel=1e-9)
    assert metrics["crlb_ratio"] == pytest.approx(rmse / crlb, rel=1e-9)
    u, v = (t - ideal).ravel(), (f - ideal).ravel()
    slope = np.linalg.lstsq(u[:, None], v, rcond=None)[0][0]
    assert metrics["fidelity_slope"] == pytest.approx(slope, rel=1e-9)
    assert metrics["fidelity_r"] == pytest.approx(stats.pearsonr(u, v).statistic, rel=1e-9)
    data_range = reference.max() - reference.min()
    psnr = 10 * math.log10(data_range**2 / np.mean((reference - noisy) ** 2))
    assert metrics["psnr_db"] == pytest.approx(psnr, rel=1e-9)
    assert 0 < metrics["ssim"] < 1
    assert math.isnan(metrics["polar_recovered"])  # no polar shift in this truth


def test_polar_shift_metric_on_the_true_positions_is_one():
    spec, degradation, truth, noisy, reference = _image("polar", 5000)
    exact = pd.DataFrame({"x_px": truth["x_px"], "y_px": truth["y_px"], "sublattice": truth["sublattice"],
                          "ok": truth["in_image"]})
    metrics = image_metrics(exact, truth, spec, crlb_variances(spec, degradation, truth), reference, reference)
    assert metrics["polar_recovered"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["fidelity_slope"] == pytest.approx(1.0, abs=1e-9)
    assert metrics["truth_rmse_px"] == pytest.approx(0.0, abs=1e-12) and metrics["n_spurious"] == 0


def test_zero_displacement_gives_undefined_fidelity_without_warnings():
    spec, degradation, truth, noisy, reference = _image("perfect", 5000)
    assert np.array_equal(truth["x_px"], truth["x_ideal_px"]) and np.array_equal(truth["y_px"], truth["y_ideal_px"])
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        xy = truth[["x_px", "y_px"]].to_numpy()
        slope, r = displacement_fidelity(xy + 0.01, xy, xy)
        assert math.isnan(slope) and math.isnan(r)
        assert all(math.isnan(v) for v in displacement_fidelity(np.empty((0, 2)), np.empty((0, 2)), np.empty((0, 2))))
        fits = fit_image(noisy, spec)
    metrics = image_metrics(fits, truth, spec, crlb_variances(spec, degradation, truth), noisy, reference)
    assert math.isnan(metrics["fidelity_slope"]) and math.isnan(metrics["fidelity_r"])
    assert metrics["n_matched"] > 20 and np.isfinite(metrics["truth_rmse_px"])


def test_a_pure_shift_is_measured_with_slope_one_on_raw_at_high_dose():
    shift = (0.3, -0.2)
    spec = LatticeSpec(shape=(96, 96), seed=1, shift_px=shift)
    degradation = Degradation(dose_e_per_A2=100000, seed=1)
    truth = true_positions(spec)
    # The ideal lattice is the unshifted one: every column is displaced by the same vector.
    truth["x_ideal_px"] = truth["x_px"] - shift[0]
    truth["y_ideal_px"] = truth["y_px"] - shift[1]
    clean = render(spec, truth)
    noisy = degrade(clean, degradation).astype(np.float64)
    fits = fit_image(MethodSet(("raw",)).apply("raw", noisy), spec)
    metrics = image_metrics(fits, truth, spec, crlb_variances(spec, degradation, truth), noisy,
                            expected_counts(clean, degradation))
    assert metrics["n_matched"] >= 40
    assert metrics["fidelity_slope"] == pytest.approx(1.0, abs=0.05)


def test_raw_errors_sit_at_or_above_the_bound_and_raw_keeps_displacements_at_high_dose():
    size = BenchmarkSize(kinds=("static", "strain"), doses=(500.0, 50000.0), replicates=1)
    table = run_benchmark(SETTINGS, size, method_set=MethodSet(("raw",))).table
    assert len(table) == 4 and table["truth_rmse_px"].notna().all()
    # Within the interval: the raw fit cannot beat the Cramér–Rao bound.
    assert (table["truth_rmse_px_ci_high"] >= table["crlb_px"]).all(), table
    high = table[table["dose_e_per_A2"] == 50000.0]
    assert (high["fidelity_slope"] - 1).abs().max() <= 0.1, high
    assert (high["fidelity_r"] > 0.9).all()


def test_summary_means_and_t_intervals():
    rows = [{"method": "raw", "truth_kind": "static", "dose_e_per_A2": 100.0, "replicate": r, "truth_rmse_px": v}
            for r, v in enumerate([0.3, 0.5, 0.4])]
    rows.append({"method": "raw", "truth_kind": "static", "dose_e_per_A2": 1000.0, "replicate": 0,
                 "truth_rmse_px": 0.1})
    summary = summarise(pd.DataFrame(rows), ["truth_rmse_px"])
    first = summary.iloc[0]
    low, high = stats.t.interval(0.95, 2, loc=0.4, scale=stats.sem([0.3, 0.5, 0.4]))
    assert first["truth_rmse_px"] == pytest.approx(0.4) and first["n_images"] == 3
    assert (first["truth_rmse_px_ci_low"], first["truth_rmse_px_ci_high"]) == pytest.approx((low, high))
    assert math.isnan(summary.iloc[1]["truth_rmse_px_ci_low"])


def test_truth_kinds_have_the_physics_they_name():
    _, _, static, _, _ = _image("static", 100)
    assert (static["x_px"] - static["x_ideal_px"]).std() > 0.1
    spec, degradation = truth_models("scan", 100, 2, SETTINGS)
    assert degradation.drift_px > 0 and degradation.line_jitter_px > 0 and spec.seed == 2
    with pytest.raises(ValueError):
        truth_models("amorphous", 100, 0, SETTINGS)
    spec, _ = truth_models("vacuum_edge", 100, 0, SETTINGS)
    assert true_positions(spec)["x_px"].max() < 0.6 * spec.shape[1]
