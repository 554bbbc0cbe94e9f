"""Validation of the scan-line noise model (issue 11): its fit, its CRLB and the twin with it.

Not a test (parts take minutes); prints the numbers quoted in the docstrings of
remflow.imagemodel (fit_line_noise) and remflow.crlb and in README, section 'Scan-line noise':

    PYTHONPATH=scripts python tests/validate_line_noise.py fit --seeds 1 2 3      # recovery
    PYTHONPATH=scripts python tests/validate_line_noise.py false --replicas 40    # none present
    PYTHONPATH=scripts python tests/validate_line_noise.py crlb --replicas 1000   # bound vs Monte Carlo
    PYTHONPATH=scripts TF_USE_LEGACY_KERAS=1 python tests/validate_line_noise.py twin --seeds 1 2 3 \
        --dose 300 --kind ar1 --ratio 0.5 --length 50                             # twin vs truth

The synthetic line noise is generated here, independently of remflow.imagemodel's
line_noise_field, in three kinds: ``ar1`` (the model's exponential correlation), ``rows`` (one
constant offset per row: correlation length infinite) and ``smooth`` (white noise smoothed
along x by a Gaussian: a correlation the model does not have).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage, optimize

from remflow.synthetic import LatticeSpec, render, true_positions

sys.path.insert(0, str(Path(__file__).parent))
from test_twin import _line_noise  # noqa: E402

GAIN, READ = 2.5, 15.0  # image units per electron, Gaussian read noise (image units)


def synthetic_line_noise(shape: tuple[int, int], sigma: float, length_px: float, kind: str,
                         rng: np.random.Generator) -> np.ndarray:
    """(rows, cols) line noise of standard deviation ``sigma``, independent between rows (``ar1``
    and ``rows``: tests/test_twin.py's generator, so that its tests repeat these draws)."""
    rows, cols = shape
    if kind in ("ar1", "rows"):
        return _line_noise(shape, sigma, length_px if kind == "ar1" else np.inf, rng)
    if kind == "smooth":
        pad = int(4 * length_px)
        white = rng.normal(0.0, 1.0, size=(rows, cols + 2 * pad))
        smooth = ndimage.gaussian_filter1d(white, length_px / 2.0, axis=1)[:, pad:pad + cols]
        return smooth * sigma / smooth.std()
    raise ValueError(kind)


def lattice_image(seed: int, shape: tuple[int, int], line_sigma_ratio: float, length_px: float, kind: str):
    """A synthetic lattice (peak 400 units, background ~40) with Poisson-Gaussian noise plus line
    noise of ``line_sigma_ratio`` times the mean pixel noise's standard deviation."""
    spec = LatticeSpec(shape=shape, position_jitter_px=0.1, seed=seed)
    positions = true_positions(spec)
    clean = render(spec, positions)
    mean = 400.0 * clean / clean.max()
    rng = np.random.default_rng(seed)
    image = GAIN * rng.poisson(mean / GAIN) + rng.normal(0.0, READ, size=shape)
    sigma = line_sigma_ratio * float(np.sqrt(np.mean(GAIN * mean + READ**2)))
    if sigma > 0:
        image = image + synthetic_line_noise(shape, sigma, length_px, kind, rng)
    return spec, positions, image, sigma


def part_fit(seeds: list[int]) -> None:
    from remflow.imagemodel import fit_image_model, fit_noise_model, model_parameter_count

    for shape in ((128, 128), (256, 256)):
        for kind, ratio, length in (("ar1", 0.4, 20.0), ("ar1", 0.4, 100.0), ("rows", 0.4, np.inf),
                                    ("smooth", 0.4, 30.0), ("ar1", 0.2, 100.0)):
            for seed in seeds:
                spec, positions, image, sigma = lattice_image(seed, shape, ratio, length, kind)
                model = fit_image_model(image, positions["x_px"], positions["y_px"], sigma_start=2.0)
                noise = fit_noise_model(image, model.image, n_parameters=model_parameter_count(model))
                print(f"{shape[0]}x{shape[1]} {kind:6s} sigma {sigma:6.1f} length {length:5.0f} seed {seed}: "
                      f"fitted sigma {noise.line_sigma:6.1f} length {noise.line_length_px:6.1f} "
                      f"z {noise.line_significance:5.1f} | gain {noise.gain:.3f} (true {GAIN}) read "
                      f"{noise.read_noise:.2f} (true {READ}) chi2 {noise.reduced_chi_square:.3f} {noise.method}")


def part_false(replicas: int) -> None:
    """Images without line noise: how often is line noise found, and how large."""
    from remflow.imagemodel import fit_image_model, fit_noise_model, model_parameter_count

    for shape in ((128, 128), (256, 256)):
        found, significance = [], []
        for seed in range(replicas):
            spec, positions, image, _ = lattice_image(100 + seed, shape, 0.0, 1.0, "ar1")
            model = fit_image_model(image, positions["x_px"], positions["y_px"], sigma_start=2.0)
            noise = fit_noise_model(image, model.image, n_parameters=model_parameter_count(model))
            significance.append(noise.line_significance)
            if noise.line_variance > 0:
                found.append((seed, round(noise.line_sigma, 2), round(noise.line_significance, 2)))
        print(f"{shape}: line noise found on {len(found)} of {replicas} images without it {found}; "
              f"significance median {np.nanmedian(significance):.2f}, largest {np.nanmax(significance):.2f}")


def _column_image(shape, x, y, amplitude, sigma, background):
    v, u = np.indices(shape, dtype=np.float64)
    return amplitude * np.exp(-((u - x) ** 2 + (v - y) ** 2) / (2 * sigma**2)) + background


def part_crlb(replicas: int) -> None:
    """One isolated column (x, y, amplitude, constant background estimated), Gaussian pixel noise
    of variance gain m + read plus AR(1) line noise; maximum-likelihood fit (each row whitened by
    the Cholesky factor of its exact covariance, written out here) of many draws against the
    bound of remflow.crlb, and the bound without the line noise."""
    from dataclasses import replace

    from remflow.crlb import image_position_crlbs
    from remflow.imagemodel import NoiseModel, fit_image_model

    shape, sigma, amplitude, background = (32, 32), 2.0, 4000.0, 400.0
    x0, y0 = 15.3, 16.1
    mean = _column_image(shape, x0, y0, amplitude, sigma, background)
    model = fit_image_model(mean, [x0], [y0], sigma_start=sigma, fit_sigma=False, background_degree=0)
    base = NoiseModel(gain=1.0, read_variance=25.0, reduced_chi_square=1.0, n_pixels=mean.size)
    pixel_variance = base.variance(mean)
    for ratio, length in ((0.5, 5.0), (0.5, 50.0), (1.0, 20.0)):
        line_variance = (ratio**2) * float(np.mean(pixel_variance))
        noise = replace(base, line_variance=line_variance, line_length_px=length)
        bound = image_position_crlbs(model, noise, columns=np.array([0]))
        without = image_position_crlbs(model, base, columns=np.array([0]))
        lags = np.abs(np.subtract.outer(np.arange(shape[1]), np.arange(shape[1])))
        line_cov = line_variance * np.exp(-lags / length)
        factors = [np.linalg.cholesky(np.diag(pixel_variance[row]) + line_cov) for row in range(shape[0])]
        rng = np.random.default_rng(5)
        found = []
        for _ in range(replicas):
            image = (mean + rng.normal(0.0, 1.0, size=shape) * np.sqrt(pixel_variance)
                     + synthetic_line_noise(shape, np.sqrt(line_variance), length, "ar1", rng))

            def residual(p):
                r = image - _column_image(shape, p[0], p[1], p[2], sigma, p[3])
                return np.concatenate([np.linalg.solve(factors[row], r[row]) for row in range(shape[0])])

            fit = optimize.least_squares(residual, [x0, y0, amplitude, background], x_scale=[0.1, 0.1, 100, 10])
            found.append(fit.x[:2])
        errors = np.array(found) - [x0, y0]
        sx, sy = errors.std(axis=0, ddof=1)
        print(f"line sigma {ratio} x pixel noise, length {length:g} px: ML scatter x {sx:.4f} y {sy:.4f} px | "
              f"bound x {bound['crlb_x_px'][0]:.4f} y {bound['crlb_y_px'][0]:.4f} | without line noise x "
              f"{without['crlb_x_px'][0]:.4f} y {without['crlb_y_px'][0]:.4f} | scatter / bound x "
              f"{sx / bound['crlb_x_px'][0]:.3f} y {sy / bound['crlb_y_px'][0]:.3f} ({replicas} draws, standard "
              f"error ~{1 / np.sqrt(2 * (replicas - 1)):.3f})")


def part_twin(dose: float, replicas: int, seed: int, kind: str, ratio: float, length: float) -> None:
    """The twin on tests/test_twin.py's synthetic lattice (128x128, displacements 0.15 px) whose
    shot noise carries line noise (``ratio`` times the mean pixel noise's standard deviation);
    real TensorFlow restoration, fitted without truth; truth RMSE recomputed from the table."""
    from test_twin import JITTER, SHAPE
    from validate_correlated_noise import twin_against_truth

    from remflow.restore import Restorer
    from remflow.synthetic import Degradation, degrade, expected_counts

    restorer = Restorer("sfr_hrstem")
    spec = LatticeSpec(shape=SHAPE, position_jitter_px=JITTER, seed=seed)
    truth = true_positions(spec)
    degradation = Degradation(dose_e_per_A2=dose, seed=seed)
    clean = render(spec, truth)
    expected = expected_counts(clean, degradation)
    raw = degrade(clean, degradation).astype(np.float64)
    sigma = ratio * float(np.sqrt(np.mean(expected)))
    raw = raw + synthetic_line_noise(raw.shape, sigma, length, kind, np.random.default_rng(1000 + seed))
    plan, twin, real, planned = twin_against_truth(raw, spec, truth, restorer, replicas)
    keys = ("noise_gain", "noise_read_sigma", "noise_line_sigma", "noise_line_length_px", "noise_kernel_x",
            "noise_kernel_y", "noise_reduced_chi_square", "noise_method", "crlb_radial_px")
    print(f"dose {dose} seed {seed} {kind} line sigma {sigma:.2f} length {length:g}: plan {planned:.1f} s; "
          f"truth {real}")
    print({k: twin[k] for k in ("twin_error_raw_px", "twin_error_restored_px", "twin_gain", "twin_gain_ci_low",
                                "twin_gain_ci_high", "twin_verdict")})
    print({k: plan.figures.get(k) for k in keys})
    print(f"twin / truth: raw {twin['twin_error_raw_px'] / real['raw']:.3f}, "
          f"restored {twin['twin_error_restored_px'] / real['restored']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("part", choices=["fit", "false", "crlb", "twin"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--dose", type=float, default=300.0)
    parser.add_argument("--kind", choices=["ar1", "rows", "smooth"], default="ar1")
    parser.add_argument("--ratio", type=float, default=0.4, help="line sigma / mean pixel noise sigma")
    parser.add_argument("--length", type=float, default=50.0, help="correlation length (px)")
    args = parser.parse_args()
    if args.part == "fit":
        part_fit(args.seeds)
    elif args.part == "false":
        part_false(args.replicas)
    elif args.part == "crlb":
        part_crlb(args.replicas)
    else:
        for seed in args.seeds:
            part_twin(args.dose, args.replicas, seed, args.kind, args.ratio, args.length)


if __name__ == "__main__":
    main()
