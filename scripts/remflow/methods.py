"""Restoration methods side by side: the tk_r_em network against classical filters.

Every method takes a 2D image (counts, float) and returns a float64 image of the same shape
in the same intensity units. Parameters follow a documented rule computed from the image
itself (its noise level or its lattice), never from the ground truth:

- ``raw``: the image unchanged.
- ``cnn``: tk_r_em's network (:class:`remflow.restore.Restorer`; ``sfr_hrstem`` for HR
  HAADF-STEM, which the workflow's network choice gives for the synthetic images). The
  network is loaded once and reused (:class:`MethodSet`).
- ``gaussian``: :func:`scipy.ndimage.gaussian_filter` with ``sigma = d / 8``, ``d`` the
  column spacing estimated from the image's autocorrelation
  (:func:`remflow.columns.estimate_separation`). Rule: the lattice's first-order
  reflection (frequency ``1/d``) keeps ``exp(-2 pi^2 sigma^2 / d^2) = exp(-pi^2 / 32) = 74 %``
  of its amplitude, so columns stay resolved while pixel noise (up to frequency 1/2) is cut.
- ``nlm``: scikit-image non-local means (``denoise_nl_means``, fast mode, 5x5 patches,
  search distance 6 px) with ``sigma`` = :func:`skimage.restoration.estimate_sigma` of the
  image (wavelet MAD of the finest diagonal sub-band) and ``h = 0.8 sigma``, the rule of
  scikit-image's own example for fast mode. Shot noise is not of one variance: the estimate
  is the image's average noise level.
- ``tv``: scikit-image total-variation (Chambolle) denoising with ``weight = sigma`` from
  ``estimate_sigma`` (the weight is in the image's intensity units; ROF with 1/lambda of the
  order of the noise level, no tuning).
- ``bragg``: a Fourier (Bragg) filter, the classic microscopist's tool: keep the lattice
  reflections, zero everything else. Written here with NumPy FFTs because scikit-image has no
  such filter. Rule (:func:`bragg_filter`): the two shortest non-collinear strong peaks of
  the power spectrum span the reciprocal lattice; every lattice reflection ``h g1 + k g2``
  inside the Nyquist square whose power stands above the noise floor is kept with a disk of
  radius ``|g1| / 4`` (a quarter of the shortest reciprocal spacing: displacement fields that
  vary over four unit cells or more pass, column-to-column variations do not), and the zero
  frequency with the same disk. Mask edges are tapered over one frequency pixel.
- ``bm3d``: only when the optional ``bm3d`` package is importable (its licence is
  non-commercial; never a dependency of remflow): ``bm3d.bm3d(image, sigma_psd=sigma)`` with
  ``sigma`` from ``estimate_sigma``.

Source of the classical methods: scikit-image 0.26 (``skimage.restoration``), SciPy
(``ndimage``); the Bragg filter follows the textbook reciprocal-space mask (e.g. Hÿtch,
Snoeck & Kilaas 1998 use the same masks for geometric phase analysis).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

#: Methods always available, in the order tables and figures show them.
BASE_METHODS = ("raw", "cnn", "gaussian", "nlm", "tv", "bragg")
#: The network for the synthetic HR HAADF-STEM images (what choose_network gives them).
DEFAULT_NETWORK = "sfr_hrstem"
#: Gaussian filter width as a fraction of the column spacing (see the module docstring).
GAUSSIAN_SIGMA_PER_SPACING = 1.0 / 8.0
#: Non-local means: patch side, search distance (px) and h / sigma (scikit-image's example, fast mode).
NLM_PATCH_SIZE = 5
NLM_PATCH_DISTANCE = 6
NLM_H_PER_SIGMA = 0.8
#: Bragg mask radius as a fraction of the shortest reciprocal lattice vector.
BRAGG_RADIUS_PER_G = 0.25
#: A reflection is kept when its peak power exceeds this many times the spectrum's median power.
BRAGG_MIN_POWER_OVER_FLOOR = 20.0
#: Basis reflections must also reach this fraction of the strongest peak's power (noise peaks do not).
BRAGG_BASIS_FRACTION = 0.05
#: Spectrum peaks considered when looking for the two basis reflections.
BRAGG_CANDIDATE_PEAKS = 24


def available_methods() -> tuple[str, ...]:
    """The methods this installation can run: BASE_METHODS, plus ``bm3d`` when importable."""
    return BASE_METHODS + (("bm3d",) if importlib.util.find_spec("bm3d") is not None else ())


def noise_sigma(image: np.ndarray) -> float:
    """Noise standard deviation of ``image`` (its units) by :func:`skimage.restoration.estimate_sigma`
    (wavelet median absolute deviation); floored at a tiny positive value so filters stay defined."""
    from skimage.restoration import estimate_sigma

    sigma = float(estimate_sigma(np.asarray(image, dtype=np.float64)))
    return sigma if math.isfinite(sigma) and sigma > 0 else 1e-6 * max(float(np.ptp(image)), 1e-12)


def lattice_spacing(image: np.ndarray) -> float | None:
    """Nearest column spacing (px) from the image's autocorrelation (:func:`remflow.columns.estimate_separation`)."""
    from remflow.columns import estimate_separation

    return estimate_separation(np.asarray(image, dtype=np.float64))


def gaussian_filter(image: np.ndarray, spacing_px: float | None = None) -> np.ndarray:
    """Gaussian low-pass with ``sigma = spacing / 8`` (spacing estimated from the image when None;
    an image without a detectable lattice is smoothed with sigma 1 px)."""
    image = np.asarray(image, dtype=np.float64)
    spacing = spacing_px if spacing_px is not None else lattice_spacing(image)
    sigma = GAUSSIAN_SIGMA_PER_SPACING * spacing if spacing else 1.0
    return ndimage.gaussian_filter(image, sigma=sigma, mode="reflect")


def nlm_filter(image: np.ndarray) -> np.ndarray:
    """Non-local means, parameters from the estimated noise level (module docstring)."""
    from skimage.restoration import denoise_nl_means

    image = np.asarray(image, dtype=np.float64)
    sigma = noise_sigma(image)
    return np.asarray(denoise_nl_means(image, patch_size=NLM_PATCH_SIZE, patch_distance=NLM_PATCH_DISTANCE,
                                       h=NLM_H_PER_SIGMA * sigma, sigma=sigma, fast_mode=True,
                                       preserve_range=True), dtype=np.float64)


def tv_filter(image: np.ndarray) -> np.ndarray:
    """Total-variation (Chambolle) denoising with weight = the estimated noise level."""
    from skimage.restoration import denoise_tv_chambolle

    image = np.asarray(image, dtype=np.float64)
    return np.asarray(denoise_tv_chambolle(image, weight=noise_sigma(image)), dtype=np.float64)


def bm3d_filter(image: np.ndarray) -> np.ndarray:
    """BM3D with the estimated noise level; needs the optional ``bm3d`` package (ImportError otherwise)."""
    import bm3d  # optional, non-commercial licence: never a dependency

    image = np.asarray(image, dtype=np.float64)
    return np.asarray(bm3d.bm3d(image, sigma_psd=noise_sigma(image)), dtype=np.float64)


@dataclass(frozen=True)
class BraggLattice:
    """Reciprocal basis (frequency px of the centred FFT: (row, col) offsets from zero frequency)."""

    g1: np.ndarray
    g2: np.ndarray
    reflections: np.ndarray  # (M, 2) kept reflections, zero frequency excluded
    radius: float


def _power_spectrum(image: np.ndarray) -> np.ndarray:
    """Centred power spectrum of the image under a 2D Hann window (for finding reflections only:
    the window suppresses the streaks that the non-periodic image edges put into the spectrum)."""
    values = np.asarray(image, dtype=np.float64)
    window = np.outer(np.hanning(values.shape[0]), np.hanning(values.shape[1]))
    return np.abs(np.fft.fftshift(np.fft.fft2((values - values.mean()) * window))) ** 2


def bragg_lattice(image: np.ndarray) -> BraggLattice | None:
    """The reciprocal lattice of ``image`` and the reflections the Bragg filter keeps; None without one.

    Peaks are found in the power spectrum of the Hann-windowed image. Basis: among the
    spectrum peaks above ``BRAGG_MIN_POWER_OVER_FLOOR`` x the median power and above
    ``BRAGG_BASIS_FRACTION`` of the strongest peak, the shortest one ``g1`` and the shortest
    one not within 20 degrees of its line ``g2``, refined as the power-weighted centroid over a 3x3 neighbourhood. Kept:
    every ``h g1 + k g2`` inside the spectrum whose peak power within the mask disk is above the same
    threshold (so reflections that hold only noise are dropped).
    """
    from skimage.feature import peak_local_max

    power = _power_spectrum(image)
    rows, cols = power.shape
    centre = np.array([rows // 2, cols // 2], dtype=np.float64)
    floor = float(np.median(power))
    threshold = BRAGG_MIN_POWER_OVER_FLOOR * floor if floor > 0 else float(power.max()) * 1e-3
    search = power.copy()
    yy, xx = np.indices(power.shape)
    search[np.hypot(yy - centre[0], xx - centre[1]) < 2.5] = 0.0  # the zero frequency and its leakage
    strongest = float(search.max())
    peaks = peak_local_max(search, min_distance=2, num_peaks=BRAGG_CANDIDATE_PEAKS, exclude_border=False,
                           threshold_abs=max(threshold, BRAGG_BASIS_FRACTION * strongest))
    if len(peaks) < 2:
        return None
    refined = []
    for row, col in peaks:
        r0, r1, c0, c1 = max(row - 1, 0), min(row + 2, rows), max(col - 1, 0), min(col + 2, cols)
        patch = power[r0:r1, c0:c1]
        py, px = np.indices(patch.shape)
        refined.append([(py * patch).sum() / patch.sum() + r0, (px * patch).sum() / patch.sum() + c0])
    vectors = np.asarray(refined) - centre
    lengths = np.hypot(vectors[:, 0], vectors[:, 1])
    order = np.argsort(lengths, kind="stable")
    g1 = vectors[order[0]]
    g2 = None
    for index in order[1:]:
        candidate = vectors[index]
        sine = abs(g1[0] * candidate[1] - g1[1] * candidate[0]) / (lengths[order[0]] * lengths[index])
        if sine > math.sin(math.radians(20)):
            g2 = candidate
            break
    if g2 is None:
        return None
    radius = BRAGG_RADIUS_PER_G * float(np.hypot(*g1))
    reach = int(math.ceil(max(rows, cols) / max(1e-9, min(np.hypot(*g1), np.hypot(*g2))))) + 1
    kept = []
    for h in range(-reach, reach + 1):
        for k in range(-reach, reach + 1):
            if h == 0 and k == 0:
                continue
            g = h * g1 + k * g2
            position = centre + g
            if not (0 <= position[0] <= rows - 1 and 0 <= position[1] <= cols - 1):
                continue
            disk = np.hypot(yy - position[0], xx - position[1]) <= radius
            if disk.any() and float(power[disk].max()) >= threshold:
                kept.append(g)
    if not kept:
        return None
    return BraggLattice(g1=g1, g2=g2, reflections=np.asarray(kept), radius=radius)


def bragg_mask(shape: tuple[int, int], lattice: BraggLattice) -> np.ndarray:
    """Centred-FFT mask: 1 within ``radius`` of zero frequency and of each kept reflection and
    its Friedel mate, falling to 0 over one frequency pixel beyond (a linear taper)."""
    rows, cols = shape
    yy, xx = np.indices(shape, dtype=np.float64)
    centre = np.array([rows // 2, cols // 2], dtype=np.float64)
    mask = np.zeros(shape)
    points = np.concatenate([np.zeros((1, 2)), lattice.reflections, -lattice.reflections])
    for g in points:
        distance = np.hypot(yy - centre[0] - g[0], xx - centre[1] - g[1])
        mask = np.maximum(mask, np.clip(lattice.radius + 1.0 - distance, 0.0, 1.0))
    return mask


def bragg_filter(image: np.ndarray) -> np.ndarray:
    """Keep only the lattice reflections (see :func:`bragg_lattice`); the mean is kept.
    An image without a detectable lattice is returned as its mean (nothing periodic survives)."""
    image = np.asarray(image, dtype=np.float64)
    lattice = bragg_lattice(image)
    if lattice is None:
        log.info("Bragg filter: no lattice reflections found; the image becomes its mean")
        return np.full(image.shape, image.mean())
    spectrum = np.fft.fftshift(np.fft.fft2(image))
    filtered = np.fft.ifft2(np.fft.ifftshift(spectrum * bragg_mask(image.shape, lattice)))
    return np.real(filtered)


@dataclass
class MethodSet:
    """The benchmark's methods, with the network loaded once (lazily, at the first ``cnn`` call).

    ``methods``: names from :func:`available_methods` (default: all of them). Calling
    :meth:`apply` with an unknown or unavailable name raises ValueError.
    """

    methods: tuple[str, ...] = field(default_factory=available_methods)
    network: str = DEFAULT_NETWORK
    _restorer: Any = field(default=None, repr=False)  # remflow.restore.Restorer once loaded

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in available_methods()]
        if unknown:
            raise ValueError(f"methods {unknown} are not available here; choose from {', '.join(available_methods())}")

    def _cnn(self, image: np.ndarray) -> np.ndarray:
        if self._restorer is None:
            from remflow.restore import Restorer

            self._restorer = Restorer(self.network)
        restored = self._restorer.restore(np.asarray(image, dtype=np.float32))
        return np.asarray(restored, dtype=np.float64)

    def apply(self, method: str, image: np.ndarray) -> np.ndarray:
        """``method`` applied to a 2D ``image``: float64, same shape (ValueError for other input)."""
        image = np.asarray(image, dtype=np.float64)
        if image.ndim != 2:
            raise ValueError(f"expected a 2D image, got shape {image.shape}")
        functions: dict[str, Callable[[np.ndarray], np.ndarray]] = {
            "raw": lambda a: a.copy(), "cnn": self._cnn, "gaussian": gaussian_filter, "nlm": nlm_filter,
            "tv": tv_filter, "bragg": bragg_filter, "bm3d": bm3d_filter}
        if method not in self.methods or method not in functions:
            raise ValueError(f"method '{method}' is not one of {', '.join(self.methods)}")
        out = functions[method](image)
        if out.shape != image.shape:
            raise ArithmeticError(f"method '{method}' returned shape {out.shape} for an image of {image.shape}")
        return out

    def apply_all(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Every method of the set on one image, in the set's order."""
        return {method: self.apply(method, image) for method in self.methods}
