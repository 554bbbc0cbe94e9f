"""Global lattice RMS: the distance of each column from ONE ideal lattice fitted to the whole image.

Formula: per sublattice, every usable column (see :func:`remflow.precision.selection.usable_columns`)
is given integer lattice indices ``(i, j)`` from its *restored* position (two basis vectors
from the nearest-neighbour vectors, so raw and restored share one indexing); then,
separately for raw and for restored, ``origin + i a + j b`` is fitted by least squares and
each column's residual is its distance from its ideal point. The figure
``global_lattice_rms_{raw,restored}_px`` is the radial RMS ``sqrt(mean(dx**2 + dy**2))``
of those residuals. The fit uses 6 parameters per sublattice, so the RMS is low by
``sqrt(1 - 3/n)`` (under 3% for n >= 50, the same for raw and restored); not corrected.

Assumptions: the whole image is one perfect lattice plus independent position errors.

What it cannot see / what it mixes in: everything that moves columns away from one ideal
lattice counts as error: strain, bending, domains or grains, polar displacements, slow scan
drift and scan distortion. On real images it therefore measures scan distortion and real
structure more than precision (measured: ``16_STOimage`` 15.7 pm global vs 6.1 pm from
neighbours; a synthetic 256x256 lattice with a 1.5% strain gradient, 1 px bending and two
domains 8 degrees apart: 1.48 px global where the raw fit's true error is 0.047 px). A
uniform shift or strain of a whole image is fitted away. It is kept as a second, named figure
because on a truly perfect lattice (simulations without structure) it agrees with the truth.

Validation: on perfect synthetic square lattices the global lattice RMS of real atomap fits
agrees with the truth RMSE (``tests/test_precision.py``); with structure it does not (above).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from remflow.precision.selection import usable_columns
from remflow.precision.stats import KINDS

#: A position is indexed when it lies within this fraction of a cell of an ideal lattice point.
INDEX_TOLERANCE = 0.3

#: Lattice vectors are estimated from at most this many positions (those nearest the centroid).
MAX_BASIS_POSITIONS = 400

@dataclass
class IdealLattice:
    """``origin + i a + j b``; positions are (x, y) in pixels."""

    origin: np.ndarray  # (2,)
    a: np.ndarray  # (2,)
    b: np.ndarray  # (2,)
    indices: np.ndarray  # (N, 2) integer (i, j) nearest to each position
    indexed: np.ndarray  # (N,) bool: within INDEX_TOLERANCE of its ideal point

    def ideal(self, indices: np.ndarray) -> np.ndarray:
        """Ideal (x, y) of integer indices (M, 2)."""
        indices = np.asarray(indices, dtype=np.float64)
        return self.origin + indices[:, :1] * self.a + indices[:, 1:] * self.b

def _fold(vectors: np.ndarray) -> np.ndarray:
    """Map v and -v to one representative (upper half-plane), so both count for one direction."""
    flip = (vectors[:, 1] < 0) | ((vectors[:, 1] == 0) & (vectors[:, 0] < 0))
    out = vectors.copy()
    out[flip] *= -1
    return out

def _cluster_vectors(vectors: np.ndarray, tolerance: float) -> list[tuple[np.ndarray, int]]:
    """Greedy clusters (mean vector, count) of vectors closer than ``tolerance``, shortest first."""
    order = np.lexsort((np.arctan2(vectors[:, 1], vectors[:, 0]), np.round(np.hypot(*vectors.T), 9)))
    sums = np.zeros((len(vectors), 2))
    counts = np.zeros(len(vectors), dtype=int)
    n_clusters = 0
    for vector in vectors[order]:
        if n_clusters:
            centres = sums[:n_clusters] / counts[:n_clusters, None]
            gaps = np.hypot(centres[:, 0] - vector[0], centres[:, 1] - vector[1])
            nearest = int(np.argmin(gaps))
            if gaps[nearest] < tolerance:
                sums[nearest] += vector
                counts[nearest] += 1
                continue
        sums[n_clusters], counts[n_clusters] = vector, 1
        n_clusters += 1
    return [(sums[k] / counts[k], int(counts[k])) for k in range(n_clusters)]

def basis_vectors(xy: np.ndarray, separation_px: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The two shortest non-parallel lattice vectors, from the vectors between near neighbours.

    Vectors to the 12 nearest neighbours (up to 2.5 nearest-neighbour distances) are
    folded so that v and -v coincide and clustered; clusters seen at least a quarter as
    often as the most common one are lattice vectors. ``a`` is the shortest, ``b`` the
    shortest at more than 20 degrees from ``a``. Works for square, rectangular (aspect up
    to 2.5), hexagonal and oblique lattices. Raises ValueError when there is no 2D lattice.
    """
    xy = np.asarray(xy, dtype=np.float64)
    if len(xy) < 4:
        raise ValueError(f"{len(xy)} positions are too few to find lattice vectors")
    # The positions nearest the centroid suffice (and are least affected by distortion).
    xy = xy[np.argsort(np.linalg.norm(xy - xy.mean(axis=0), axis=1), kind="stable")[:MAX_BASIS_POSITIONS]]
    distance, index = cKDTree(xy).query(xy, k=min(13, len(xy)))
    nearest = float(np.median(distance[:, 1])) if separation_px is None else float(separation_px)
    if not nearest > 0:
        raise ValueError("positions coincide")
    vectors = (xy[index[:, 1:]] - xy[:, None, :]).reshape(-1, 2)
    lengths = distance[:, 1:].ravel()
    keep = np.isfinite(lengths) & (lengths > 0.5 * nearest) & (lengths < 2.5 * nearest)
    if keep.sum() < 4:
        raise ValueError("too few neighbour vectors to find lattice vectors")
    clusters = _cluster_vectors(_fold(vectors[keep]), tolerance=0.2 * nearest)
    most = max(count for _, count in clusters)
    frequent = [centre for centre, count in clusters if count >= 0.25 * most]
    frequent.sort(key=lambda v: (round(float(np.hypot(*v)), 9), float(np.arctan2(v[1], v[0]))))
    a = frequent[0]
    for candidate in frequent[1:]:
        sine = abs(a[0] * candidate[1] - a[1] * candidate[0]) / (np.hypot(*a) * np.hypot(*candidate))
        if sine > math.sin(math.radians(20)):
            return a, candidate
    raise ValueError("all neighbour vectors lie along one direction: not a 2D lattice")

def _lattice_fit(xy: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares origin, a, b of ``xy ~ origin + i a + j b``."""
    design = np.column_stack([np.ones(len(indices)), indices])
    coefficients, *_ = np.linalg.lstsq(design, xy, rcond=None)
    return coefficients[0], coefficients[1], coefficients[2]

def _index(xy: np.ndarray, origin: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest integer indices and whether each position is within the index tolerance."""
    fractional = np.linalg.solve(np.column_stack([a, b]), (xy - origin).T).T
    indices = np.round(fractional)
    return indices, np.all(np.abs(fractional - indices) < INDEX_TOLERANCE, axis=1)

def fit_ideal_lattice(xy: np.ndarray, *, separation_px: float | None = None) -> IdealLattice:
    """Index positions to integers (i, j) and fit ``origin + i a + j b`` by least squares.

    Indexing starts at the position nearest the centroid and grows outwards (2.5 cells,
    then 1.6 times more each step), refitting the lattice each step, so that a slightly
    wrong starting basis or a mild distortion does not shift indices far from the centre.
    Raises ValueError when fewer than 3 positions fit a lattice.
    """
    xy = np.asarray(xy, dtype=np.float64)
    a, b = basis_vectors(xy, separation_px)
    origin = xy[np.argmin(np.linalg.norm(xy - xy.mean(axis=0), axis=1))]
    distance_from_origin = np.linalg.norm(xy - origin, axis=1)
    radius = 2.5 * max(np.hypot(*a), np.hypot(*b))
    while True:
        near = distance_from_origin <= radius
        indices, indexed = _index(xy, origin, a, b)
        fit_set = indexed & near
        if fit_set.sum() < 3 or np.linalg.matrix_rank(np.column_stack([np.ones(fit_set.sum()), indices[fit_set]])) < 3:
            raise ValueError("fewer than 3 non-collinear positions fit a lattice")
        origin, a, b = _lattice_fit(xy[fit_set], indices[fit_set])
        if near.all():
            break
        radius *= 1.6
    indices, indexed = _index(xy, origin, a, b)  # final indexing with the whole-image lattice
    if indexed.sum() >= 3:
        origin, a, b = _lattice_fit(xy[indexed], indices[indexed])
    return IdealLattice(origin=origin, a=a, b=b, indices=indices.astype(int), indexed=indexed)

def lattice_fraction(xy: np.ndarray, *, separation_px: float | None = None) -> float:
    """Fraction of positions with at least 2 of their 4 lattice neighbours (+-a, +-b) where expected.

    A local test (tolerance a quarter of the shortest lattice vector), so strain or scan
    distortion across the image does not matter. A lattice gives about 1 (edge and corner
    columns still have 2 neighbours); peaks found in noise or an amorphous image give
    about 0.2 or less. 0 when no lattice vectors can be found.
    """
    xy = np.asarray(xy, dtype=np.float64)
    try:
        a, b = basis_vectors(xy, separation_px)
    except ValueError:
        return 0.0
    tree = cKDTree(xy)
    tolerance = 0.25 * min(np.hypot(*a), np.hypot(*b))
    found = np.zeros(len(xy), dtype=int)
    for step in (a, -a, b, -b):
        distance, _ = tree.query(xy + step, distance_upper_bound=tolerance)
        found += np.isfinite(distance)
    return float(np.mean(found >= 2))

def lattice_residual_vectors(table: pd.DataFrame, *, image_shape: tuple[int, int],
                             separation_px: float) -> dict[str, np.ndarray]:
    """Per-column (dx, dy) from the ideal lattice, raw and restored, on the same columns.

    Returns (M, 2) arrays under "raw" and "restored" and the table's row labels under "rows".
    Each sublattice is indexed once (restored positions); each image then gets its own
    best lattice for those indices, so a uniform shift or strain between raw and
    restored is not counted as imprecision.
    """
    usable = usable_columns(table, image_shape, separation_px)
    out: dict[str, list[np.ndarray]] = {"raw": [], "restored": [], "rows": []}
    for _, group in table[usable].groupby("sublattice", sort=True):
        if len(group) < 4:
            continue
        try:
            reference = fit_ideal_lattice(group[["x_restored_px", "y_restored_px"]].to_numpy(float),
                                          separation_px=None)
        except ValueError:
            continue
        indices = reference.indices[reference.indexed]
        if len(indices) < 4:
            continue
        for kind in KINDS:
            xy = group[[f"x_{kind}_px", f"y_{kind}_px"]].to_numpy(float)[reference.indexed]
            origin, a, b = _lattice_fit(xy, indices)
            out[kind].append(xy - (origin + indices[:, :1] * a + indices[:, 1:] * b))
        out["rows"].append(group.index.to_numpy()[reference.indexed])
    empty = {"raw": np.empty((0, 2)), "restored": np.empty((0, 2)), "rows": np.empty(0, dtype=int)}
    return {key: (np.concatenate(value) if value else empty[key]) for key, value in out.items()}

def lattice_residuals(table: pd.DataFrame, which: str, *, image_shape: tuple[int, int],
                      separation_px: float) -> np.ndarray:
    """Per-column distance (px) from the best ideal lattice, for ``which`` = "raw" or "restored".

    Only usable columns (see :func:`usable_columns`) that index onto their sublattice's
    lattice; in the order of :func:`lattice_residual_vectors` (by sublattice, then table order).
    """
    if which not in KINDS:
        raise ValueError(f"which must be 'raw' or 'restored', not '{which}'")
    vectors = lattice_residual_vectors(table, image_shape=image_shape, separation_px=separation_px)[which]
    return np.hypot(vectors[:, 0], vectors[:, 1])
