"""The Cramér-Rao bound: against Monte Carlo, an analytic limit, and finite differences of the image model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize

from remflow.crlb import lattice_position_crlb, lattice_position_crlbs, position_crlb
from remflow.synthetic import Degradation, LatticeSpec, counts_per_unit, render, true_positions

GRID = (25, 25)
TRUE_COLUMN = {"x": 12.3, "y": 11.6, "amplitude": 40.0, "background": 4.0}  # counts
SIGMA = 2.5


def _model_and_gradient(theta: np.ndarray, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expected counts of one Gaussian column and d mu / d (x, y, A, b), written out here
    independently of remflow.crlb."""
    x, y, amplitude, background = theta
    gaussian = np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * SIGMA**2))
    mu = background + amplitude * gaussian
    gradient = np.stack([amplitude * gaussian * (cols - x) / SIGMA**2, amplitude * gaussian * (rows - y) / SIGMA**2,
                         gaussian, np.ones_like(gaussian)])
    return mu, gradient


def _poisson_mle(counts: np.ndarray) -> np.ndarray:
    """Maximum-likelihood (x, y, A, b) of one Gaussian column under Poisson noise, width known.

    Starts from a crude estimate (border median, peak, centroid), as a real fit would.
    """
    rows, cols = np.indices(counts.shape, dtype=np.float64)
    border = np.concatenate([counts[0], counts[-1], counts[:, 0], counts[:, -1]])
    background = max(float(np.median(border)), 0.5)
    excess = np.clip(counts - background, 0, None)
    start = np.array([np.sum(excess * cols) / excess.sum(), np.sum(excess * rows) / excess.sum(),
                      max(float(counts.max()) - background, 1.0), background])

    def negative_log_likelihood(theta: np.ndarray) -> tuple[float, np.ndarray]:
        mu, gradient = _model_and_gradient(theta, cols, rows)
        value = float(np.sum(mu - counts * np.log(mu)))
        return value, gradient.reshape(4, -1) @ (1.0 - counts / mu).ravel()

    result = optimize.minimize(negative_log_likelihood, start, jac=True, method="L-BFGS-B",
                               bounds=[(None, None), (None, None), (1e-6, None), (1e-6, None)],
                               options={"ftol": 1e-14, "gtol": 1e-9, "maxiter": 500})
    return result.x


def test_crlb_matches_monte_carlo_spread_of_poisson_mle() -> None:
    """An efficient estimator's spread equals the bound (within 20%) for a moderate dose."""
    bound = position_crlb(GRID, TRUE_COLUMN["x"], TRUE_COLUMN["y"], TRUE_COLUMN["amplitude"], SIGMA,
                          TRUE_COLUMN["background"])
    rows, cols = np.indices(GRID, dtype=np.float64)
    truth = np.array([TRUE_COLUMN["x"], TRUE_COLUMN["y"], TRUE_COLUMN["amplitude"], TRUE_COLUMN["background"]])
    mu, _ = _model_and_gradient(truth, cols, rows)
    rng = np.random.default_rng(2024)
    estimates = np.array([_poisson_mle(rng.poisson(mu).astype(np.float64)) for _ in range(400)])
    spread_x, spread_y = estimates[:, 0].std(ddof=1), estimates[:, 1].std(ddof=1)
    print(f"CRLB std x {bound.std_x_px:.4f}, y {bound.std_y_px:.4f}; MLE std x {spread_x:.4f}, y {spread_y:.4f} px")
    assert spread_x == pytest.approx(bound.std_x_px, rel=0.2)
    assert spread_y == pytest.approx(bound.std_y_px, rel=0.2)
    # Unbiased: the mean is within 4 standard errors of the truth.
    assert abs(estimates[:, 0].mean() - truth[0]) < 4 * spread_x / math.sqrt(len(estimates))
    assert abs(estimates[:, 1].mean() - truth[1]) < 4 * spread_y / math.sqrt(len(estimates))


def test_isolated_bound_reaches_the_analytic_photon_limit() -> None:
    """Without background and with A known, var(x) -> s^2 / N for N detected electrons."""
    amplitude, sigma = 100.0, 3.0
    bound = position_crlb((61, 61), 30.2, 29.7, amplitude, sigma, 1e-9, joint=False)
    total_counts = amplitude * 2 * math.pi * sigma**2
    assert bound.var_x_px2 == pytest.approx(sigma**2 / total_counts, rel=1e-3)
    assert bound.var_y_px2 == pytest.approx(sigma**2 / total_counts, rel=1e-3)


def test_estimating_more_and_detector_noise_cost_precision() -> None:
    args = (GRID, 12.4, 12.1, 30.0, SIGMA, 3.0)
    known = position_crlb(*args, joint=False)
    joint = position_crlb(*args)
    noisy = position_crlb(*args, read_noise_sigma=3.0)
    assert joint.var_x_px2 >= known.var_x_px2 * (1 - 1e-12)
    assert noisy.var_x_px2 > joint.var_x_px2 * 1.2


def test_crlb_scales_as_inverse_sqrt_dose() -> None:
    spec = LatticeSpec(shape=(64, 80), spacing_px=12.0, sigma_px=2.5)
    low = lattice_position_crlb(spec, Degradation(dose_e_per_A2=100.0))
    high = lattice_position_crlb(spec, Degradation(dose_e_per_A2=400.0))
    assert low / high == pytest.approx(2.0, rel=1e-6)
    assert lattice_position_crlb(spec, Degradation(dose_e_per_A2=100.0), radial=True) == pytest.approx(
        low * math.sqrt(2), rel=1e-12)


def test_lattice_fisher_matches_finite_differences_of_the_rendered_image() -> None:
    """The analytic joint bound equals one built from the image renderer itself, so the
    bound is about exactly the images the benchmark writes (perovskite, non-square, jittered)."""
    spec = LatticeSpec(kind="perovskite", shape=(36, 44), spacing_px=11.0, sigma_px=2.2, position_jitter_px=0.4,
                       background=0.15, seed=3)
    degradation = Degradation(dose_e_per_A2=700.0)
    positions = true_positions(spec)
    scale = counts_per_unit(render(spec, positions), degradation)  # the dose fixes counts per unit intensity
    fitted = np.flatnonzero(positions["in_image"].to_numpy())
    step = 1e-5

    def counts(table) -> np.ndarray:
        return scale * render(spec, table)

    gradients = []
    for index in fitted:
        for column, delta in (("x_px", step), ("y_px", step), ("amplitude", step)):
            plus, minus = positions.copy(), positions.copy()
            plus.loc[index, column] += delta
            minus.loc[index, column] -= delta
            derivative = (counts(plus) - counts(minus)) / (2 * delta)
            gradients.append(derivative / scale if column == "amplitude" else derivative)  # amplitude in counts
    gradients.append(np.ones(spec.shape))  # background, in counts
    design = np.stack([g.ravel() for g in gradients])
    mu = counts(positions).ravel()
    inverse = np.linalg.inv((design / mu) @ design.T)
    expected_x = np.sqrt(np.diag(inverse)[0:-1:3])
    expected_y = np.sqrt(np.diag(inverse)[1:-1:3])

    table = lattice_position_crlbs(spec, degradation)
    assert len(table) == len(fitted)
    assert set(table["sublattice"]) == {"A", "B"}
    np.testing.assert_allclose(table["crlb_x_px"], expected_x, rtol=1e-5)
    np.testing.assert_allclose(table["crlb_y_px"], expected_y, rtol=1e-5)


def test_weaker_b_columns_have_larger_bounds() -> None:
    table = lattice_position_crlbs(LatticeSpec(kind="perovskite", shape=(72, 72)), Degradation(dose_e_per_A2=500.0))
    interior = table[~table["edge"]]
    assert interior.loc[interior["sublattice"] == "B", "crlb_px"].min() > interior.loc[
        interior["sublattice"] == "A", "crlb_px"].max()


def test_crlb_table_for_default_square_lattice() -> None:
    """Benchmark table (printed): the bound for the default square lattice, 20 pm pixels."""
    spec = LatticeSpec()
    bounds = {dose: lattice_position_crlb(spec, Degradation(dose_e_per_A2=dose)) for dose in (50, 200, 1000, 5000)}
    print("\ndose e/A^2 | CRLB per axis px | pm")
    for dose, bound in bounds.items():
        print(f"{dose:10g} | {bound:16.4f} | {bound * 20:.2f}")
    values = list(bounds.values())
    assert all(a > b for a, b in zip(values, values[1:]))
