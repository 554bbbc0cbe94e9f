"""The noise twin, its noise model and the per-image Cramér-Rao bound, on real fits and real TensorFlow.

Synthetic lattices with known static displacements (remflow.synthetic) are fitted without
their truth; the truth RMSE is recomputed here from the fitted table and the true positions.

Run: PYTHONPATH=scripts .venv/bin/python -m pytest tests/test_twin.py
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from remflow.columns import fit_columns
from remflow.crlb import image_position_crlb, lattice_position_crlb
from remflow.imagemodel import fit_image_model, fit_noise_model, model_parameter_count
from remflow.precision import bootstrap_ci, match_nearest, verdict
from remflow.precision.basis import apply_gain_basis, spread_unresolved
from remflow.precision.twin import (DeconvolvedTruth, fit_replicas, local_lattice_weights, model_of_image, plan_twin,
                                    replica_shrinks, smoothed_positions, twin_figures)
from remflow.synthetic import Degradation, LatticeSpec, degrade, expected_counts, render, true_positions

SHAPE = (128, 128)
JITTER = 0.15  # px per axis: static displacements of the true columns


def truth_rmse(table: pd.DataFrame, truth: pd.DataFrame, spacing: float) -> dict[str, float | str]:
    """Truth RMSE raw and restored and the truth verdict, recomputed from the table."""
    true_xy = truth[["x_px", "y_px"]].to_numpy(float)
    match = match_nearest(table[["x_restored_px", "y_restored_px"]].to_numpy(float), true_xy, 0.5 * spacing)
    ok = table["fit_ok_raw"].to_numpy(bool) & table["fit_ok_restored"].to_numpy(bool) & (match >= 0)
    squared = np.column_stack([
        np.sum((table.loc[ok, [f"x_{kind}_px", f"y_{kind}_px"]].to_numpy(float) - true_xy[match[ok]]) ** 2, axis=1)
        for kind in ("raw", "restored")])
    low, high = bootstrap_ci(squared, lambda s: float(np.sqrt(s[:, 0].mean() / s[:, 1].mean())), n_boot=1000)
    rms = np.sqrt(squared.mean(axis=0))
    return {"raw": float(rms[0]), "restored": float(rms[1]), "verdict": verdict(low, high)}


@pytest.fixture(scope="module")
def restorer():
    from remflow.restore import Restorer

    return Restorer("sfr_hrstem")


@pytest.mark.parametrize("dose", [50.0, 300.0, 30000.0])
def test_twin_predicts_the_truth_rmse_and_verdict_without_truth(restorer, dose):
    spec = LatticeSpec(shape=SHAPE, position_jitter_px=JITTER, seed=1)
    truth = true_positions(spec)
    raw = degrade(render(spec, truth), Degradation(dose_e_per_A2=dose, seed=1)).astype(np.float64)
    restored = restorer.restore(raw)
    fit = fit_columns(raw, restored, separation_px=spec.spacing_px, refine="batched", min_columns=10)
    assert "x_true_px" not in fit.table  # the twin runs without truth
    plan = plan_twin(raw, fit.table, separation_px=fit.separation_px, replicas=4, seed=0)
    fits = fit_replicas(plan.columns, plan.replicas, np.array(restorer.restore_many(list(plan.replicas))),
                        separation_px=fit.separation_px)
    twin = twin_figures(plan.columns, fits, separation_px=fit.separation_px, n_boot=1000)
    real = truth_rmse(fit.table, truth[truth["in_image"]], spec.spacing_px)
    print(dose, real, {k: twin[k] for k in ("twin_error_raw_px", "twin_error_restored_px", "twin_gain",
                                            "twin_verdict")}, plan.figures["noise_reduced_chi_square"])
    assert twin["twin_error_raw_px"] == pytest.approx(real["raw"], rel=0.25)
    assert twin["twin_error_restored_px"] == pytest.approx(real["restored"], rel=0.25)
    assert twin["twin_verdict"] == real["verdict"]
    # One image's 95 % prediction interval holds this image's truth (restored and gain: 29 of 30
    # over seeds 0-9 in tests/validate_twin.py; raw missed at this seed at 300 e/A^2, so not asserted).
    assert twin["twin_error_restored_px_pi_low"] <= real["restored"] <= twin["twin_error_restored_px_pi_high"]
    assert twin["twin_gain_pi_low"] <= real["raw"] / real["restored"] <= twin["twin_gain_pi_high"]
    assert abs(plan.figures["noise_reduced_chi_square"] - 1) < 0.1  # the model explains the image
    # 0.21 px of real displacement under 0.56 px of raw noise (50 e/A^2) is not resolved; at 30000
    # it is. At 300 it lies 2.8-3.4 standard errors from 0 (seeds 0-2; this seed 2.8): above one
    # error, not always above the note's two.
    if dose == 300.0:
        assert plan.figures["twin_displacement_sq_px2"] > plan.figures["twin_displacement_sq_error_px2"]
    else:
        assert spread_unresolved(plan.figures) == (dose < 300)


@pytest.mark.parametrize("seed", [3, 6])
def test_a_spread_the_raw_fit_cannot_resolve_is_flagged_and_bracketed(restorer, seed):
    """50 e/A^2, 0.15 px per axis: on these two lattices a twin with one truth had a restored error
    1.42-1.47 times the truth (its truth kept too much spread), and the earlier test (``D^2 -
    s^2``, raw fit scatter about the local lattice less its own noise) put the spread 2.6-2.9
    errors above 0: unflagged. Replicas with every column on its local lattice show how irregular
    such a raw fit looks without any displacement; against that the spread is within two errors
    of 0. The replicas' truths then spread over the spreads the data allow (replica_shrinks):
    the restored error comes within 25 % of the truth and its interval holds the truth."""
    spec = LatticeSpec(shape=SHAPE, position_jitter_px=JITTER, seed=seed)
    truth = true_positions(spec)
    raw = degrade(render(spec, truth), Degradation(dose_e_per_A2=50.0, seed=seed)).astype(np.float64)
    fit = fit_columns(raw, restorer.restore(raw), separation_px=spec.spacing_px, refine="batched", min_columns=10)
    plan = plan_twin(raw, fit.table, separation_px=fit.separation_px, replicas=4, seed=0)
    print(seed, plan.figures["twin_displacement_sq_px2"], plan.figures["twin_displacement_sq_error_px2"],
          plan.figures["twin_replica_shrinks"])
    assert spread_unresolved(plan.figures)
    assert "not resolved" in apply_gain_basis({**plan.figures, "twin_gain": 1.6, "twin_gain_ci_low": 1.4,
                                               "twin_gain_ci_high": 1.8})["twin_note"]
    shrinks = plan.figures["twin_replica_shrinks"]
    assert shrinks == sorted(shrinks) and shrinks[-1] > shrinks[0]
    assert {"x_true_px_r0", "y_true_px_r3"} <= set(plan.columns)
    fits = fit_replicas(plan.columns, plan.replicas, np.array(restorer.restore_many(list(plan.replicas))),
                        separation_px=fit.separation_px)
    twin = twin_figures(plan.columns, fits, separation_px=fit.separation_px, n_boot=1000)
    real = truth_rmse(fit.table, truth[truth["in_image"]], spec.spacing_px)
    print(real, {k: twin[k] for k in ("twin_error_restored_px", "twin_error_restored_px_ci_low",
                                      "twin_error_restored_px_ci_high")})
    assert twin["twin_error_restored_px"] == pytest.approx(real["restored"], rel=0.25)
    assert twin["twin_error_restored_px_ci_low"] <= real["restored"] <= twin["twin_error_restored_px_ci_high"]


def test_replica_truths_spread_over_an_unresolved_displacement_spread_only():
    """replica_shrinks: one shrink for a resolved spread; for an unresolved one the replicas'
    truths keep mean square displacements (beyond W x's) at normal quantiles of T +- its error,
    clipped to [0, D_L^2]; one replica gets the central truth."""
    figures = {"twin_displacement_sq_px2": 0.05, "twin_displacement_sq_error_px2": 0.01,
               "twin_raw_displacement_sq_px2": 0.45}
    xy = np.zeros((3, 2))

    def truth(figures):
        return DeconvolvedTruth(xy, 0.3, 0.5, figures, xy, xy)

    assert np.array_equal(replica_shrinks(truth(figures), 4), np.full(4, 0.3))
    unresolved = {**figures, "twin_displacement_sq_px2": 0.04, "twin_displacement_sq_error_px2": 0.05}
    spread = replica_shrinks(truth(unresolved), 4) ** 2 * 0.45
    assert np.allclose(spread, [0.0, 0.04 - 0.3186 * 0.05, 0.04 + 0.3186 * 0.05, 0.04 + 1.1503 * 0.05], atol=1e-4)
    assert replica_shrinks(truth(unresolved), 1)[0] == pytest.approx(np.sqrt(0.04 / 0.45))
    wide = {**unresolved, "twin_displacement_sq_px2": 0.1, "twin_displacement_sq_error_px2": 0.4}
    assert replica_shrinks(truth(wide), 4)[-1] == 1.0  # never more displacement than the raw fit shows
    assert np.array_equal(replica_shrinks(truth({"twin_displacement_sq_px2": float("nan")}), 3), np.full(3, 0.3))
    for observed in (float("nan"), 0.0):  # no raw displacement measured: one truth
        assert np.array_equal(replica_shrinks(truth({**unresolved, "twin_raw_displacement_sq_px2": observed}), 3),
                              np.full(3, 0.3))
    with pytest.raises(ValueError):
        replica_shrinks(truth(unresolved), 0)

def test_each_replica_is_measured_against_its_own_truth():
    """fit_replicas: a replica with x_true_px_r{r} is scored against it, the others against
    x_true_px (errors of one replica shift by exactly the truth's shift)."""
    spec = LatticeSpec(shape=(64, 64), position_jitter_px=0.0, seed=0)
    truth = true_positions(spec)
    truth = truth[truth["in_image"]].reset_index(drop=True)
    image = render(spec, truth)
    columns = pd.DataFrame({"column_id": np.arange(len(truth)), "sublattice": "A",
                            "x_true_px": truth["x_px"], "y_true_px": truth["y_px"],
                            "x_start_px": np.rint(truth["x_px"]), "y_start_px": np.rint(truth["y_px"]),
                            "fit_ok_raw": True, "evaluate": True})
    images = np.stack([image, image])
    plain = fit_replicas(columns, images, images, separation_px=spec.spacing_px)
    shifted = columns.assign(x_true_px_r1=columns["x_true_px"] + 0.7, y_true_px_r1=columns["y_true_px"] - 0.2,
                             x_true_px_r0=columns["x_true_px"], y_true_px_r0=columns["y_true_px"])
    moved = fit_replicas(shifted, images, images, separation_px=spec.spacing_px)
    ok = plain["ok"] & moved["ok"]
    assert ok[1].sum() > 10
    for kind in ("raw", "restored"):
        assert np.allclose(moved[kind][0][ok[0]], plain[kind][0][ok[0]])
        assert np.allclose(moved[kind][1][ok[1]] - plain[kind][1][ok[1]], [-0.7, 0.2])


def test_the_local_lattice_is_a_linear_fit_that_keeps_affine_lattices():
    """smoothed_positions = W @ xy: rows of local fits sum to 1, leave the column itself out and
    reproduce a strained, rotated lattice exactly; a displaced column moves only its neighbours'
    fits, each by its weight."""
    grid = np.stack(np.meshgrid(np.arange(9.0), np.arange(9.0)), axis=-1).reshape(-1, 2) * 12.0
    affine = grid @ np.array([[1.02, 0.05], [-0.03, 0.97]]) + 7.0
    names = np.array(["A"] * len(grid))
    weights, smoothed = local_lattice_weights(affine, names, 12.0)
    assert smoothed.all()
    assert np.allclose(np.asarray(weights.sum(axis=1)).ravel(), 1.0)
    assert np.allclose(weights.diagonal(), 0.0)
    assert np.allclose(smoothed_positions(affine, names, 12.0), affine, atol=1e-9)
    moved = affine.copy()
    moved[40] += [0.5, 0.0]
    change = smoothed_positions(moved, names, 12.0) - affine
    assert np.allclose(change[40], 0.0, atol=1e-9)
    assert np.allclose(change[:, 0], 0.5 * weights[:, 40].toarray().ravel(), atol=1e-9)


def test_twin_predicts_the_truth_rmse_under_noise_correlated_between_pixels(restorer):
    """Shot noise filtered by [0.3, 1, 0.3] along x and [0.15, 1, 0.15] along y (as a detector's
    bandwidth and a resampling would): the twin models the kernel and predicts the truth RMSE,
    raw and restored, within 25 % (seeds 1-3 at 300, 3000, 30000 e/A^2: raw 0.95-1.07, restored
    0.86-1.19, tests/validate_correlated_noise.py twin; 0.89-1.30 before the read variance had to
    be significant). Not asserted: the verdict, which at
    3000 e/A^2 was inconclusive for the twin and 'helps' for the truth in 3 of 3 seeds."""
    from remflow.imagemodel import correlate_noise

    spec = LatticeSpec(shape=SHAPE, position_jitter_px=JITTER, seed=1)
    truth = true_positions(spec)
    degradation = Degradation(dose_e_per_A2=3000.0, seed=1)
    clean = render(spec, truth)
    expected = expected_counts(clean, degradation)
    raw = expected + correlate_noise(degrade(clean, degradation).astype(np.float64) - expected, 0.3, 0.15)
    fit = fit_columns(raw, restorer.restore(raw), separation_px=spec.spacing_px, refine="batched", min_columns=10)
    plan = plan_twin(raw, fit.table, separation_px=fit.separation_px, replicas=4, seed=0)
    fits = fit_replicas(plan.columns, plan.replicas, np.array(restorer.restore_many(list(plan.replicas))),
                        separation_px=fit.separation_px)
    twin = twin_figures(plan.columns, fits, separation_px=fit.separation_px, n_boot=1000)
    real = truth_rmse(fit.table, truth[truth["in_image"]], spec.spacing_px)
    print(real, twin["twin_error_raw_px"], twin["twin_error_restored_px"], plan.figures)
    assert (plan.figures["noise_kernel_x"], plan.figures["noise_kernel_y"]) == pytest.approx((0.3, 0.15), abs=0.03)
    assert plan.figures["noise_gain"] == pytest.approx(1.0, rel=0.10)  # counts: one unit per electron
    assert abs(plan.figures["noise_reduced_chi_square"] - 1) < 0.1
    assert twin["twin_error_raw_px"] == pytest.approx(real["raw"], rel=0.25)
    assert twin["twin_error_restored_px"] == pytest.approx(real["restored"], rel=0.25)


def test_twin_carries_scan_line_noise_and_predicts_what_the_network_does_with_it(restorer):
    """Line noise half the pixel noise (AR(1) along x, length 50 px) at 30000 e/A^2: the network
    misplaces columns (restored error ~7x the raw one); the twin measures the line noise, draws
    it, and predicts both errors and the verdict. Before the line noise was modelled the twin's
    restored error was 0.14 of the truth here (seeds 1-3: 0.09-0.14; chi-square 1.37-1.48, under
    the gate); now seeds 1-3 give raw 0.90-1.05, restored 0.97-1.25 (tests/validate_line_noise.py
    twin --dose 30000 --ratio 0.5 --length 50)."""
    spec = LatticeSpec(shape=SHAPE, position_jitter_px=JITTER, seed=1)
    truth = true_positions(spec)
    degradation = Degradation(dose_e_per_A2=30000.0, seed=1)
    clean = render(spec, truth)
    sigma = 0.5 * float(np.sqrt(np.mean(expected_counts(clean, degradation))))
    raw = degrade(clean, degradation).astype(np.float64) + _line_noise(SHAPE, sigma, 50.0,
                                                                       np.random.default_rng(1001))
    fit = fit_columns(raw, restorer.restore(raw), separation_px=spec.spacing_px, refine="batched", min_columns=10)
    plan = plan_twin(raw, fit.table, separation_px=fit.separation_px, replicas=4, seed=0)
    fits = fit_replicas(plan.columns, plan.replicas, np.array(restorer.restore_many(list(plan.replicas))),
                        separation_px=fit.separation_px)
    twin = twin_figures(plan.columns, fits, separation_px=fit.separation_px, n_boot=1000)
    real = truth_rmse(fit.table, truth[truth["in_image"]], spec.spacing_px)
    print(sigma, real, twin["twin_error_raw_px"], twin["twin_error_restored_px"], plan.figures)
    assert plan.figures["noise_line_sigma"] == pytest.approx(sigma, rel=0.25)
    assert abs(plan.figures["noise_reduced_chi_square"] - 1) < 0.1
    assert twin["twin_error_raw_px"] == pytest.approx(real["raw"], rel=0.25)
    # The restored error varies much between realisations here (truth 0.30-0.47 px over seeds 1-3).
    assert twin["twin_error_restored_px"] == pytest.approx(real["restored"], rel=0.30)
    assert twin["twin_verdict"] == real["verdict"] == "hurts"


def test_the_model_keeps_the_border_columns_a_second_sublattice_misses(restorer):
    """Perovskite at 30000 e/A^2: B columns are found between fitted A columns, so the fit lacks
    two rings of B at the border (atomap skips the outer A ring). Without the second ring the
    model missed whole Gaussians inside the margin and fitted widths of 2.27/2.08 px for 2.5
    (chi-square 1.49, seeds 0 and 1); with it 2.40/2.34 and 1.25. What is left is atomap's B
    positions (0.15 px RMS from the truth where A's are 0.06: A's tails pull them); with the true
    positions the chi-square is 1.09."""
    spec = LatticeSpec(kind="perovskite", shape=SHAPE, position_jitter_px=JITTER, seed=0)
    truth = true_positions(spec)
    raw = degrade(render(spec, truth), Degradation(dose_e_per_A2=30000.0, seed=0)).astype(np.float64)
    fit = fit_columns(raw, restorer.restore(raw), separation_px=spec.spacing_px, refine="batched", min_columns=10,
                      second_sublattice=True)
    model, noise, extra = model_of_image(raw, fit.table, fit.separation_px)
    modelled = np.vstack([fit.table[["x_raw_px", "y_raw_px"]].to_numpy(float), extra])
    true_xy = truth[["x_px", "y_px"]].to_numpy(float)
    margin = 0.5 * fit.separation_px
    outside = np.maximum(np.maximum(-0.5 - true_xy, true_xy - (np.array(raw.shape[::-1]) - 0.5)), 0.0)
    # within the model's margin, except near corners (two edges at once)
    border = (outside.max(axis=1) <= margin) & ((outside > 0).sum(axis=1) < 2)
    distance = np.min(np.hypot(*(true_xy[border, None, :] - modelled[None, :, :]).transpose(2, 0, 1)), axis=1)
    print(noise.reduced_chi_square, model.sigma, int(border.sum()), distance.max())
    assert distance.max() < 2.0  # a missing B column's nearest model column (an A) lies 8.5 px away
    assert noise.reduced_chi_square < 1.35


def test_faint_columns_are_left_out_of_the_twin_and_the_bound():
    """"Columns" at empty cell centres (as noise peaks on an amorphous support would be found):
    their model amplitude is no more than its own bound, so they are refined but not evaluated,
    and the image's bound stays that of the real columns (with them it would run to tens of px)."""
    spec = LatticeSpec(shape=SHAPE, position_jitter_px=JITTER, seed=1)
    raw = degrade(render(spec, true_positions(spec)), Degradation(dose_e_per_A2=3000.0, seed=1)).astype(np.float64)
    table = fit_columns(raw, raw, separation_px=spec.spacing_px, refine="batched", min_columns=10).table
    plain = plan_twin(raw, table, separation_px=spec.spacing_px, replicas=2, seed=0)
    centres = table[["x_raw_px", "y_raw_px"]].to_numpy(float) + 0.5 * spec.spacing_px
    inside = (centres > 16).all(axis=1) & (centres < SHAPE[0] - 16).all(axis=1)
    fake = table[inside].head(12).copy()
    fake[["x_raw_px", "y_raw_px"]] = centres[inside][:12]
    fake[["x_restored_px", "y_restored_px"]] = centres[inside][:12]
    fake["column_id"] = np.arange(len(fake)) + 10_000
    plan = plan_twin(raw, pd.concat([table, fake], ignore_index=True), separation_px=spec.spacing_px, replicas=2,
                     seed=0)
    evaluated = plan.columns[plan.columns["evaluate"]]
    print(plain.figures["crlb_radial_px"], plan.figures["crlb_radial_px"], plan.figures["twin_faint_columns"])
    assert plain.figures["twin_faint_columns"] == 0
    assert plan.figures["twin_faint_columns"] == len(fake)
    assert not evaluated["column_id"].isin(fake["column_id"]).any()
    assert plan.figures["crlb_columns"] == len(evaluated)
    # The empty sites stay in the model as nuisance columns next to real ones: 18 % larger here.
    assert plan.figures["crlb_radial_px"] == pytest.approx(plain.figures["crlb_radial_px"], rel=0.25)


def test_noise_model_recovers_gain_and_read_noise_of_poisson_gaussian_images():
    spec = LatticeSpec(shape=SHAPE, position_jitter_px=0.1, seed=3)
    positions = true_positions(spec)
    clean = render(spec, positions)
    mean = 400.0 * clean / clean.max()
    gain, read = 2.5, 15.0  # image units per electron; Gaussian read noise (image units)
    rng = np.random.default_rng(7)
    image = gain * rng.poisson(mean / gain) + rng.normal(0.0, read, size=mean.shape)
    model = fit_image_model(image, positions["x_px"], positions["y_px"], sigma_start=2.0)
    noise = fit_noise_model(image, model.image, n_parameters=model_parameter_count(model))
    print(noise)
    assert model.sigma["A"] == pytest.approx(spec.sigma_px, rel=0.02)
    assert noise.gain == pytest.approx(gain, rel=0.10)
    assert noise.read_noise == pytest.approx(read, rel=0.10)
    assert noise.reduced_chi_square == pytest.approx(1.0, abs=0.05)
    assert abs(noise.correlation_x) < 0.02 and abs(noise.correlation_y) < 0.02  # independent pixels
    # Model error (columns 10-20 % too wide: chi-square 1.14) does not pass for correlation.
    wide = fit_image_model(image, positions["x_px"], positions["y_px"], sigma_start=2.0,
                           sigma_bounds=(1.1 * spec.sigma_px, 1.2 * spec.sigma_px))
    wide_noise = fit_noise_model(image, wide.image, n_parameters=model_parameter_count(wide))
    print(wide_noise)
    assert abs(wide_noise.correlation_x) < 0.02 and abs(wide_noise.correlation_y) < 0.02


def _line_noise(shape: tuple[int, int], sigma: float, length_px: float, rng: np.random.Generator) -> np.ndarray:
    """Scan-line noise written out here (independent of remflow.imagemodel.line_noise_field):
    per row an AR(1) process along x (a constant offset per row for an infinite length)."""
    rows, cols = shape
    if not np.isfinite(length_px):
        return np.repeat(rng.normal(0.0, sigma, size=(rows, 1)), cols, axis=1)
    phi = np.exp(-1.0 / length_px)
    out = np.empty(shape)
    out[:, 0] = rng.normal(0.0, sigma, size=rows)
    for col in range(1, cols):
        out[:, col] = phi * out[:, col - 1] + rng.normal(0.0, sigma * np.sqrt(1.0 - phi**2), size=rows)
    return out


@pytest.mark.parametrize("length", [20.0, np.inf])
def test_noise_model_measures_scan_line_noise(length):
    """Line noise (0.4 of the pixel noise, AR(1) along x or one offset per row) is found and its
    size recovered (tests/validate_line_noise.py fit: 0.90-1.14 of the truth on 128x128 px at
    this ratio); the chi-square accounts for it; the same image without it finds none."""
    spec = LatticeSpec(shape=SHAPE, position_jitter_px=0.1, seed=3)
    positions = true_positions(spec)
    clean = render(spec, positions)
    mean = 400.0 * clean / clean.max()
    gain, read = 2.5, 15.0
    rng = np.random.default_rng(7)
    image = gain * rng.poisson(mean / gain) + rng.normal(0.0, read, size=mean.shape)
    sigma = 0.4 * float(np.sqrt(np.mean(gain * mean + read**2)))
    lined = image + _line_noise(mean.shape, sigma, length, rng)
    model = fit_image_model(lined, positions["x_px"], positions["y_px"], sigma_start=2.0)
    noise = fit_noise_model(lined, model.image, n_parameters=model_parameter_count(model))
    print(sigma, noise)
    assert noise.line_sigma == pytest.approx(sigma, rel=0.25)
    assert noise.reduced_chi_square == pytest.approx(1.0, abs=0.1)
    assert noise.gain == pytest.approx(gain, rel=0.15)
    clean_model = fit_image_model(image, positions["x_px"], positions["y_px"], sigma_start=2.0)
    assert fit_noise_model(image, clean_model.image, n_parameters=model_parameter_count(clean_model)).line_variance == 0


def test_line_noise_draws_are_reproducible_and_measured_back():
    from remflow.imagemodel import NoiseModel, fit_line_noise

    mean = np.full((256, 256), 300.0)
    noise = NoiseModel(gain=2.0, read_variance=100.0, reduced_chi_square=1.0, n_pixels=mean.size,
                       line_variance=150.0, line_length_px=40.0)
    draw = noise.draw(mean, np.random.default_rng(3))
    assert np.array_equal(draw, noise.draw(mean, np.random.default_rng(3)))
    without = replace(noise, line_variance=0.0)
    variance, length, significance = fit_line_noise(draw - mean, without.variance(mean))
    print(variance, length, significance)
    assert variance == pytest.approx(150.0, rel=0.2)
    assert draw.var() == pytest.approx(2.0 * 300.0 + 100.0 + 150.0, rel=0.05)
    # Without line noise the draws are those of before it existed (no extra random numbers).
    plain = without.draw(mean, np.random.default_rng(3))
    assert fit_line_noise(plain - mean, without.variance(mean))[0] == 0.0


def test_image_crlb_under_line_noise_matches_the_scatter_of_maximum_likelihood_fits():
    """One isolated column, Gaussian pixel noise plus AR(1) line noise as large as the pixel
    noise (length 20 px): the maximum-likelihood fit (each row whitened by the Cholesky factor
    of its exact covariance) of 300 draws scatters as the bound says (1000 draws,
    tests/validate_line_noise.py crlb: 0.99, 1.00); the bound without the line noise is
    too small along y."""
    from scipy import optimize

    from remflow.crlb import image_position_crlbs
    from remflow.imagemodel import NoiseModel

    shape, sigma, amplitude, background, x0, y0 = (32, 32), 2.0, 4000.0, 400.0, 15.3, 16.1
    v, u = np.indices(shape, dtype=np.float64)

    def column(p):
        return p[2] * np.exp(-((u - p[0]) ** 2 + (v - p[1]) ** 2) / (2 * sigma**2)) + p[3]

    mean = column([x0, y0, amplitude, background])
    model = fit_image_model(mean, [x0], [y0], sigma_start=sigma, fit_sigma=False, background_degree=0)
    base = NoiseModel(gain=1.0, read_variance=25.0, reduced_chi_square=1.0, n_pixels=mean.size)
    pixel_variance = base.variance(mean)
    line_variance, length = float(np.mean(pixel_variance)), 20.0
    noise = replace(base, line_variance=line_variance, line_length_px=length)
    bound = image_position_crlbs(model, noise, columns=np.array([0]))[["crlb_x_px", "crlb_y_px"]].to_numpy()[0]
    without = image_position_crlbs(model, base, columns=np.array([0]))[["crlb_x_px", "crlb_y_px"]].to_numpy()[0]
    lags = np.abs(np.subtract.outer(np.arange(shape[1]), np.arange(shape[1])))
    factors = [np.linalg.cholesky(np.diag(pixel_variance[row]) + line_variance * np.exp(-lags / length))
               for row in range(shape[0])]
    rng = np.random.default_rng(8)
    found = []
    for _ in range(300):
        image = (mean + rng.normal(0.0, 1.0, size=shape) * np.sqrt(pixel_variance)
                 + _line_noise(shape, np.sqrt(line_variance), length, rng))
        fit = optimize.least_squares(
            lambda p: np.concatenate([np.linalg.solve(f, r) for f, r in zip(factors, image - column(p))]),
            [x0, y0, amplitude, background], x_scale=[0.1, 0.1, 100.0, 10.0])
        found.append(fit.x[:2])
    scatter = (np.array(found) - [x0, y0]).std(axis=0, ddof=1)
    print(scatter, bound, without)
    assert scatter / bound == pytest.approx([1.0, 1.0], abs=0.12)  # 300 draws: standard error 0.04
    assert bound[1] / without[1] > 1.2


@pytest.mark.parametrize("seed", [0, 5])
def test_noise_model_keeps_no_read_noise_that_a_counting_image_lacks(seed):
    """Poisson counts at 50 e/A^2 (peaks of ~2 electrons): before the read variance had to be
    significant, these two images got a read noise of 0.12 and 0.17 (gain 0.98 and 0.95), which
    put negative values into the twin's empty pixels where the image has exact zeros."""
    spec = LatticeSpec(shape=SHAPE, position_jitter_px=JITTER, seed=seed)
    positions = true_positions(spec)
    raw = degrade(render(spec, positions), Degradation(dose_e_per_A2=50.0, seed=seed)).astype(np.float64)
    inside = positions[positions["in_image"]]
    model = fit_image_model(raw, inside["x_px"].to_numpy(), inside["y_px"].to_numpy(), sigma_start=2.5,
                            sigma_bounds=(0.6, 6.0))
    noise = fit_noise_model(raw, model.image, n_parameters=model_parameter_count(model))
    assert noise.read_variance == 0.0
    assert noise.gain == pytest.approx(1.0, rel=0.05)
    draw = noise.draw(model.image, np.random.default_rng(1))
    assert draw.min() >= 0.0 and np.allclose(draw / noise.gain, np.rint(draw / noise.gain))  # counts, as the image


@pytest.mark.parametrize("region, dose", [("vacuum", 50.0), ("vacuum", 300.0), ("particle", 50.0),
                                          ("particle", 300.0)])
def test_noise_model_of_a_counting_image_with_empty_vacuum(region, dose):
    """Background 0: the vacuum holds exact zeros and the model's background dips slightly below 0.
    Before the dark pixels were left out, the fit gave gain 0 with chi-square 4e19 (particle,
    50 e/A^2) or chi-square 18.6 (vacuum, 300 e/A^2)."""
    spec = LatticeSpec(shape=SHAPE, position_jitter_px=JITTER, seed=1, region=region, background=0.0)
    positions = true_positions(spec)
    raw = degrade(render(spec, positions), Degradation(dose_e_per_A2=dose, seed=1)).astype(np.float64)
    inside = positions[positions["in_image"]]
    model = fit_image_model(raw, inside["x_px"].to_numpy(), inside["y_px"].to_numpy(), sigma_start=2.5,
                            sigma_bounds=(0.6, 6.0))
    noise = fit_noise_model(raw, model.image, n_parameters=model_parameter_count(model))
    print(region, dose, noise)
    assert noise.gain == pytest.approx(1.0, rel=0.15)
    assert abs(noise.reduced_chi_square - 1) < 0.1
    assert np.all(noise.variance(model.image) >= 0.01 * noise.gain**2 * (1 - 1e-12))


def test_noise_model_fits_noise_correlated_along_the_scan():
    """Noise low-passed along x by [a, 1, a] (a detector's bandwidth along the fast scan) has
    lag-1 correlation 2a / (1 + 2a^2) along x and none along y; the noise model measures it
    despite the model error of a slightly wrong column width, recovers gain and read noise
    through the kernel, and the twin stays the verdict basis; beyond the kernel it is refused."""
    spec = LatticeSpec(shape=SHAPE, position_jitter_px=0.1, seed=4)
    positions = true_positions(spec)
    clean = render(spec, positions)
    mean = 400.0 * clean / clean.max()
    rng = np.random.default_rng(11)
    white = 2.5 * rng.poisson(mean / 2.5) + rng.normal(0.0, 15.0, size=mean.shape) - mean
    tap = 0.3
    kernel = np.array([tap, 1.0, tap]) / np.sqrt(1 + 2 * tap**2)  # keeps the noise variance
    from scipy import ndimage

    image = mean + ndimage.correlate1d(white, kernel, axis=1, mode="reflect")
    model = fit_image_model(image, positions["x_px"], positions["y_px"], sigma_start=2.0)
    model_error = fit_image_model(image, positions["x_px"], positions["y_px"], sigma_start=2.0,
                                  sigma_bounds=(1.1 * spec.sigma_px, 1.2 * spec.sigma_px))
    for fitted in (model, model_error):
        noise = fit_noise_model(image, fitted.image, n_parameters=model_parameter_count(fitted))
        print(noise)
        assert noise.correlation_x == pytest.approx(2 * tap / (1 + 2 * tap**2), abs=0.05)
        assert noise.kernel_x == pytest.approx(tap, abs=0.02)
        assert abs(noise.correlation_y) < 0.03 and noise.kernel_y == 0.0  # not significant: none
        # The three-tap kernel describes it: no outer tap, lag 3 as the kernel predicts.
        assert noise.kernel_outer_x == 0.0 and noise.kernel_outer_y == 0.0
        assert max(abs(noise.kernel_misfit_x), abs(noise.kernel_misfit_y)) < 4
    noise = fit_noise_model(image, model.image, n_parameters=model_parameter_count(model))
    assert noise.gain == pytest.approx(2.5, rel=0.10) and noise.read_noise == pytest.approx(15.0, rel=0.10)
    assert noise.reduced_chi_square == pytest.approx(1.0, abs=0.05)
    record = {"twin_gain": 1.2, "twin_gain_ci_low": 1.1, "twin_gain_ci_high": 1.3, "twin_verdict": "helps",
              "local_gain": 1.0, "local_gain_ci_low": 0.9, "local_gain_ci_high": 1.1,
              "noise_reduced_chi_square": noise.reduced_chi_square, "noise_correlation_x": noise.correlation_x,
              "noise_correlation_y": noise.correlation_y}
    assert apply_gain_basis(record)["gain_basis"] == "twin"
    beyond = apply_gain_basis({**record, "noise_correlation_x": 0.65})  # tap 0.5: the kernel's limit
    assert beyond["gain_basis"] == "local" and "beyond what the noise model's three-tap kernel" in beyond["twin_note"]


def _rc_image(mean: np.ndarray, phi: float, seed: int) -> np.ndarray:
    """Poisson-Gaussian noise (gain 2.5, read 15) through a causal exponential (RC) low-pass
    along x, y_n = phi y_(n-1) + sqrt(1 - phi^2) x_n: lag-k correlation phi^k (a detector's
    bandwidth along the fast scan), unit variance gain."""
    from scipy import signal

    rng = np.random.default_rng(seed)
    white = 2.5 * rng.poisson(mean / 2.5) + rng.normal(0.0, 15.0, size=mean.shape) - mean
    return mean + signal.lfilter([np.sqrt(1 - phi**2)], [1.0, -phi], white, axis=1)


def test_noise_model_fits_noise_correlated_beyond_neighbours_and_refuses_what_its_kernel_cannot():
    """RC noise along x (256x256 px lattice, the noiseless image as the model): at phi 0.45 the
    five-tap kernel [b, a, 1, a, b] recovers the gain within 10 % (measured 2.32 of 2.5; the
    three-tap kernel gave 1.87 on the validation's fitted model) and an isolated column's bound
    within 10 % of the exact bound of RC noise (measured 0.97 x, 0.93 y; three-tap 0.89, 0.84);
    at phi 0.6 the lag-3 correlation is off the kernel (measured 7.0 scatters) and the twin and
    its bound are refused (gain 1.80, 28 % low: what the refusal protects)."""
    from scipy import signal

    from remflow.crlb import image_position_crlbs
    from remflow.imagemodel import NoiseModel
    from remflow.precision.twin import efficiency

    spec = LatticeSpec(shape=(256, 256), position_jitter_px=0.1, seed=1)
    clean = render(spec, true_positions(spec))
    mean = 400.0 * clean / clean.max()
    noise = fit_noise_model(_rc_image(mean, 0.45, 1), mean)
    print(noise)
    assert noise.kernel_outer_x != 0.0 and noise.kernel_outer_y == 0.0
    assert noise.gain == pytest.approx(2.5, rel=0.10)
    # One isolated column (x, y, amplitude, background estimated): fitted kernel against the exact covariance.
    shape, sigma, amplitude, background, x0, y0 = (32, 32), 2.0, 4000.0, 400.0, 15.3, 16.1
    v, u = np.indices(shape, dtype=np.float64)
    peak = amplitude * np.exp(-((u - x0) ** 2 + (v - y0) ** 2) / (2 * sigma**2))
    single = fit_image_model(peak + background, [x0], [y0], sigma_start=sigma, fit_sigma=False, background_degree=0)
    kernel = NoiseModel(gain=1.0, read_variance=25.0, reduced_chi_square=1.0, n_pixels=peak.size,
                        kernel_x=noise.kernel_x, kernel_outer_x=noise.kernel_outer_x, kernel_y=noise.kernel_y,
                        kernel_outer_y=noise.kernel_outer_y)
    bound = image_position_crlbs(single, kernel, columns=np.array([0]))[["crlb_x_px", "crlb_y_px"]].to_numpy()[0]
    derivatives = np.column_stack([(peak * (u - x0) / sigma**2).ravel(), (peak * (v - y0) / sigma**2).ravel(),
                                   peak.ravel() / amplitude, np.ones(peak.size)])
    rc = np.kron(np.eye(shape[0]), signal.lfilter([np.sqrt(1 - 0.45**2)], [1.0, -0.45], np.eye(shape[1]), axis=0))
    covariance = rc @ np.diag((peak + background).ravel() + 25.0) @ rc.T
    exact = np.sqrt(np.diag(np.linalg.inv(derivatives.T @ np.linalg.solve(covariance, derivatives)))[:2])
    print(bound, exact)
    assert bound / exact == pytest.approx([1.0, 1.0], abs=0.10)
    beyond = fit_noise_model(_rc_image(mean, 0.6, 1), mean)
    print(beyond)
    assert beyond.kernel_misfit_x > 4 and abs(beyond.kernel_misfit_y) < 4
    record = {"twin_gain": 1.2, "twin_gain_ci_low": 1.1, "twin_gain_ci_high": 1.3, "twin_verdict": "helps",
              "local_gain": 1.0, "local_gain_ci_low": 0.9, "local_gain_ci_high": 1.1, "crlb_px": 0.1,
              "crlb_radial_px": 0.14, "twin_error_raw_px": 0.2, "twin_error_restored_px": 0.1,
              "noise_reduced_chi_square": beyond.reduced_chi_square, "noise_correlation_x": beyond.correlation_x,
              "noise_correlation_y": beyond.correlation_y, "noise_kernel_misfit_x": beyond.kernel_misfit_x,
              "noise_kernel_misfit_y": beyond.kernel_misfit_y}
    assert record["noise_reduced_chi_square"] < 1.5  # the chi-square gate alone would pass it
    chosen = apply_gain_basis(record)
    assert chosen["gain_basis"] == "local" and "lag-3 correlation is off the kernel" in chosen["twin_note"]
    assert efficiency(record)["crlb_px"] is None


def test_the_five_tap_kernel_keeps_an_inverse():
    """The kernel's symbol 1 + 2a cos w + 2b cos 2w must stay positive: fitted taps beyond are
    shrunk to a symbol of MIN_KERNEL_SYMBOL (for b = 0 the clip at MAX_KERNEL_TAP), a kernel
    without one is refused, and whitening undoes the five-tap filter."""
    from remflow.imagemodel import (MAX_KERNEL_TAP, MIN_KERNEL_SYMBOL, _limit_kernel, axis_kernel,
                                    correlate_noise, kernel_symbol_minimum, whiten)

    frequencies = np.linspace(0.0, np.pi, 20001)
    for taps in ((0.3, 0.1), (-0.2, 0.15), (0.1, -0.2), (0.45, 0.0)):
        sampled = np.min(1 + 2 * taps[0] * np.cos(frequencies) + 2 * taps[1] * np.cos(2 * frequencies))
        assert kernel_symbol_minimum(taps) == pytest.approx(sampled, abs=1e-6)
    assert _limit_kernel(0.6, 0.0) == (MAX_KERNEL_TAP, 0.0)
    for taps in ((0.2, 0.5), (0.6, -0.1)):  # symbol -0.02 (w near pi / 2), -0.4 (w = pi)
        shrunk = _limit_kernel(*taps)
        assert kernel_symbol_minimum(shrunk) == pytest.approx(MIN_KERNEL_SYMBOL, abs=1e-6)
        assert shrunk[1] / shrunk[0] == pytest.approx(taps[1] / taps[0])
    assert _limit_kernel(0.5, 0.3) == (0.5, 0.3)  # symbol 0.19: kept
    with pytest.raises(ValueError):
        axis_kernel((0.0, 0.5))  # symbol 0 at w = pi / 2
    assert np.sum(axis_kernel((0.3, 0.1)) ** 2) == pytest.approx(1.0)
    noise = np.random.default_rng(0).normal(size=(64, 80))
    assert np.allclose(whiten(correlate_noise(noise, (0.35, 0.12), (0.2, -0.05)), (0.35, 0.12), (0.2, -0.05)),
                       noise, atol=1e-4)


def test_correlated_draws_carry_the_kernel_and_are_reproducible():
    from remflow.imagemodel import NoiseModel, _second_difference, noise_kernel_taps

    mean = np.full((256, 256), 300.0)
    noise = NoiseModel(gain=2.0, read_variance=100.0, reduced_chi_square=1.0, n_pixels=mean.size,
                       kernel_x=0.3, kernel_y=0.15)
    draw = noise.draw(mean, np.random.default_rng(3))
    assert np.array_equal(draw, noise.draw(mean, np.random.default_rng(3)))
    taps = noise_kernel_taps(_second_difference(draw - mean))
    print(taps, draw.var())
    assert taps == pytest.approx((0.3, 0.15), abs=0.02)
    assert draw.var() == pytest.approx(2.0 * 300.0 + 100.0, rel=0.05)  # unit-norm kernel keeps the variance


def test_image_crlb_under_correlated_noise_matches_the_scatter_of_maximum_likelihood_fits():
    """One isolated column (x, y, amplitude and a constant background estimated), noise filtered
    by [0.3, 1, 0.3] along x and [0.15, 1, 0.15] along y: the prewhitened weighted least-squares
    (maximum-likelihood) fit of 300 draws scatters as the bound says; the independent-pixel bound
    of the same per-pixel variance would be far too small."""
    from scipy import optimize

    from remflow.crlb import image_position_crlbs
    from remflow.imagemodel import NoiseModel, whiten

    shape, sigma, amplitude, background, x0, y0 = (32, 32), 2.0, 4000.0, 400.0, 15.3, 16.1
    v, u = np.indices(shape, dtype=np.float64)

    def column(p):
        return p[2] * np.exp(-((u - p[0]) ** 2 + (v - p[1]) ** 2) / (2 * sigma**2)) + p[3]

    mean = column([x0, y0, amplitude, background])
    model = fit_image_model(mean, [x0], [y0], sigma_start=sigma, fit_sigma=False, background_degree=0)
    noise = NoiseModel(gain=1.0, read_variance=25.0, reduced_chi_square=1.0, n_pixels=mean.size,
                       kernel_x=0.3, kernel_y=0.15)
    bound = image_position_crlbs(model, noise, columns=np.array([0]))[["crlb_x_px", "crlb_y_px"]].to_numpy()[0]
    independent = image_position_crlbs(model, NoiseModel(gain=1.0, read_variance=25.0, reduced_chi_square=1.0,
                                                         n_pixels=mean.size), columns=np.array([0]))
    weight = 1.0 / np.sqrt(noise.variance(mean))
    rng = np.random.default_rng(8)
    found = []
    for _ in range(300):
        image = noise.draw(mean, rng)
        fit = optimize.least_squares(lambda p: (whiten(image - column(p), 0.3, 0.15) * weight).ravel(),
                                     [x0, y0, amplitude, background], x_scale=[0.1, 0.1, 100.0, 10.0])
        found.append(fit.x[:2])
    scatter = (np.array(found) - [x0, y0]).std(axis=0, ddof=1)
    print(scatter, bound, independent[["crlb_x_px", "crlb_y_px"]].to_numpy()[0])
    assert scatter / bound == pytest.approx([1.0, 1.0], abs=0.12)  # 300 draws: standard error 0.04
    assert (bound / independent[["crlb_x_px", "crlb_y_px"]].to_numpy()[0] > 1.5).all()


@pytest.mark.parametrize("dose", [500.0, 20000.0])
def test_image_crlb_matches_the_benchmark_crlb_of_the_same_image_model(dose):
    spec = LatticeSpec(shape=(96, 96), seed=2)
    degradation = Degradation(dose_e_per_A2=dose, seed=2)
    clean = render(spec, true_positions(spec))
    raw = degrade(clean, degradation).astype(np.float64)
    # Columns found on the noiseless image, refined on the raw one (what the twin models).
    fit = fit_columns(raw, expected_counts(clean, degradation), separation_px=spec.spacing_px, refine="batched",
                      min_columns=10)
    model, noise, _ = model_of_image(raw, fit.table, spec.spacing_px)
    image = image_position_crlb(model, noise)["crlb_px"]
    benchmark = lattice_position_crlb(spec, degradation)
    print(dose, image, benchmark, noise)
    assert image == pytest.approx(benchmark, rel=0.10)


def test_the_verdict_rests_on_truth_then_twin_then_truth_free_figures():
    twin = {"twin_gain": 0.8, "twin_gain_ci_low": 0.7, "twin_gain_ci_high": 0.9}
    lattice = {"gain_basis": "lattice", "precision_gain": 1.1, "precision_gain_ci_low": 1.05,
               "precision_gain_ci_high": 1.2, "verdict": "helps"}
    chosen = apply_gain_basis({**lattice, **twin})
    assert (chosen["gain_basis"], chosen["verdict"], chosen["lattice_gain"]) == ("twin", "hurts", 1.1)
    truth = {"truth_gain": 1.5, "truth_gain_ci_low": 1.2, "truth_gain_ci_high": 1.8}
    assert apply_gain_basis({**lattice, **twin, **truth})["gain_basis"] == "truth"
    assert apply_gain_basis(lattice)["gain_basis"] == "lattice"
    # A truth-free basis says what it cannot see; where a twin was refused, also what it says.
    assert "not validated for this image" not in apply_gain_basis(lattice)["basis_note"]
    assert "counts the network's prior" in apply_gain_basis(lattice)["basis_note"]
    refused = apply_gain_basis({**lattice, **twin, "noise_reduced_chi_square": 1.7})
    assert refused["gain_basis"] == "lattice" and refused["verdict"] == "helps"
    assert refused["basis_note"].endswith("the twin, not validated for this image (twin_note), says hurts (0.80 [0.70, 0.90])")
    assert "basis_note" not in chosen and "basis_note" not in apply_gain_basis({**chosen, **truth})
    # A displacement spread within two errors of 0: still the basis, with a note saying why its
    # restored error is uncertain; resolved: no note.
    unresolved = apply_gain_basis({**lattice, **twin, "twin_displacement_sq_px2": 0.05,
                                   "twin_displacement_sq_error_px2": 0.04})
    assert unresolved["gain_basis"] == "twin" and "not resolved" in unresolved["twin_note"]
    assert "widens its interval" not in unresolved["twin_note"]  # all replicas at one truth
    spread = apply_gain_basis({**lattice, **twin, "twin_displacement_sq_px2": 0.05,
                               "twin_displacement_sq_error_px2": 0.04, "twin_replica_shrinks": [0.0, 0.2, 0.4]})
    assert "widens its interval" in spread["twin_note"]
    assert "twin_note" not in apply_gain_basis({**lattice, **twin, "twin_displacement_sq_px2": 0.06,
                                                "twin_displacement_sq_error_px2": 0.01})


def test_a_five_tap_kernel_beyond_the_validated_range_or_unchecked_refuses_the_twin():
    """The lag-1 reading (0.59 < 0.61) does not bound a five-tap kernel: taps (0.3, -0.15) have
    symbol 0.10 < 0.2 (whitening amplifies 10x); and a correlated kernel without its lag-3 check
    is not validated."""
    from remflow.imagemodel import kernel_symbol_minimum
    from remflow.precision.basis import MIN_NOISE_KERNEL_SYMBOL, twin_problem

    base = {"twin_gain": 1.2, "twin_gain_ci_low": 1.1, "twin_gain_ci_high": 1.3, "noise_reduced_chi_square": 1.02,
            "noise_correlation_x": 0.59, "noise_kernel_misfit_x": 0.5, "noise_kernel_misfit_y": 0.2}
    assert kernel_symbol_minimum((0.3, -0.15)) < MIN_NOISE_KERNEL_SYMBOL < kernel_symbol_minimum((0.3, 0.0))
    steep = {**base, "noise_kernel_x": 0.3, "noise_kernel_outer_x": -0.15}
    assert "beyond the validated range" in twin_problem(steep)
    assert apply_gain_basis(steep).get("gain_basis") != "twin"
    assert twin_problem({**base, "noise_kernel_x": 0.3, "noise_kernel_outer_x": 0.0}) is None
    unchecked = {**base, "noise_kernel_x": 0.3, "noise_kernel_misfit_x": float("nan")}
    assert "was not checked" in twin_problem(unchecked)
    assert twin_problem({**base, "noise_kernel_misfit_x": None}) is None  # independent pixels need no check


def test_a_twin_whose_raw_error_beats_the_bound_is_not_the_verdict_basis():
    """No unbiased raw fit beats the image's Cramér-Rao bound: a twin whose raw error does (its
    whole 95 % interval below 0.9 of the bound, as exp_hrstem_4 at 2.9 electrons per peak pixel:
    1.03 px [0.96, 1.10] against 1.40 px) measures its starts; the verdict falls back, the bound
    stays, and the note and the figure label say why."""
    from remflow.precision.twin import RAW_BELOW_BOUND_NOTE, efficiency
    from remflow.twin_figures import twin_rows

    local = {"local_gain": 3.3, "local_gain_ci_low": 2.5, "local_gain_ci_high": 4.0}
    twin = {"twin_gain": 0.91, "twin_gain_ci_low": 0.85, "twin_gain_ci_high": 0.97, "twin_error_raw_px": 1.03,
            "twin_error_raw_px_ci_high": 1.10, "twin_error_restored_px": 1.13, "noise_reduced_chi_square": 1.05,
            "crlb_px": 0.99, "crlb_radial_px": 1.40, "electrons_peak": 2.9}
    pinned = apply_gain_basis({**local, **twin})
    assert (pinned["gain_basis"], pinned["verdict"]) == ("local", "helps")
    assert "below this image's Cramér-Rao bound (1.4 px radial, 2.9 electrons" in pinned["twin_note"]
    bound = efficiency(pinned)
    assert bound["crlb_note"] == RAW_BELOW_BOUND_NOTE and bound["error_over_crlb_raw"] == pytest.approx(1.03 / 1.40)
    assert "crlb_px" not in bound  # the bound itself holds: the model explains the image
    # At the bound within its uncertainty (the dose sweep's 50 e/Å²: 0.53 px [.., 0.59] vs 0.56) the twin decides.
    near = {**twin, "twin_error_raw_px": 0.53, "twin_error_raw_px_ci_high": 0.59, "crlb_radial_px": 0.56}
    assert apply_gain_basis({**local, **near})["gain_basis"] == "twin"
    assert efficiency({**near, "twin_error_restored_px": 0.33})["crlb_note"] != RAW_BELOW_BOUND_NOTE
    label = twin_rows(pd.DataFrame([{"sample": "pinned", **twin}]))["basis"].iloc[0]
    assert label == "twin, raw 0.74x bound: unvalidated"


def test_the_workflow_reports_twin_and_crlb_for_every_sample_with_columns(small_run):
    """The default run wires the twin: replicas restored in batch jobs, figures in the summary."""
    summary = pd.read_csv(small_run / "results" / "summary.csv")
    bench = summary[summary["sample"].str.startswith("bench_")]
    assert len(bench) == 2
    for _, row in bench.iterrows():
        assert row["twin_status"] == "ok"
        assert row["gain_basis"] == "truth"  # the sheet gives truth: the verdict rests on it
        for name in ("twin_error_raw_px", "twin_error_restored_px", "twin_gain", "crlb_radial_px",
                     "error_over_crlb_raw", "twin_error_raw_pm", "noise_gain"):
            assert np.isfinite(row[name]), name
        assert row["twin_error_raw_px_ci_low"] <= row["twin_error_raw_px"] <= row["twin_error_raw_px_ci_high"]
        for name in ("twin_error_raw_px", "twin_error_restored_px", "twin_gain", "twin_error_restored_pm"):
            assert row[f"{name}_pi_low"] <= row[name] <= row[f"{name}_pi_high"], name
        # The twin predicts the truth of its own image within 25 % (raw).
        assert row["twin_error_raw_px"] == pytest.approx(row["truth_rmse_raw_px"], rel=0.25)
    # The replicas were restored in the batch jobs (one network load per batch), per sample.
    assert list((small_run / "results" / "batches" / "restore_twin").iterdir())
    for sample in bench["sample"]:
        restored = np.load(small_run / "results" / "twin" / f"{sample}.restored.npy")
        assert restored.shape == np.load(small_run / "results" / "twin" / f"{sample}.replicas.npy").shape
    assert (small_run / "results" / "figures" / "twin_crlb.png").stat().st_size > 0


def test_no_bound_from_an_image_model_that_does_not_explain_the_image():
    """A CRLB is reported, and errors are divided by it, only when the image model explains the
    image (reduced chi-square <= 1.5, as for the twin's verdict): on exp_hrstem_2 (chi-square 4.1)
    the model gave 32 px for columns fitted to ~0.6 px."""
    from remflow.precision.twin import BELOW_BOUND_NOTE, efficiency

    record = {"crlb_px": 0.1, "crlb_radial_px": 0.1 * np.sqrt(2), "crlb_pm": 2.0, "crlb_radial_pm": 2.83,
              "twin_error_raw_px": 0.2, "twin_error_restored_px": 0.1}
    good = efficiency({**record, "noise_reduced_chi_square": 1.02})
    assert good["crlb_basis"] == "twin" and good["error_over_crlb_raw"] == pytest.approx(0.2 / (0.1 * np.sqrt(2)))
    assert good["crlb_note"] == BELOW_BOUND_NOTE and "crlb_px" not in good
    bad = efficiency({**record, "noise_reduced_chi_square": 4.08})
    assert all(bad[name] is None for name in ("crlb_px", "crlb_radial_px", "crlb_pm", "crlb_radial_pm"))
    assert "error_over_crlb_raw" not in bad and "4.08 > 1.5" in bad["crlb_note"]
    # Correlated noise the kernel represents keeps its bound (the CRLB whitens by it) ...
    assert efficiency({**record, "noise_reduced_chi_square": 1.2, "noise_correlation_x": 0.44,
                       "noise_correlation_y": 0.26})["crlb_basis"] == "twin"
    # ... a correlation beyond the three-tap kernel's reach has none.
    beyond = efficiency({**record, "noise_reduced_chi_square": 1.2, "noise_correlation_x": 0.65,
                         "noise_correlation_y": 0.02})
    assert beyond["crlb_px"] is None and "lag-1 x 0.65" in beyond["crlb_note"]
    # ... and noise correlated beyond what the kernel represents (lag 3 off its prediction) has none.
    misfit = efficiency({**record, "noise_reduced_chi_square": 1.2, "noise_kernel_misfit_x": 7.0,
                         "noise_kernel_misfit_y": 0.6})
    assert misfit["crlb_px"] is None and "x +7.0, y +0.6 scatters" in misfit["crlb_note"]
    assert efficiency({**record, "noise_reduced_chi_square": 1.2, "noise_kernel_misfit_x": 3.8})["crlb_basis"] == "twin"


def test_the_dataset_figure_flags_twins_whose_model_does_not_hold():
    from remflow.twin_figures import twin_rows

    base = {"twin_error_raw_px": 0.2, "twin_error_restored_px": 0.1, "crlb_radial_px": 0.15}
    summary = pd.DataFrame([
        {"sample": "good", **base, "noise_reduced_chi_square": 1.02, "noise_correlation_x": 0.01,
         "noise_correlation_y": -0.02},
        {"sample": "bad", **base, "noise_reduced_chi_square": 4.08, "noise_correlation_x": 0.45,
         "noise_correlation_y": 0.26},
        {"sample": "correlated", **base, "noise_reduced_chi_square": 1.2, "noise_correlation_x": 0.45,
         "noise_correlation_y": 0.26},
        {"sample": "beyond", **base, "noise_reduced_chi_square": 1.2, "noise_correlation_x": 0.05,
         "noise_correlation_y": -0.65},
        {"sample": "longer", **base, "noise_reduced_chi_square": 1.2, "noise_correlation_x": 0.33,
         "noise_kernel_misfit_x": 7.04, "noise_kernel_misfit_y": -0.6},
    ])
    labels = dict(zip(twin_rows(summary)["sample"], twin_rows(summary)["basis"]))
    assert labels == {"good": "twin", "bad": "twin, model chi² 4.1: unvalidated", "correlated": "twin",
                      "beyond": "twin, noise corr. 0.65: unvalidated", "longer": "twin, noise lag-3 7.0σ: unvalidated"}


def test_the_deconvolved_truth_of_a_cropped_twin_region_matches_the_whole_image(restorer):
    """A twin region cropped out of a larger image (``max_pixels``): the raw-only probes are
    refined in region coordinates and must be compared with the raw fit in the model's frame.
    256x256 at 3000 e/A^2: raw scatter and displacement spread of a 160x160 crop agree with
    the whole image's."""
    spec = LatticeSpec(shape=(256, 256), position_jitter_px=JITTER, seed=1)
    truth = true_positions(spec)
    raw = degrade(render(spec, truth), Degradation(dose_e_per_A2=3000.0, seed=1)).astype(np.float64)
    fit = fit_columns(raw, restorer.restore(raw), separation_px=spec.spacing_px, refine="batched", min_columns=10)
    whole = plan_twin(raw, fit.table, separation_px=fit.separation_px, replicas=2, max_pixels=256 * 256).figures
    crop = plan_twin(raw, fit.table, separation_px=fit.separation_px, replicas=2, max_pixels=160 * 160).figures
    print({key: (whole[key], crop[key]) for key in ("twin_box", "twin_raw_scatter_px", "twin_shrink",
                                                   "twin_displacement_sq_px2", "twin_displacement_sq_error_px2")})
    assert crop["twin_box"][:2] != [0, 0]
    assert crop["twin_raw_scatter_px"] == pytest.approx(whole["twin_raw_scatter_px"], rel=0.3)
    assert crop["twin_shrink"] == pytest.approx(whole["twin_shrink"], abs=0.15)
    assert not spread_unresolved(crop) and not spread_unresolved(whole)
