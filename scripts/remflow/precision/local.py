"""Local precision: each column against where its lattice neighbours put it.

Formula (midpoint of opposite neighbours). Per sublattice, on the restored positions (so raw
and restored use the same columns and pairs), column ``i`` gets every pair ``(j, k)`` of its
neighbours (0.6 to 1.8 nearest-neighbour distances away) that lie opposite each other:
``|d_ij + d_ik| < 0.2 |d|`` with ``d_ij = r_j - r_i``. For each pair and each image

    e = r_i - (r_j + r_k) / 2.

If every column's fitted position has an independent, isotropic error of variance sigma^2 per
axis, ``var(e) = sigma^2 + sigma^2/4 + sigma^2/4 = 1.5 sigma^2`` per axis, so
``|e|^2 / 1.5`` is an unbiased estimate of the column's radial mean-square error
``2 sigma^2`` (:data:`MIDPOINT_FACTOR`). Each column's value ``m_i`` is the mean of
``|e|^2 / 1.5`` over its pairs, and ``local_precision_{raw,restored}_px = sqrt(mean_i m_i)``: a
radial RMS error, the same quantity as the truth RMSE (divide by sqrt(2) for the usual
per-axis sigma). The 95% intervals and the gain's are paired bootstraps over columns
(:mod:`remflow.precision.stats`). Calibrated twins (``_pm``) scale each component of ``e``
by its pixel size before the norm.

Why it is insensitive to smooth variations: a displacement field that is affine over two
column spacings (uniform strain, rotation, shear, slow linear scan drift, a domain's own
orientation) moves ``r_i`` exactly to the midpoint of ``r_j`` and ``r_k``; a quadratic field
``u = c x^2`` leaves ``c s^2`` (s the spacing): for a 1.5% strain gradient across a 256 px
image with 12 px spacing 0.004 px, for a 1 px bending 0.009 px, added in quadrature.

Scan lines: line-to-line jitter moves whole fast-scan lines (along x), so columns on the same
scan line share it and a pair along x would cancel it. Only pairs whose direction is at least
:data:`CROSS_LINE_MIN_ANGLE_DEG` from the x axis (columns on different scan lines) are used
when a sublattice has them (every 2D lattice does, unless very oblique), so jitter counts as
the imprecision it is. The fast-scan direction is assumed to be x (rows of the image).

Which columns count: usable columns (both fits ok, at least one spacing from the edge, see
:func:`remflow.precision.selection.usable_columns`) that are *locally periodic*: the centre
of opposite pairs in at least two non-parallel directions (so columns in amorphous
material, isolated peaks or columns at the edge of a particle are left out: "no neighbours").
Pairs crossing a domain boundary or a defect are outliers: a pair is left out when
``|e|^2 / 1.5`` exceeds :data:`OUTLIER_FACTOR` times the median over the sublattice (the 99.9%
point of chi^2 with 2 degrees of freedom for Gaussian errors) *in both* raw and restored:
structure is seen by both images, a restoration artefact only by the restored one, which
therefore still counts. Under Gaussian errors this drops well under 0.1% of pairs (bias < 1%).

What it cannot see: displacements that are not smooth over two spacings but are static and
real (point defects, a domain wall's own relaxation, polar displacements of a sublattice
that vary from cell to cell) count as imprecision; a truth-free figure cannot tell real
static displacements from noise. Errors that neighbouring columns share (a restoration
artefact spanning several columns, a network prior that pulls columns towards a perfect
local lattice, scan jitter along a line for pairs on it) are not seen: the restored figure
can therefore look better than the restored image's true error. The bootstrap treats
columns as independent although neighbouring columns share positions in their pairs, so
the intervals are somewhat narrow.

Validation (real atomap-model fits of synthetic images, truth from ``remflow.synthetic``;
scratch script ``tests/benchmarks/validate_local.py``, results also in README "Precision
figures"): within 8% of the truth RMSE of raw with strain, bending, rotated domains and line
jitter at 300 and 5000 e/A^2 (table in :data:`VALIDATION`); not for static real displacements
and smooth scan drift, as stated above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from remflow.precision.selection import usable_columns
from remflow.precision.stats import KINDS, scaled

#: var(r_i - (r_j + r_k)/2) = (1 + 1/4 + 1/4) sigma^2 per axis for independent equal errors.
MIDPOINT_FACTOR = 1.5
#: Neighbours between these multiples of the column spacing are candidates for pairs.
NEIGHBOUR_SHELL = (0.6, 1.8)
#: Two neighbours are opposite when |d_ij + d_ik| is below this fraction of their mean distance.
PAIR_TOLERANCE = 0.2
#: Pairs at least this far from the fast-scan (x) axis join columns on different scan lines.
CROSS_LINE_MIN_ANGLE_DEG = 30.0
#: Pair directions closer than this are one direction (periodicity needs two).
MIN_DIRECTION_ANGLE_DEG = 20.0
#: 99.9% point of chi^2(2) over its median (13.82 / 1.386): outlier pairs lie beyond it.
OUTLIER_FACTOR = 13.8155 / (2.0 * math.log(2.0))
#: Neighbours queried per column (enough for a hexagonal lattice's two shells).
QUERY_NEIGHBOURS = 13

#: Measured agreement with the truth: ratio local raw figure / truth RMSE of raw over the same
#: interior columns, real batched fits of 256x256 synthetic lattices (12 px spacing, sigma 2.5 px),
#: two seeds each, ``tests/benchmarks/validate_local.py`` (2026-11-30).
VALIDATION = """
case                                              300 e/A^2     5000 e/A^2
perfect square lattice                            0.93, 0.97    0.94, 0.94
strain gradient 1.5%, 1 px bending, 8 deg domains 1.00, 0.96    1.01, 0.99   (global lattice RMS 20-30x truth)
  the same + line jitter 0.2 px                   1.00, 0.98    1.07, 1.01
line jitter 0.3 px                                0.99, 0.93    1.08, 1.03
perovskite A+B with the structure                 0.95, 0.94    0.99, 1.00
two domains 30 deg apart                          0.99, 1.04    1.02, 1.01
static random displacements 0.1 px (real)         1.21, 1.15    2.13, 2.12   (seen as imprecision: by design)
slow drift 3 px (truth less the drift ramp)       0.86, 0.83    0.68, 0.68   (smooth errors are not seen)
Tests (tests/test_local_precision.py, 192x192): within 15% at 300 and 5000 e/A^2 with structure,
with line jitter (three images pooled), next to vacuum and in a particle (20%).
"""


@dataclass
class OppositePairs:
    """Pairs of opposite neighbours: for pair p, ``first[p]`` and ``second[p]`` lie opposite
    each other about ``centre[p]`` (indices into the positions given)."""

    centre: np.ndarray
    first: np.ndarray
    second: np.ndarray
    direction: np.ndarray  # (P, 2) unit vector from centre to first
    cross_line: np.ndarray  # (P,) bool: at least CROSS_LINE_MIN_ANGLE_DEG from the x axis


def median_spacing(xy: np.ndarray) -> float:
    """Median nearest-neighbour distance (px) of positions (N, 2); NaN for fewer than 2."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(xy) < 2:
        return float("nan")
    return float(np.median(cKDTree(xy).query(xy, k=2)[0][:, 1]))


def opposite_pairs(xy: np.ndarray, spacing_px: float | None = None) -> OppositePairs:
    """All pairs of opposite neighbours of positions ``xy`` (N, 2) in px (see the module docstring).

    ``spacing_px``: the column spacing; None = the median nearest-neighbour distance.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    empty = OppositePairs(*(np.zeros(0, dtype=int) for _ in range(3)), np.zeros((0, 2)), np.zeros(0, dtype=bool))
    if len(xy) < 3:
        return empty
    spacing = float(spacing_px) if spacing_px else median_spacing(xy)
    if not spacing > 0:
        return empty
    k = min(QUERY_NEIGHBOURS, len(xy))
    distance, index = cKDTree(xy).query(xy, k=k, distance_upper_bound=NEIGHBOUR_SHELL[1] * spacing)
    distance, index = distance[:, 1:], index[:, 1:]
    valid = np.isfinite(distance) & (distance >= NEIGHBOUR_SHELL[0] * spacing)
    safe = np.where(valid, index, 0)
    vectors = np.where(valid[..., None], xy[safe] - xy[:, None, :], np.nan)  # (N, K, 2)
    sums = np.hypot(*(vectors[:, :, None, :] + vectors[:, None, :, :]).transpose(3, 0, 1, 2))
    mean_length = 0.5 * (distance[:, :, None] + distance[:, None, :])
    upper = np.triu(np.ones((k - 1, k - 1), dtype=bool), 1)[None]
    with np.errstate(invalid="ignore"):
        opposite = upper & valid[:, :, None] & valid[:, None, :] & (sums < PAIR_TOLERANCE * mean_length)
    centre, a, b = np.nonzero(opposite)
    first, second = index[centre, a], index[centre, b]
    direction = vectors[centre, a] / distance[centre, a][:, None]
    cross = np.abs(direction[:, 1]) >= math.sin(math.radians(CROSS_LINE_MIN_ANGLE_DEG))
    return OppositePairs(centre.astype(int), first.astype(int), second.astype(int), direction, cross)


def periodic_columns(pairs: OppositePairs, n: int) -> np.ndarray:
    """(n,) bool: centres of opposite pairs in at least two directions more than
    :data:`MIN_DIRECTION_ANGLE_DEG` apart (a 2D lattice around the column)."""
    periodic = np.zeros(n, dtype=bool)
    if len(pairs.centre) == 0:
        return periodic
    limit = math.sin(math.radians(MIN_DIRECTION_ANGLE_DEG))
    order = np.argsort(pairs.centre, kind="stable")
    centres = pairs.centre[order]
    bounds = np.flatnonzero(np.diff(centres)) + 1
    for group in np.split(order, bounds):
        d = pairs.direction[group]
        cross = np.abs(d[:, None, 0] * d[None, :, 1] - d[:, None, 1] * d[None, :, 0])
        periodic[pairs.centre[group[0]]] = bool((cross > limit).any())
    return periodic


def periodic_regions(xy: np.ndarray, spacing_px: float | None = None) -> np.ndarray:
    """(N,) int: label of the locally periodic region of each position, -1 outside any.

    A region is a connected set of locally periodic columns (:func:`periodic_columns`), two
    columns being connected when one is a member of the other's opposite pair, plus the columns
    at its edge that complete those pairs. Grains,
    domains and particles each give a region (or merge where they touch); amorphous
    material and noise peaks give none. Labels are 0.. in order of decreasing size.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    labels = np.full(len(xy), -1, dtype=int)
    pairs = opposite_pairs(xy, spacing_px)
    periodic = periodic_columns(pairs, len(xy))
    if not periodic.any():
        return labels
    links = [(pairs.centre, pairs.first), (pairs.centre, pairs.second)]
    rows = np.concatenate([a for a, _ in links])
    cols = np.concatenate([b for _, b in links])
    keep = periodic[rows] & periodic[cols]
    graph = coo_matrix((np.ones(int(keep.sum())), (rows[keep], cols[keep])), shape=(len(xy), len(xy)))
    _, component = connected_components(graph, directed=False)
    ids = component[periodic]
    sizes = np.bincount(ids)
    rank = np.empty_like(sizes)
    unique = np.unique(ids)
    ordered = unique[np.lexsort((unique, -sizes[unique]))]
    rank[ordered] = np.arange(len(ordered))
    labels[periodic] = rank[ids]
    # The region's edge: columns that complete a periodic column's pair belong to its region too.
    for members in (pairs.first, pairs.second):
        edge = periodic[pairs.centre] & (labels[members] < 0)
        labels[members[edge]] = labels[pairs.centre[edge]]
    return labels


@dataclass
class LocalErrors:
    """Per-column local mean-square errors (see the module docstring), raw and restored, paired.

    ``squared`` (M, 2): ``m_i`` of raw (column 0) and restored (column 1) in px^2 (or pm^2);
    ``rows``: the table's row labels of the M columns; ``sublattice``: their sublattice.
    """

    squared: np.ndarray
    rows: np.ndarray
    sublattice: np.ndarray
    n_pairs: int = 0
    n_pairs_excluded: int = 0
    all_directions: list[str] = field(default_factory=list)  # sublattices without cross-line pairs


def _pair_errors(xy: np.ndarray, pairs: OppositePairs) -> np.ndarray:
    """(P,) |e|^2 / MIDPOINT_FACTOR of each pair for positions ``xy`` (N, 2)."""
    e = xy[pairs.centre] - 0.5 * (xy[pairs.first] + xy[pairs.second])
    return np.sum(e**2, axis=1) / MIDPOINT_FACTOR


def local_errors(table: pd.DataFrame, *, image_shape: tuple[int, int], separation_px: float,
                 pixel_size_pm: float | tuple[float, float] | None = None) -> LocalErrors:
    """Per-column local errors of raw and restored on the same columns and pairs.

    Pairs, periodicity and outliers are decided in pixels on the restored positions (and
    both images' residuals); with ``pixel_size_pm`` the returned values are in pm^2.
    """
    usable = usable_columns(table, image_shape, separation_px)
    squared, rows, names = [], [], []
    n_pairs = n_excluded = 0
    all_directions = []
    for name, group in table[usable].groupby("sublattice", sort=True):
        xy = {kind: group[[f"x_{kind}_px", f"y_{kind}_px"]].to_numpy(float) for kind in KINDS}
        pairs = opposite_pairs(xy["restored"])
        periodic = periodic_columns(pairs, len(group))
        chosen = periodic[pairs.centre]
        if (chosen & pairs.cross_line).any():
            chosen &= pairs.cross_line
        elif chosen.any():
            all_directions.append(str(name))
        if not chosen.any():
            continue
        pairs = OppositePairs(*(getattr(pairs, f)[chosen] for f in ("centre", "first", "second", "direction",
                                                                      "cross_line")))
        px = {kind: _pair_errors(xy[kind], pairs) for kind in KINDS}
        outlier = np.ones(len(pairs.centre), dtype=bool)
        for kind in KINDS:
            outlier &= px[kind] > OUTLIER_FACTOR * np.median(px[kind])
        keep = ~outlier
        n_pairs += int(keep.sum())
        n_excluded += int(outlier.sum())
        values = px if pixel_size_pm is None else {
            kind: _pair_errors(scaled(xy[kind], pixel_size_pm), pairs) for kind in KINDS}
        centres = pairs.centre[keep]
        counts = np.bincount(centres, minlength=len(group))
        has = counts > 0
        per_column = [np.bincount(centres, weights=values[kind][keep], minlength=len(group))[has] / counts[has]
                      for kind in KINDS]
        squared.append(np.column_stack(per_column))
        rows.append(group.index.to_numpy()[has])
        names.append(np.full(int(has.sum()), str(name), dtype=object))
    if not squared:
        return LocalErrors(np.empty((0, 2)), np.empty(0, dtype=int), np.empty(0, dtype=object), 0, 0, all_directions)
    return LocalErrors(np.concatenate(squared), np.concatenate(rows), np.concatenate(names), n_pairs, n_excluded,
                       all_directions)


def local_residuals(table: pd.DataFrame, which: str, *, image_shape: tuple[int, int],
                    separation_px: float) -> np.ndarray:
    """Per-column local radial error sqrt(m_i) (px) of ``which`` = "raw" or "restored", in the
    order of :func:`local_errors`."""
    if which not in KINDS:
        raise ValueError(f"which must be 'raw' or 'restored', not '{which}'")
    errors = local_errors(table, image_shape=image_shape, separation_px=separation_px)
    return np.sqrt(errors.squared[:, KINDS.index(which)])


#: Roles of columns in the figures: used for local precision, or why not.
ROLES = ("used", "fit failed", "border", "no neighbours")


def column_roles(table: pd.DataFrame, *, image_shape: tuple[int, int], separation_px: float) -> np.ndarray:
    """(N,) str: for each row of ``table`` whether it enters the local precision ("used") or why not:
    "fit failed" (on raw or restored), "border" (within one spacing of the edge), "no neighbours"
    (not locally periodic, or all its pairs were outliers)."""
    roles = np.full(len(table), "no neighbours", dtype=object)
    if len(table) == 0:
        return roles
    ok = table["fit_ok_raw"].astype(bool).to_numpy() & table["fit_ok_restored"].astype(bool).to_numpy()
    usable = usable_columns(table, image_shape, separation_px)
    roles[~ok] = "fit failed"
    roles[ok & ~usable] = "border"
    used = table.index.get_indexer(local_errors(table, image_shape=image_shape, separation_px=separation_px).rows)
    roles[used] = "used"
    return roles
