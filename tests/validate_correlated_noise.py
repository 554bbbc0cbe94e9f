"""Validation of the correlated-noise model (issue 11): noise fit, CRLB and twin.

Not a test (parts take minutes); prints the numbers quoted in the docstrings of
remflow.imagemodel and remflow.crlb and in README, section 'Correlated pixel noise':

    PYTHONPATH=scripts python tests/validate_correlated_noise.py fit      # (a) noise fit
    PYTHONPATH=scripts python tests/validate_correlated_noise.py crlb     # (b) CRLB vs Monte Carlo
    PYTHONPATH=scripts python tests/validate_correlated_noise.py cost     # CRLB cost, 384x384
    PYTHONPATH=scripts TF_USE_LEGACY_KERAS=1 python tests/validate_correlated_noise.py twin --replicas 4 \
        --seeds 1 2 3 --dose 3000                                        # (c) twin vs truth
    PYTHONPATH=scripts python tests/validate_correlated_noise.py misfit --phi 0.3 0.45 0.6  # RC noise
    PYTHONPATH=scripts python tests/validate_correlated_noise.py scatter  # significance rule of the taps
    PYTHONPATH=scripts python tests/validate_correlated_noise.py rates --replicas 200  # outer tap, misfit gate
    PYTHONPATH=scripts python tests/validate_correlated_noise.py frame --results <run>/results --frame exp_hrstem_4
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import optimize

from remflow.synthetic import LatticeSpec, render, true_positions

GAIN, READ = 2.5, 15.0  # image units per electron, Gaussian read noise (image units)
CASES = {"independent": (0.0, 0.0), "x 0.3": (0.3, 0.0), "x 0.3, y 0.15": (0.3, 0.15)}


def lattice_image(seed: int, taps: tuple[float, float], shape=(128, 128)):
    """A synthetic lattice (peak 400 units) with Poisson-Gaussian noise filtered by the kernel."""
    from remflow.imagemodel import NoiseModel

    spec = LatticeSpec(shape=shape, position_jitter_px=0.1, seed=seed)
    positions = true_positions(spec)
    clean = render(spec, positions)
    mean = 400.0 * clean / clean.max()
    truth = NoiseModel(gain=GAIN, read_variance=READ**2, reduced_chi_square=1.0, n_pixels=mean.size,
                       kernel_x=taps[0], kernel_y=taps[1])
    return spec, positions, truth.draw(mean, np.random.default_rng(seed))


def part_scatter(draws: int = 200) -> None:
    """Scatter of the lag-1 correlation measured on independent Poisson noise of lattice images
    against CORRELATION_SCATTER / sqrt(effective pixels) (the significance rule of the taps)."""
    from remflow.imagemodel import (CORRELATION_SCATTER, _effective_pixels, _filtered_squared_signal,
                                    _second_difference, noise_correlation)
    from remflow.synthetic import Degradation, expected_counts

    for shape, dose in (((96, 96), 20000.0), ((96, 96), 500.0), ((128, 128), 20000.0)):
        spec = LatticeSpec(shape=shape, seed=2)
        mean = expected_counts(render(spec, true_positions(spec)), Degradation(dose_e_per_A2=dose, seed=2))
        effective = _effective_pixels(_filtered_squared_signal(mean, 0.0, 0.0)[0])
        rng = np.random.default_rng(0)
        measured = np.array([noise_correlation(_second_difference(rng.poisson(mean) - mean)) for _ in range(draws)])
        print(f"{shape} {dose:g} e/A^2: effective pixels {effective:.0f} of {(shape[0] - 2) * (shape[1] - 2)}; "
              f"scatter x {measured[:, 0].std():.4f} y {measured[:, 1].std():.4f}; "
              f"predicted {CORRELATION_SCATTER / np.sqrt(effective):.4f}")


def part_rates(draws: int) -> None:
    """False outer taps and false kernel-misfit refusals on noise the kernel represents: lattice
    images (exact mean as the model, so that only the noise is judged), Poisson-Gaussian noise
    independent, three-tap filtered and five-tap filtered; ``draws`` images per case. Also the
    measured scatter of the lag-2 deviation from the three-tap reading and of the lag-3
    deviation from the kernel used, times sqrt(effective pixels), against the constants."""
    from remflow.imagemodel import (LAG2_SCATTER, LAG3_SCATTER, NoiseModel, _effective_pixels,
                                    _filtered_squared_signal, _second_difference, _three_tap,
                                    filtered_lag_correlations, filtered_lag_prediction, fit_noise_model)
    from remflow.precision.basis import MAX_NOISE_KERNEL_MISFIT

    cases = {"independent": ((0.0, 0.0), (0.0, 0.0)), "x 0.3": ((0.3, 0.0), (0.0, 0.0)),
             "x 0.3, y 0.15": ((0.3, 0.0), (0.15, 0.0)), "x (0.35, 0.12)": ((0.35, 0.12), (0.0, 0.0))}
    for shape in ((96, 96), (128, 128)):
        spec = LatticeSpec(shape=shape, position_jitter_px=0.1, seed=2)
        clean = render(spec, true_positions(spec))
        mean = 400.0 * clean / clean.max()
        effective = _effective_pixels(GAIN * _filtered_squared_signal(mean, 0.0, 0.0)[0] + 36 * READ**2)
        for name, (taps_x, taps_y) in cases.items():
            truth = NoiseModel(gain=GAIN, read_variance=READ**2, reduced_chi_square=1.0, n_pixels=mean.size,
                               kernel_x=taps_x[0], kernel_outer_x=taps_x[1], kernel_y=taps_y[0],
                               kernel_outer_y=taps_y[1])
            rng = np.random.default_rng(0)
            outer, refused, worst, d2, d3 = 0, 0, 0.0, [], []
            for _ in range(draws):
                image = truth.draw(mean, rng)
                noise = fit_noise_model(image, mean)
                outer += noise.kernel_outer_x != 0.0 or noise.kernel_outer_y != 0.0
                misfit = max(abs(noise.kernel_misfit_x), abs(noise.kernel_misfit_y))
                refused += misfit > MAX_NOISE_KERNEL_MISFIT
                worst = max(worst, misfit)
                lags_x, _ = filtered_lag_correlations(_second_difference(image - mean))
                d2.append(lags_x[1] - filtered_lag_prediction(_three_tap(lags_x[0]), (2,))[0])
                d3.append(lags_x[2] - filtered_lag_prediction(noise.taps_x, (3,))[0])
            print(f"{shape} {name:15s}: effective pixels {effective:.0f}; outer tap used {outer}/{draws}, "
                  f"misfit > {MAX_NOISE_KERNEL_MISFIT} (refused) {refused}/{draws}, largest |misfit| {worst:.2f}; "
                  f"x scatter*sqrt(eff): lag-2 dev. {np.std(d2) * np.sqrt(effective):.3f} (constant "
                  f"{LAG2_SCATTER}), lag-3 dev. {np.std(d3) * np.sqrt(effective):.3f} (constants {LAG3_SCATTER}); "
                  f"last fit taps x {noise.taps_x} y {noise.taps_y}")


def part_fit(seeds: list[int]) -> None:
    from remflow.imagemodel import fit_image_model, fit_noise_model, model_parameter_count, tap_correlation

    for name, taps in CASES.items():
        for seed in seeds:
            spec, positions, image = lattice_image(seed, taps)
            model = fit_image_model(image, positions["x_px"], positions["y_px"], sigma_start=2.0)
            noise = fit_noise_model(image, model.image, n_parameters=model_parameter_count(model))
            print(f"{name:14s} seed {seed}: gain {noise.gain:.3f} (true {GAIN}) read {noise.read_noise:.2f} "
                  f"(true {READ}) taps {noise.kernel_x:.3f} {noise.kernel_y:.3f} (true {taps[0]} {taps[1]}) outer "
                  f"{noise.kernel_outer_x:.3f} {noise.kernel_outer_y:.3f} misfit {noise.kernel_misfit_x:.1f} "
                  f"{noise.kernel_misfit_y:.1f} "
                  f"rho1 {noise.correlation_x:.3f} {noise.correlation_y:.3f} (true {tap_correlation(taps[0]):.3f} "
                  f"{tap_correlation(taps[1]):.3f}) chi2 {noise.reduced_chi_square:.3f} method {noise.method}")


def _column_image(shape, x, y, amplitude, sigma, background):
    rows, cols = shape
    v, u = np.indices(shape, dtype=np.float64)
    return amplitude * np.exp(-((u - x) ** 2 + (v - y) ** 2) / (2 * sigma**2)) + background


def part_crlb(replicas: int) -> None:
    """One isolated column (x, y, amplitude, constant background estimated) at a high dose;
    maximum-likelihood (prewhitened, weighted) and plain least-squares fits of many draws."""
    from remflow.crlb import image_position_crlbs
    from remflow.imagemodel import NoiseModel, fit_image_model, whiten

    shape, sigma, amplitude, background = (32, 32), 2.0, 4000.0, 400.0
    x0, y0 = 15.3, 16.1
    mean = _column_image(shape, x0, y0, amplitude, sigma, background)
    model = fit_image_model(mean, [x0], [y0], sigma_start=sigma, fit_sigma=False, background_degree=0)
    # Three-tap cases, and a five-tap kernel (a, b) along x.
    cases = {name: ((taps[0], 0.0), (taps[1], 0.0)) for name, taps in CASES.items()}
    cases["x (0.35, 0.12)"] = ((0.35, 0.12), (0.0, 0.0))
    for name, taps in cases.items():
        noise = replace_taps(NoiseModel(gain=1.0, read_variance=25.0, reduced_chi_square=1.0, n_pixels=mean.size),
                             *taps)
        bound = image_position_crlbs(model, noise, columns=np.array([0]))
        independent = image_position_crlbs(model, NoiseModel(gain=1.0, read_variance=25.0, reduced_chi_square=1.0,
                                                             n_pixels=mean.size), columns=np.array([0]))
        weight = 1.0 / np.sqrt(noise.variance(mean))
        rng = np.random.default_rng(5)
        found = {"ml": [], "ols": []}
        for _ in range(replicas):
            image = noise.draw(mean, rng)
            for kind in found:
                def residual(p, kind=kind):
                    r = image - _column_image(shape, p[0], p[1], p[2], sigma, p[3])
                    return (whiten(r, *taps) * weight).ravel() if kind == "ml" else r.ravel()
                fit = optimize.least_squares(residual, [x0, y0, amplitude, background], x_scale=[0.1, 0.1, 100, 10])
                found[kind].append(fit.x[:2])
        for kind, values in found.items():
            errors = np.array(values) - [x0, y0]
            sx, sy = errors.std(axis=0, ddof=1)
            print(f"{name:14s} {kind:3s}: scatter x {sx:.4f} y {sy:.4f} px | bound (correlated) x "
                  f"{bound['crlb_x_px'][0]:.4f} y {bound['crlb_y_px'][0]:.4f} | independent-pixel bound x "
                  f"{independent['crlb_x_px'][0]:.4f} y {independent['crlb_y_px'][0]:.4f} "
                  f"| ratio scatter/bound x {sx / bound['crlb_x_px'][0]:.3f} y {sy / bound['crlb_y_px'][0]:.3f} "
                  f"({replicas} draws, ratio's standard error ~{1 / np.sqrt(2 * (replicas - 1)):.3f})")


def part_cost() -> None:
    from remflow.crlb import image_position_crlbs
    from remflow.imagemodel import NoiseModel, fit_image_model

    spec = LatticeSpec(shape=(384, 384), seed=1)
    positions = true_positions(spec)
    mean = 400.0 * render(spec, positions) / render(spec, positions).max()
    model = fit_image_model(mean, positions["x_px"], positions["y_px"], sigma_start=spec.sigma_px, fit_sigma=False)
    print(f"{len(positions)} columns, 384x384")
    for taps in ((0.0, 0.0), (0.25, 0.14), (0.3, 0.15), (0.45, 0.3)):
        noise = NoiseModel(gain=2.5, read_variance=225.0, reduced_chi_square=1.0, n_pixels=mean.size,
                           kernel_x=taps[0], kernel_y=taps[1])
        start = time.perf_counter()
        table = image_position_crlbs(model, noise)
        print(f"taps {taps}: {time.perf_counter() - start:.2f} s, median bound {table['crlb_px'].median():.4f} px")


def twin_against_truth(raw: np.ndarray, spec: LatticeSpec, truth, restorer, replicas: int):
    """Fit ``raw`` without truth, plan and run its twin (real restoration), and recompute the truth
    RMSE from the fitted table (tests/test_twin.py's truth_rmse): (plan, twin figures, truth, plan s)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_twin import truth_rmse

    from remflow.columns import fit_columns
    from remflow.precision.twin import fit_replicas, plan_twin, twin_figures

    fit = fit_columns(raw, restorer.restore(raw), separation_px=spec.spacing_px, refine="batched", min_columns=10)
    start = time.perf_counter()
    plan = plan_twin(raw, fit.table, separation_px=fit.separation_px, replicas=replicas, seed=0)
    planned = time.perf_counter() - start
    fits = fit_replicas(plan.columns, plan.replicas, np.array(restorer.restore_many(list(plan.replicas))),
                        separation_px=fit.separation_px)
    twin = twin_figures(plan.columns, fits, separation_px=fit.separation_px, n_boot=1000)
    return plan, twin, truth_rmse(fit.table, truth[truth["in_image"]], spec.spacing_px), planned


def part_twin(dose: float, replicas: int, seed: int) -> None:
    """The twin on a synthetic lattice (tests/test_twin.py's: 128x128, displacements 0.15 px)
    whose shot noise is filtered by [0.3, 1, 0.3] along x and [0.15, 1, 0.15] along y; real
    TensorFlow restoration, fitted without truth; truth RMSE recomputed from the table."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_twin import JITTER, SHAPE

    from scipy import ndimage
    from remflow.restore import Restorer
    from remflow.synthetic import Degradation, degrade, expected_counts

    restorer = Restorer("sfr_hrstem")
    spec = LatticeSpec(shape=SHAPE, position_jitter_px=JITTER, seed=seed)
    truth = true_positions(spec)
    degradation = Degradation(dose_e_per_A2=dose, seed=seed)
    clean = render(spec, truth)
    expected = expected_counts(clean, degradation)
    # The filter of remflow.imagemodel.correlate_noise, written out so that this part also runs on
    # the code of before the kernel (PYTHONPATH=<old checkout>/scripts) for comparison.
    noise = degrade(clean, degradation).astype(np.float64) - expected
    for axis, tap in ((1, 0.3), (0, 0.15)):
        noise = ndimage.correlate1d(noise, np.array([tap, 1.0, tap]) / np.sqrt(1 + 2 * tap**2), axis=axis,
                                    mode="reflect")
    raw = expected + noise
    plan, twin, real, planned = twin_against_truth(raw, spec, truth, restorer, replicas)
    keys = ("noise_gain", "noise_read_sigma", "noise_kernel_x", "noise_kernel_y", "noise_kernel_outer_x",
            "noise_kernel_outer_y", "noise_kernel_misfit_x", "noise_kernel_misfit_y", "noise_correlation_x",
            "noise_correlation_y", "noise_reduced_chi_square", "noise_method", "crlb_radial_px")
    print(f"dose {dose} seed {seed}: plan {planned:.1f} s; truth {real}")
    print({k: twin[k] for k in ("twin_error_raw_px", "twin_error_restored_px", "twin_gain", "twin_gain_ci_low",
                                "twin_gain_ci_high", "twin_verdict")})
    print({k: plan.figures.get(k) for k in keys})
    print(f"twin / truth: raw {twin['twin_error_raw_px'] / real['raw']:.3f}, "
          f"restored {twin['twin_error_restored_px'] / real['restored']:.3f}")


def part_misfit(phi: float) -> None:
    """Noise correlated beyond neighbours: a causal exponential (RC) low-pass along x,
    ``y_n = phi y_{n-1} + sqrt(1 - phi^2) x_n`` (lag-k correlation phi^k), as a detector's
    bandwidth along the fast scan gives. Prints the fitted noise model (taps a, b per axis, the
    lag-3 misfit in scatters), the filtered residual's lag 1-4 correlations against the
    kernel's prediction, and the bound of the fitted kernel against the exact bound of that
    noise. Runs on the code before the five-tap kernel too (``PYTHONPATH=<old>/scripts``)."""
    from scipy import signal as sps

    from remflow.crlb import image_position_crlbs
    from remflow.imagemodel import (NoiseModel, _second_difference, fit_image_model, fit_noise_model,
                                    model_parameter_count)

    def rc(noise: np.ndarray) -> np.ndarray:
        return sps.lfilter([np.sqrt(1 - phi**2)], [1.0, -phi], noise, axis=1)

    spec = LatticeSpec(shape=(256, 256), position_jitter_px=0.1, seed=1)
    positions = true_positions(spec)
    mean = 400.0 * render(spec, positions) / render(spec, positions).max()
    rng = np.random.default_rng(1)
    image = mean + rc(GAIN * rng.poisson(mean / GAIN) + rng.normal(0.0, READ, mean.shape) - mean)
    model = fit_image_model(image, positions["x_px"], positions["y_px"], sigma_start=2.0)
    noise = fit_noise_model(image, model.image, n_parameters=model_parameter_count(model))
    taps_x = (noise.kernel_x, getattr(noise, "kernel_outer_x", 0.0))
    taps_y = (noise.kernel_y, getattr(noise, "kernel_outer_y", 0.0))
    misfit = [getattr(noise, f"kernel_misfit_{axis}", float("nan")) for axis in "xy"]  # absent before
    print(f"RC phi {phi}: gain {noise.gain:.3f} (true {GAIN}) read {noise.read_noise:.2f} (true {READ}) taps "
          f"x {taps_x[0]:.3f} {taps_x[1]:.3f} y {taps_y[0]:.3f} {taps_y[1]:.3f} rho1 {noise.correlation_x:.3f} "
          f"chi2 {noise.reduced_chi_square:.3f} {noise.method} lag-3 misfit (scatters) x {misfit[0]:.1f} "
          f"y {misfit[1]:.1f}")
    print("  filtered residual along x, lag: (measured, kernel prediction)", lag_check(
        _second_difference(image - model.image), taps_x, axis=1))
    # Bound of one isolated column: fitted kernel against the exact RC covariance.
    shape, sigma, amplitude, background, x0, y0 = (32, 32), 2.0, 4000.0, 400.0, 15.3, 16.1
    v, u = np.indices(shape, dtype=np.float64)
    column = amplitude * np.exp(-((u - x0) ** 2 + (v - y0) ** 2) / (2 * sigma**2)) + background
    single = fit_image_model(column, [x0], [y0], sigma_start=sigma, fit_sigma=False, background_degree=0)
    kernel_noise = replace_taps(NoiseModel(gain=1.0, read_variance=25.0, reduced_chi_square=1.0,
                                           n_pixels=column.size), taps_x, taps_y)
    bound = image_position_crlbs(single, kernel_noise, columns=np.array([0]))
    slope = amplitude * np.exp(-((u - x0) ** 2 + (v - y0) ** 2) / (2 * sigma**2)) / sigma**2
    derivatives = np.column_stack([(slope * (u - x0)).ravel(), (slope * (v - y0)).ravel(),
                                   (column - background).ravel() / amplitude, np.ones(column.size)])
    filter_x = sps.lfilter([np.sqrt(1 - phi**2)], [1.0, -phi], np.eye(shape[1]), axis=0)  # M @ x filters x
    full = np.kron(np.eye(shape[0]), filter_x)
    covariance = full @ np.diag(column.ravel() + 25.0) @ full.T
    exact = np.sqrt(np.diag(np.linalg.inv(derivatives.T @ np.linalg.solve(covariance, derivatives)))[:2])
    print(f"  isolated column bound: fitted kernel x {bound['crlb_x_px'][0]:.4f} y "
          f"{bound['crlb_y_px'][0]:.4f}; exact RC x {exact[0]:.4f} y {exact[1]:.4f} px "
          f"(fitted / exact: {bound['crlb_x_px'][0] / exact[0]:.3f}, {bound['crlb_y_px'][0] / exact[1]:.3f})")


def replace_taps(noise, taps_x: tuple[float, float], taps_y: tuple[float, float]):
    """``noise`` with the kernel's taps set (outer taps only where the code has them)."""
    from dataclasses import replace

    fields = {"kernel_x": taps_x[0], "kernel_y": taps_y[0]}
    if hasattr(noise, "kernel_outer_x"):
        fields.update(kernel_outer_x=taps_x[1], kernel_outer_y=taps_y[1])
    elif taps_x[1] or taps_y[1]:
        raise ValueError("outer taps on code without them")
    return replace(noise, **fields)


def part_frame(results: str, name: str) -> None:
    """The twin model of a real frame from a previous run's results (read-only): plan_twin with
    the default twin settings, the filtered residual's lags against the kernel, the plain
    residual's variance in bins of the model value, and the bound with the kernel switched off."""
    import json
    from dataclasses import replace
    from pathlib import Path

    import hyperspy.api as hs
    import pandas as pd

    from remflow.crlb import image_position_crlb
    from remflow.imagemodel import _second_difference
    from remflow.precision.twin import MODEL_MARGIN_SPACINGS, model_of_image, plan_twin, twin_box

    root = Path(results)
    raw = np.asarray(hs.load(root / "ingest" / f"{name}.hspy", lazy=False).data, dtype=np.float64)
    separation = json.loads((root / "columns" / f"{name}.json").read_text())["separation_px"]
    table = pd.read_csv(root / "columns" / f"{name}.csv")
    start = time.perf_counter()
    plan = plan_twin(raw, table, separation_px=separation, replicas=4, seed=0, truth="deconvolved",
                     max_pixels=384 * 384)
    keys = ("noise_gain", "noise_read_variance", "noise_offset", "noise_kernel_x", "noise_kernel_y",
            "noise_kernel_outer_x", "noise_kernel_outer_y", "noise_kernel_misfit_x", "noise_kernel_misfit_y",
            "noise_correlation_x", "noise_correlation_y", "noise_reduced_chi_square", "noise_method",
            "electrons_peak", "crlb_px", "crlb_radial_px", "twin_raw_scatter_px", "twin_shrink")
    print(f"{name}: plan_twin {time.perf_counter() - start:.1f} s", {k: plan.figures.get(k) for k in keys})
    # The twin region with its model margin, cropped as plan_twin crops it.
    top, left, rows, cols = twin_box(raw.shape, 384 * 384)
    reach = int(np.ceil(MODEL_MARGIN_SPACINGS * separation))
    top0, left0 = max(top - reach, 0), max(left - reach, 0)
    image = raw[top0:top + rows + reach, left0:left + cols + reach]
    table = table.copy()
    for kind in ("raw", "restored"):
        table[f"x_{kind}_px"] -= left0
        table[f"y_{kind}_px"] -= top0
    start_xy = np.rint(table[["x_restored_px", "y_restored_px"]].to_numpy(float))
    table = table[(start_xy >= 0).all(axis=1) & (start_xy[:, 0] <= image.shape[1] - 1)
                  & (start_xy[:, 1] <= image.shape[0] - 1)]
    model, noise, _ = model_of_image(image, table, separation)
    filtered = _second_difference(image - model.image)
    print("filtered residual lags (measured, kernel prediction): x", lag_check(filtered, noise.taps_x, 1),
          "y", lag_check(filtered, noise.taps_y, 0), "lag-3 misfit (scatters) x", noise.kernel_misfit_x,
          "y", noise.kernel_misfit_y)
    residual = image - model.image
    edges = np.quantile(model.image, np.linspace(0, 1, 7))
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (model.image >= low) & (model.image < high)
        print(f"model {low:.0f}-{high:.0f}: mean r^2 {np.mean(residual[inside] ** 2):.4g}, "
              f"gain m + read {noise.gain * model.image[inside].mean() + noise.read_variance:.4g}")
    region = model.crop(top - top0, left - left0, rows, cols)
    for label, model_noise in (("kernel", noise), ("kernel off", replace_taps(noise, (0.0, 0.0), (0.0, 0.0)))):
        print(f"bound over the region's {len(region.x)} model columns, {label}:",
              image_position_crlb(region, model_noise))


def lag_check(filtered: np.ndarray, taps: tuple[float, float], axis: int) -> dict[int, tuple[float, float]]:
    """Lag 1-4 correlations of a second-differenced residual along ``axis``: measured and the
    prediction of the kernel ``[b, a, 1, a, b]`` (``taps`` = (a, b)): autocorrelation of
    ``[1, -2, 1] * kernel`` (written out here, independent of remflow.imagemodel)."""
    a, b = taps
    combined = np.convolve([1.0, -2.0, 1.0], [b, a, 1.0, a, b])
    autocorrelation = np.correlate(combined, combined, mode="full")[len(combined) - 1:]
    out = {}
    for lag in (1, 2, 3, 4):
        first = filtered[:, lag:] if axis == 1 else filtered[lag:, :]
        second = filtered[:, :-lag] if axis == 1 else filtered[:-lag, :]
        measured = float(np.sum(first * second) / np.sqrt(np.sum(first * first) * np.sum(second * second)))
        out[lag] = (round(measured, 4), round(float(autocorrelation[lag] / autocorrelation[0]), 4))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("part", choices=["fit", "crlb", "cost", "twin", "misfit", "scatter", "rates", "frame"])
    parser.add_argument("--results", default="results", help="frame: a previous run's results folder")
    parser.add_argument("--frame", default="exp_hrstem_4")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--replicas", type=int, default=400)
    parser.add_argument("--dose", type=float, default=3000.0)
    parser.add_argument("--phi", type=float, nargs="+", default=[0.45])
    args = parser.parse_args()
    if args.part == "fit":
        part_fit(args.seeds)
    elif args.part == "crlb":
        part_crlb(args.replicas)
    elif args.part == "cost":
        part_cost()
    elif args.part == "frame":
        part_frame(args.results, args.frame)
    elif args.part == "scatter":
        part_scatter()
    elif args.part == "rates":
        part_rates(args.replicas)
    elif args.part == "misfit":
        for phi in args.phi:
            part_misfit(phi)
    else:
        for seed in args.seeds:
            part_twin(args.dose, args.replicas, seed)
