"""A noiseless model of an atom-column image and a Poisson-Gaussian noise model fitted to it.

**Model image.** Every fitted column ``k`` is an isotropic 2D Gaussian of peak height
``A_k`` at its position ``(x_k, y_k)`` with one width ``s_g`` per sublattice ``g``; a smooth
background is a sum of Legendre polynomials of degree <= ``background_degree`` in x and y
(default 2: six terms)::

    m_i = sum_k A_k exp(-((u_i - x_k)^2 + (v_i - y_k)^2) / (2 s_g(k)^2)) + sum_l c_l P_l(u_i, v_i)

For given positions and widths the image is linear in ``A_k`` and ``c_l``: they are fitted
by linear least squares over the *whole* image (sparse normal equations), and the widths
by a bounded 1D search per sublattice around that linear solve. Positions are given (the
raw fit for the noise model; the twin's true positions for replicas, see
:mod:`remflow.precision.twin`). Why our own: atomap's fitted widths come out small and
each column's Gaussian is fitted on its own patch after subtracting a local background,
so its model image is not a least-squares description of the whole image; this is.

**Noise model.** Poisson-Gaussian, possibly correlated between nearby pixels: pixel noise
``n = K * w`` with ``w`` independent, ``Var(w_i) = gain * m_i + read_variance``, and a separable
kernel ``K = [b_x, a_x, 1, a_x, b_x] (along x) x [b_y, a_y, 1, a_y, b_y] (along y)``, each
normalised to unit sum of squares (:func:`axis_kernel`), so that a pixel's variance stays ``gain
* m + read_variance`` where ``m`` varies slowly; ``b = 0`` is the three-tap kernel ``[a, 1, a]``,
``a = b = 0`` independent pixels. ``gain`` is the image units per detected electron,
``read_variance`` Gaussian noise (PMT/readout) minus ``gain * offset`` of a dark level (the two
are not separable from one image; a negative value means an offset). Fit, on the residual ``r =
image - model`` after a separable second-difference filter ``k = [1, -2, 1] x [1, -2, 1]``
(Immerkaer 1996; ``h = k * r`` removes what the model left of the smooth structure, so that model
error does not pass for noise): (1) the taps from the lag-1 and lag-2 correlations of ``h`` along
each axis (:func:`fit_axis_kernel`: ``a`` from lag 1, 0 where not significant,
:func:`_kernel_tap_used`; ``b`` only where lag 2 is significantly off the three-tap kernel's
prediction, then ``a, b`` from both lags through the analytic autocorrelation of ``k * K``,
:func:`filtered_lag_prediction`; the symbol ``1 + 2a cos w + 2b cos 2w`` kept >= MIN_KERNEL_SYMBOL
so that ``K`` has a stable inverse); (2) ``gain`` and ``read_variance`` by an iteratively
reweighted linear regression of ``h^2`` on ``E[h_i^2] = gain * sum_j c_j^2 m_{i+j} +
read_variance * sum_j c_j^2``, ``c = k * K`` the combined kernel (for ``a = b = 0``: ``c^2 = [1,
4, 1] x [1, 4, 1]`` and the norm 36), the read variance kept only where it lies more than
READ_SIGNIFICANCE standard errors from 0 (else 0: a counting image keeps exact zeros in its
replicas, :func:`_variance_regression`); (3) the check of what the kernel cannot represent: the
lag-3 correlation of ``h``, not fitted, against the kernel's prediction, in scatters
(:func:`kernel_misfit`; remflow.precision.basis refuses the twin and the bound beyond 4). The
reduced chi-square of the *prewhitened* residual ``K^-1 r`` (:func:`whiten`) under this variance,
``sum (K^-1 r)^2 / Var / (pixels - parameters)``, says whether the model explains the image: near
1 it does; well above 1 the model misses structure (missing columns, non-Gaussian column shapes,
scan distortion). It is computed under the filtered estimate (under the plain residual's own fit
it would be 1 by construction).

**Scan-line noise.** STEM frames often carry line flicker: an offset that drifts along each
scan line and jumps between lines (probe current, detector). Modelled as ``n = K * (w + L)``
with ``L`` independent between rows and, along x (the fast scan), a stationary AR(1) process of
variance ``line_variance`` and correlation length ``line_length_px`` (:func:`fit_line_noise`,
measured on the prewhitened residual in Gaussian windows along x after a second difference
across rows, which keeps smooth model error out; kept only when significant). The
chi-square then uses the covariance ``diag(v) + S`` per row (Woodbury,
:func:`line_chi_square_reduction`), the plain-residual estimate takes ``line_variance`` off,
replicas carry ``L`` (:meth:`NoiseModel.draw`) and the bound its information
(:func:`remflow.crlb.image_position_crlbs`). The second-difference filter of the gain fit
removes ``L`` where it is smooth along x (correlation lengths of several px; the length grid
starts at 4 px), so the gain and the taps do not see it. Validated
(``tests/validate_line_noise.py fit``, lattices as below plus line noise 0.4 of the pixel
noise: AR(1) of lengths 20 and 100 px, one offset per row, white noise smoothed by a Gaussian
of 15 px (a correlation the model does not have), and 0.2 of the pixel noise at length 100 px;
128x128 and 256x256 px, seeds 1-3): line sigma 0.89-1.14 of the truth (one of 30: 1.31, the
weak case on 128x128 px); chi-square 0.98-1.05; gain 2.16-2.59 on
128x128 px, 2.33-2.55 on 256x256 px (true 2.5). Without line noise (``... false --replicas
40``): none found on 80 images (largest significance 2.73 of the 3 needed). Real frames
(``make run``): exp_hrstem_0 and exp_hrstem_2 carry it (line sigma ~0.4 and ~0.8 of the pixel
noise, lengths 108 and 152 px, significance 4.0 and 4.8; chi-square 1.33 -> 1.17 and 3.17 ->
1.48), exp_hrstem_1 and exp_hrstem_4 not.

Assumptions: noise correlated over at most two pixels along x and along y, through a separable
symmetric five-tap kernel (a detector's bandwidth along the fast scan, a resampled image);
``Var(w)`` evaluated at the pixel (exact when it is constant over the kernel's pixels); Gaussian
columns of one width per sublattice; a smooth background. What it cannot see: noise correlated
beyond the kernel's reach other than through lag 3 (lags 4 and beyond are not checked), a misfit
too small for the lag-3 test on a small image (128x128 px, RC low-pass phi 0.45: the outer tap
was not significant in 2 of 4 seeds, gain then 24-27 % low, not refused; phi 0.6: misfit 2.0-3.2
scatters, not refused, gain 29-35 % low), non-separable or asymmetric correlation, scan-line
jitter (``line_jitter_px`` is taken from the config, not estimated), line noise along y (the slow
scan) or correlated between rows, line noise that the windows cannot resolve (images under 64 px
wide, or line sigma under ~0.2 of the pixel noise on 128x128 px), and columns that the fit did not
find.

Validated (``tests/validate_correlated_noise.py fit``, 128x128 px lattices, peak 400 units,
gain 2.5, read noise 15, seeds 1-3; all within 10 %): independent pixels: gain 2.37-2.55,
read noise 14.9-15.6, taps 0 (not significant), reduced chi-square 1.00-1.05; noise filtered
by [0.3, 1, 0.3] along x: gain 2.41-2.56, read noise 14.9-15.7, taps 0.299-0.305 (y: 0),
chi-square 0.98-1.04; by [0.3, 1, 0.3] along x and [0.15, 1, 0.15] along y: gain 2.38-2.57,
read noise 14.9-15.7, taps x 0.299-0.305, y 0.141-0.152, chi-square 1.00-1.02; outer taps 0 and
lag-3 misfit -0.9 to 1.6 scatters in all nine. Bit-identical to the three-tap code on 20 images
without outer taps (gain, read variance, chi-square, taps, draws, CRLB). RC low-pass along x
(``... misfit``, 256x256 px): phi 0.3, 0.45, 0.6 give gain 2.41, 2.26, 1.80 (three-tap: 2.24,
1.87, 1.41), an isolated column's bound / exact bound 0.98-0.97, 0.97-0.93, 1.00-0.90 (x-y;
three-tap 0.93-0.91, 0.89-0.84, 0.90-0.80) and lag-3 misfit 1.8, 3.8, 7.0 scatters (the last
refused). Details: README, section 'Correlated pixel noise'.

Coordinates: ``x`` column index, ``y`` row index, pixel ``i`` centred at ``i``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
from scipy import linalg, ndimage, optimize, signal, sparse
from scipy.spatial import cKDTree
from scipy.sparse import linalg as sparse_linalg

#: Gaussians are evaluated within this many widths of their centre (beyond: < 4e-6 of the peak).
CUTOFF_SIGMAS = 5.0
#: Reweighting passes of the noise regression (weights from the previous pass's variance).
NOISE_PASSES = 4
#: The read variance is kept only when it is this many standard errors away from 0.
READ_SIGNIFICANCE = 3.0
#: The noise regression's weights stop growing below this fraction of the mean squared residual.
VARIANCE_WEIGHT_FLOOR = 0.01
#: Pixels whose model expects fewer detected electrons than this are left out of the noise fit,
#: and no pixel's variance is taken below that of this many electrons.
DARK_ELECTRONS = 0.01
#: Refits of the noise model without the dark pixels (they depend on the gain found).
DARK_PASSES = 3
#: Widths (px, Gaussian sigma along x) of the windows in which scan-line noise is measured
#: (:func:`measure_line_noise`): at least a column spacing, so that column-scale model error
#: averages out along the row.
LINE_WINDOWS_PX = (8.0, 16.0, 32.0)
#: Pixels within this many window widths of the left or right edge are not used (the window
#: reflects there), and a window is used only where this many widths remain between the edges.
LINE_EDGE_WIDTHS = 3.0
LINE_MIN_SPAN_WIDTHS = 2.0
#: Blocks of rows whose scatter gives the line-noise estimate's error.
LINE_BLOCKS = 8
#: Line noise is modelled only when a window's estimate lies this many errors above 0.
LINE_SIGNIFICANCE = 3.0
#: Correlation lengths (px) among which the line noise's is chosen: from half the narrowest
#: window (shorter line noise is nearly white along the row and passes for pixel noise).
LINE_LENGTHS_PX = tuple(float(v) for v in np.geomspace(4.0, 4096.0, 41))
#: Windows needed to fit both size and length (one window leaves the length undetermined).
LINE_MIN_WINDOWS = 2
#: Below this reduced chi-square (plain residual under the filtered noise model) the model
#: explains the image and the plain residual gives the (more precise) noise estimate.
GOOD_MODEL_CHI_SQUARE = 1.1
#: Largest kernel tap the noise model uses (|a| < 0.5 is needed for an inverse; near 0.5 the
#: whitening multiplies the Nyquist frequency by 1 / (1 - 2a): 50x at 0.49).
MAX_KERNEL_TAP = 0.49
#: Scatter of the lag-1 correlation :func:`noise_correlation` measures on independent pixels,
#: times sqrt(pixels) (measured, 40 white-noise images each: 0.043 at 64x64, 0.007 at 384x384).
CORRELATION_SCATTER = 2.7
#: A measured correlation within this many scatters of 0 is taken as none (kernel tap 0).
SIGNIFICANT_CORRELATION_SIGMAS = 3.0


@dataclass
class ImageModel:
    """Noiseless model of an image (image units); arrays per column have length N."""

    shape: tuple[int, int]
    x: np.ndarray  # (N,) px
    y: np.ndarray  # (N,) px
    sublattice: np.ndarray  # (N,) names
    amplitude: np.ndarray  # (N,) peak heights above the background (image units)
    sigma: dict[str, float]  # width (px) per sublattice
    background_coefficients: np.ndarray  # (L,) of the Legendre terms
    background_degree: int
    image: np.ndarray = field(repr=False)  # (rows, cols) the model

    def column_sigma(self) -> np.ndarray:
        """(N,) width of every column (its sublattice's)."""
        return np.array([self.sigma[str(name)] for name in self.sublattice], dtype=np.float64)

    @property
    def background(self) -> np.ndarray:
        """The smooth background alone (rows, cols)."""
        basis = background_basis(self.shape, self.background_degree)
        return (basis @ self.background_coefficients).reshape(self.shape)

    def crop(self, top: int, left: int, rows: int, cols: int) -> ImageModel:
        """The model of a sub-image (columns of the whole model inside it or near it, shifted)."""
        keep = ((self.x >= left - CUTOFF_SIGMAS * max(self.sigma.values()))
                & (self.x <= left + cols - 1 + CUTOFF_SIGMAS * max(self.sigma.values()))
                & (self.y >= top - CUTOFF_SIGMAS * max(self.sigma.values()))
                & (self.y <= top + rows - 1 + CUTOFF_SIGMAS * max(self.sigma.values())))
        return ImageModel(shape=(rows, cols), x=self.x[keep] - left, y=self.y[keep] - top,
                          sublattice=self.sublattice[keep], amplitude=self.amplitude[keep], sigma=dict(self.sigma),
                          background_coefficients=np.zeros(0), background_degree=-1,
                          image=self.image[top:top + rows, left:left + cols].copy())


@dataclass(frozen=True)
class NoiseModel:
    """``Var = gain * signal + read_variance`` (image units) per pixel, correlated by the kernel
    and, where ``line_variance`` > 0, plus scan-line noise (see the module docs). Raises
    ValueError for line noise without a finite correlation length > 0."""

    gain: float  # image units per detected electron
    read_variance: float  # image units^2; negative = a dark offset of -read_variance / gain
    reduced_chi_square: float  # of the unfiltered residual under this model; ~1 when the model explains the image
    n_pixels: int
    method: str = "filtered"  # "residual" (plain residual, the model explains the image) or "filtered"
    # Lag-1 correlation of the noise of neighbouring pixels along x (fast scan) and y, read
    # through a three-tap kernel (:func:`noise_correlation`); 0 for independent pixels.
    correlation_x: float = float("nan")
    correlation_y: float = float("nan")
    # Taps a (inner) and b (outer) of the noise kernel [b, a, 1, a, b] / sqrt(1 + 2 a^2 + 2 b^2)
    # along x and y (:func:`axis_kernel`): pixel noise = K * w, w independent Poisson-Gaussian;
    # b = 0 is the three-tap kernel, a = b = 0 independent pixels.
    kernel_x: float = 0.0
    kernel_y: float = 0.0
    kernel_outer_x: float = 0.0
    kernel_outer_y: float = 0.0
    # Lag-3 correlation of the filtered residual minus the kernel's prediction, in scatters
    # (:func:`kernel_misfit`); NaN when not measured. Beyond a few scatters
    # the noise is correlated in a way the kernel does not represent (remflow.precision.basis).
    kernel_misfit_x: float = float("nan")
    kernel_misfit_y: float = float("nan")
    # Scan-line noise (:func:`fit_line_noise`) in the prewhitened domain: pixel noise =
    # K * (w + L), L per row an AR(1) process along x of this variance (image units^2) and
    # correlation length (px), independent between rows; variance 0 = none resolved.
    # line_significance: the largest window estimate over its error (NaN: not measured).
    line_variance: float = 0.0
    line_length_px: float = 0.0
    line_significance: float = float("nan")

    def __post_init__(self) -> None:
        if self.line_variance > 0 and not 0.0 < self.line_length_px < math.inf:
            raise ValueError(f"line noise of variance {self.line_variance} needs a finite correlation length > 0 px, "
                             f"got {self.line_length_px}")

    @property
    def line_sigma(self) -> float:
        """Standard deviation of the scan-line noise (image units; 0 when none is modelled)."""
        return math.sqrt(max(self.line_variance, 0.0))

    @property
    def taps_x(self) -> tuple[float, float]:
        """(a, b) of the kernel along x."""
        return (self.kernel_x, self.kernel_outer_x)

    @property
    def taps_y(self) -> tuple[float, float]:
        """(a, b) of the kernel along y."""
        return (self.kernel_y, self.kernel_outer_y)

    @property
    def correlated(self) -> bool:
        """Whether the model's pixel noise is correlated (a kernel tap is not 0)."""
        return any(t != 0.0 for t in (*self.taps_x, *self.taps_y))

    @property
    def read_noise(self) -> float:
        """Gaussian read noise (image units), 0 when the fit says there is none (or an offset)."""
        return math.sqrt(max(self.read_variance, 0.0))

    @property
    def offset(self) -> float:
        """Dark level implied by a negative read variance (image units), else 0."""
        return -self.read_variance / self.gain if self.read_variance < 0 and self.gain > 0 else 0.0

    def variance(self, signal: np.ndarray) -> np.ndarray:
        """Noise variance ``gain * signal + read_variance`` of pixels of noiseless value ``signal``
        (floored at a tiny positive value); without the line noise, which is correlated along the row."""
        variance = self.gain * np.asarray(signal, dtype=np.float64) + self.read_variance
        floor = 1e-6 * max(self.gain, 1e-300) * max(float(np.max(np.abs(signal))), 1e-300)
        if self.gain > 0:  # a pixel expecting almost no electron: as if it expected DARK_ELECTRONS
            floor = max(floor, DARK_ELECTRONS * self.gain**2)
        return np.maximum(variance, floor)

    def electrons(self, signal: float) -> float:
        """Detected electrons behind a noiseless value (``(signal - offset) / gain``)."""
        return max(signal - self.offset, 0.0) / self.gain if self.gain > 0 else float("nan")

    def draw(self, model: np.ndarray, rng: np.random.Generator, line_jitter_px: float = 0.0) -> np.ndarray:
        """One noisy image of ``model``: ``e + K * (w - e + L)`` with ``w = offset + gain *
        Poisson((m - offset) / gain) + N(0, read)`` independent per pixel, ``e`` its mean,
        ``L`` the scan-line noise (:func:`line_noise_field`, drawn after ``w`` and only where
        ``line_variance`` > 0, so draws without it are those of before it existed) and ``K``
        the noise kernel (:func:`correlate_noise`, mode "reflect"; skipped when both taps are
        0, so independent-pixel draws are those of before the kernel existed).

        ``line_jitter_px`` > 0 first displaces each row of the noiseless image along x by its
        own N(0, s) shift (fast-scan jitter, as :func:`remflow.synthetic.degrade` does).
        """
        mean = np.asarray(model, dtype=np.float64)
        if line_jitter_px > 0:
            from remflow.synthetic import shift_rows

            mean = shift_rows(mean, rng.normal(0.0, line_jitter_px, size=mean.shape[0]))
        if not self.gain > 0:
            expected = mean
            noisy = mean + rng.normal(0.0, self.read_noise, size=mean.shape)
        else:
            electrons = np.clip((mean - self.offset) / self.gain, 0.0, None)
            expected = self.offset + self.gain * electrons
            noisy = self.offset + self.gain * rng.poisson(electrons).astype(np.float64)
            if self.read_variance > 0:
                noisy += rng.normal(0.0, self.read_noise, size=mean.shape)
        if self.line_variance > 0:
            noisy = noisy + line_noise_field(mean.shape, self.line_variance, self.line_length_px, rng)
        if not self.correlated:
            return noisy
        return expected + correlate_noise(noisy - expected, self.taps_x, self.taps_y)


# --------------------------------------------------------------------------- model image


def background_basis(shape: tuple[int, int], degree: int) -> np.ndarray:
    """(pixels, L) Legendre polynomials P_a(x') P_b(y'), a + b <= degree, on [-1, 1]^2 (row-major pixels)."""
    rows, cols = shape
    if degree < 0:
        return np.zeros((rows * cols, 0))
    u = np.linspace(-1.0, 1.0, cols) if cols > 1 else np.zeros(1)
    v = np.linspace(-1.0, 1.0, rows) if rows > 1 else np.zeros(1)
    pu = np.polynomial.legendre.legvander(u, degree)  # (cols, degree+1)
    pv = np.polynomial.legendre.legvander(v, degree)
    terms = [np.outer(pv[:, b], pu[:, a]).ravel() for a in range(degree + 1) for b in range(degree + 1 - a)]
    return np.column_stack(terms)


def gaussian_design(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, sigma: np.ndarray) -> sparse.csc_array:
    """Sparse (pixels, N): column k is a unit-peak Gaussian of width ``sigma[k]`` at (x_k, y_k),
    evaluated at pixel centres within CUTOFF_SIGMAS widths."""
    rows, cols = shape
    x, y, sigma = (np.asarray(a, dtype=np.float64) for a in (x, y, sigma))
    half = int(math.ceil(CUTOFF_SIGMAS * float(np.max(sigma)))) if len(sigma) else 0
    offsets = np.arange(-half, half + 1)
    px = np.rint(x)[:, None, None] + offsets[None, None, :]
    py = np.rint(y)[:, None, None] + offsets[None, :, None]
    px, py = np.broadcast_arrays(px, py)
    inside = (px >= 0) & (px < cols) & (py >= 0) & (py < rows)
    k = np.broadcast_to(np.arange(len(x))[:, None, None], inside.shape)[inside]
    dx, dy = px[inside] - x[k], py[inside] - y[k]
    values = np.exp(-(dx**2 + dy**2) / (2.0 * sigma[k] ** 2))
    pixel = (py[inside] * cols + px[inside]).astype(np.int64)
    return sparse.csc_array((values, (pixel, k)), shape=(rows * cols, len(x)))


def _linear_fit(image: np.ndarray, design: sparse.csc_array, basis: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Least squares of the image on [Gaussians | background]: (amplitudes, coefficients, sum of squares)."""
    full = sparse.hstack([design, sparse.csc_array(basis)], format="csc")
    data = np.asarray(image, dtype=np.float64).ravel()
    normal = sparse.csc_array(full.T @ full)
    rhs = full.T @ data
    # Tiny ridge: a column whose Gaussian lies (almost) outside the image has no data.
    normal = normal + sparse.diags_array(1e-10 * max(float(normal.diagonal().max()), 1.0) * np.ones(normal.shape[0]))
    solution = sparse_linalg.spsolve(sparse.csc_array(normal), rhs)
    residual = data - full @ solution
    n = design.shape[1]
    return solution[:n], solution[n:], float(residual @ residual)


def fit_image_model(image: np.ndarray, x: np.ndarray, y: np.ndarray, sublattice: np.ndarray | None = None, *,
                    sigma_start: dict[str, float] | float = 2.0, background_degree: int = 2,
                    fit_sigma: bool = True, sigma_bounds: tuple[float, float] | None = None) -> ImageModel:
    """Fit the model image to ``image`` (rows, cols) with columns at the given (x, y) px.

    ``sublattice`` (N,) names (default all "A"); each sublattice gets one width, searched
    in ``sigma_bounds`` px (default 0.5 .. 3x the start) when ``fit_sigma``, else fixed at
    ``sigma_start``. Amplitudes are peak heights in image units (may come out negative
    where the data say so). Raises ValueError for a non-2D or non-finite image or no columns.
    """
    data = np.asarray(image, dtype=np.float64)
    if data.ndim != 2 or not np.isfinite(data).all():
        raise ValueError(f"expected a finite 2D image, got shape {data.shape}")
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) == 0 or len(x) != len(y):
        raise ValueError("need at least one column position, x and y of equal length")
    names = np.full(len(x), "A", dtype=object) if sublattice is None else np.asarray(sublattice, dtype=object)
    groups = sorted({str(n) for n in names})
    starts = {g: float(sigma_start[g] if isinstance(sigma_start, dict) else sigma_start) for g in groups}
    basis = background_basis(data.shape, background_degree)
    sigma = dict(starts)

    def cost(trial: dict[str, float]) -> float:
        widths = np.array([trial[str(n)] for n in names])
        return _linear_fit(data, gaussian_design(data.shape, x, y, widths), basis)[2]

    if fit_sigma:
        for _ in range(2 if len(groups) > 1 else 1):  # one coordinate pass per sublattice (twice when coupled)
            for group in groups:
                low, high = sigma_bounds or (0.5, 3.0 * starts[group])
                best = optimize.minimize_scalar(lambda s: cost({**sigma, group: s}), bounds=(low, high),
                                                method="bounded", options={"xatol": 1e-3})
                sigma[group] = float(best.x)
    widths = np.array([sigma[str(n)] for n in names])
    design = gaussian_design(data.shape, x, y, widths)
    amplitude, coefficients, _ = _linear_fit(data, design, basis)
    model = (design @ amplitude + basis @ coefficients).reshape(data.shape)
    return ImageModel(shape=data.shape, x=x, y=y, sublattice=names, amplitude=amplitude, sigma=sigma,
                      background_coefficients=coefficients, background_degree=background_degree, image=model)


def refit_amplitudes(image: np.ndarray, model: ImageModel, x: np.ndarray, y: np.ndarray) -> ImageModel:
    """The same model with columns moved to (x, y): widths kept, amplitudes and background refitted."""
    data = np.asarray(image, dtype=np.float64)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    basis = background_basis(data.shape, model.background_degree)
    design = gaussian_design(data.shape, x, y, model.column_sigma())
    amplitude, coefficients, _ = _linear_fit(data, design, basis)
    image_model = (design @ amplitude + basis @ coefficients).reshape(data.shape)
    return ImageModel(shape=data.shape, x=x, y=y, sublattice=model.sublattice, amplitude=amplitude,
                      sigma=dict(model.sigma), background_coefficients=coefficients,
                      background_degree=model.background_degree, image=image_model)


# --------------------------------------------------------------------------- noise model


def _second_difference(values: np.ndarray) -> np.ndarray:
    """[1, -2, 1] along both axes (valid part only: the outermost pixel ring is dropped)."""
    kernel = np.array([1.0, -2.0, 1.0])
    out = ndimage.correlate1d(values, kernel, axis=0, mode="nearest")
    out = ndimage.correlate1d(out, kernel, axis=1, mode="nearest")
    return out[1:-1, 1:-1]


def _variance_regression(squared: np.ndarray, signal: np.ndarray, norm: float) -> tuple[float, float]:
    """(gain, read_variance) from ``E[squared] = gain * signal + norm * read_variance``, by
    iteratively reweighted least squares (Var(h^2) ~ 2 E[h^2]^2 for near-Gaussian h).

    The read variance is kept only where it differs from 0 by more than READ_SIGNIFICANCE
    standard errors (sandwich estimate, :func:`_read_variance_error`); otherwise the gain is
    refitted with the read variance 0. Why: at a few electrons per pixel a spurious read
    term changes the *shape* of the twin's noise (negative values where counts are 0),
    and atomap's refinement, which subtracts the median of the lowest 3 % of a column's
    pixels, reacts to that shape: on Poisson lattices at 50 e/A^2 (true read variance 0)
    a fitted read noise of 0.19 (gain 0.91) made the twin's raw fits 18 % more precise
    than the real ones with the true positions given; with the read term dropped they
    agreed within 2-6 % (seeds 0-2; README, section on the twin). At 3 standard errors the
    read term was dropped on all 24 Poisson lattices tried (50 and 300 e/A^2, seeds 0-11;
    at 2, seed 5 kept 0.029); the synthetic Poisson-Gaussian images (read noise 15) keep it.
    """
    design = np.column_stack([signal, np.full(len(signal), norm)])
    # Weights stop growing below this predicted variance: a pixel of model value ~0 would
    # otherwise carry the whole regression (its predicted variance collapses to the floor).
    floor = VARIANCE_WEIGHT_FLOOR * max(float(np.mean(squared)), 1e-300)
    gain, read_variance, weights = _irls(design, squared, floor)
    if abs(read_variance) <= READ_SIGNIFICANCE * _read_variance_error(design, squared, weights,
                                                                      np.array([gain, read_variance])):
        gain, _ = _irls(design[:, :1], squared, floor)
        read_variance = 0.0
    return float(gain), float(read_variance)


def _irls(design: np.ndarray, squared: np.ndarray, floor: float) -> tuple:
    """Coefficients of ``E[squared] = design @ beta`` by IRLS with weights ``1 / max(predicted, floor)^2``;
    returns (*beta, weights of the last pass)."""
    weights = np.ones(len(squared))
    beta = np.zeros(design.shape[1])
    for _ in range(NOISE_PASSES):
        root = np.sqrt(weights)
        beta, *_ = np.linalg.lstsq(design * root[:, None], squared * root, rcond=None)
        predicted = np.maximum(design @ beta, floor)
        weights = 1.0 / predicted**2
    return (*beta, weights)


def _read_variance_error(design: np.ndarray, squared: np.ndarray, weights: np.ndarray, beta: np.ndarray) -> float:
    """Standard error of the read-variance coefficient: the heteroscedasticity-consistent
    (sandwich, White 1980) covariance ``B^-1 (X^T W diag(e^2) W X) B^-1``, ``B = X^T W X``.
    Treats the squared values as independent; for the filtered residual neighbours share
    pixels, so the error is somewhat too small and the read term kept somewhat too often."""
    residual = squared - design @ beta
    bread = design.T @ (design * weights[:, None])
    meat = design.T @ (design * (weights**2 * residual**2)[:, None])
    try:
        inverse = np.linalg.inv(bread)
    except np.linalg.LinAlgError:
        return float("inf")
    covariance = inverse @ meat @ inverse
    return float(math.sqrt(max(covariance[1, 1], 0.0)))


def _lag1_filtered_correlation(kernel_tap: float) -> float:
    """Lag-1 correlation of the second-differenced noise along one axis when that axis' noise
    is white noise filtered by ``[a, 1, a]`` (``a`` = ``kernel_tap``); -2/3 for ``a`` = 0."""
    norm = 1.0 + 2.0 * kernel_tap**2
    rho1, rho2 = 2.0 * kernel_tap / norm, kernel_tap**2 / norm
    # [1, -2, 1] has autocorrelation weights 6, -4, 1 at lags 0, 1, 2.
    c0 = 6.0 - 8.0 * rho1 + 2.0 * rho2
    c1 = 7.0 * rho1 - 4.0 - 4.0 * rho2
    return c1 / c0


def tap_correlation(tap: float) -> float:
    """Lag-1 correlation ``rho1 = 2a / (1 + 2a^2)`` of noise filtered by ``[a, 1, a]``."""
    return 2.0 * tap / (1.0 + 2.0 * tap**2)


def _lag_correlation(data: np.ndarray, mask: np.ndarray, axis: int, lag: int) -> float:
    """Correlation of ``data`` with itself shifted by ``lag`` pixels along ``axis`` over the
    pairs whose two pixels are both in ``mask``; NaN without pairs."""
    first = [slice(None), slice(None)]
    second = [slice(None), slice(None)]
    first[axis], second[axis] = slice(lag, None), slice(None, -lag)
    pairs = mask[tuple(first)] & mask[tuple(second)]
    if not pairs.any():
        return float("nan")
    a, b = data[tuple(first)][pairs], data[tuple(second)][pairs]
    return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))


def filtered_lag_correlations(filtered: np.ndarray, keep: np.ndarray | None = None,
                              lags: tuple[int, ...] = (1, 2, 3)) -> tuple[np.ndarray, np.ndarray]:
    """Measured correlations of the second-differenced residual ``filtered`` (rows, cols) at
    ``lags`` pixels along x and along y (``keep``: pixels to use): two arrays of len(lags),
    NaN for a lag without pixel pairs. :func:`filtered_lag_prediction` gives a kernel's."""
    data = np.asarray(filtered, dtype=np.float64)
    mask = np.ones(data.shape, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    return tuple(np.array([_lag_correlation(data, mask, axis, lag) for lag in lags]) for axis in (1, 0))


def _three_tap(lag1: float) -> float:
    """Tap ``a`` of ``[a, 1, a]`` whose filtered lag-1 correlation is ``lag1`` (clipped to [-0.5, 0.5])."""
    if not math.isfinite(lag1):
        return float("nan")
    low, high = _lag1_filtered_correlation(-0.5), _lag1_filtered_correlation(0.5)
    if lag1 <= low:
        return -0.5
    if lag1 >= high:
        return 0.5
    return float(optimize.brentq(lambda t: _lag1_filtered_correlation(t) - lag1, -0.5, 0.5, xtol=1e-6))


def noise_kernel_taps(filtered: np.ndarray, keep: np.ndarray | None = None) -> tuple[float, float]:
    """Taps ``a`` of the three-tap noise kernel ``[a, 1, a]`` along x and along y, from the
    second-differenced residual ``filtered`` (rows, cols) of :func:`fit_noise_model`
    (``keep``: pixels to use); see :func:`noise_correlation` for the method. ``a`` lies in
    [-0.5, 0.5]; a measured correlation beyond that range is clipped to the limit (the
    kernel then cannot represent the noise: remflow.precision.basis refuses such a twin).
    The lag-1 reading only: :func:`fit_axis_kernel` adds the outer tap from lag 2.
    Returns NaN for an axis without pixel pairs.
    """
    lags_x, lags_y = filtered_lag_correlations(filtered, keep, lags=(1,))
    return _three_tap(float(lags_x[0])), _three_tap(float(lags_y[0]))


def noise_correlation(filtered: np.ndarray, keep: np.ndarray | None = None) -> tuple[float, float]:
    """Lag-1 correlation of the pixel noise along x and along y, from the second-differenced
    residual ``filtered`` (rows, cols) of :func:`fit_noise_model` (``keep``: pixels to use).

    Why from the filtered residual: the filter removes smooth model error, which would
    otherwise pass for correlated noise. For independent pixels the filtered residual's
    lag-1 correlation along an axis is exactly -2/3 (the [1, -2, 1] kernel's 6, -4, 1
    autocorrelation), whatever the pixels' variances. Noise low-passed along an axis (a
    detector's bandwidth along the fast scan, a resampled image) raises it towards 0;
    sharpened noise lowers it. It is converted to the noise's own lag-1 correlation
    ``rho1 = 2a / (1 + 2a^2)`` under a three-tap kernel ``[a, 1, a]``, ``a`` in [-0.5, 0.5]
    (``rho1`` in [-2/3, 2/3]; values beyond are clipped there); :func:`noise_kernel_taps`
    gives ``a``. This lag-1 reading is what ``correlation_x``/``_y`` hold (and the gate
    MAX_NOISE_CORRELATION judges), also where the fitted kernel has an outer tap.

    Validated (tests/test_twin.py, 128x128 px lattices): independent Poisson-Gaussian pixels
    give 0.005 (x) and 0.006 (y), also under a model with 10-20 % too wide columns; noise
    filtered by [0.3, 1, 0.3] along x gives 0.507 along x (true 0.508) and -0.02 along y,
    with or without that model error. Real default frames (x, y; whole frame, the twin's noise
    mask): exp_hrstem_0 0.05, 0.00; exp_hrstem_1 0.08, 0.00; exp_hrstem_2 0.07, 0.00;
    exp_hrstem_4 0.44, 0.25. Scatter for independent pixels: about 2.7 / sqrt(pixels) (0.043
    at 64x64, 0.007 at 384x384; 40 white-noise images each).
    Returns NaN for an axis without pixel pairs.
    """
    tap_x, tap_y = noise_kernel_taps(filtered, keep)
    return tap_correlation(tap_x), tap_correlation(tap_y)


# --------------------------------------------------------------------------- correlated noise


#: Entries of the inverse noise kernel below this fraction of its largest are dropped
#: (the inverse of [a, 1, a] decays as p^|n|, p = (sqrt(1 - 4a^2) - 1) / (2a)).
WHITENING_TOLERANCE = 1e-6
#: Smallest value of the kernel's symbol ``1 + 2a cos w + 2b cos 2w`` (frequency w) the noise
#: model uses: the whitening multiplies frequency w by sqrt(1 + 2a^2 + 2b^2) / symbol. For
#: b = 0 the same limit as MAX_KERNEL_TAP (symbol 1 - 2a at the Nyquist frequency).
MIN_KERNEL_SYMBOL = 1.0 - 2.0 * MAX_KERNEL_TAP
#: Scatter of the filtered residual's lag-2 correlation about the prediction of the three-tap
#: kernel read from its lag 1 (the outer tap's significance), times sqrt(pixels). Measured
#: (150 white-noise images of 128x128 px per kernel): 0.65 for independent pixels, 0.82 and
#: 0.85 for taps 0.15 and 0.3, 0.76-0.89 for five-tap kernels; on Poisson lattices (100 images
#: each, tests/validate_correlated_noise.py rates) 0.65-0.69, 0.81-0.92 (three-tap), 0.88-0.91
#: (five-tap); the largest, rounded up.
LAG2_SCATTER = 0.95
#: Scatter of the filtered residual's lag-3 correlation about the fitted kernel's prediction,
#: times sqrt(pixels), by the taps fitted (none, a, a and b): the prediction of a kernel fitted
#: to lags 1-2 shares their scatter. Measured as LAG2_SCATTER: 1.87 (the lag-3 correlation
#: itself, independent pixels); 1.53-1.68 (a from lag 1); 0.67-0.83 (a, b from lags 1-2);
#: each rounded up.
LAG3_SCATTER = {0: 1.9, 1: 1.7, 2: 0.85}

#: Taps of the kernel along one axis: ``a`` alone (three taps) or ``(a, b)`` (five taps).
AxisTaps = float | tuple[float, float]


def _axis_taps(taps: AxisTaps) -> tuple[float, float]:
    """``(a, b)`` of a kernel given as ``a`` (b = 0) or ``(a, b)``."""
    if isinstance(taps, (tuple, list)):
        return float(taps[0]), float(taps[1])
    return float(taps), 0.0


def kernel_symbol_minimum(taps: AxisTaps) -> float:
    """``min_w 1 + 2a cos w + 2b cos 2w`` (unnormalised kernel, centre tap 1): with
    ``c = cos w`` the quadratic ``4b c^2 + 2a c + 1 - 2b`` on [-1, 1], so its ends ``1 +- 2a +
    2b`` and, for b > 0, its vertex ``1 - 2b - a^2 / (4b)`` at ``c = -a / (4b)``. The kernel
    has an inverse (whitening) only where this is > 0; for b = 0 it is ``1 - 2|a|``. Validated
    (tests/test_twin.py): within 1e-6 of the minimum over 20001 sampled frequencies for four
    kernels."""
    a, b = _axis_taps(taps)
    values = [1.0 + 2.0 * a + 2.0 * b, 1.0 - 2.0 * a + 2.0 * b]
    if b > 0.0 and abs(a) <= 4.0 * b:
        values.append(1.0 - 2.0 * b - a * a / (4.0 * b))
    return min(values)


def _raw_kernel(taps: AxisTaps) -> np.ndarray:
    """``[a, 1, a]`` or ``[b, a, 1, a, b]``, not normalised, not checked."""
    a, b = _axis_taps(taps)
    return np.array([a, 1.0, a]) if b == 0.0 else np.array([b, a, 1.0, a, b])


def axis_kernel(taps: AxisTaps) -> np.ndarray:
    """``[b, a, 1, a, b] / sqrt(1 + 2 a^2 + 2 b^2)`` (``[a, 1, a] / sqrt(1 + 2 a^2)`` when b = 0;
    ``taps`` is ``a`` or ``(a, b)``): unit sum of squares, so that filtering independent noise
    of slowly varying variance ``v`` keeps each pixel's variance ``v``. Raises ValueError
    unless the symbol :func:`kernel_symbol_minimum` is > 0 (for b = 0: ``|a| < 0.5``; at the
    limit the kernel removes a frequency and has no inverse)."""
    if not kernel_symbol_minimum(taps) > 0.0:
        raise ValueError(f"noise kernel taps {taps} have no inverse (symbol not > 0; for b = 0 |a| must be < 0.5)")
    a, b = _axis_taps(taps)
    return _raw_kernel(taps) / math.sqrt(1.0 + 2.0 * a**2 + 2.0 * b**2)


def correlate_noise(noise: np.ndarray, tap_x: AxisTaps, tap_y: AxisTaps) -> np.ndarray:
    """``K * noise`` (rows, cols): :func:`axis_kernel` of ``tap_x`` along x (axis 1) and of
    ``tap_y`` along y (axis 0), scipy.ndimage.correlate1d, mode "reflect"."""
    out = ndimage.correlate1d(np.asarray(noise, dtype=np.float64), axis_kernel(tap_x), axis=1, mode="reflect")
    return ndimage.correlate1d(out, axis_kernel(tap_y), axis=0, mode="reflect")


def kernel_matrix(size: int, tap: AxisTaps) -> np.ndarray:
    """(size, size) matrix M of :func:`axis_kernel` along one axis of ``size`` pixels, with
    :func:`correlate_noise`'s boundary: ``M @ x == correlate1d(x, kernel, mode="reflect")``."""
    return ndimage.correlate1d(np.eye(size), axis_kernel(tap), axis=0, mode="reflect")


def whitening_matrix(size: int, tap: AxisTaps) -> sparse.csr_array:
    """Sparse (size, size) inverse of :func:`kernel_matrix` (exact inverse of the finite,
    reflect-boundary kernel, entries below WHITENING_TOLERANCE of the largest dropped: for
    b = 0 a band of ``ln(tol) / ln|p|`` pixels each side, 11 for ``a`` = 0.25, 30 for 0.45). A
    dense inverse (measured: 0.13 s at 384 px, 1.0 s at 2048 px), cached: do not modify the
    result."""
    return _whitening_matrix(size, *_axis_taps(tap))


@lru_cache(maxsize=16)
def _whitening_matrix(size: int, tap: float, outer: float) -> sparse.csr_array:
    if tap == 0.0 and outer == 0.0:
        return sparse.identity(size, format="csr")
    inverse = np.linalg.inv(kernel_matrix(size, (tap, outer)))
    inverse[np.abs(inverse) < WHITENING_TOLERANCE * np.abs(inverse).max()] = 0.0
    return sparse.csr_array(inverse)


def _is_identity(taps: AxisTaps) -> bool:
    return _axis_taps(taps) == (0.0, 0.0)


def whiten(residual: np.ndarray, tap_x: AxisTaps, tap_y: AxisTaps) -> np.ndarray:
    """``K^-1 r`` (rows, cols): undoes :func:`correlate_noise`, so that noise of the model
    ``K * w`` becomes its independent ``w``."""
    data = np.asarray(residual, dtype=np.float64)
    if _is_identity(tap_x) and _is_identity(tap_y):
        return data
    rows, cols = data.shape
    return whitening_matrix(rows, tap_y) @ data @ whitening_matrix(cols, tap_x).T


def whiten_columns(matrix: sparse.sparray, shape: tuple[int, int], tap_x: AxisTaps,
                   tap_y: AxisTaps) -> sparse.csc_array:
    """``K^-1 D`` for a sparse (pixels, P) ``matrix`` whose rows are the pixels of ``shape``
    in row-major order (each column an image): the separable inverse kernel as two banded
    sparse products, ``(Gy kron I)(I kron Gx) D``."""
    rows, cols = shape
    out = sparse.csc_array(matrix)
    if not _is_identity(tap_x):
        out = sparse.kron(sparse.identity(rows, format="csr"), whitening_matrix(cols, tap_x), format="csr") @ out
    if not _is_identity(tap_y):
        out = sparse.kron(whitening_matrix(rows, tap_y), sparse.identity(cols, format="csr"), format="csr") @ out
    return sparse.csc_array(out)


def _filtered_squared_signal(signal: np.ndarray, tap_x: AxisTaps, tap_y: AxisTaps) -> tuple[np.ndarray, float]:
    """``sum_j ((k * K)_j)^2 m_{i+j}`` on the filtered residual's grid and the norm
    ``sum_j ((k * K)_j)^2``: ``E[h_i^2] = gain * first + norm * read_variance`` for
    ``h = k * r``, ``r = K * w`` (k the second difference along both axes)."""
    second = np.array([1.0, -2.0, 1.0])
    combined_x = np.convolve(second, axis_kernel(tap_x)) ** 2
    combined_y = np.convolve(second, axis_kernel(tap_y)) ** 2
    weighted = ndimage.correlate1d(ndimage.correlate1d(signal, combined_y, axis=0, mode="nearest"),
                                   combined_x, axis=1, mode="nearest")[1:-1, 1:-1]
    return weighted, float(combined_x.sum() * combined_y.sum())


def filtered_lag_prediction(taps: AxisTaps, lags: tuple[int, ...]) -> np.ndarray:
    """Correlations at ``lags`` along one axis of the second-differenced noise when that axis'
    noise is white noise filtered by the kernel of ``taps``: ``c_L / c_0`` with ``c`` the
    autocorrelation of ``[1, -2, 1] * K`` (exact for a constant variance; the other axis'
    filter and kernel cancel in the ratio). For independent pixels ``-2/3, 1/6, 0`` at lags
    1-3; the five-tap kernel reaches lag 6. Any real taps (not checked: used in the fit).
    Validated: mean of 150 white-noise images of 128x128 px filtered by (a, b) = (0, 0), (0.15,
    0), (0.3, 0), (0.35, 0.12), (0.2, -0.08) along x within 0.0016 of the prediction at lags 1-3
    (e.g. (0.35, 0.12): measured -0.4628, -0.0040, -0.1063; predicted -0.4644, -0.0042, -0.1048);
    the real frame exp_hrstem_4 (varying variance) within 0.006 at lags 1-4 after the fit
    (README, section 'Correlated pixel noise')."""
    combined = np.convolve(np.array([1.0, -2.0, 1.0]), _raw_kernel(taps))
    autocorrelation = np.correlate(combined, combined, mode="full")[len(combined) - 1:]
    return np.array([autocorrelation[lag] / autocorrelation[0] if lag < len(autocorrelation) else 0.0
                     for lag in lags])


def _limit_kernel(tap: float, outer: float) -> tuple[float, float]:
    """The taps shrunk towards 0 (both by one factor) until the symbol is at least
    MIN_KERNEL_SYMBOL; for b = 0 the clip of ``a`` to +-MAX_KERNEL_TAP."""
    if kernel_symbol_minimum((tap, outer)) >= MIN_KERNEL_SYMBOL:
        return tap, outer
    if outer == 0.0:
        return float(np.clip(tap, -MAX_KERNEL_TAP, MAX_KERNEL_TAP)), 0.0
    # The symbol is linear in the factor at every frequency, so its minimum is concave in it.
    factor = optimize.brentq(lambda f: kernel_symbol_minimum((f * tap, f * outer)) - MIN_KERNEL_SYMBOL,
                             0.0, 1.0, xtol=1e-9)
    return float(factor * tap), float(factor * outer)


def fit_axis_kernel(lags: np.ndarray, pixels: float) -> tuple[float, float]:
    """Taps ``(a, b)`` of the kernel along one axis from the filtered residual's measured
    lag-1 and lag-2 correlations ``lags[0], lags[1]`` (:func:`filtered_lag_correlations`).

    ``a`` first as before: the three-tap reading of lag 1, 0 unless significant
    (:func:`_kernel_tap_used`). The outer tap ``b`` only when lag 2 differs from that
    three-tap kernel's prediction by more than SIGNIFICANT_CORRELATION_SIGMAS x LAG2_SCATTER /
    sqrt(``pixels``); then ``a`` and ``b`` solve both lags (:func:`filtered_lag_prediction`,
    least squares from the three-tap reading), shrunk until the symbol is at least
    MIN_KERNEL_SYMBOL (:func:`_limit_kernel`). So noise the three-tap kernel describes keeps
    its three-tap result, independent pixels theirs (0, 0). ``pixels``: the effective count
    (:func:`_effective_pixels`). Assumes the correlation separable and the same over the image.
    What it cannot see: correlation beyond lag 2 (:func:`kernel_misfit` checks lag 3); an outer
    tap too small for the test (128x128 px, RC low-pass phi 0.45: not used in 2 of 4 seeds).

    Validated (tests/validate_correlated_noise.py rates, 200 lattice images per row, 96x96 and
    128x128 px): outer taps on independent and three-tap noise 3 of 1200 (0 of 400 independent),
    on five-tap noise (0.35, 0.12) 400 of 400 (last fits (0.355, 0.113), (0.344, 0.119)); RC noise
    phi 0.45 at 256x256 px: (0.197, 0.039) and the gain 2.26 of 2.5 (three-tap 1.87) (``... misfit``).
    """
    r1 = float(lags[0])
    r2 = float(lags[1]) if len(lags) > 1 else float("nan")
    measured = _three_tap(r1)
    tap = _kernel_tap_used(measured, pixels)
    if not math.isfinite(r2):
        return tap, 0.0
    # Against the measured (not the significance-ruled) tap: its prediction shares lag 2's scatter.
    deviation = r2 - float(filtered_lag_prediction(measured, (2,))[0])
    if abs(deviation) <= SIGNIFICANT_CORRELATION_SIGMAS * LAG2_SCATTER / math.sqrt(max(pixels, 1.0)):
        return tap, 0.0
    target = np.array([r1, r2])
    solution = optimize.least_squares(lambda t: filtered_lag_prediction((t[0], t[1]), (1, 2)) - target,
                                      x0=[measured, 0.0], bounds=([-1.0, -1.0], [1.0, 1.0]), xtol=1e-10)
    return _limit_kernel(float(solution.x[0]), float(solution.x[1]))


def kernel_misfit(lags: np.ndarray, taps: AxisTaps, pixels: float) -> float:
    """Measured lag-3 correlation of the filtered residual (``lags[2]``) minus the prediction
    of the kernel ``taps`` (:func:`filtered_lag_prediction`), in scatters LAG3_SCATTER /
    sqrt(``pixels``); NaN when not measured. Lags 1 and 2 are fitted, lag 3 is not: a deviation
    of many scatters says the noise is correlated in a way the kernel does not represent
    (longer than it reaches, e.g. a detector's exponential low-pass of large time constant).
    The scatter depends on the taps fitted (LAG3_SCATTER: none, ``a``, ``a`` and ``b``).
    What it cannot see: deviations at lags 4 and beyond alone, and small ones on small images
    (128x128 px, RC phi 0.6: 2.0-3.2 scatters with the gain 29-35 % low).

    Validated (tests/validate_correlated_noise.py rates and misfit): |misfit| > 4 on 1 of 1600
    lattice images of independent, three-tap and five-tap noise (largest 4.26, independent);
    RC low-pass along x at 256x256 px: phi 0.3, 0.45, 0.6 give 1.8, 3.8, 7.0; exp_hrstem_4 0.8
    (x), 1.6 (y)."""
    if len(lags) < 3 or not math.isfinite(float(lags[2])):
        return float("nan")
    a, b = _axis_taps(taps)
    deviation = float(lags[2]) - float(filtered_lag_prediction(taps, (3,))[0])
    scatter = LAG3_SCATTER[2 if b != 0.0 else 1 if a != 0.0 else 0]
    return deviation / (scatter / math.sqrt(max(pixels, 1.0)))


def _effective_pixels(variance: np.ndarray) -> float:
    """``(sum v)^2 / sum v^2``: the pixels a correlation of noise of variances ``v`` rests on
    (all of them for a uniform variance, fewer where bright columns dominate). Validated
    (``tests/validate_correlated_noise.py scatter``, 200 Poisson draws of lattices): scatter of
    the lag-1 correlation 0.032-0.035 at 96x96 px (6267 effective of 8836; predicted 2.7 /
    sqrt(6267) = 0.034) and 0.023-0.026 at 128x128 px (predicted 0.025)."""
    v = np.maximum(np.asarray(variance, dtype=np.float64).ravel(), 0.0)
    total = float(np.sum(v**2))
    return float(np.sum(v)) ** 2 / total if total > 0 else float(v.size)


def _kernel_tap_used(measured: float, pixels: float) -> float:
    """The tap the noise model uses for a measured one: 0 when its lag-1 correlation is within
    SIGNIFICANT_CORRELATION_SIGMAS of the scatter that independent pixels give
    (CORRELATION_SCATTER / sqrt(``pixels``), ``pixels`` the effective count), else the
    measured tap clipped to +-MAX_KERNEL_TAP (the limit itself has no inverse).

    Why not always the measured tap: the filtered noise estimate's norm moves by ~8/6 of the
    correlation per axis, so the scatter of a tap measured on independent pixels alone would
    move the variance (96x96 px, dose 500 e/A^2 of tests/test_twin.py's CRLB test: a tap of
    -0.025, correlation -0.050, 1.33 scatters of 5062 effective pixels, moved the reduced
    chi-square from 1.01 to 1.12 and the image CRLB by 12 %). The rule's cost: the same image
    at 20000 e/A^2 (independent Poisson pixels) measures -0.113, 2.93 scatters: just under the
    rule, so 0; at 3 scatters about 1 axis in 370 of independent images (1 image in 185) gets a spurious tap.
    """
    if not math.isfinite(measured):
        return 0.0
    scatter = CORRELATION_SCATTER / math.sqrt(max(pixels, 1.0))
    if abs(tap_correlation(measured)) <= SIGNIFICANT_CORRELATION_SIGMAS * scatter:
        return 0.0
    return float(np.clip(measured, -MAX_KERNEL_TAP, MAX_KERNEL_TAP))


# --------------------------------------------------------------------------- scan-line noise


def line_precision(cols: int, variance: float, length_px: float) -> sparse.csr_array:
    """(cols, cols) tridiagonal inverse of the covariance ``variance * phi^|i - j|`` of one row's
    line noise, ``phi = exp(-1 / length_px)`` (a stationary AR(1) process along x); needs
    ``cols`` >= 1, ``variance`` > 0 (image units^2) and a finite ``length_px`` > 0."""
    phi = math.exp(-1.0 / length_px)
    scale = 1.0 / (variance * (1.0 - phi**2))
    diagonal = np.full(cols, 1.0 + phi**2)
    diagonal[[0, -1]] = 1.0
    if cols == 1:
        diagonal[:] = 1.0 - phi**2
    return sparse.diags_array([np.full(cols - 1, -phi), diagonal, np.full(cols - 1, -phi)], offsets=[-1, 0, 1],
                              format="csr") * scale


def line_noise_field(shape: tuple[int, int], variance: float, length_px: float,
                     rng: np.random.Generator) -> np.ndarray:
    """(rows, cols) scan-line noise: per row, independent of the other rows, a stationary AR(1)
    process along x of ``variance`` and correlation ``exp(-|lag| / length_px)`` (image units)."""
    rows, cols = shape
    phi = math.exp(-1.0 / length_px)
    innovations = rng.normal(0.0, 1.0, size=(rows, cols))
    innovations[:, 0] *= math.sqrt(variance)  # the stationary start
    innovations[:, 1:] *= math.sqrt(variance * (1.0 - phi**2))
    return signal.lfilter([1.0], [1.0, -phi], innovations, axis=1)


def _window_weights(width_px: float) -> np.ndarray:
    """The Gaussian smoothing weights of :func:`scipy.ndimage.gaussian_filter1d` (truncate 4)."""
    half = int(4.0 * width_px + 0.5)
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets / width_px) ** 2)
    return weights / weights.sum()


def _line_correlation_sum(width_px: float, length_px: float) -> float:
    """``Var(g * L) / Var(L)`` for the window ``g`` of :func:`_window_weights` and an AR(1) line
    noise of correlation length ``length_px``: ``sum_h a_h phi^|h|``, ``a`` the autocorrelation of ``g``."""
    weights = _window_weights(width_px)
    autocorrelation = np.correlate(weights, weights, mode="full")
    lags = np.arange(len(autocorrelation)) - (len(weights) - 1)
    return float(np.sum(autocorrelation * math.exp(-1.0 / length_px) ** np.abs(lags)))


def measure_line_noise(white: np.ndarray, variance: np.ndarray,
                       mask: np.ndarray | None = None) -> list[tuple[float, float, float]]:
    """Variance of the scan-line noise in windows along x: ``(width_px, estimate, error)`` per
    width of LINE_WINDOWS_PX that the image is wide enough for (see :func:`fit_line_noise`).

    ``white``: the prewhitened residual (rows, cols; image units); ``variance``: its independent
    pixel noise variance (rows, cols; image units^2); ``mask``: the pixels whose filtered value
    counts (default all; the window still reaches 4 widths along x and one row up and down). Per width ``s``:
    ``h = d_y * (g_s *_x white)``, ``d_y = [1, -2, 1]`` along y, ``g_s`` a Gaussian of width ``s``
    along x; ``E[h^2] = sum (d_y g_s)^2 v + 6 Var(g_s * L)`` for line noise ``L`` independent
    between rows, so ``Var(g_s * L) = mean(h^2 - sum (d_y g_s)^2 v) / 6``; the second
    difference across rows removes model error that is smooth over neighbouring rows. Error:
    the scatter of the estimate over LINE_BLOCKS blocks of rows.
    """
    data = np.asarray(white, dtype=np.float64)
    rows, cols = data.shape
    keep = np.ones(data.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    out = []
    for width in LINE_WINDOWS_PX:
        edge = int(math.ceil(LINE_EDGE_WIDTHS * width))
        if cols - 2 * edge < LINE_MIN_SPAN_WIDTHS * width or rows < 3 * LINE_BLOCKS:
            continue
        weights = _window_weights(width)
        smooth = ndimage.correlate1d(data, weights, axis=1, mode="reflect")
        filtered = smooth[2:] - 2.0 * smooth[1:-1] + smooth[:-2]
        expected = ndimage.correlate1d(ndimage.correlate1d(np.asarray(variance, dtype=np.float64), weights**2, axis=1,
                                                           mode="reflect"), [1.0, 4.0, 1.0], axis=0, mode="reflect")
        excess = (filtered**2 - expected[1:-1]) / 6.0
        used = keep[1:-1].copy()
        used[:, :edge] = False
        used[:, cols - edge:] = False
        blocks = [excess[part][used[part]] for part in np.array_split(np.arange(rows - 2), LINE_BLOCKS)]
        means = np.array([block.mean() for block in blocks if block.size])
        if len(means) < 2 or not used.any():
            continue
        out.append((float(width), float(excess[used].mean()), float(means.std(ddof=1) / math.sqrt(len(means)))))
    return out


def fit_line_noise(white: np.ndarray, variance: np.ndarray,
                   mask: np.ndarray | None = None) -> tuple[float, float, float]:
    """Scan-line noise of a prewhitened residual ``white`` (rows, cols; image units) whose
    independent pixel noise has ``variance`` (rows, cols; image units^2), over the pixels of
    ``mask`` (default all): ``(variance, length_px, significance)``.

    Line noise (STEM scan-line flicker: probe current or detector drifts over one line) is an
    additive process ``L`` per row, independent between rows, stationary along x (the fast
    scan) with covariance ``variance * exp(-|lag| / length_px)`` (AR(1); a constant offset
    per row is the limit of a long length). It is measured in windows along x
    (:func:`measure_line_noise`), then ``variance`` and ``length_px`` are the weighted least
    squares fit of ``variance * sum_h a_h exp(-|h| / length)`` to the window estimates (length
    on a grid LINE_LENGTHS_PX). ``significance``: the largest window estimate over its
    standard error. Returns variance 0 and length 0 when no estimate lies LINE_SIGNIFICANCE
    standard errors above 0 (no line noise resolved) or fewer than LINE_MIN_WINDOWS windows fit
    the image (under 128 px wide: one window cannot tell size from length); significance NaN
    when no window fits (under 64 px wide or 24 rows). The variance is that of the prewhitened
    domain: in the image the stripes are larger by the kernel's sum over its root sum of
    squares (1 for independent pixels). Why our own: a noise component of this model, not a
    general library feature.
    """
    windows = measure_line_noise(white, variance, mask)
    if not windows:
        return 0.0, 0.0, float("nan")
    widths, values, errors = (np.array(part) for part in zip(*windows))
    errors = np.maximum(errors, 1e-12 * max(float(np.max(np.abs(values))), 1e-300))
    significance = float(np.max(values / errors))
    if not significance > LINE_SIGNIFICANCE or len(windows) < LINE_MIN_WINDOWS:
        return 0.0, 0.0, significance
    best = None
    for length in LINE_LENGTHS_PX:
        shape = np.array([_line_correlation_sum(width, length) for width in widths])
        scale = float(np.sum(values * shape / errors**2) / np.sum(shape**2 / errors**2))
        cost = float(np.sum((values - scale * shape) ** 2 / errors**2))
        if scale > 0 and (best is None or cost < best[0]):
            best = (cost, scale, float(length))
    if best is None:
        return 0.0, 0.0, significance
    return best[1], best[2], significance


def line_chi_square_reduction(white: np.ndarray, inverse_variance: np.ndarray, variance: float,
                              length_px: float) -> float:
    """``sum_rows u^T (Q + W)^-1 u`` with ``u = W r``, ``W = diag(inverse_variance)`` (0 for pixels
    not used) and ``Q`` the line noise's precision (:func:`line_precision`): what the line
    noise takes off ``r^T W r`` (Woodbury: ``r^T (W^-1 + Q^-1)^-1 r = r^T W r - u^T (Q + W)^-1 u``).
    ``white`` (rows, cols; image units), ``inverse_variance`` (rows, cols; 1 / image units^2)."""
    data = np.asarray(white, dtype=np.float64)
    rows, cols = data.shape
    precision = line_precision(cols, variance, length_px)
    lower = np.append(precision.diagonal(-1), 0.0)
    upper = np.insert(precision.diagonal(1), 0, 0.0)
    total = 0.0
    for row in range(rows):
        weight = np.asarray(inverse_variance[row], dtype=np.float64)
        u = weight * data[row]
        banded = np.vstack([upper, precision.diagonal() + weight, lower])
        total += float(u @ linalg.solve_banded((1, 1), banded, u))
    return total


def fit_noise_model(image: np.ndarray, model: np.ndarray, *, n_parameters: int = 0,
                    mask: np.ndarray | None = None) -> NoiseModel:
    """Poisson-Gaussian noise of ``image`` around its noiseless ``model``, possibly correlated
    between nearby pixels (see the module docs).

    First the kernel taps (:func:`fit_axis_kernel` per axis), then two estimates of gain and read
    variance: the filtered one (robust to model error; regression of ``h^2`` on the squared
    taps of the combined kernel ``k * K``) and, from the prewhitened plain residual
    ``K^-1 r``, an efficient one (about 3x less scatter; each pixel counts once). The
    efficient one is used only when the model explains the image under the filtered noise
    model (reduced chi-square of ``K^-1 r`` below GOOD_MODEL_CHI_SQUARE), else the filtered
    one: ``method`` says which. ``n_parameters`` of the model count against the degrees of
    freedom (chi-square, and the plain residual's variance is scaled up by pixels / (pixels
    - parameters)); ``mask`` (bool, rows x cols) limits the fit to some pixels. The measured
    correlation is kept in ``correlation_*`` (three-tap reading of lag 1); the kernel's taps
    ``kernel_*`` (inner) and ``kernel_outer_*`` come from :func:`fit_axis_kernel` (0 where not
    significant, symbol at least MIN_KERNEL_SYMBOL), ``kernel_misfit_*`` is the lag-3 check
    (:func:`kernel_misfit`). Raises ValueError when the images differ in shape or are smaller
    than 5x5.

    Pixels where the model expects fewer than DARK_ELECTRONS detected electrons (an empty
    vacuum of a counting image) carry no information on the noise: the fit is repeated
    without them (their variance is then ~0, and the model's small negative or positive
    excursions there would otherwise pass for noise or blow up the chi-square).
    """
    noise = _fit_noise_model(image, model, n_parameters=n_parameters, mask=mask)
    signal = np.asarray(model, dtype=np.float64)
    keep = np.ones(signal.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    used = keep
    for _ in range(DARK_PASSES):  # the dark pixels depend on the gain, the gain on the pixels used
        if not noise.gain > 0:
            break
        lit = keep & ((signal - noise.offset) / noise.gain >= DARK_ELECTRONS)
        if np.array_equal(lit, used) or lit.sum() < 25:
            break
        used = lit
        noise = _fit_noise_model(image, model, n_parameters=n_parameters, mask=used)
    return noise


def _fit_noise_model(image: np.ndarray, model: np.ndarray, *, n_parameters: int = 0,
                     mask: np.ndarray | None = None) -> NoiseModel:
    """:func:`fit_noise_model` on the pixels of ``mask``."""
    data = np.asarray(image, dtype=np.float64)
    signal = np.asarray(model, dtype=np.float64)
    if data.shape != signal.shape or data.ndim != 2 or min(data.shape) < 5:
        raise ValueError(f"image {data.shape} and model {signal.shape} must be 2D images of one shape, >= 5x5")
    residual = data - signal
    filtered = _second_difference(residual)
    keep = np.ones(filtered.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)[1:-1, 1:-1]
    lags_x, lags_y = filtered_lag_correlations(filtered, keep)
    measured_x, measured_y = _three_tap(float(lags_x[0])), _three_tap(float(lags_y[0]))  # as noise_kernel_taps
    # Independent-pixel fit first: its variance pattern says how many pixels the correlation rests on.
    weighted_signal, norm = _filtered_squared_signal(signal, 0.0, 0.0)
    gain, read_variance = _variance_regression(filtered[keep].ravel() ** 2, weighted_signal[keep].ravel(), norm)
    pixels_effective = _effective_pixels(gain * weighted_signal[keep] + norm * read_variance)
    taps_x, taps_y = (fit_axis_kernel(lags, pixels_effective) for lags in (lags_x, lags_y))
    if not (_is_identity(taps_x) and _is_identity(taps_y)):
        weighted_signal, norm = _filtered_squared_signal(signal, taps_x, taps_y)
        gain, read_variance = _variance_regression(filtered[keep].ravel() ** 2, weighted_signal[keep].ravel(), norm)
    full_keep = np.ones(data.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    pixels = int(full_keep.sum())
    dof = max(pixels - int(n_parameters), 1)
    robust = NoiseModel(gain=gain, read_variance=read_variance, reduced_chi_square=float("nan"), n_pixels=pixels,
                        method="filtered", correlation_x=tap_correlation(measured_x),
                        correlation_y=tap_correlation(measured_y), kernel_x=taps_x[0], kernel_y=taps_y[0],
                        kernel_outer_x=taps_x[1], kernel_outer_y=taps_y[1],
                        kernel_misfit_x=kernel_misfit(lags_x, taps_x, pixels_effective),
                        kernel_misfit_y=kernel_misfit(lags_y, taps_y, pixels_effective))
    white = whiten(residual, taps_x, taps_y)
    pixel_variance = robust.variance(signal)
    # Scan-line noise, measured on the prewhitened residual (the filtered estimates above do
    # not see it: the second difference along x removes a process smooth along the row).
    line_variance, line_length, line_significance = fit_line_noise(white, pixel_variance, full_keep)
    robust = replace(robust, line_variance=line_variance, line_length_px=line_length,
                     line_significance=line_significance)
    quadratic = float(np.sum(white[full_keep] ** 2 / pixel_variance[full_keep]))
    if line_variance > 0:
        quadratic -= line_chi_square_reduction(white, np.where(full_keep, 1.0 / pixel_variance, 0.0), line_variance,
                                               line_length)
    chi2 = quadratic / dof
    if chi2 < GOOD_MODEL_CHI_SQUARE:
        # E[white^2] = gain m + read_variance + line_variance: the line part is taken off first.
        gain, read_variance = _variance_regression(white[full_keep] ** 2 * (pixels / dof) - line_variance,
                                                   signal[full_keep], 1.0)
        # chi2 stays the one under the filtered estimate: under the residual's own fit it is 1 by construction.
        return replace(robust, gain=gain, read_variance=read_variance, reduced_chi_square=chi2, method="residual")
    return replace(robust, reduced_chi_square=chi2)


def model_parameter_count(model: ImageModel) -> int:
    """Parameters fitted to the image: amplitude and position per column, widths, background."""
    return 3 * len(model.x) + len(model.sigma) + len(model.background_coefficients)


def equivalent_dose(model: ImageModel, noise: NoiseModel, pixel_size_pm: float | None) -> dict[str, float | None]:
    """Electrons behind the brightest model pixel and, when calibrated, the dose (e/Å^2) that
    gives them if the brightest pixel detects every electron (remflow.synthetic's mapping)."""
    peak = noise.electrons(float(np.max(model.image)))
    dose = None
    if pixel_size_pm is not None and math.isfinite(peak):
        dose = peak / (float(pixel_size_pm) / 100.0) ** 2
    return {"electrons_peak": peak, "equivalent_dose_e_per_A2": dose}


def lattice_extension(xy: np.ndarray, sublattice: np.ndarray, shape: tuple[int, int], *, separation_px: float,
                      margin_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Columns the fit does not have but the image shows: lattice sites next to fitted columns.

    atomap's peak finder skips peaks within 0.75 spacings of the image edge and columns
    centred just outside the image still put their tails into it; without them the model
    misses whole Gaussians at the border, and that residual would pass for noise. Per
    sublattice, sites ``origin + i a + j b`` of the ideal lattice of the fitted positions
    (:func:`remflow.precision.fit_ideal_lattice`), moved by the displacement of the nearest
    fitted column from its own ideal site (so strain and distortion carry over), are added
    where they lie within ``margin_px`` of the image, at least 0.6 spacings from every fitted
    column of the sublattice and at most 1.5 spacings from one (no columns in vacuum). Then,
    within a spacing of the image border, sites up to 2.5 spacings from their own sublattice's
    fitted columns are added where a column of another sublattice (fitted or just added) lies
    within 0.8 spacings: a second sublattice found between fitted columns (perovskite B between
    A) lacks two rings there, while vacuum has no such neighbours. (A corner's second-ring
    site, 2.8 spacings away, stays out.) Synthetic perovskite at 30000 e/A^2: chi-square 1.49 ->
    1.25, widths 2.27/2.08 -> 2.40/2.34 px for 2.5 (tests/test_twin.py).
    Returns (M, 2) positions and (M,) sublattice names; empty when no lattice is found.
    """
    from remflow.precision import fit_ideal_lattice

    rows, cols = shape
    xy = np.asarray(xy, dtype=np.float64)
    candidates = []  # (sites, name, distance to own fitted columns)
    for name in np.unique(sublattice):
        members = xy[sublattice == name]
        if len(members) < 6:
            continue
        try:
            lattice = fit_ideal_lattice(members)
        except ValueError:
            continue
        indexed = lattice.indexed
        residual = members[indexed] - lattice.ideal(lattice.indices[indexed])
        low = lattice.indices[indexed].min(axis=0) - 3
        high = lattice.indices[indexed].max(axis=0) + 3
        grid = np.stack(np.meshgrid(np.arange(low[0], high[0] + 1), np.arange(low[1], high[1] + 1),
                                    indexing="ij"), axis=-1).reshape(-1, 2)
        sites = lattice.ideal(grid)
        tree = cKDTree(lattice.ideal(lattice.indices[indexed]))
        _, nearest = tree.query(sites)
        sites = sites + residual[nearest]
        distance, _ = cKDTree(members).query(sites)
        inside = ((sites[:, 0] >= -margin_px - 0.5) & (sites[:, 0] <= cols - 0.5 + margin_px)
                  & (sites[:, 1] >= -margin_px - 0.5) & (sites[:, 1] <= rows - 0.5 + margin_px)
                  & (distance >= 0.6 * separation_px))
        candidates.append((sites[inside], str(name), distance[inside]))
    first = [(sites[d <= 1.5 * separation_px], name) for sites, name, d in candidates]
    out_xy = [sites for sites, _ in first]
    out_names = [np.full(len(sites), name, dtype=object) for sites, name in first]
    for sites, name, distance in candidates:
        border = np.minimum(np.minimum(sites[:, 0] + 0.5, cols - 0.5 - sites[:, 0]),
                            np.minimum(sites[:, 1] + 0.5, rows - 0.5 - sites[:, 1]))
        second = (distance > 1.5 * separation_px) & (distance <= 2.5 * separation_px) & (border <= separation_px)
        others = np.concatenate([xy[sublattice != name]] + [s for s, n in first if n != name])
        if not second.any() or len(others) == 0:
            continue
        near_other, _ = cKDTree(others).query(sites[second])
        keep = np.flatnonzero(second)[near_other <= 0.8 * separation_px]
        out_xy.append(sites[keep])
        out_names.append(np.full(len(keep), name, dtype=object))
    if not out_xy:
        return np.empty((0, 2)), np.empty(0, dtype=object)
    return np.concatenate(out_xy), np.concatenate(out_names)


def nearest_is_fitted(shape: tuple[int, int], fitted_xy: np.ndarray, extra_xy: np.ndarray) -> np.ndarray:
    """(rows, cols) bool: pixels whose nearest column is a fitted one, not an added lattice site
    (the noise is fitted there: the added sites' positions are extrapolated, not fitted)."""
    rows, cols = shape
    if len(extra_xy) == 0:
        return np.ones(shape, dtype=bool)
    grid_y, grid_x = np.indices(shape, dtype=np.float64)
    pixels = np.column_stack([grid_x.ravel(), grid_y.ravel()])
    to_fitted, _ = cKDTree(fitted_xy).query(pixels)
    to_extra, _ = cKDTree(extra_xy).query(pixels)
    return (to_fitted <= to_extra).reshape(rows, cols)
