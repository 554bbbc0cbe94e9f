"""Cramér-Rao lower bound (CRLB) on the position precision of Gaussian atom columns.

Image model (the one :mod:`remflow.synthetic` draws): the expected counts of pixel ``i``
at ``(u_i, v_i)`` (column, row index; pixel ``i`` centred at its index) are::

    mu_i = b + sum_k A_k exp(-((u_i - x_k)^2 + (v_i - y_k)^2) / (2 s^2)) + n_i

with background ``b``, column amplitudes ``A_k`` (both in counts), a known common
width ``s`` and known extra counts ``n_i`` (tails of columns that are not estimated).
Under Poisson noise the Fisher information of the parameters ``theta`` is::

    I_jl = sum_i (d mu_i / d theta_j)(d mu_i / d theta_l) / (mu_i + v)

where ``v`` is the variance of Gaussian detector noise: exact for ``v = 0``; for
``v > 0`` it is the usual shifted-Poisson approximation. Derivatives are analytic.
``(I^-1)_jj`` bounds the variance of any unbiased estimator of ``theta_j``.

What is estimated jointly, which is what an honest fit has to do:

* :func:`position_crlb` - one isolated column: ``x, y, A, b`` (width known), over a
  given pixel grid; ``joint=False`` gives the optimistic bound with ``A, b`` known.
* :func:`lattice_position_crlbs` - the whole synthetic image: ``x_k, y_k, A_k`` of every
  column whose centre lies in the image, plus the global background ``b`` (width
  known). Columns centred outside the image are known (their tails are ``n_i``).
  Neighbours are therefore estimated, not assumed known, so overlap between columns
  costs precision as it does in a real fit.

Line jitter is not in the model: it is an extra, non-Poisson error, so with jitter the
measured errors may rightly exceed the bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import linalg, sparse
from scipy.sparse import linalg as sparse_linalg

from remflow.synthetic import Degradation, LatticeSpec, counts_per_unit, render, true_positions

#: Derivatives of a column are evaluated within this many widths of its centre; beyond,
#: they are ~1e-7 of their peak and add ~1e-14 of the Fisher information.
DERIVATIVE_CUTOFF_SIGMAS = 6.0
#: Columns closer than this many widths to an image edge are "edge" columns, left out of
#: the lattice summary (part of their signal is cut off, so their bound is larger).
EDGE_MARGIN_SIGMAS = 3.0
#: Right-hand sides solved at once when extracting diagonal entries of the inverse.
SOLVE_CHUNK = 512
#: The one-number summary uses at most this many columns (evenly spread over the
#: candidates): each costs a sparse solve, and large images have thousands of columns.
#: The twin (remflow.precision.twin) also asks for the amplitude bound of every evaluated column
#: (one solve each) to leave faint columns out, and summarises the capped ones that are not faint.
SUMMARY_MAX_COLUMNS = 128
#: Entries of per-row line-noise corrections gathered before they are summed (memory bound).
LINE_CORRECTION_CHUNK = 4_000_000


@dataclass(frozen=True)
class PositionBound:
    """Cramér-Rao bounds on the variances of x and y (px^2) of one column."""

    var_x_px2: float
    var_y_px2: float

    @property
    def std_x_px(self) -> float:
        return math.sqrt(self.var_x_px2)

    @property
    def std_y_px(self) -> float:
        return math.sqrt(self.var_y_px2)

    @property
    def rms_px(self) -> float:
        """``sqrt((var_x + var_y) / 2)``: the bound on a per-axis RMSE of the position."""
        return math.sqrt(0.5 * (self.var_x_px2 + self.var_y_px2))


def column_derivatives(shape: tuple[int, int], xs: np.ndarray, ys: np.ndarray, amplitudes: np.ndarray,
                       sigma_px: float) -> sparse.csc_array:
    """Sparse ``(pixels, 3 * columns)`` matrix of d mu / d (x_k, y_k, A_k), pixels in row-major order.

    Parameter ``3k`` is x of column k, ``3k + 1`` its y, ``3k + 2`` its amplitude.
    """
    rows, cols = shape
    xs, ys, amplitudes = (np.asarray(a, dtype=np.float64) for a in (xs, ys, amplitudes))
    half = int(math.ceil(DERIVATIVE_CUTOFF_SIGMAS * sigma_px))
    offsets = np.arange(-half, half + 1)
    # One (2h+1)^2 patch per column, around the pixel nearest its centre.
    pixel_x = np.rint(xs)[:, None, None] + offsets[None, None, :]
    pixel_y = np.rint(ys)[:, None, None] + offsets[None, :, None]
    pixel_x, pixel_y = np.broadcast_arrays(pixel_x, pixel_y)
    inside = (pixel_x >= 0) & (pixel_x < cols) & (pixel_y >= 0) & (pixel_y < rows)
    column_index = np.broadcast_to(np.arange(len(xs))[:, None, None], inside.shape)[inside]
    dx = pixel_x[inside] - xs[column_index]
    dy = pixel_y[inside] - ys[column_index]
    gaussian = np.exp(-(dx**2 + dy**2) / (2.0 * sigma_px**2))
    slope = amplitudes[column_index] * gaussian / sigma_px**2
    pixel_index = (pixel_y[inside] * cols + pixel_x[inside]).astype(np.int64)
    values = np.concatenate([slope * dx, slope * dy, gaussian])
    params = np.concatenate([3 * column_index, 3 * column_index + 1, 3 * column_index + 2])
    return sparse.csc_array((values, (np.tile(pixel_index, 3), params)), shape=(rows * cols, 3 * len(xs)))


def fisher_information(derivatives: sparse.sparray, expected: np.ndarray, read_noise_sigma: float = 0.0,
                       with_background: bool = True) -> sparse.csc_array:
    """Poisson Fisher information ``D^T diag(1 / (mu + v)) D``; a last parameter for a
    constant background (d mu / d b = 1) is appended when ``with_background``."""
    variance = np.asarray(expected, dtype=np.float64).ravel() + float(read_noise_sigma) ** 2
    if np.any(variance <= 0) or not np.all(np.isfinite(variance)):
        raise ValueError("expected counts (plus detector noise variance) must be finite and > 0 in every pixel")
    if with_background:
        ones = sparse.csc_array(np.ones((variance.size, 1)))
        derivatives = sparse.hstack([derivatives, ones], format="csc")
    weighted = sparse.diags_array(1.0 / variance) @ derivatives
    return sparse.csc_array(derivatives.T @ weighted)


def inverse_diagonal(information: sparse.sparray, indices: np.ndarray) -> np.ndarray:
    """Entries ``(I^-1)_jj`` for the given ``j``, by a sparse LU solve (no dense inverse)."""
    indices = np.asarray(indices, dtype=np.int64)
    # The Fisher matrix is symmetric positive definite: no pivoting needed, and a symmetric
    # fill-reducing ordering keeps the factors ~10x sparser than the default.
    factor = sparse_linalg.splu(sparse.csc_array(information), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                                options={"SymmetricMode": True})
    size = information.shape[0]
    result = np.empty(len(indices))
    for start in range(0, len(indices), SOLVE_CHUNK):
        chunk = indices[start:start + SOLVE_CHUNK]
        unit = np.zeros((size, len(chunk)))
        unit[chunk, np.arange(len(chunk))] = 1.0
        result[start:start + SOLVE_CHUNK] = factor.solve(unit)[chunk, np.arange(len(chunk))]
    if np.any(result <= 0) or not np.all(np.isfinite(result)):
        raise ArithmeticError("the Fisher information is singular: some parameters cannot be estimated")
    return result


def isolated_column_expected(shape: tuple[int, int], x_px: float, y_px: float, amplitude_counts: float,
                             sigma_px: float, background_counts: float) -> np.ndarray:
    """Expected counts of one Gaussian column on a constant background (pixel centres)."""
    rows, cols = np.indices(shape, dtype=np.float64)
    return background_counts + amplitude_counts * np.exp(-((cols - x_px) ** 2 + (rows - y_px) ** 2) / (2 * sigma_px**2))


def position_crlb(shape: tuple[int, int], x_px: float, y_px: float, amplitude_counts: float, sigma_px: float,
                  background_counts: float, *, other_counts: np.ndarray | None = None, read_noise_sigma: float = 0.0,
                  joint: bool = True) -> PositionBound:
    """CRLB on (x, y) of one Gaussian column observed on a ``shape`` pixel grid.

    With ``joint`` (the honest case) amplitude and constant background are estimated
    with the position; the width is known. ``other_counts`` are known extra counts
    (e.g. neighbours' tails): they add noise but no parameters.
    """
    expected = isolated_column_expected(shape, x_px, y_px, amplitude_counts, sigma_px, background_counts)
    if other_counts is not None:
        expected = expected + np.asarray(other_counts, dtype=np.float64)
    derivatives = column_derivatives(shape, np.array([x_px]), np.array([y_px]), np.array([amplitude_counts]), sigma_px)
    if not joint:
        derivatives = derivatives[:, [0, 1]]
    information = fisher_information(derivatives, expected, read_noise_sigma, with_background=joint).toarray()
    inverse = np.linalg.inv(information)
    return PositionBound(float(inverse[0, 0]), float(inverse[1, 1]))


def fitted_columns(spec: LatticeSpec) -> pd.DataFrame:
    """The columns whose parameters the lattice bound estimates: those centred in the image,
    with ``edge`` marking centres within ``EDGE_MARGIN_SIGMAS`` widths of an image edge."""
    positions = true_positions(spec)
    fitted = positions[positions["in_image"]].reset_index(drop=True)
    rows, cols = spec.shape
    margin = EDGE_MARGIN_SIGMAS * spec.sigma_px
    fitted["edge"] = ((fitted["x_px"] < margin - 0.5) | (fitted["x_px"] > cols - 0.5 - margin)
                      | (fitted["y_px"] < margin - 0.5) | (fitted["y_px"] > rows - 0.5 - margin))
    return fitted


def lattice_position_crlbs(spec: LatticeSpec, degradation: Degradation,
                           columns: np.ndarray | None = None) -> pd.DataFrame:
    """CRLB of columns centred in the synthetic image, all columns fitted jointly.

    ``columns`` picks rows of :func:`fitted_columns` (default: all). Returns their
    ``x_px, y_px, sublattice, edge`` and the standard-deviation bounds ``crlb_x_px``,
    ``crlb_y_px`` and ``crlb_px = sqrt((var_x + var_y) / 2)``. The counts are those of
    :func:`remflow.synthetic.expected_counts` for this dose. The background is estimated
    only when the spec has one (a zero background is then known exactly).
    """
    positions = true_positions(spec)
    clean = render(spec, positions)
    scale = counts_per_unit(clean, degradation)
    fitted = fitted_columns(spec)
    derivatives = column_derivatives(spec.shape, fitted["x_px"].to_numpy(), fitted["y_px"].to_numpy(),
                                     scale * fitted["amplitude"].to_numpy(), spec.sigma_px)
    information = fisher_information(derivatives, scale * clean, degradation.detector_noise_sigma,
                                     with_background=spec.background > 0)
    chosen = np.arange(len(fitted)) if columns is None else np.asarray(columns, dtype=np.int64)
    variances = inverse_diagonal(information, np.concatenate([3 * chosen, 3 * chosen + 1]))
    var_x, var_y = variances[:len(chosen)], variances[len(chosen):]
    table = fitted.loc[chosen, ["x_px", "y_px", "sublattice", "edge"]].reset_index(drop=True)
    table["crlb_x_px"], table["crlb_y_px"] = np.sqrt(var_x), np.sqrt(var_y)
    table["crlb_px"] = np.sqrt(0.5 * (var_x + var_y))
    return table


def lattice_position_crlb(spec: LatticeSpec, degradation: Degradation, sublattice: str = "A", *,
                          radial: bool = False) -> float:
    """One bound (px) for a dose, over the non-edge columns of ``sublattice``.

    Per axis (default): ``sqrt(mean over columns of (var_x + var_y) / 2)``, the bound on
    an RMSE of x or y alone. ``radial``: ``sqrt(mean of (var_x + var_y))``, the bound on
    an RMS *distance* ``sqrt(mean(dx^2 + dy^2))`` - the one to put next to such a truth RMSE.
    Large images average ``SUMMARY_MAX_COLUMNS`` columns spread evenly over the image.
    """
    fitted = fitted_columns(spec)
    candidates = np.flatnonzero((fitted["sublattice"] == sublattice) & ~fitted["edge"])
    if len(candidates) == 0:
        candidates = np.flatnonzero(fitted["sublattice"] == sublattice)  # tiny images: all columns at an edge
    if len(candidates) == 0:
        raise ValueError(f"the image has no '{sublattice}' columns")
    if len(candidates) > SUMMARY_MAX_COLUMNS:
        candidates = candidates[np.unique(np.linspace(0, len(candidates) - 1, SUMMARY_MAX_COLUMNS).round().astype(int))]
    table = lattice_position_crlbs(spec, degradation, columns=candidates)
    per_axis = float(np.sqrt(np.mean(table["crlb_px"] ** 2)))
    return per_axis * math.sqrt(2.0) if radial else per_axis


# --------------------------------------------------------------------------- per image


def image_position_crlbs(model, noise, columns: np.ndarray | None = None, *,
                         max_columns: int | None = SUMMARY_MAX_COLUMNS,
                         amplitude_columns: np.ndarray | None = None) -> pd.DataFrame:
    """CRLB of columns of a fitted image model (:class:`remflow.imagemodel.ImageModel`) under
    its fitted noise model (:class:`remflow.imagemodel.NoiseModel`).

    Same Fisher information as :func:`lattice_position_crlbs`, with the image's own model:
    ``x_k, y_k, A_k`` of every column in the model and the background's Legendre
    coefficients are estimated jointly; the widths (one per sublattice) are known; the
    variance of pixel ``i`` is ``gain * m_i + read_variance`` (Gaussian approximation of the
    Poisson-Gaussian likelihood; for gain 1 and read variance ``v`` it is the shifted-Poisson
    information used for the synthetic benchmark). Noise correlated by the noise model's
    kernel ``K`` (``noise.taps_x``/``_y``: three or five taps per axis, :mod:`remflow.imagemodel`)
    has covariance ``C = K diag(v) K^T``; the information ``D^T C^-1 D`` is computed by
    prewhitening, ``(K^-1 D)^T diag(1 / v) (K^-1 D)`` (:func:`remflow.imagemodel.whiten_columns`:
    the exact inverse of the reflect-boundary kernel, truncated at 1e-6 of its largest entry),
    with ``v`` evaluated at the pixel (exact when it is constant over the kernel's pixels). Noise
    correlated beyond the kernel gives a bound too small (RC low-pass phi 0.6 along x: 0.90 of the
    exact bound); remflow.precision.basis withholds the bound when the kernel's lag-3 check fails.
    Scan-line noise of the noise model (``noise.line_variance`` > 0: per row an AR(1) process
    along x, covariance ``S``, in the prewhitened domain) makes each row's covariance
    ``diag(v) + S``; its information is ``J - sum_rows (W D_r)^T (S^-1 + W_r)^-1 (W D_r)``
    (:func:`_line_correction`, Woodbury with the tridiagonal ``S^-1``). Validated
    (``tests/validate_line_noise.py crlb``, the isolated column below without kernel, line
    noise (sigma / pixel noise, length) (0.5, 5 px), (0.5, 50 px), (1.0, 20 px), 1000 draws, maximum-likelihood
    fit with each row whitened by its exact covariance): scatter / bound 0.985-0.999 (x, y;
    standard error 0.022); without the line noise the bound is 8-29 % smaller along y. Cost:
    exp_hrstem_0's twin region (440x440 px, 885 model columns) 5.8 s instead of 1.7 s.

    Validated under correlated noise (``tests/validate_correlated_noise.py crlb``): one
    isolated column, 32x32 px, width 2 px, amplitude 4000 over a background of 400 (gain 1,
    read variance 25), x, y, amplitude and background estimated by the prewhitened weighted
    least-squares (maximum-likelihood) fit of 1000 draws: scatter / bound 1.02 (x), 1.01 (y)
    for independent pixels, 1.02, 1.01 for taps 0.3 along x and 1.02, 1.01 for 0.3 along x and
    0.15 along y (standard error of the ratio 0.02). The independent-pixel bound of the same
    per-pixel variance is 0.0084 px there against 0.0118 (x 0.3) and 0.0148 px (x 0.3, y 0.15):
    it would have claimed 1.4x and 1.8x too good a precision. A plain (unweighted, unwhitened)
    least-squares fit scatters 1.10-1.16x the bound (400 draws). Cost
    (``... validate_correlated_noise.py cost``, 384x384 px, 1089 columns, 2 CPU cores): 1.3 s
    independent, 2.9-3.4 s for taps (0.25, 0.14) and (0.3, 0.15), 7.7 s for (0.45, 0.3).

    ``columns`` picks model columns (default:
    those at least EDGE_MARGIN_SIGMAS widths inside the image; at most ``max_columns``
    of them, spread evenly; None: all). Returns ``column``, ``x_px``, ``y_px``, ``crlb_x_px``,
    ``crlb_y_px``, ``crlb_px`` (per axis), and ``amplitude`` with its bound ``crlb_amplitude``
    (image units: a column whose amplitude is within a few of these of 0 has no position to speak of).
    ``amplitude_columns``: more columns whose amplitude bound is wanted (one sparse solve each
    instead of three); their rows have NaN position bounds unless they are among ``columns``.
    """
    from remflow.imagemodel import background_basis, whiten_columns

    sigma = model.column_sigma()
    parts, order = [], []
    for width in np.unique(sigma):
        members = np.flatnonzero(sigma == width)
        parts.append(column_derivatives(model.shape, model.x[members], model.y[members], model.amplitude[members],
                                        float(width)))
        order.append(members)
    members = np.concatenate(order)
    derivatives = sparse.hstack(parts, format="csc")
    # Parameter 3p of the stacked matrix belongs to column members[p].
    position = np.empty(len(members), dtype=np.int64)
    position[members] = np.arange(len(members))
    basis = background_basis(model.shape, model.background_degree if model.background_degree >= 0 else 2)
    derivatives = sparse.hstack([derivatives, sparse.csc_array(basis)], format="csc")
    # Correlated noise C = K diag(v) K^T: prewhitening gives J = (K^-1 D)^T diag(1 / v) (K^-1 D).
    derivatives = whiten_columns(derivatives, model.shape, noise.taps_x, noise.taps_y)
    variance = noise.variance(model.image).ravel()
    weighted = sparse.diags_array(1.0 / variance) @ derivatives
    information = sparse.csc_array(derivatives.T @ weighted)
    if getattr(noise, "line_variance", 0.0) > 0:
        information = information - _line_correction(weighted, variance, model.shape, noise.line_variance,
                                                     noise.line_length_px)
    if columns is None:
        rows, cols = model.shape
        margin = EDGE_MARGIN_SIGMAS * sigma
        columns = np.flatnonzero((model.x >= margin - 0.5) & (model.x <= cols - 0.5 - margin)
                                 & (model.y >= margin - 0.5) & (model.y <= rows - 0.5 - margin))
    columns = np.asarray(columns, dtype=np.int64)
    if max_columns is not None and len(columns) > max_columns:
        columns = columns[np.unique(np.linspace(0, len(columns) - 1, max_columns).round().astype(int))]
    # Amplitude bounds are one solve per column, positions two: columns asked for their amplitude
    # only get NaN position bounds.
    every = np.union1d(columns, np.asarray([] if amplitude_columns is None else amplitude_columns, dtype=np.int64))
    variances = inverse_diagonal(information, np.concatenate([3 * position[columns], 3 * position[columns] + 1,
                                                              3 * position[every] + 2]))
    var_x, var_y = np.full(len(every), np.nan), np.full(len(every), np.nan)
    placed = np.searchsorted(every, columns)
    var_x[placed], var_y[placed] = variances[:len(columns)], variances[len(columns):2 * len(columns)]
    return pd.DataFrame({"column": every, "x_px": model.x[every], "y_px": model.y[every],
                         "crlb_x_px": np.sqrt(var_x), "crlb_y_px": np.sqrt(var_y),
                         "crlb_px": np.sqrt(0.5 * (var_x + var_y)), "amplitude": model.amplitude[every],
                         "crlb_amplitude": np.sqrt(variances[2 * len(columns):])})


def _line_correction(weighted: sparse.sparray, variance: np.ndarray, shape: tuple[int, int], line_variance: float,
                     length_px: float) -> sparse.csc_array:
    """What scan-line noise takes off the Fisher information ``D^T W D`` (``weighted`` = ``W D``,
    pixels x parameters, rows of pixels in row-major order; ``W = diag(1 / variance)``).

    Line noise ``L`` independent between image rows with per-row covariance ``S``
    (:func:`remflow.imagemodel.line_precision` gives ``S^-1``): per row the covariance is
    ``diag(v) + S``, whose inverse is ``W - W (S^-1 + W)^-1 W`` (Woodbury), so the information is
    ``D^T W D - sum_rows (W D_r)^T (S^-1 + W_r)^-1 (W D_r)``; each row's term is dense among
    the parameters of the columns that reach that row and is solved as a tridiagonal system.
    """
    from remflow.imagemodel import line_precision

    rows, cols = shape
    precision = line_precision(cols, line_variance, length_px)
    lower = np.append(precision.diagonal(-1), 0.0)
    upper = np.insert(precision.diagonal(1), 0, 0.0)
    by_pixel = sparse.csr_array(weighted)
    size = by_pixel.shape[1]
    inverse_variance = 1.0 / np.asarray(variance, dtype=np.float64).reshape(shape)
    total = sparse.csr_array((size, size))
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for row in range(rows):
        block = by_pixel[row * cols:(row + 1) * cols]
        touched = np.unique(block.indices)
        if len(touched) == 0:
            continue
        dense = block[:, touched].toarray()
        banded = np.vstack([upper, precision.diagonal() + inverse_variance[row], lower])
        correction = dense.T @ linalg.solve_banded((1, 1), banded, dense)
        parts.append((np.repeat(touched, len(touched)), np.tile(touched, len(touched)), correction.ravel()))
        if sum(len(part[2]) for part in parts) > LINE_CORRECTION_CHUNK:
            i, j, values = (np.concatenate(part) for part in zip(*parts))
            total = total + sparse.csr_array((values, (i, j)), shape=(size, size))
            parts = []
    if parts:
        i, j, values = (np.concatenate(part) for part in zip(*parts))
        total = total + sparse.csr_array((values, (i, j)), shape=(size, size))
    return sparse.csc_array(total)


def image_position_crlb(model, noise, columns: np.ndarray | None = None) -> dict[str, float | None]:
    """``crlb_px`` (per axis, ``sqrt(mean (var_x + var_y) / 2)``) and ``crlb_radial_px``
    (``sqrt(2)`` times it: the bound on a radial RMS error) over ``columns`` of the image
    model (see :func:`image_position_crlbs`; at most SUMMARY_MAX_COLUMNS of them) and
    ``crlb_columns`` (how many); the bounds None (and 0 columns) when there are none or the
    information is singular."""
    if columns is not None and len(columns) == 0:
        return {"crlb_px": None, "crlb_radial_px": None, "crlb_columns": 0}
    try:
        table = image_position_crlbs(model, noise, columns)
    except (ArithmeticError, RuntimeError, ValueError):
        return {"crlb_px": None, "crlb_radial_px": None, "crlb_columns": 0}
    return summarise_crlb(table)


def summarise_crlb(table: pd.DataFrame) -> dict[str, float | None]:
    """:func:`image_position_crlb`'s figures from a table of :func:`image_position_crlbs`:
    ``crlb_px`` (per axis, RMS over the table's columns with position bounds, px),
    ``crlb_radial_px`` (px) and ``crlb_columns`` (how many); the two bounds None without any."""
    table = table[np.isfinite(table["crlb_px"].to_numpy(float))]
    if len(table) == 0:
        return {"crlb_px": None, "crlb_radial_px": None, "crlb_columns": 0}
    per_axis = float(np.sqrt(np.mean(table["crlb_px"] ** 2)))
    return {"crlb_px": per_axis, "crlb_radial_px": per_axis * math.sqrt(2.0), "crlb_columns": len(table)}
