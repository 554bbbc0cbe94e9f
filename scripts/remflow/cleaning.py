"""Make a raw image fit to restore: lossless float32, isolated outlier pixels, SEM data bars.

Each function returns what it changed, so that ingest can record it; none of them
touches atom columns or any other real structure it cannot tell apart from a defect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

#: A float32 cast whose rounding error exceeds this fraction of the image's range loses
#: intensity levels (float32 keeps ~7 digits: values on a large constant pedestal lose them).
FLOAT32_TOLERANCE = 1e-6
#: ... or, for images with noise, more than this fraction of the pixel noise.
FLOAT32_NOISE_FRACTION = 1e-3


@dataclass
class Float32Conversion:
    """The float32 image and what it took: ``data = original - offset``."""

    data: np.ndarray  # (rows, cols) float32
    offset: float  # subtracted constant (0.0 when none was needed), in the file's units
    max_error: float  # largest |float32 - (original - offset)|, file units
    levels_kept: int | None  # distinct intensity levels after / before, when countable
    levels_in: int | None
    notes: list[str] = field(default_factory=list)


def to_float32_lossless(data: np.ndarray) -> Float32Conversion:
    """Convert to float32 without losing intensity levels where a constant offset allows it.

    float16/float32 and integers up to 16 bits are exact in float32. Wider types (float64,
    32/64-bit integers) are cast directly when the rounding stays below the larger of
    ``FLOAT32_NOISE_FRACTION`` of the pixel noise (:func:`noise_sigma`; for noise-free
    images ``FLOAT32_TOLERANCE`` of the range); otherwise (typically counts on a large pedestal,
    1e8 + 0..72: float32 keeps 10 of 66 levels) the minimum is subtracted in float64 first
    and kept as ``offset``. A note says when levels are still lost (e.g. a pedestal with a
    pixel far below it, or a range wider than float32's 24-bit mantissa resolves).
    """
    array = np.asarray(data)
    if array.dtype in (np.float32, np.float16, np.bool_) or (
            np.issubdtype(array.dtype, np.integer) and array.dtype.itemsize <= 2):
        return Float32Conversion(array.astype(np.float32), 0.0, 0.0, None, None)
    values = array.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    span = high - low
    direct = values.astype(np.float32)
    direct_error = float(np.max(np.abs(direct.astype(np.float64) - values)))
    if direct_error == 0 or span == 0:
        return Float32Conversion(direct, 0.0, direct_error, None, None)
    sigma = noise_sigma(values - low) if values.ndim == 2 and min(values.shape) >= 2 else 0.0
    # Noise-free images (simulations) have no noise to compare with: then the range.
    tolerance = FLOAT32_NOISE_FRACTION * sigma if sigma > 0 else FLOAT32_TOLERANCE * span
    if direct_error <= tolerance:
        return Float32Conversion(direct, 0.0, direct_error, None, None)
    shifted = values - low
    converted = shifted.astype(np.float32)
    error = float(np.max(np.abs(converted.astype(np.float64) - shifted)))
    notes = [f"subtracted a constant offset of {low:.17g} (file units) before the float32 cast, which "
             f"would otherwise round by up to {direct_error:.3g} (noise sigma {sigma:.3g}); kept in the metadata"]
    levels_in = levels_kept = None
    if values.size <= 4_000_000:
        levels_in = int(np.unique(values).size)
        levels_kept = int(np.unique(converted).size)
    if error > tolerance:
        kept = f"; {levels_kept} of {levels_in} intensity levels kept" if levels_in is not None else ""
        notes.append(f"precision lost in the float32 cast: rounding up to {error:.3g} "
                     f"(pixel noise sigma {sigma:.3g}){kept}")
    return Float32Conversion(converted, low, error, levels_kept, levels_in, notes)


# --------------------------------------------------------------------------- outliers

#: An outlier exceeds every one of its 8 neighbours by this many local noise sigmas ...
OUTLIER_NOISE_SIGMAS = 10.0
#: ... and by this many times the spread (max - min) of those neighbours.
OUTLIER_SHAPE_FACTOR = 6.0
#: ... and lies beyond the median by this many times the distance of the image's
#: ``OUTLIER_QUANTILE`` / 1 - ``OUTLIER_QUANTILE`` quantile from the median.
OUTLIER_GLOBAL_FACTOR = 3.0
OUTLIER_QUANTILE = 1e-3
#: More candidates than this fraction of the pixels are not isolated defects (e.g. single
#: electron events in a counting-mode image): then nothing is replaced.
OUTLIER_MAX_FRACTION = 1e-3
#: At most this many replaced pixels are listed one by one.
OUTLIER_LIST_MAX = 100

_RING = np.ones((3, 3), dtype=bool)
_RING[1, 1] = False


@dataclass
class OutlierPixels:
    data: np.ndarray  # cleaned image, float32
    pixels: list[dict[str, Any]]  # row, col, value, replaced_by (file units); listed ones only
    count: int  # how many were replaced
    notes: list[str] = field(default_factory=list)


def _trimmed_std(values: np.ndarray, tail: float = 1e-3) -> float:
    """Standard deviation of the values between the ``tail`` and 1 - ``tail`` quantiles."""
    low, high = np.quantile(values, [tail, 1 - tail])
    inside = values[(values >= low) & (values <= high)]
    return float(inside.std()) if inside.size else 0.0


def replace_outlier_pixels(image: np.ndarray) -> OutlierPixels:
    """Replace isolated hot and dead pixels by the median of their 8 neighbours.

    A pixel is an outlier when it lies above the *largest* (hot) or below the *smallest*
    (dead) of its 8 neighbours by more than both

    - ``OUTLIER_NOISE_SIGMAS`` x sigma, sigma the largest of three estimates of the noise of
      the residual image - 3x3 median: over the 7x7 px around the pixel, its robust deviation
      (1.4826 x median absolute value) and its standard deviation without the pixel itself
      (which follows Poisson noise up a column's flank in low-dose images), and over the whole
      image its standard deviation without the 0.1% tails, and
    - ``OUTLIER_SHAPE_FACTOR`` x the spread of the neighbours (their max - min),

    and lies far outside the whole image's distribution: beyond the median by more than
    ``OUTLIER_GLOBAL_FACTOR`` times the distance of the 99.9th (hot) or 0.1th (dead)
    percentile from it. Without the last condition single electron events of a sparse
    low-dose image (2 counts among zeros) would be taken for hot pixels.

    Why it leaves atom columns alone: a column is a peak several pixels wide, so its
    neighbours rise with it; its excess over the largest neighbour is a fraction of its
    height while the neighbours' spread is of the same order (a Gaussian column of
    sigma 0.7 px: excess 0.64, spread 0.23 of the height, far below the factor 6; only peaks
    narrower than about sigma 0.55 px, i.e. undersampled, look like hot pixels). In low-dose
    images the noise term dominates: a column pixel must beat every neighbour by 10 sigma.
    Both terms scale with the intensity, so the result does not depend on its unit.
    When more than ``OUTLIER_MAX_FRACTION`` of the pixels qualify, they are not isolated
    defects and nothing is replaced (a note says so). Pixels adjacent to another outlier
    are not isolated and are not detected.
    """
    data = np.asarray(image, dtype=np.float32)
    if data.ndim != 2 or min(data.shape) < 3:
        return OutlierPixels(data, [], 0)
    values = data.astype(np.float64)
    # "mirror", not "reflect": reflection would make an edge pixel its own neighbour.
    residual = values - ndimage.median_filter(values, size=3, mode="mirror")
    robust_local = 1.4826 * ndimage.median_filter(np.abs(residual), size=7, mode="mirror")
    # The residual's standard deviation over 7x7 without the pixel itself: near a column in a
    # low-dose (Poisson) image it grows with the counts, where the robust one may stay 0.
    window = 7 * 7
    mean_square = ndimage.uniform_filter(residual**2, size=7, mode="mirror")
    local = np.sqrt(np.maximum(mean_square * window - residual**2, 0.0) / (window - 1))
    sigma = np.maximum(np.maximum(robust_local, local), _trimmed_std(residual))
    highest = ndimage.maximum_filter(values, footprint=_RING, mode="mirror")
    lowest = ndimage.minimum_filter(values, footprint=_RING, mode="mirror")
    spread = highest - lowest
    threshold = np.maximum(OUTLIER_NOISE_SIGMAS * sigma, OUTLIER_SHAPE_FACTOR * spread)
    # ... and far outside the whole image's distribution: a single event in a sparse low-dose
    # image beats its (empty) neighbours but not the brightest column pixels.
    low_q, centre, high_q = np.quantile(values, [OUTLIER_QUANTILE, 0.5, 1 - OUTLIER_QUANTILE])
    hot = ((values - highest) > threshold) & (values - centre > OUTLIER_GLOBAL_FACTOR * (high_q - centre))
    dead = ((lowest - values) > threshold) & (centre - values > OUTLIER_GLOBAL_FACTOR * (centre - low_q))
    flagged = (hot | dead) & (threshold > 0)
    count = int(flagged.sum())
    if count == 0:
        return OutlierPixels(data, [], 0)
    if count > OUTLIER_MAX_FRACTION * data.size:
        return OutlierPixels(data, [], 0, [
            f"{count} pixels stand out from all their neighbours ({count / data.size:.2%} of the image): too many "
            "to be isolated hot/dead pixels, left as they are"])
    replacement = ndimage.median_filter(values, footprint=_RING, mode="mirror")
    cleaned = data.copy()
    cleaned[flagged] = replacement[flagged].astype(np.float32)
    rows, cols = np.nonzero(flagged)
    listed = [{"row": int(r), "col": int(c), "value": float(values[r, c]), "replaced_by": float(replacement[r, c]),
               "kind": "hot" if hot[r, c] else "dead"} for r, c in list(zip(rows, cols))[:OUTLIER_LIST_MAX]]
    note = (f"replaced {count} isolated hot/dead pixel(s) by the median of their neighbours"
            + (f" (first {OUTLIER_LIST_MAX} listed)" if count > OUTLIER_LIST_MAX else ""))
    return OutlierPixels(cleaned, listed, count, [note])


# --------------------------------------------------------------------------- SEM data bars

#: A bar is looked for in this bottom fraction of the image.
BAR_SEARCH_FRACTION = 0.3
#: A row is "flat" (a bar's border line or background) when one value fills this fraction of it.
FLAT_ROW_FRACTION = 0.95
#: Inside a bar, one value (its background) fills at least this fraction of every row.
BAR_ROW_FRACTION = 0.5


class DataBarUnknown(ValueError):
    """A data bar seems burned into the image but its height cannot be known."""


def _dominant_fraction(row: np.ndarray) -> float:
    _, counts = np.unique(row, return_counts=True)
    return float(counts.max()) / row.size


def data_bar_height(data: np.ndarray, original_metadata: dict[str, Any]) -> tuple[int, str]:
    """Rows of an SEM image's bottom that are the instrument's data bar, and how that is known.

    - FEI/Thermo TIFFs: ``fei_metadata.Image.ResolutionY`` is the scanned height (the rest
      is the bar), else ``fei_metadata.PrivateFei.DatabarHeight``.
    - Others (Zeiss writes no bar height: its ``dp_image_store`` is the stored size, bar
      included): the bar is found in the pixels. Zeiss draws it as a block at the bottom
      framed by uniform lines, on a uniform background: from the topmost *flat* row (one
      value fills ``FLAT_ROW_FRACTION`` of it) in the bottom ``BAR_SEARCH_FRACTION``, every
      row down to the last flat row is dominated (``BAR_ROW_FRACTION``) by one value, and
      some hold text (are not flat). Rows below it (Zeiss leaves one or two) are cut too.
      Flat rows only (a blank part of the scan) are no bar.

    Returns (0, reason) when there is no bar. Raises DataBarUnknown when flat rows are
    there but do not frame a bar, so the height is unknown.
    """
    rows = int(data.shape[0])
    fei = original_metadata.get("fei_metadata") or {}
    if fei:
        scanned = (fei.get("Image") or {}).get("ResolutionY")
        bar = (fei.get("PrivateFei") or {}).get("DatabarHeight")
        if scanned is not None and 0 < int(scanned) <= rows:
            return rows - int(scanned), f"FEI metadata: Image.ResolutionY = {int(scanned)} of {rows} rows"
        if bar is not None and 0 <= int(bar) < rows:
            return int(bar), f"FEI metadata: PrivateFei.DatabarHeight = {int(bar)}"
    first = rows - max(1, int(round(BAR_SEARCH_FRACTION * rows)))
    dominant = np.array([_dominant_fraction(data[r]) for r in range(first, rows)])
    flat = np.nonzero(dominant >= FLAT_ROW_FRACTION)[0]
    if flat.size == 0:
        return 0, "no data bar: no uniform rows at the bottom"
    top, last = int(flat[0]), int(flat[-1])
    if top == last and top < len(dominant) - 1:
        # One uniform line above image rows: a dropped scan line, not a bar.
        if dominant[top + 1:].max() < BAR_ROW_FRACTION:
            return 0, "no data bar: a single uniform row"
    block = dominant[top:last + 1]
    if np.all(block >= FLAT_ROW_FRACTION):
        # Uniform rows without any text: a blank (e.g. black) part of the scan, not a bar.
        return 0, "no data bar: uniform rows without text at the bottom"
    if last - top >= 2 and np.all(block >= BAR_ROW_FRACTION):
        return rows - (first + top), (f"found in the pixels: rows {first + top}..{first + last} are a "
                                      "uniform block framed by flat lines (the vendor gives no bar height)")
    raise DataBarUnknown(
        f"the bottom rows look like an instrument data bar (uniform rows {first + top}..{first + last}) but its "
        "height is not in the metadata and the rows do not frame a clear bar; crop the bar off the image")


def noise_sigma(image: np.ndarray) -> float:
    """Pixel noise (file units): scikit-image's ``estimate_sigma`` (Donoho & Johnstone: the
    median absolute finest-scale diagonal wavelet coefficient / 0.6745).

    Compares raw and restored images that have no atom columns. Smooth structure barely
    enters: white noise of sigma 0.1, 1 and 5 on a sine pattern of amplitude 100 came out
    0.0999, 0.9995 and 4.998 (scikit-image 0.26).
    """
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(np.asarray(image, dtype=np.float64)))
