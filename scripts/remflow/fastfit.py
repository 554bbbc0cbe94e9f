"""All atom columns refined at once: atomap's 2D-Gaussian refinement, vectorised.

atomap refines column after column (``Sublattice.refine_atom_positions_using_center_of_mass``
then ``refine_atom_positions_using_2d_gaussian``), each Gaussian a HyperSpy model fitted
by MINPACK's Levenberg-Marquardt, about 10-20 ms per column. This module fits the same
model to the same data with the same starts and acceptance rules, for all columns at
once: the data of every column is prepared in NumPy over padded per-column patches,
and a Levenberg-Marquardt with the analytic Jacobian, compiled with numba (installed
with atomap), fits chunks of columns in threads on all cores.

Where MINPACK's path from its far-off start (width 1 px) ends in a different local
minimum, the two can differ; :func:`compare_with_reference` tells these columns apart.

What is replicated from atomap 0.4.2, because each of these changes the answer:

* the neighbour list: the 8 nearest starting positions (a k-d tree query for 9);
* the mask radius ``percent_to_nn`` x the distance to the closest neighbour, measured
  at the moment atomap reaches the column: neighbours earlier in the list have already
  moved, later ones not. This is solved exactly by fixed-point passes (a column is
  refitted only when its pixels change), not approximated;
* centre of mass: a square crop of half-size ceil(radius) around the rounded position,
  zero outside the image and outside the circle;
* the Gaussian's data: the rectangular crop around the circle, zeroed outside it, minus
  the median of the lowest 3 % of the masked pixels, clipped at zero; the model is fitted
  to the whole rectangle, zeros included;
* the model ``A / (2 pi sx sy) exp(-(u^2 / 2sx^2 + v^2 / 2sy^2))`` with (u, v) the offsets
  rotated by ``rotation``, started at sigma 1, rotation 0.01 and A = 10 x the median of
  the top 3 % of the crop;
* acceptance: the fitted centre inside the crop (not on its first row or column) and
  inside the circle, A >= 0, sigma ratio <= 4; otherwise up to nine retries with a 5 %
  smaller circle on the already processed data, then the centre of mass with amplitude 0.

Coordinates are atomap's: ``x`` the column index, ``y`` the row index, pixel centres
at integers.
"""

from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from remflow.refined import RefinedColumns, fit_ok

log = logging.getLogger(__name__)

#: atomap's nearest-neighbour query size (the atom itself included).
NEIGHBOUR_QUERY = 9
#: atomap's fitting attempts before falling back to the centre of mass.
MAX_ATTEMPTS = 10
#: Shrink factor of the mask radius after a rejected fit.
RETRY_SHRINK = 0.95
#: Fraction of pixels whose median gives the background (lowest) and the start amplitude (highest).
PERCENTILE_FRACTION = 0.03
#: Fits with fewer pixels than this are rejected, as atomap does.
MIN_FIT_PIXELS = 6
#: Largest accepted ratio of the two fitted widths.
MAX_SIGMA_RATIO = 4.0
#: Starting width and rotation of every Gaussian (atomap's Atom_Position defaults).
START_SIGMA = 1.0
START_ROTATION = 0.01
#: atomap's starting value for the closest-neighbour search, left when a column has no neighbour.
NO_NEIGHBOUR_DISTANCE = 1e17
#: Columns prepared and fitted together in one chunk (bounds the memory of the padded patches).
CHUNK_COLUMNS = 512


@dataclass
class _Fit:
    """Gaussian results for a set of columns; ``good`` False where atomap would fall back."""

    params: np.ndarray  # (K, 6): A, sigma_x, sigma_y, centre_x, centre_y, rotation
    good: np.ndarray
    cost: np.ndarray | None = None  # sum of squares of the accepted fit (NaN if none)
    other_cost: np.ndarray | None = None  # the same, for other parameters on the same pixels


def refine_positions(image: np.ndarray, xy: np.ndarray, *, separation_px: float,
                     method: str = "batched") -> RefinedColumns:
    """The "batched" refinement behind :func:`remflow.columns.refine_positions`.

    Prepares the image as remflow's atomap reference does (shifted to a minimum of 0,
    so that centre-of-mass weights are not negative), then fits all columns at once.
    """
    if method != "batched":
        raise ValueError(f"remflow.fastfit only provides the 'batched' refinement, not '{method}'")
    data = np.asarray(image, dtype=np.float64)
    return refine_positions_batched(data - data.min(), xy, separation_px=separation_px)


def refine_positions_batched(image: np.ndarray, xy: np.ndarray, *, separation_px: float,
                             percent_to_nn: float = 0.40, workers: int | None = None,
                             max_iterations: int = 200) -> RefinedColumns:
    """Centre of mass then 2D Gaussian refinement of all columns at once, as atomap does it.

    ``xy`` (N, 2) are the starting positions (x, y) in atomap's order: the order matters
    because atomap measures each column's nearest neighbour after the earlier ones moved.
    Returns x, y, sigma_x, sigma_y, amplitude (0 where atomap would fall back to the centre
    of mass), rotation (radians in [0, pi)) and ``ok`` (see :func:`remflow.columns.fit_ok`;
    ``separation_px`` only enters there). A column whose centre of mass is undefined (an
    all-zero region) is put back at its start with amplitude 0, as remflow's atomap
    reference does. ``workers`` threads fit chunks of columns (default: all usable cores).
    """
    data = np.asarray(image, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {data.shape}")
    start = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(start) < 2:
        raise ValueError(f"{len(start)} starting positions: need at least 2 (the fitting region is set by neighbours)")
    workers = workers or usable_cores()
    neighbours = nearest_neighbour_lists(start)
    centre, failed = refine_centre_of_mass(data, start, neighbours, percent_to_nn)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        params, good, final, lost = _refine_gaussian(data, centre, start, neighbours, percent_to_nn, pool,
                                                     workers, max_iterations)
    failed |= lost
    amplitude = np.where(good, params[:, 0], 0.0)
    x, y = final[:, 0], final[:, 1]
    return RefinedColumns(
        x=x, y=y,
        sigma_x=np.where(good, np.abs(params[:, 1]), START_SIGMA),
        sigma_y=np.where(good, np.abs(params[:, 2]), START_SIGMA),
        amplitude=amplitude,
        ok=fit_ok(x, y, start, amplitude, data.shape, separation_px) & ~failed,
        rotation=np.where(good, np.mod(params[:, 5], math.pi), START_ROTATION),
    )


def compare_with_reference(image: np.ndarray, xy: np.ndarray, reference: RefinedColumns,
                           batched: RefinedColumns, *, percent_to_nn: float = 0.40,
                           tolerance_px: float = 0.05) -> dict[str, np.ndarray]:
    """Where the batched fit differs from atomap's (``reference``), and whether that is atomap's local minimum.

    ``image`` and ``xy`` as both fitters got them (remflow's ``refine_positions`` shifts the
    image to a minimum of 0 first). Every column is refitted by the batched solver on
    exactly the pixels atomap used, i.e. with the fitting regions that follow from
    atomap's own results. Where that refit and atomap differ by more than
    ``tolerance_px`` and atomap's parameters have the larger sum of squares on those
    pixels, MINPACK stopped in a worse local minimum (its path from the start width of
    1 px depends on rounding): ``reference_worse``. Such a column changes its neighbours'
    fitting regions in one run and not in the other; ``knock_on`` marks columns whose
    region differs for that reason only (their refit on atomap's pixels agrees with atomap).

    Returns per-column arrays: ``distance`` (px, batched vs atomap), ``same_pixels_distance``
    (px, refit on atomap's pixels vs atomap), ``both_ok``, ``reference_worse``, ``knock_on``
    and ``comparable`` (both ok and neither of the two).
    """
    data = np.asarray(image, dtype=np.float64)
    start = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    neighbours = nearest_neighbour_lists(start)
    centre, _ = refine_centre_of_mass(data, start, neighbours, percent_to_nn)
    reference_xy = np.column_stack([reference.x, reference.y])
    batched_xy = np.column_stack([batched.x, batched.y])
    closest_reference = closest_neighbour_distance(centre, reference_xy, centre, neighbours)
    closest_batched = closest_neighbour_distance(centre, batched_xy, centre, neighbours)
    size = max(_region_size(closest_reference, percent_to_nn), _region_size(closest_batched, percent_to_nn))
    reference_regions = _regions(data.shape, centre, closest_reference, percent_to_nn, size)
    batched_regions = _regions(data.shape, centre, closest_batched, percent_to_nn, size)
    rotation = reference.rotation if reference.rotation is not None else np.full(len(start), START_ROTATION)
    reference_params = np.column_stack([reference.amplitude, reference.sigma_x, reference.sigma_y,
                                        reference.x, reference.y, rotation])
    refit = _fit_columns(data, centre, reference_regions, 200, other=reference_params)
    same_pixels_distance = np.hypot(*(refit.params[:, 3:5] - reference_xy).T)
    both_ok = np.asarray(reference.ok) & np.asarray(batched.ok)
    with np.errstate(invalid="ignore"):
        reference_worse = (both_ok & refit.good & (same_pixels_distance > tolerance_px)
                           & (refit.other_cost > refit.cost * (1 + 1e-9)))
    region_differs = reference_regions.differs(batched_regions)
    agrees = refit.good & (same_pixels_distance <= tolerance_px)
    knock_on = np.zeros(len(start), dtype=bool)
    while True:  # neighbours of excluded columns, transitively
        excluded = reference_worse | knock_on
        grown = region_differs & agrees & ~excluded & excluded[neighbours].any(axis=1)
        if not grown.any():
            break
        knock_on |= grown
    return {
        "distance": np.hypot(*(batched_xy - reference_xy).T),
        "same_pixels_distance": same_pixels_distance,
        "both_ok": both_ok,
        "reference_worse": reference_worse,
        "knock_on": knock_on,
        "comparable": both_ok & ~reference_worse & ~knock_on,
    }


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def nearest_neighbour_lists(xy: np.ndarray) -> np.ndarray:
    """(N, k) indices of each column's nearest neighbours, as atomap's ``find_nearest_neighbors``
    called the way remflow's reference calls it (query size ``min(9, N - 1)``, first hit dropped)."""
    count = min(NEIGHBOUR_QUERY, len(xy) - 1)
    _, index = cKDTree(xy).query(xy, count)
    return np.asarray(index).reshape(len(xy), count)[:, 1:]


def closest_neighbour_distance(own: np.ndarray, before: np.ndarray, after: np.ndarray,
                               neighbours: np.ndarray) -> np.ndarray:
    """Distance from each column (at ``own``) to its closest listed neighbour, as atomap sees it
    in its serial loop: neighbours earlier in the list at ``before``, later ones at ``after``."""
    if neighbours.shape[1] == 0:
        return np.full(len(own), NO_NEIGHBOUR_DISTANCE)
    order = np.arange(len(own))[:, np.newaxis]
    where = np.where((neighbours < order)[..., np.newaxis], before[neighbours], after[neighbours])
    return np.hypot(own[:, np.newaxis, 0] - where[..., 0], own[:, np.newaxis, 1] - where[..., 1]).min(axis=1)


# --- centre of mass --------------------------------------------------------------------------

def centre_of_mass(image: np.ndarray, xy: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """atomap's centre of mass of each column within ``radius`` (zero outside the circle and image)."""
    centre = np.round(xy).astype(np.int64)  # banker's rounding, as Python's round
    crop = np.ceil(radius).astype(np.int64)
    half = int(crop.max()) if len(crop) else 0
    offsets = np.arange(-half, half + 1)
    patch = _gather(image, centre[:, 1, np.newaxis] + offsets, centre[:, 0, np.newaxis] + offsets)
    inside = offsets[np.newaxis, :, np.newaxis] ** 2 + offsets[np.newaxis, np.newaxis, :] ** 2 \
        <= (radius ** 2)[:, np.newaxis, np.newaxis]
    weights = np.where(inside, patch, 0.0)
    total = weights.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        x = centre[:, 0] + (weights.sum(axis=1) * offsets).sum(axis=1) / total
        y = centre[:, 1] + (weights.sum(axis=2) * offsets).sum(axis=1) / total
    return np.column_stack([x, y])


def refine_centre_of_mass(image: np.ndarray, start: np.ndarray, neighbours: np.ndarray,
                          percent_to_nn: float) -> tuple[np.ndarray, np.ndarray]:
    """atomap's serial centre-of-mass pass, solved by passes until no column moves any more.

    Returns the positions and which columns failed (undefined centre: left at the start).
    """
    moved = start.copy()
    for _ in range(len(start) + 1):  # dependencies only run forward: at most N passes
        radius = closest_neighbour_distance(start, moved, start, neighbours) * percent_to_nn
        updated = centre_of_mass(image, start, radius)
        failed = ~np.isfinite(updated).all(axis=1)
        updated[failed] = start[failed]
        if np.array_equal(updated, moved):
            return updated, failed
        moved = updated
    log.warning("centre-of-mass passes did not settle; results may differ slightly from atomap's")
    return moved, ~np.isfinite(centre_of_mass(image, start, radius)).all(axis=1)


def _gather(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """image[rows, cols] for (K, H) rows and (K, W) cols, zero outside the image."""
    height, width = image.shape
    inside = ((rows >= 0) & (rows < height))[:, :, np.newaxis] & ((cols >= 0) & (cols < width))[:, np.newaxis, :]
    values = image[np.clip(rows, 0, height - 1)[:, :, np.newaxis], np.clip(cols, 0, width - 1)[:, np.newaxis, :]]
    return np.where(inside, values, 0.0)


# --- fitting regions -------------------------------------------------------------------------

@dataclass
class _Regions:
    """Each column's rectangular crop and the circles of its first and later attempts."""

    top: np.ndarray
    left: np.ndarray
    valid: np.ndarray  # (K, S, S): inside the rectangular crop
    first: np.ndarray  # (K, S, S): inside the first attempt's circle
    retry: np.ndarray  # (K, S, S): inside the circle of attempts 2..10

    def select(self, index: np.ndarray) -> _Regions:
        return _Regions(self.top[index], self.left[index], self.valid[index], self.first[index], self.retry[index])

    def differs(self, other: _Regions) -> np.ndarray:
        return ((self.top != other.top) | (self.left != other.left) | (self.valid != other.valid).any(axis=(1, 2))
                | (self.first != other.first).any(axis=(1, 2)) | (self.retry != other.retry).any(axis=(1, 2)))


def _regions(shape: tuple[int, int], centre: np.ndarray, closest: np.ndarray, percent_to_nn: float,
             size: int) -> _Regions:
    """atomap's crop (rounded bounds, clipped to the image) and masks, on a padded S x S grid."""
    radius = closest * percent_to_nn
    retry_radius = closest * (percent_to_nn * RETRY_SHRINK)  # atomap's product, same rounding
    x, y = centre[:, 0], centre[:, 1]
    left = np.maximum(np.round(x - radius), 0).astype(np.int64)
    top = np.maximum(np.round(y - radius), 0).astype(np.int64)
    right = np.minimum(np.round(x + radius).astype(np.int64) + 1, shape[1])
    bottom = np.minimum(np.round(y + radius).astype(np.int64) + 1, shape[0])
    grid = np.arange(size)
    valid = ((grid < (bottom - top)[:, np.newaxis])[:, :, np.newaxis]
             & (grid < (right - left)[:, np.newaxis])[:, np.newaxis, :])
    dy = grid - (y - top)[:, np.newaxis]  # atomap's ogrid: index minus shifted position
    dx = grid - (x - left)[:, np.newaxis]
    distance2 = dx[:, np.newaxis, :] * dx[:, np.newaxis, :] + dy[:, :, np.newaxis] * dy[:, :, np.newaxis]
    first = valid & (distance2 <= (radius * radius)[:, np.newaxis, np.newaxis])
    retry = valid & (distance2 <= (retry_radius * retry_radius)[:, np.newaxis, np.newaxis])
    return _Regions(top, left, valid, first, retry)


def _region_size(closest: np.ndarray, percent_to_nn: float) -> int:
    """Side of the padded grid holding every crop (rounded bounds add at most 2 px)."""
    return int(2 * math.ceil(float(np.max(closest)) * percent_to_nn) + 3)


# --- Gaussian refinement ---------------------------------------------------------------------

def _refine_gaussian(image: np.ndarray, centre: np.ndarray, start: np.ndarray, neighbours: np.ndarray,
                     percent_to_nn: float, pool: ThreadPoolExecutor, workers: int,
                     max_iterations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """atomap's serial Gaussian pass, solved by passes; only columns whose pixels change are refitted.

    Returns the parameters, which fits atomap would accept, the final positions (the
    Gaussian's centre, else the centre of mass), and which columns were lost (no centre
    of mass either: put back at ``start``, as remflow's reference does).
    """
    count = len(centre)
    closest = closest_neighbour_distance(centre, centre, centre, neighbours)
    size = _region_size(closest, percent_to_nn)
    regions = _regions(image.shape, centre, closest, percent_to_nn, size)
    params = np.zeros((count, 6))
    good = np.zeros(count, dtype=bool)
    todo = np.arange(count)
    final = centre.copy()
    for _ in range(count + 1):  # dependencies only run forward: at most N passes
        if len(todo):
            fit = _fit_chunks(image, centre[todo], regions.select(todo), pool, workers, max_iterations)
            params[todo], good[todo] = fit.params, fit.good
        final = np.where(good[:, np.newaxis], params[:, 3:5], np.nan)
        if not good.all():
            bad = ~good
            final[bad] = centre_of_mass(image, centre[bad], closest[bad] * _serial_product(percent_to_nn))
        lost = ~np.isfinite(final).all(axis=1)
        final[lost] = start[lost]
        new_closest = closest_neighbour_distance(centre, final, centre, neighbours)
        new_size = max(size, _region_size(new_closest, percent_to_nn))
        new_regions = _regions(image.shape, centre, new_closest, percent_to_nn, new_size)
        if new_size != size:
            regions = _regions(image.shape, centre, closest, percent_to_nn, new_size)
            size = new_size
        changed = regions.differs(new_regions)
        fallback_moved = ~good & (new_closest != closest)
        closest = new_closest
        if not changed.any() and not fallback_moved.any():
            return params, good, final, lost
        regions = new_regions
        todo = np.flatnonzero(changed)
    log.warning("Gaussian refinement passes did not settle; results may differ slightly from atomap's")
    return params, good, final, lost


def _serial_product(percent_to_nn: float) -> float:
    """atomap's fallback ``percent_to_nn``: shrunk once per rejected attempt but the last, by repeated products."""
    value = percent_to_nn
    for _ in range(MAX_ATTEMPTS - 1):
        value *= RETRY_SHRINK
    return value


def _fit_chunks(image: np.ndarray, centre: np.ndarray, regions: _Regions, pool: ThreadPoolExecutor,
                workers: int, max_iterations: int) -> _Fit:
    """Fit columns in chunks on the thread pool (NumPy releases the GIL in its array loops)."""
    count = len(centre)
    chunks = max(workers, math.ceil(count / CHUNK_COLUMNS))
    bounds = np.linspace(0, count, min(chunks, count) + 1).astype(int)
    jobs = [pool.submit(_fit_columns, image, centre[a:b], regions.select(np.arange(a, b)), max_iterations)
            for a, b in zip(bounds, bounds[1:]) if b > a]
    parts = [job.result() for job in jobs]
    return _Fit(np.concatenate([p.params for p in parts]), np.concatenate([p.good for p in parts]))


def _fit_columns(image: np.ndarray, centre: np.ndarray, regions: _Regions, max_iterations: int,
                 other: np.ndarray | None = None) -> _Fit:
    """All of atomap's attempts for a chunk of columns: fit, check, shrink the circle and retry.

    With ``other`` parameters (K, 6), their sum of squares on the pixels of the accepted
    attempt is returned too (to compare another fitter's result on the same data).
    """
    count, size = len(centre), regions.valid.shape[1]
    grid = np.arange(size)
    ys = np.broadcast_to((regions.top[:, np.newaxis] + grid)[:, :, np.newaxis], (count, size, size)).astype(np.float64)
    xs = np.broadcast_to((regions.left[:, np.newaxis] + grid)[:, np.newaxis, :], (count, size, size)).astype(np.float64)
    data = np.where(regions.valid, _gather(image, regions.top[:, np.newaxis] + grid,
                                           regions.left[:, np.newaxis] + grid), 0.0)
    params = np.zeros((count, 6))
    good = np.zeros(count, dtype=bool)
    cost, other_cost = np.full(count, np.nan), np.full(count, np.nan)
    pending = np.flatnonzero(regions.valid.sum(axis=(1, 2)) >= MIN_FIT_PIXELS)
    for attempt in range(MAX_ATTEMPTS):
        if not len(pending):
            break
        mask = (regions.first if attempt == 0 else regions.retry)[pending]
        valid = regions.valid[pending]
        processed = _prepare_data(data[pending], mask, valid)
        if attempt > 1:
            # Same data and circle as the rejected attempt before: the same fit, rejected again.
            same = (processed == data[pending]).all(axis=(1, 2))
            pending, mask, valid, processed = pending[~same], mask[~same], valid[~same], processed[~same]
            if not len(pending):
                break
        data[pending] = processed  # atomap processes its crop in place, attempt after attempt
        start = _start_parameters(processed, valid, centre[pending])
        fitted = levenberg_marquardt(processed.reshape(len(pending), -1), valid.reshape(len(pending), -1),
                                     xs[pending].reshape(len(pending), -1), ys[pending].reshape(len(pending), -1),
                                     start, max_iterations)
        accepted = _accepted(fitted, regions.top[pending], regions.left[pending], mask, valid)
        params[pending[accepted]] = fitted[accepted]
        good[pending[accepted]] = True
        if other is not None and accepted.any():
            done = pending[accepted]
            flat = [a[accepted].reshape(len(done), -1) for a in (processed, valid, xs[pending], ys[pending])]
            cost[done] = _sum_of_squares(fitted[accepted], *flat)
            other_cost[done] = _sum_of_squares(other[done], *flat)
        pending = pending[~accepted]
    return _Fit(params, good, cost, other_cost)


def _sum_of_squares(params: np.ndarray, data: np.ndarray, valid: np.ndarray, xs: np.ndarray,
                    ys: np.ndarray) -> np.ndarray:
    residual = np.where(valid, gaussian(params, xs, ys) - data, 0.0)
    return np.einsum("kp,kp->k", residual, residual)


def _prepare_data(data: np.ndarray, mask: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Zero outside the circle, subtract the median of the lowest 3 % inside it, clip at zero."""
    masked = np.where(mask, data, 0.0)
    background = _median_of_extreme(np.where(mask, masked, np.inf), mask.sum(axis=(1, 2)), lowest=True)
    out = masked - background[:, np.newaxis, np.newaxis]
    out[out < 0] = 0.0
    return np.where(valid, out, 0.0)


def _median_of_extreme(values: np.ndarray, counts: np.ndarray, *, lowest: bool) -> np.ndarray:
    """Median of the lowest (or highest) 3 % of each patch's ``counts`` real values (at least one).

    Padding must sort to the far end: +inf for the lowest, -inf for the highest.
    """
    flat = np.sort(values.reshape(len(values), -1), axis=1)
    amount = np.maximum((PERCENTILE_FRACTION * counts).astype(np.int64), 1)
    if lowest:
        first = np.zeros_like(amount)
    else:
        first = flat.shape[1] - amount
    lower = first + (amount - 1) // 2
    upper = first + amount // 2
    rows = np.arange(len(flat))
    return 0.5 * (flat[rows, lower] + flat[rows, upper])


def _start_parameters(data: np.ndarray, valid: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """atomap's starting Gaussian: 10 x the median of the top 3 % as A, sigma 1, rotation 0.01."""
    upper = _median_of_extreme(np.where(valid, data, -np.inf), valid.sum(axis=(1, 2)), lowest=False)
    start = np.empty((len(data), 6))
    start[:, 0] = 10 * upper
    start[:, 1:3] = START_SIGMA
    start[:, 3:5] = centre
    start[:, 5] = START_ROTATION
    return start


def _accepted(params: np.ndarray, top: np.ndarray, left: np.ndarray, mask: np.ndarray,
              valid: np.ndarray) -> np.ndarray:
    """atomap's checks: centre inside the crop (index > 0) and inside the circle, A >= 0, sigma ratio <= 4."""
    rows = _hyperspy_index(params[:, 4], top)
    cols = _hyperspy_index(params[:, 3], left)
    heights, widths = valid.any(axis=2).sum(axis=1), valid.any(axis=1).sum(axis=1)
    inside = np.isfinite(rows) & np.isfinite(cols) & (rows > 0) & (rows < heights) & (cols > 0) & (cols < widths)
    index = np.arange(len(params))
    in_circle = np.zeros(len(params), dtype=bool)
    in_circle[inside] = mask[index[inside], rows[inside].astype(np.int64), cols[inside].astype(np.int64)]
    sigma = np.abs(params[:, 1:3])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = sigma.max(axis=1) / sigma.min(axis=1)
    return inside & in_circle & (params[:, 0] >= 0) & (ratio <= MAX_SIGMA_RATIO) & np.isfinite(params).all(axis=1)


def _hyperspy_index(value: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """HyperSpy's ``value2index`` on a unit-scale axis: half rounds towards zero; NaN off the axis."""
    with np.errstate(invalid="ignore"):
        index = 1e-12 * np.trunc((value - offset) * 1e12)
        rounded = np.where(value >= 0, np.ceil(index - 0.5), np.floor(index + 0.5))
    return np.where(np.isfinite(rounded) & (rounded >= 0), rounded, np.nan)


# --- the model and its least squares ---------------------------------------------------------

def gaussian(params: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """atomap's rotated 2D Gaussian for each row of ``params`` (A, sx, sy, x0, y0, rotation) on its pixels.

    With offsets rotated by the rotation t, u = cos t dx - sin t dy and v = sin t dx + cos t dy,
    the exponent u^2 / 2sx^2 + v^2 / 2sy^2 is atomap's a dx^2 + 2b dx dy + c dy^2.
    """
    amplitude, sx, sy, x0, y0, theta = (params[:, i, np.newaxis] for i in range(6))
    dx, dy = xs - x0, ys - y0
    u = np.cos(theta) * dx - np.sin(theta) * dy
    v = np.sin(theta) * dx + np.cos(theta) * dy
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return amplitude / (2 * math.pi * sx * sy) * np.exp(-0.5 * (u * u / (sx * sx) + v * v / (sy * sy)))


def levenberg_marquardt(data: np.ndarray, weight: np.ndarray, xs: np.ndarray, ys: np.ndarray,
                        start: np.ndarray, max_iterations: int = 200) -> np.ndarray:
    """Least squares of the Gaussian on each row of ``data`` (pixels with ``weight`` 0 ignored).

    Levenberg-Marquardt per row, compiled (numba, already installed with atomap), with
    analytic derivatives and MINPACK-style scaling: damping by the largest diagonal of
    J^T J seen so far. A row stops when a step changes its sum of squares or its
    parameters by less than 1e-12 relative, or when no step lowers it any more.
    """
    out = np.array(start, dtype=np.float64, copy=True)
    _lm_rows(np.ascontiguousarray(data, dtype=np.float64), np.ascontiguousarray(weight, dtype=np.float64),
             np.ascontiguousarray(xs, dtype=np.float64), np.ascontiguousarray(ys, dtype=np.float64),
             out, max_iterations)
    return out


def _kernel(function):
    """Compile with numba (installed with atomap), cached on disk; no fast-math, to stay IEEE exact."""
    import numba

    return numba.njit(cache=True, nogil=True, fastmath=False)(function)


#: Relative change of the sum of squares or of every parameter below which a fit has converged.
_TOLERANCE = 1e-12


@_kernel
def _evaluate(p, d, w, x, y, jtj, grad):  # pragma: no cover - compiled
    """Sum of squares at ``p``; with ``jtj`` non-empty also J^T J and J^T r (r = model - data)."""
    amplitude, sx, sy, x0, y0, theta = p[0], p[1], p[2], p[3], p[4], p[5]
    cos, sin = np.cos(theta), np.sin(theta)
    inv_x2, inv_y2 = 1.0 / (sx * sx), 1.0 / (sy * sy)
    norm = 1.0 / (2.0 * np.pi * sx * sy)
    with_jacobian = jtj.shape[0] == 6
    if with_jacobian:
        jtj[:, :] = 0.0
        grad[:] = 0.0
    j = np.empty(6)
    cost = 0.0
    for k in range(d.shape[0]):
        if w[k] == 0.0:
            continue
        dx, dy = x[k] - x0, y[k] - y0
        u = cos * dx - sin * dy
        v = sin * dx + cos * dy
        shape = np.exp(-0.5 * (u * u * inv_x2 + v * v * inv_y2)) * norm
        model = amplitude * shape
        r = model - d[k]
        cost += r * r
        if with_jacobian:
            ux, vy = u * inv_x2, v * inv_y2
            j[0] = shape
            j[1] = model * (u * ux - 1.0) / sx
            j[2] = model * (v * vy - 1.0) / sy
            j[3] = model * (ux * cos + vy * sin)
            j[4] = model * (vy * cos - ux * sin)
            j[5] = model * u * v * (inv_x2 - inv_y2)
            for a in range(6):
                grad[a] += j[a] * r
                for b in range(a, 6):
                    jtj[a, b] += j[a] * j[b]
    if with_jacobian:
        for a in range(6):
            for b in range(a):
                jtj[a, b] = jtj[b, a]
    return cost


@_kernel
def _solve6(matrix, rhs, out):  # pragma: no cover - compiled
    """Cholesky solve of a 6x6 symmetric system; False if it is not positive definite."""
    low = np.zeros((6, 6))
    for i in range(6):
        for k in range(i + 1):
            total = matrix[i, k]
            for m in range(k):
                total -= low[i, m] * low[k, m]
            if i == k:
                if not total > 0.0:
                    return False
                low[i, i] = np.sqrt(total)
            else:
                low[i, k] = total / low[k, k]
    tmp = np.empty(6)
    for i in range(6):
        total = rhs[i]
        for m in range(i):
            total -= low[i, m] * tmp[m]
        tmp[i] = total / low[i, i]
    for i in range(5, -1, -1):
        total = tmp[i]
        for m in range(i + 1, 6):
            total -= low[m, i] * out[m]
        out[i] = total / low[i, i]
    return True


@_kernel
def _lm_row(d, w, x, y, p, max_iterations):  # pragma: no cover - compiled
    """Levenberg-Marquardt on one column's pixels; ``p`` holds the start and receives the result."""
    jtj, grad = np.empty((6, 6)), np.empty(6)
    trial_jtj, trial_grad = np.empty((6, 6)), np.empty(6)
    cost = _evaluate(p, d, w, x, y, jtj, grad)
    if not np.isfinite(cost):
        return
    scale = np.zeros(6)
    system, step, trial = np.empty((6, 6)), np.empty(6), np.empty(6)
    damping, growth = 1e-3, 2.0
    for _ in range(max_iterations):
        for a in range(6):
            scale[a] = max(scale[a], jtj[a, a])
        for a in range(6):
            for b in range(6):
                system[a, b] = jtj[a, b]
            system[a, a] += damping * (scale[a] if scale[a] > 0.0 else 1.0)
        ok = _solve6(system, -grad, step)
        trial_cost = np.inf
        if ok:
            for a in range(6):
                trial[a] = p[a] + step[a]
            # Derivatives at the trial point too: most steps are accepted and need them next.
            trial_cost = _evaluate(trial, d, w, x, y, trial_jtj, trial_grad)
        if ok and np.isfinite(trial_cost) and trial_cost < cost:
            predicted = 0.0
            for a in range(6):
                predicted += step[a] * (damping * (scale[a] if scale[a] > 0.0 else 1.0) * step[a] - grad[a])
            gain = (cost - trial_cost) / predicted if predicted > 0.0 else 0.0
            small_cost = cost - trial_cost <= _TOLERANCE * cost
            small_step = True
            for a in range(6):
                if abs(step[a]) > _TOLERANCE * (abs(p[a]) + _TOLERANCE):
                    small_step = False
            p[:] = trial
            cost = trial_cost
            jtj[:, :] = trial_jtj
            grad[:] = trial_grad
            damping *= max(1.0 / 3.0, 1.0 - (2.0 * gain - 1.0) ** 3)
            growth = 2.0
            if small_cost or small_step:
                return
        else:
            damping *= growth
            growth *= 2.0
            if damping > 1e16:
                return


@_kernel
def _lm_rows(data, weight, xs, ys, params, max_iterations):  # pragma: no cover - compiled
    """:func:`_lm_row` on each row with finite starting parameters."""
    for i in range(data.shape[0]):
        finite = True
        for a in range(6):
            if not np.isfinite(params[i, a]):
                finite = False
        if finite:
            _lm_row(data[i], weight[i], xs[i], ys[i], params[i], max_iterations)
