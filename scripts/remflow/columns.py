"""Atom-column positions on the raw and the restored image, fitted from the same start.

Columns are found once, with atomap's peak finder on the restored image (it is
cleaner). The same starting positions are then refined independently on the raw and
on the restored image, by atomap's centre of mass and then its 2D Gaussian
(``percent_to_nn`` 0.4, atomap's default): the two images get the same columns, the same
starts and the same fitting regions, so the comparison is fair.

A second sublattice (``second_sublattice=True``, e.g. the B sites of a perovskite seen
along [001]) follows atomap's two-sublattice recipe: zone axes are constructed on
sublattice A (its restored fit), the B starts are the centres of A's unit cells
(``Sublattice.get_middle_position_list`` along A's two shortest zone axes), each image's
fitted A model is subtracted from it, and B is refined on what is left.

Conventions:

- ``x`` is the column (horizontal) pixel coordinate, ``y`` the row; pixel ``i`` is
  centred at coordinate ``i`` (atomap's and HyperSpy's convention for uncalibrated
  signals), so a column centred on the top-left pixel is at (0, 0).
- ``separation_px`` is the distance between neighbouring columns of one sublattice (the
  A-A distance of a perovskite), in pixels. atomap's peak finder is given
  ``0.75 * separation_px`` as its minimum peak separation.
- Each image is shifted to a minimum of 0 before refinement: atomap's Gaussian fit
  subtracts its own local background, so this changes nothing there, but its centre
  of mass needs non-negative weights.
- A fit is ``fit_ok`` = False when atomap's Gaussian fit failed (it then falls back to
  the centre of mass and sets the amplitude to 0), or the position is not finite,
  outside the image, or more than half the separation from its start.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from remflow.precision import match_nearest, periodic_regions
from remflow.refined import RefinedColumns, fit_ok  # noqa: F401 (re-exported: the public home of both)

COLUMN_FIELDS: list[str] = [
    "column_id", "sublattice",
    "x_raw_px", "y_raw_px", "x_restored_px", "y_restored_px",
    "sigma_x_raw_px", "sigma_y_raw_px", "sigma_x_restored_px", "sigma_y_restored_px",
    "amplitude_raw", "amplitude_restored", "fit_ok_raw", "fit_ok_restored", "peak_snr",
]
TRUTH_FIELDS: list[str] = ["x_true_px", "y_true_px"]

#: Mask radius of atomap's refinements, as a fraction of the nearest-neighbour distance (atomap's default).
PERCENT_TO_NN = 0.4
#: Side peaks of a lattice image's autocorrelation reach at least this (zero lag = 1);
#: noise and amorphous images stay well below.
MIN_LATTICE_CORRELATION = 0.2
#: atomap's minimum peak separation as a fraction of the column spacing: small enough for
#: every column, large enough to suppress a peak between two columns (skimage's window is square).
PEAK_SEPARATION_FRACTION = 0.75

log = logging.getLogger(__name__)


@dataclass
class ColumnFit:
    """Result of :func:`fit_columns`."""

    table: pd.DataFrame  # one row per column, COLUMN_FIELDS (+ TRUTH_FIELDS when truth is given)
    status: str  # "ok" or "no lattice found: <why>"
    separation_px: float | None  # column spacing used (given or estimated); None if none found
    #: candidates that are not columns: x_px, y_px, sublattice, peak_snr, reason ("not significant")
    left_out: pd.DataFrame | None = None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """atomap and HyperSpy warn and print per column; keep logs readable (only inside this block)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def _atomap():
    """atomap.api, imported quietly (its HyperSpy imports warn about deprecations).

    Always ``atomap.api`` first: importing an atomap submodule alone hits a circular import.
    """
    with _quiet():
        import atomap.api as am
    return am


# --------------------------------------------------------------------------- finding


def _autocorrelation(image: np.ndarray) -> np.ndarray:
    """Normalised, centred autocorrelation (zero lag = 1), zero-padded so it does not wrap around."""
    values = np.asarray(image, dtype=np.float64)
    values = values - values.mean()
    power = np.abs(np.fft.fft2(values, s=[2 * n for n in values.shape])) ** 2
    corr = np.fft.fftshift(np.real(np.fft.ifft2(power)))
    zero = corr[corr.shape[0] // 2, corr.shape[1] // 2]
    return corr / zero if zero > 0 else np.zeros_like(corr)


def lattice_peaks(image: np.ndarray, max_distance: float | None = None) -> list[tuple[float, float]]:
    """(distance px, correlation) of the autocorrelation's side peaks, nearest first."""
    from skimage.feature import peak_local_max

    corr = _autocorrelation(image)
    centre = np.array(corr.shape) // 2
    limit = max_distance or min(image.shape) / 3
    peaks = peak_local_max(corr, min_distance=2, threshold_abs=0.05, exclude_border=False)
    found = []
    for peak in peaks:
        distance = float(np.hypot(*(peak - centre)))
        if 2.5 <= distance <= limit:
            found.append((distance, float(corr[tuple(peak)])))
    return sorted(found)


def estimate_separation(image: np.ndarray, *, strongest_shell: bool = False) -> float | None:
    """Nearest column spacing (px) from the image's autocorrelation; None when it shows no lattice.

    Precise to about a pixel (peaks at integer lags), which is all the peak finder and
    the fitting masks need. With ``strongest_shell`` the spacing of the strongest of the
    near peaks is given instead: for a perovskite the A-A rather than the A-B distance.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or min(image.shape) < 8 or np.ptp(image) == 0:
        return None
    peaks = [(d, c) for d, c in lattice_peaks(image) if c >= MIN_LATTICE_CORRELATION]
    if not peaks:
        return None
    nearest = peaks[0][0]
    if strongest_shell:
        near = [(d, c) for d, c in peaks if d <= 1.6 * nearest]
        return max(near, key=lambda p: p[1])[0]
    return nearest


def _sorted_xy(xy: np.ndarray) -> np.ndarray:
    """Stable order: by row, then column (rounded so float noise cannot reorder)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return xy[np.lexsort((np.round(xy[:, 0], 6), np.round(xy[:, 1], 6)))]


def _non_negative(image: np.ndarray) -> np.ndarray:
    """The image shifted to a minimum of 0 (atomap's thresholds and centre of mass need it)."""
    data = np.asarray(image, dtype=np.float64)
    return data - data.min()


def find_columns(image: np.ndarray, separation_px: float) -> np.ndarray:
    """Starting positions (N, 2) as (x, y), from atomap's peak finder, sorted by y then x."""
    am = _atomap()
    import hyperspy.api as hs

    peak_separation = max(2, int(round(PEAK_SEPARATION_FRACTION * separation_px)))
    data = _non_negative(image)  # the finder's threshold is relative to the maximum: needs a zero floor
    with _quiet():
        positions = np.asarray(am.get_atom_positions(hs.signals.Signal2D(data), separation=peak_separation),
                               dtype=np.float64).reshape(-1, 2)
    # The peak finder also reports points of flat plateaus (e.g. padding around a
    # rotated image); they are not columns.
    radius = max(1, int(round(PERCENT_TO_NN * separation_px)))
    keep = [np.ptp(data[max(0, int(y) - radius): int(y) + radius + 1, max(0, int(x) - radius): int(x) + radius + 1]) > 0
            for x, y in positions]
    return _sorted_xy(positions[np.asarray(keep, dtype=bool)] if len(positions) else positions)


def peak_significance(image: np.ndarray, xy: np.ndarray, separation_px: float) -> np.ndarray:
    """(N,) signal-to-noise ratio of a peak at each position (N, 2) of ``image`` (bright columns).

    ``t = (mean(disc) - mean(ring)) / (noise * sqrt(1/n_disc + 1/n_ring))``: the mean over a disc
    of radius ``0.25 s`` (at least 1 px) around the (rounded) position against the mean over a
    ring from ``0.4 s`` to ``0.55 s`` (``s`` = ``separation_px``), in units of the standard error
    of that difference. ``noise`` is the local pixel noise: the RMS, over a window of two
    spacings, of the image minus its 3x3 mean, divided by sqrt(8/9) (the factor for white
    noise). Structure also enters that residual at high dose, which only lowers ``t`` where it
    is large anyway. A column gives a large ``t``; a peak that the finder picked in vacuum noise
    or on a flat background gives ``t`` of a few at most. Measured on 192x192 synthetic images
    (vacuum half, particle; 50, 300, 5000 e/A^2): real columns 3.4-48 (lowest at 50 e/A^2, two
    counts at a column's peak), peaks picked in vacuum at most 3.8. Limits: scan-line stripes
    (whole rows brighter) give any peak a few sigma of contrast, so on such frames
    (``exp_hrstem_2``) support peaks pass too; images that were filtered have an underestimated
    noise and every peak passes.
    Why our own: atomap and scikit-image offer no per-peak significance.
    """
    from scipy import ndimage

    data = np.asarray(image, dtype=np.float64)
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(xy) == 0:
        return np.zeros(0)
    residual = (data - ndimage.uniform_filter(data, 3, mode="reflect")) / math.sqrt(8.0 / 9.0)
    window = max(5, int(round(2 * separation_px)) | 1)
    noise = np.sqrt(ndimage.uniform_filter(residual**2, window, mode="reflect"))
    disc_radius = max(1.0, 0.25 * separation_px)
    ring = (0.4 * separation_px, max(0.55 * separation_px, 0.4 * separation_px + 1.5))
    half = int(math.ceil(ring[1]))
    offsets = np.arange(-half, half + 1)
    radius = np.hypot(*np.meshgrid(offsets, offsets, indexing="ij"))
    in_disc, in_ring = radius <= disc_radius, (radius >= ring[0]) & (radius <= ring[1])
    centre = np.round(xy).astype(np.int64)
    rows = np.clip(centre[:, 1, None] + offsets, 0, data.shape[0] - 1)
    cols = np.clip(centre[:, 0, None] + offsets, 0, data.shape[1] - 1)
    patches = data[rows[:, :, None], cols[:, None, :]]
    contrast = patches[:, in_disc].mean(axis=1) - patches[:, in_ring].mean(axis=1)
    sigma = noise[np.clip(centre[:, 1], 0, data.shape[0] - 1), np.clip(centre[:, 0], 0, data.shape[1] - 1)]
    error = sigma * math.sqrt(1.0 / in_disc.sum() + 1.0 / in_ring.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(error > 0, contrast / error, np.where(contrast > 0, np.inf, 0.0))


# --------------------------------------------------------------------------- refining


def _atomap_sublattice(image: np.ndarray, xy: np.ndarray):
    """An atomap Sublattice on ``image`` with its nearest neighbours found."""
    sublattice = _atomap().Sublattice(np.asarray(xy, dtype=np.float64), image=image)
    sublattice.find_nearest_neighbors(nearest_neighbors=min(9, len(xy) - 1))
    return sublattice


def _refine_each(atoms: list, starts: np.ndarray, refine_one: Callable[[object], None]) -> np.ndarray:
    """Run one refinement step atom by atom (as atomap's Sublattice methods do); returns failures.

    A step that raises or leaves a non-finite position (centre of mass of an all-zero
    region, e.g. image padding) puts the atom back at its start and counts as failed,
    so one bad column cannot break its neighbours' fitting regions or the whole image.
    """
    failed = np.zeros(len(atoms), dtype=bool)
    for index, atom in enumerate(atoms):
        try:
            refine_one(atom)
        except (ValueError, ArithmeticError, IndexError):
            failed[index] = True
        if failed[index] or not (np.isfinite(atom.pixel_x) and np.isfinite(atom.pixel_y)):
            atom.pixel_x, atom.pixel_y = float(starts[index, 0]), float(starts[index, 1])
            atom.amplitude_gaussian = 0.0
            failed[index] = True
    return failed


def _refine_atomap(image: np.ndarray, xy: np.ndarray, *, separation_px: float) -> RefinedColumns:
    """atomap's reference refinement: centre of mass, then one 2D Gaussian per column.

    Same steps as ``Sublattice.refine_atom_positions_using_center_of_mass`` and
    ``..._using_2d_gaussian`` (percent_to_nn 0.4 for both), looped here so a failing
    column is marked instead of stopping the image.
    """
    data = _non_negative(image)
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    with _quiet():
        atoms = _atomap_sublattice(data, xy).atom_list
        failed = _refine_each(atoms, xy, lambda atom: atom.refine_position_using_center_of_mass(
            data, percent_to_nn=PERCENT_TO_NN))
        failed |= _refine_each(atoms, xy, lambda atom: atom.refine_position_using_2d_gaussian(
            data, percent_to_nn=PERCENT_TO_NN))
    x = np.array([a.pixel_x for a in atoms], dtype=np.float64)
    y = np.array([a.pixel_y for a in atoms], dtype=np.float64)
    amplitude = np.array([a.amplitude_gaussian for a in atoms], dtype=np.float64)
    return RefinedColumns(
        x=x, y=y, sigma_x=np.array([a.sigma_x for a in atoms], dtype=np.float64),
        sigma_y=np.array([a.sigma_y for a in atoms], dtype=np.float64), amplitude=amplitude,
        ok=fit_ok(x, y, xy, amplitude, data.shape, separation_px) & ~failed,
        rotation=np.array([a.rotation for a in atoms], dtype=np.float64))


def _refiner(method: str) -> Callable[..., RefinedColumns]:
    """The refinement function of ``method``; "batched" lives in remflow.fastfit (same signature)."""
    if method == "atomap":
        return lambda image, xy, *, separation_px: _refine_atomap(image, xy, separation_px=separation_px)
    if method == "batched":
        from remflow import fastfit

        return lambda image, xy, *, separation_px: fastfit.refine_positions(
            image, xy, separation_px=separation_px, method="batched")
    raise ValueError(f"unknown refinement method '{method}'; use 'atomap' or 'batched'")


def refine_positions(image: np.ndarray, xy: np.ndarray, *, separation_px: float,
                     method: str = "atomap") -> RefinedColumns:
    """Refine starting positions ``xy`` (N, 2) = (x, y) on ``image``: centre of mass, then 2D Gaussian.

    ``method`` "atomap" is the reference (atomap's per-column HyperSpy fits);
    "batched" is remflow.fastfit's vectorised least squares. Others raise ValueError.
    """
    refine = _refiner(method)
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(xy) < 2:
        raise ValueError(f"{len(xy)} starting positions: need at least 2 (the fitting region is set by neighbours)")
    return refine(np.asarray(image, dtype=np.float64), xy, separation_px=float(separation_px))


# --------------------------------------------------------------------------- second sublattice


def model_image(shape: tuple[int, int], refined: RefinedColumns) -> np.ndarray:
    """The fitted Gaussians drawn on an empty image (atomap's model; failed fits have amplitude 0)."""
    _atomap()
    from atomap.atom_position import Atom_Position

    good = refined.ok & np.isfinite(refined.amplitude)
    xy = np.column_stack([refined.x[good], refined.y[good]])
    if len(xy) < 2:
        return np.zeros(shape)
    rotation = np.zeros(len(refined.x)) if refined.rotation is None else refined.rotation
    with _quiet():
        sublattice = _atomap_sublattice(np.zeros(shape), xy)
        sublattice.atom_list = [
            Atom_Position(x, y, sigma_x=sx, sigma_y=sy, rotation=r, amplitude=amp)
            for x, y, sx, sy, r, amp in zip(refined.x[good], refined.y[good], refined.sigma_x[good],
                                            refined.sigma_y[good], rotation[good], refined.amplitude[good])]
        return np.asarray(sublattice.get_model_image(show_progressbar=False).data, dtype=np.float64)


def second_sublattice_starts(a_xy: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Centres of sublattice A's unit cells (perovskite B sites along [001]), atomap's way.

    Zone axes are constructed on A; each start is the middle of four A columns, one step
    along each of A's two shortest zone axes (``Sublattice.get_middle_position_list``).
    """
    with _quiet():
        sublattice = _atomap_sublattice(np.asarray(image, dtype=np.float64), a_xy)
        sublattice.construct_zone_axes()
        zones = sublattice.zones_axis_average_distances
        if zones is None or len(zones) < 2:
            return np.empty((0, 2))
        middles = sublattice.get_middle_position_list(zones[0], zones[1])
    return _sorted_xy(np.asarray(middles, dtype=np.float64))


# --------------------------------------------------------------------------- the table


def _group_frame(name: str, start: np.ndarray, fits: dict[str, RefinedColumns], peak_snr: np.ndarray) -> pd.DataFrame:
    """Rows of one sublattice, in the order of its (sorted) starts."""
    frame = pd.DataFrame({"sublattice": [name] * len(start)})
    for kind in ("raw", "restored"):
        frame[f"x_{kind}_px"], frame[f"y_{kind}_px"] = fits[kind].x, fits[kind].y
    for kind in ("raw", "restored"):
        frame[f"sigma_x_{kind}_px"], frame[f"sigma_y_{kind}_px"] = fits[kind].sigma_x, fits[kind].sigma_y
    for kind in ("raw", "restored"):
        frame[f"amplitude_{kind}"] = fits[kind].amplitude
    for kind in ("raw", "restored"):
        frame[f"fit_ok_{kind}"] = np.asarray(fits[kind].ok, dtype=bool)
    frame["peak_snr"] = np.asarray(peak_snr, dtype=np.float64)
    return frame


def empty_table(with_truth: bool) -> pd.DataFrame:
    """A table with the right columns and no rows."""
    return pd.DataFrame(columns=COLUMN_FIELDS + (TRUTH_FIELDS if with_truth else []))


def _no_lattice(reason: str, with_truth: bool, separation_px: float | None,
                left_out: pd.DataFrame | None = None) -> ColumnFit:
    log.info("no lattice found: %s", reason)
    return ColumnFit(empty_table(with_truth), f"no lattice found: {reason}", separation_px,
                     left_out if left_out is not None else empty_left_out())


def empty_left_out() -> pd.DataFrame:
    """A table of left-out candidates with the right columns and no rows."""
    return pd.DataFrame({"x_px": pd.Series(dtype=float), "y_px": pd.Series(dtype=float),
                         "sublattice": pd.Series(dtype=str), "peak_snr": pd.Series(dtype=float),
                         "reason": pd.Series(dtype=str)})


def status_ok(status: str | None) -> bool:
    """True for "ok" and for "ok (<note>)" (e.g. no second sublattice found: A's figures stand)."""
    return status is not None and (status == "ok" or str(status).startswith("ok ("))


def parse_roi(value: object, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """``roi_px`` "x0,y0,x1,y1" (pixels, x0 <= x < x1, y0 <= y < y1) clipped to the image; None when empty.

    Raises ValueError for a malformed value or a rectangle smaller than 8 px either way.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return None
    parts = value if isinstance(value, (list, tuple)) else str(value).replace(";", ",").split(",")
    try:
        x0, y0, x1, y1 = (int(round(float(p))) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"roi_px '{value}' is not four numbers x0,y0,x1,y1") from None
    x0, x1 = max(0, x0), min(shape[1], x1)
    y0, y1 = max(0, y0), min(shape[0], y1)
    if x1 - x0 < 8 or y1 - y0 < 8:
        raise ValueError(f"roi_px '{value}' leaves less than 8x8 pixels of the {shape[1]}x{shape[0]} image")
    return x0, y0, x1, y1


#: Detector names and titles that mean dark columns (annular or plain bright field).
_DARK_PATTERN = re.compile(r"(?<![A-Za-z])(A?BF|bright[ _-]?field)(?![A-Za-z])", re.IGNORECASE)


def column_contrast(setting: str | None, texts: list[str]) -> str:
    """"bright" or "dark" from the sheet's ``contrast`` (``bright``, ``dark``, ``auto``/empty).

    ``auto``: dark when any of ``texts`` (detector names, signal title, file name) names an
    annular or plain bright-field detector (ABF, BF, "bright field"; HAADF, ADF, DF are not),
    else bright. Raises ValueError for another setting.
    """
    value = "auto" if setting is None or str(setting).strip() in ("", "nan", "None") else str(setting).strip().lower()
    if value in ("bright", "dark"):
        return value
    if value != "auto":
        raise ValueError(f"contrast '{setting}' is not bright, dark or auto")
    return "dark" if any(_DARK_PATTERN.search(str(text)) for text in texts if text) else "bright"


def detector_texts(info: dict | None, metadata: dict | None = None, path: str | None = None) -> list[str]:
    """Strings that may name the detector: from the ingest JSON ``info`` every string under a key
    containing "title", "detector" or "signal" (at any depth; the chosen signal of a multi-signal
    file is recorded there; the file's ``other_signals`` are not), from HyperSpy ``metadata`` (a dict) the title and every string under
    a ``Detector`` node, and the file name of ``path``. Missing parts are skipped."""
    texts: list[str] = []

    def walk(node: object, keep: bool) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                name = str(key).lower()
                walk(value, keep or any(w in name for w in ("title", "detector", "signal")))
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value, keep)
        elif keep and isinstance(node, str):
            texts.append(node)

    # The file's other signals (e.g. the BF image beside a HAADF one) say nothing about this one.
    walk({k: v for k, v in (info or {}).items() if k not in ("provenance", "other_signals")}, False)
    walk(metadata or {}, False)
    if path:
        texts.append(re.split(r"[\\/]", str(path))[-1].split("#")[0])
    return texts


#: Peaks whose significance (see :func:`peak_significance`) is below this are not columns.
MIN_PEAK_SNR = 4.5


#: Fractions of the autocorrelation's spacing tried when it gives no lattice region.
SHORTER_SPACINGS = (0.8, 0.65)


def _significant_lattice(raw: np.ndarray, region: np.ndarray, origin: tuple[int, int], spacing: float,
                         min_peak_snr: float) -> tuple:
    """Peaks of ``region`` (restored, ROI) found with ``spacing``, their significance on ``raw``:
    (spacing, significant starts (M, 2), their SNR, largest periodic region, left-out table, n found)."""
    found = find_columns(region, spacing) + np.array(origin, dtype=np.float64)
    snr = peak_significance(raw, found, spacing)
    significant = snr >= min_peak_snr
    left_out = pd.DataFrame({"x_px": found[~significant, 0], "y_px": found[~significant, 1], "sublattice": "A",
                             "peak_snr": snr[~significant], "reason": "not significant"})
    starts = found[significant]
    # The pair shell follows the found columns' own nearest-neighbour distance: the autocorrelation's
    # spacing can be a shorter, sub-lattice distance (e.g. 21 px where SrTiO3's columns are 29 px apart).
    regions = periodic_regions(starts) if len(starts) >= 3 else np.full(len(starts), -1)
    largest = int(np.sum(regions == 0))
    return spacing, starts, snr[significant], largest, left_out, len(found)


def fit_columns(raw: np.ndarray, restored: np.ndarray, *, separation_px: float | None = None,
                second_sublattice: bool = False, refine: str = "atomap", min_columns: int = 20,
                truth: pd.DataFrame | None = None, contrast: str = "bright",
                roi_px: tuple[int, int, int, int] | None = None, min_peak_snr: float = MIN_PEAK_SNR) -> ColumnFit:
    """Find columns on ``restored``, refine the same starts on ``raw`` and on ``restored``.

    ``raw``, ``restored``: 2D images of one shape. ``separation_px``: spacing of neighbouring
    columns of one sublattice (px); None = estimated from the restored image (within the ROI).
    ``contrast`` "dark": columns are minima (ABF/BF); both images are negated before finding and
    fitting (atomap's recipe for dark columns), so sigma and amplitude describe the inverted
    image; positions are unaffected. ``roi_px`` (x0, y0, x1, y1): only columns found inside
    the rectangle (fitting still sees the whole image). ``truth``: true positions (columns
    ``x_px``, ``y_px``); each column's starting position is matched one to one to the nearest
    true position within half the spacing (``x_true_px``, ``y_true_px``; NaN when none).

    Which candidates become columns: a peak whose significance on the *raw* image
    (:func:`peak_significance`) is below ``min_peak_snr`` is not a column (vacuum, flat
    support); the left-out candidates are returned in ``left_out`` with the reason. There is a
    lattice when some region holds at least ``min_columns`` locally periodic columns
    (:func:`remflow.precision.periodic_regions`): particles, grains and domains count; else the
    table is empty and the status "no lattice found: ...". Second sublattice: B candidates
    without a significant peak in the raw image minus its A model are dropped; when fewer than
    half of them are significant (empty sites give a few noise peaks) the status is
    "ok (no second sublattice found: ...)" and A's columns stand.
    Rows are sorted by sublattice, then y, then x of the starting position; column_id 0..n-1.
    Raises ValueError for images of different shapes, NaN/inf pixels, an unknown method or contrast.
    """
    raw = np.asarray(raw, dtype=np.float64)
    restored = np.asarray(restored, dtype=np.float64)
    if raw.shape != restored.shape or raw.ndim != 2:
        raise ValueError(f"raw {raw.shape} and restored {restored.shape} must be 2D images of one shape")
    if not (np.isfinite(raw).all() and np.isfinite(restored).all()):
        raise ValueError("the images contain NaN or infinite pixels")
    if contrast not in ("bright", "dark"):
        raise ValueError(f"contrast must be 'bright' or 'dark', not '{contrast}'")
    _refiner(refine)  # an unknown method fails before any work
    if contrast == "dark":
        raw, restored = -raw, -restored
    with_truth = truth is not None
    given = float(separation_px) if separation_px else None
    x0, y0, x1, y1 = roi_px if roi_px is not None else (0, 0, raw.shape[1], raw.shape[0])
    region = restored[y0:y1, x0:x1]
    if np.ptp(region) == 0:
        return _no_lattice("the restored image is constant", with_truth, given)
    spacing = given or estimate_separation(region, strongest_shell=second_sublattice)
    if spacing is None:
        return _no_lattice("no periodic peaks in the autocorrelation of the restored image", with_truth, None)
    need = max(min_columns, 4)
    # The autocorrelation's nearest strong peak can be a coarser period than the columns (e.g.
    # scan-line stripes over a whole frame with a small particle): when it yields no lattice and
    # the spacing was not given, shorter spacings are tried and the largest lattice region wins.
    candidates = [spacing] if given else [spacing] + [f * spacing for f in SHORTER_SPACINGS if f * spacing >= 4]
    best = None
    for candidate in candidates:
        trial = _significant_lattice(raw, region, (x0, y0), candidate, min_peak_snr)
        if best is None or trial[3] > best[3]:
            best = trial
        if best[3] >= need:
            break
    spacing, starts, snr, largest, left_out, n_found = best
    if len(starts) < need:
        return _no_lattice(f"{len(starts)} significant columns of {n_found} peaks (need at least {need})",
                           with_truth, spacing, left_out)
    if largest < need:
        return _no_lattice(f"no region holds {need} locally periodic columns (largest {largest} of "
                           f"{len(starts)} significant peaks)", with_truth, spacing, left_out)
    refine_a = _refiner(refine)
    images = {"raw": raw, "restored": restored}
    fits_a = {kind: refine_a(image, starts, separation_px=spacing) for kind, image in images.items()}
    groups = [("A", starts, fits_a, snr)]
    status = "ok"
    if second_sublattice:
        a_restored = np.column_stack([fits_a["restored"].x, fits_a["restored"].y])[fits_a["restored"].ok]
        b_starts = second_sublattice_starts(a_restored, restored) if len(a_restored) >= 4 else np.empty((0, 2))
        if len(b_starts):
            # Each image minus its own fitted A model: what is left is B (atomap's recipe).
            residual = {kind: image - model_image(image.shape, fits_a[kind]) for kind, image in images.items()}
            b_snr = peak_significance(residual["raw"], b_starts, spacing)
            b_ok = b_snr >= min_peak_snr
            # B candidates are the centres of A's cells: a real B sublattice makes most of them
            # significant; empty sites give a few noise peaks above the threshold at most.
            b_found = b_ok.sum() >= max(2, 0.5 * len(b_starts))
            b_keep = b_ok if b_found else np.zeros(len(b_starts), dtype=bool)
            reasons = np.where(b_ok, "most B candidates not significant", "not significant")
            left_out = pd.concat([left_out, pd.DataFrame({
                "x_px": b_starts[~b_keep, 0], "y_px": b_starts[~b_keep, 1], "sublattice": "B",
                "peak_snr": b_snr[~b_keep], "reason": reasons[~b_keep]})], ignore_index=True)
            if b_keep.any():
                fits_b = {kind: refine_a(residual[kind], b_starts[b_keep], separation_px=spacing) for kind in images}
                groups.append(("B", b_starts[b_keep], fits_b, b_snr[b_keep]))
            else:
                status = (f"ok (no second sublattice found: only {int(b_ok.sum())} of {len(b_starts)} B candidates "
                          f"have a significant peak; sublattice A stands)")
        else:
            status = "ok (no second sublattice found: no B sites between the A columns; sublattice A stands)"
        if status != "ok":
            log.warning("%s", status)
    table = pd.concat([_group_frame(name, start, fits, peak) for name, start, fits, peak in groups],
                      ignore_index=True)
    table.insert(0, "column_id", np.arange(len(table)))
    if with_truth:
        # One matching over all sublattices, from the starts: the same pairs for raw and restored.
        all_starts = np.concatenate([start for _, start, _, _ in groups])
        true_xy = truth[["x_px", "y_px"]].to_numpy(dtype=np.float64)
        match = match_nearest(all_starts, true_xy, 0.5 * spacing)
        matched = np.full((len(all_starts), 2), np.nan)
        matched[match >= 0] = true_xy[match[match >= 0]]
        table["x_true_px"], table["y_true_px"] = matched[:, 0], matched[:, 1]
    table = table[COLUMN_FIELDS + (TRUTH_FIELDS if with_truth else [])]
    log.info("%d columns (%s), spacing %.3f px, %d candidates left out", len(table),
             ", ".join(f"{n}: {len(s)}" for n, s, _, _ in groups), spacing, len(left_out))
    return ColumnFit(table, status, spacing, left_out.reset_index(drop=True))
