"""Validation of the correlated-noise model (issue 11): noise fit, CRLB and twin.

Not a test (parts take minutes); prints the numbers quoted in the docstrings of
remflow.imagemodel and remflow.crlb and in docs/correlated_noise.md:

    PYTHONPATH=scripts python tests/validate_correlated_noise.py fit      # (a) noise fit
    PYTHONPATH=scripts python tests/validate_correlated_noise.py crlb     # (b) CRLB vs Monte Carlo
    PYTHONPATH=scripts python tests/validate_correlated_noise.py cost     # CRLB cost, 384x384
    PYTHONPATH=scripts TF_USE_LEGACY_KERAS=1 python tests/validate_correlated_noise.py twin  # (c)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import optimize

from remflow.crlb import image_position_crlbs
from remflow.imagemodel import (NoiseModel, fit_image_model, fit_noise_model, model_parameter_count, tap_correlation,
                                whiten)
from remflow.synthetic import LatticeSpec, render, true_positions

GAIN, READ = 2.5, 15.0  # image units per electron, Gaussian read noise (image units)
CASES = {"independent": (0.0, 0.0), "x 0.3": (0.3, 0.0), "x 0.3, y 0.15": (0.3, 0.15)}


def lattice_image(seed: int, taps: tuple[float, float], shape=(128, 128)):
    """A synthetic lattice (peak 400 units) with Poisson-Gaussian noise filtered by the kernel."""
    spec = LatticeSpec(shape=shape, position_jitter_px=0.1, seed=seed)
    positions = true_positions(spec)
    clean = render(spec, positions)
    mean = 400.0 * clean / clean.max()
    truth = NoiseModel(gain=GAIN, read_variance=READ**2, reduced_chi_square=1.0, n_pixels=mean.size,
                       kernel_x=taps[0], kernel_y=taps[1])
    return spec, positions, truth.draw(mean, np.random.default_rng(seed))


def part_fit(seeds: list[int]) -> None:
    for name, taps in CASES.items():
        for seed in seeds:
            spec, positions, image = lattice_image(seed, taps)
            model = fit_image_model(image, positions["x_px"], positions["y_px"], sigma_start=2.0)
            noise = fit_noise_model(image, model.image, n_parameters=model_parameter_count(model))
            print(f"{name:14s} seed {seed}: gain {noise.gain:.3f} (true {GAIN}) read {noise.read_noise:.2f} "
                  f"(true {READ}) taps {noise.kernel_x:.3f} {noise.kernel_y:.3f} (true {taps[0]} {taps[1]}) "
                  f"rho1 {noise.correlation_x:.3f} {noise.correlation_y:.3f} (true {tap_correlation(taps[0]):.3f} "
                  f"{tap_correlation(taps[1]):.3f}) chi2 {noise.reduced_chi_square:.3f} method {noise.method}")


def _column_image(shape, x, y, amplitude, sigma, background):
    rows, cols = shape
    v, u = np.indices(shape, dtype=np.float64)
    return amplitude * np.exp(-((u - x) ** 2 + (v - y) ** 2) / (2 * sigma**2)) + background


def part_crlb(replicas: int) -> None:
    """One isolated column (x, y, amplitude, constant background estimated) at a high dose;
    maximum-likelihood (prewhitened, weighted) and plain least-squares fits of many draws."""
    shape, sigma, amplitude, background = (32, 32), 2.0, 4000.0, 400.0
    x0, y0 = 15.3, 16.1
    mean = _column_image(shape, x0, y0, amplitude, sigma, background)
    model = fit_image_model(mean, [x0], [y0], sigma_start=sigma, fit_sigma=False, background_degree=0)
    for name, taps in CASES.items():
        noise = NoiseModel(gain=1.0, read_variance=25.0, reduced_chi_square=1.0, n_pixels=mean.size,
                           kernel_x=taps[0], kernel_y=taps[1])
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("part", choices=["fit", "crlb", "cost", "twin"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--replicas", type=int, default=400)
    args = parser.parse_args()
    if args.part == "fit":
        part_fit(args.seeds)
    elif args.part == "crlb":
        part_crlb(args.replicas)
    elif args.part == "cost":
        part_cost()
