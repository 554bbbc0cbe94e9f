"""The noise twin: truth-based precision of raw and restored positions for an image without truth.

Formula. From the raw image and its column fit, a noiseless model image ``m`` and a
Poisson-Gaussian noise model (:mod:`remflow.imagemodel`) are fitted. The twin's columns sit
at known true positions ``t_c`` (see *Choice of the true positions*); ``R`` replicas
(``twin.replicas``, fixed seeds) are drawn, ``raw_r = noise(m)``, each restored by the
sample's network and refined, raw and restored, from the same starts as the real image
(the real restored fit rounded to the pixel grid, where atomap's peak finder puts its
integer starts) with the same refinement. With ``d_rc = fit_rc - t_c`` over replicas r and
usable columns c (fit ok on both images, inside the evaluated region)::

    twin_error_{raw,restored}_px = sqrt(mean_rc |d_rc|^2)         (radial, like truth_rmse_*)
    twin_gain = twin_error_raw / twin_error_restored
    twin_bias_restored = mean_rc d_rc (vector, px) and its length
    twin_shared_fraction = sum_pairs sum_r d_ri . d_rj / sum_pairs sum_r (|d_ri|^2 + |d_rj|^2) / 2

(``pairs``: nearest neighbours within 1.5 spacings; the fraction is the correlation of
neighbours' errors: 0 for independent columns, 1 for an error all neighbours share, such
as a common shift; ``twin_shared_error_*_px = sqrt(max(fraction, 0)) * error``).
95 % intervals: a two-level percentile bootstrap that resamples columns and replicas
(the same draws for raw and restored, so the gain is paired). Verdict as for every
gain (:func:`remflow.precision.verdict`).

Assumptions. The model (Gaussian columns, smooth background) and the noise model describe
the image (the model's reduced chi-square says how well); the twin's true positions have
the same kind of structure as the real ones; the network treats the twin as it treats the
real image. What it cannot see: anything the model lacks (non-Gaussian columns, column
shapes that vary, noise correlated beyond two pixels in a way the lag-3 check does not catch
or not separable in x and y: the noise model's kernel has five taps per axis, scan distortions
other than the configured line jitter, line noise other than an additive AR(1) offset along
each row: the noise model measures that one and the replicas carry it), and real structure
that the chosen true positions do not carry. Faint columns (model amplitude within
MIN_AMPLITUDE_SIGNIFICANCE of its bound of 0) are refined but not evaluated, here or in the bound.

Choice of the true positions (``twin.truth``). The network adds a prior ("columns sit on
a lattice"), so how regular the twin's truth is decides how much the restored fit gains.
Candidates: the raw fit (carries the raw noise as structure: too irregular), the restored
fit and a locally smoothed lattice (each column where a local affine lattice through its
neighbours within 2.5 spacings puts it): both too regular, and ``deconvolved``
(:func:`deconvolved_positions`): the smoothed lattice plus the raw displacement from it,
shrunk so that its mean square equals the raw one minus the raw fit's own scatter.
Validated with ``tests/validate_twin.py`` on synthetic 128x128 square lattices (spacing
12 px, width 2.5 px) whose columns carry static displacements of 0.15 px per axis, fitted
without truth, 4 replicas, seeds 1-3 (before the read-variance selection below); twin / truth
RMSE (raw, restored) and verdicts:

============  =====================  =====================  ====================
truth         300 e/A^2              30000 e/A^2            verdicts agreeing
============  =====================  =====================  ====================
deconvolved   0.89, 0.99             1.01, 0.89             6 of 6
raw           0.93, 1.31             1.00, 0.91             3 of 6
restored      0.88, 0.71             0.98, 0.91             6 of 6
smoothed      0.93, 0.66             1.00, 0.76             4 of 6
============  =====================  =====================  ====================

``deconvolved`` is the default. ``tests/test_twin.py`` checks it within 25 % and the
verdict at 50, 300 and 30000 e/A^2 (seed 1). Since the noise model drops a read variance that
is not significant (:func:`remflow.imagemodel._variance_regression`), seeds 0-2 give twin / truth
(raw, restored): 1.00-1.02, 1.07-1.40 at 50 e/A^2 (1.40: seed 2, whose 59 columns leave the
real displacement spread within the raw noise); 0.87-0.96, 0.83-1.00 at 300; 0.93-1.02,
0.88-1.05 at 3000; 0.90-1.03, 0.82-1.04 at 30000; verdicts 3, 3, 1 and 3 of 3 (at 3000 the
gain is 1.09-1.19: one image's truth interval says "inconclusive" where the twin's four
replicas say "helps"). Where the deconvolved truth's spread is not resolved from the raw
fit's noise (``twin_note`` says so, :func:`remflow.precision.basis.spread_unresolved`), the
replicas' truths spread over the spreads the data allow (:func:`replica_shrinks`), so that the
interval carries that uncertainty: at 50 e/A^2 restored twin / truth 0.62-1.28 on 14 lattices,
the 95 % interval holding the truth in 11 (one truth for all replicas: 0.75-1.47, 6).

With scan-line noise (tests/validate_line_noise.py twin: AR(1) half the pixel noise, length
50 px, seeds 1-3 at 300, 3000, 30000 e/A^2) twin / truth raw 0.78-1.07, restored 0.73-1.27,
verdicts 5 of 9 agreeing and 4 one step more pessimistic; before the line noise was modelled,
restored 0.09-0.82 and one verdict opposite (README, section 'Scan-line noise').

Cost: one network call per replica on the twin region (a central crop of at most
``twin.max_pixels``; columns within ``CROP_CONTEXT_PX`` of a crop edge inside the image
are refined but not evaluated, as the network sees that edge) and 2R batched
refinements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from remflow.imagemodel import (ImageModel, equivalent_dose, fit_image_model, fit_noise_model, lattice_extension,
                                model_parameter_count, nearest_is_fitted, refit_amplitudes)

TRUTH_CHOICES = ("deconvolved", "restored", "raw", "smoothed")
#: Seed stream offset of the probe replicas of the "deconvolved" truth (never restored).
PROBE_STREAM = 1000
#: seed stream of the raw-only replicas with every column on its local lattice
LATTICE_PROBE_STREAM = 2000
#: Columns this close (px) to a crop edge that lies inside the image are not evaluated:
#: the network sees that edge (its output moves by ~1 % of the range 96 px from a tile edge).
CROP_CONTEXT_PX = 48
#: Larger images are modelled on the twin region plus this many column spacings around it.
MODEL_MARGIN_SPACINGS = 2.0
#: Neighbours closer than this many spacings form the pairs of the shared-error fraction.
PAIR_SPACINGS = 1.5
#: Evaluated columns whose model amplitude is under this many of its own bound are faint:
#: left out of the twin's errors and of the image's bound (:func:`_faint_columns`).
MIN_AMPLITUDE_SIGNIFICANCE = 3.0
#: Radius (spacings) of the local lattice of the "smoothed" truth.
SMOOTH_SPACINGS = 2.5
#: Seed stream of the replicas: replica r of a sample uses SeedSequence([seed, r]).
BELOW_BOUND_NOTE = "below the bound: the restored positions carry the network's prior"
#: ... and when the twin's raw error is under it (remflow.precision.basis.raw_below_bound): then
#: the twin's fits lean on their starts.
RAW_BELOW_BOUND_NOTE = ("raw below the bound: the twin's raw fits stay near their starts, which lie near "
                        "its true positions; its errors measure the starts, not the data (not the verdict basis)")

_FIGURES = ["twin_error_raw_px", "twin_error_restored_px"]
_SUFFIXES = ("", "_ci_low", "_ci_high", "_pi_low", "_pi_high")
#: Fields the twin adds to results/summary.csv, in order.
TWIN_FIELDS: list[str] = (
    [f"{name}{suffix}" for name in _FIGURES for suffix in _SUFFIXES]
    + ["twin_gain", "twin_gain_ci_low", "twin_gain_ci_high", "twin_gain_pi_low", "twin_gain_pi_high", "twin_verdict",
       "twin_bias_restored_x_px", "twin_bias_restored_y_px", "twin_bias_restored_px",
       "twin_shared_fraction_raw", "twin_shared_fraction_restored", "twin_shared_error_restored_px",
       "twin_replicas", "twin_columns", "twin_faint_columns", "crlb_columns", "twin_truth", "twin_status", "twin_note",
       "noise_gain", "noise_read_sigma", "noise_reduced_chi_square", "noise_method",
       "noise_correlation_x", "noise_correlation_y", "noise_kernel_x", "noise_kernel_y",
       "noise_kernel_outer_x", "noise_kernel_outer_y", "noise_kernel_misfit_x", "noise_kernel_misfit_y",
       "noise_line_sigma", "noise_line_length_px", "noise_line_significance",
       "electrons_peak", "equivalent_dose_e_per_A2",
       "crlb_px", "crlb_radial_px", "error_over_crlb_raw", "error_over_crlb_restored", "crlb_basis", "crlb_note"]
    + [f"{name.removesuffix('_px')}_pm{suffix}" for name in _FIGURES for suffix in _SUFFIXES]
    + ["twin_bias_restored_pm", "crlb_pm", "crlb_radial_pm"]
)


@dataclass
class TwinPlan:
    """What the twin needs to be restored and fitted (the output of the twin-model step)."""

    box: tuple[int, int, int, int]  # (top, left, rows, cols) of the twin region in the image
    # column_id, sublattice, x_true_px, y_true_px, x_start_px, y_start_px, evaluate (region coords), and
    # x_true_px_r{r}, y_true_px_r{r} where each replica has its own truth (replica_shrinks)
    columns: pd.DataFrame
    replicas: np.ndarray  # (R, rows, cols) float32 noisy raw replicas
    figures: dict[str, Any]  # noise model, equivalent dose, CRLB, settings


def twin_box(shape: tuple[int, int], max_pixels: int) -> tuple[int, int, int, int]:
    """(top, left, rows, cols) of the central region of at most ``max_pixels`` (the whole image if it fits)."""
    rows, cols = shape
    if rows * cols <= max_pixels:
        return 0, 0, rows, cols
    side = int(math.isqrt(int(max_pixels)))
    crop_rows, crop_cols = min(rows, side), min(cols, side)
    if crop_rows < side:  # a thin image: use the room along the other axis
        crop_cols = min(cols, max_pixels // crop_rows)
    elif crop_cols < side:
        crop_rows = min(rows, max_pixels // crop_cols)
    return (rows - crop_rows) // 2, (cols - crop_cols) // 2, crop_rows, crop_cols


def _preferred(table: pd.DataFrame, first: str, second: str) -> np.ndarray:
    """(N, 2) positions of ``first`` (raw/restored) where that fit is ok, else of ``second``."""
    use = table[f"fit_ok_{first}"].astype(bool).to_numpy()
    a = table[[f"x_{first}_px", f"y_{first}_px"]].to_numpy(float)
    b = table[[f"x_{second}_px", f"y_{second}_px"]].to_numpy(float)
    return np.where(use[:, None], a, b)


def local_lattice_weights(xy: np.ndarray, sublattice: np.ndarray, separation_px: float):
    """(N, N) sparse matrix ``W``: ``W @ xy`` puts each column where a local affine lattice
    through its neighbours puts it (itself left out).

    Per sublattice the columns are indexed on one ideal lattice
    (:func:`remflow.precision.fit_ideal_lattice`); for each column, ``origin + i a + j b`` is
    fitted by least squares to the neighbours within SMOOTH_SPACINGS spacings and evaluated at
    its indices, so its row holds the weights of that fit (they sum to 1 and reproduce any
    affine lattice exactly). Columns that cannot be indexed or have too few neighbours get a
    row of the identity (``W @ xy`` keeps them). Returns (W as scipy.sparse.csr_matrix,
    (N,) bool: rows that are local fits).
    """
    from scipy import sparse

    from remflow.precision import fit_ideal_lattice

    n = len(xy)
    rows, cols, values = [], [], []
    smoothed = np.zeros(n, dtype=bool)
    for name in np.unique(sublattice):
        members = np.flatnonzero(sublattice == name)
        if len(members) < 6:
            continue
        try:
            lattice = fit_ideal_lattice(xy[members])
        except ValueError:
            continue
        indices = lattice.indices.astype(np.float64)
        tree = cKDTree(xy[members])
        for local, index in enumerate(members):
            if not lattice.indexed[local]:
                continue
            near = [j for j in tree.query_ball_point(xy[index], SMOOTH_SPACINGS * separation_px)
                    if j != local and lattice.indexed[j]]
            if len(near) < 4:
                continue
            design = np.column_stack([np.ones(len(near)), indices[near]])
            if np.linalg.matrix_rank(design) < 3:
                continue
            weights = np.array([1.0, *indices[local]]) @ np.linalg.pinv(design)
            rows += [index] * len(near)
            cols += list(members[near])
            values += list(weights)
            smoothed[index] = True
    kept = np.flatnonzero(~smoothed)
    rows += list(kept)
    cols += list(kept)
    values += [1.0] * len(kept)
    return sparse.csr_matrix((values, (rows, cols)), shape=(n, n)), smoothed


def smoothed_positions(xy: np.ndarray, sublattice: np.ndarray, separation_px: float) -> np.ndarray:
    """(N, 2) px: each column where a local affine lattice through its neighbours puts it
    (:func:`local_lattice_weights`). Keeps strain, bending and domains (smooth over a few
    spacings); removes column-by-column displacements. Columns that cannot be indexed or have
    too few neighbours keep ``xy``.
    """
    xy = np.asarray(xy, dtype=np.float64)
    weights, _ = local_lattice_weights(xy, sublattice, separation_px)
    return np.asarray(weights @ xy)


def twin_truth_positions(table: pd.DataFrame, choice: str, separation_px: float) -> np.ndarray:
    """(N, 2) true positions of the twin's columns for ``choice`` in TRUTH_CHOICES."""
    if choice == "raw":
        return _preferred(table, "raw", "restored")
    if choice == "restored":
        return _preferred(table, "restored", "raw")
    if choice == "smoothed":
        return smoothed_positions(_preferred(table, "restored", "raw"), table["sublattice"].to_numpy(),
                                  separation_px)
    raise ValueError(f"twin truth '{choice}' is not one of {', '.join(TRUTH_CHOICES)}")


def replica_seed(seed: int, replica: int) -> np.random.Generator:
    """The generator of one replica: independent streams, reproducible per (seed, replica)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(replica)]))


def model_of_image(raw: np.ndarray, table: pd.DataFrame, separation_px: float):
    """The model image and noise model of ``raw`` from its column fit (``table``, columns.csv).

    Columns sit at the raw fit (restored where the raw fit failed), plus the lattice sites
    the fit lacks (:func:`remflow.imagemodel.lattice_extension`); the noise is fitted where
    the nearest column is a fitted one. Returns (ImageModel, NoiseModel, added sites (M, 2)).
    """
    image = np.asarray(raw, dtype=np.float64)
    table = table.reset_index(drop=True)
    sublattice = table["sublattice"].astype(str).to_numpy()
    fitted_xy = _preferred(table, "raw", "restored")
    # atomap's fitted widths come out small: start the width search from a tenth of the spacing or more.
    widths = table.loc[table["fit_ok_raw"].astype(bool), ["sigma_x_raw_px", "sigma_y_raw_px"]].to_numpy(float)
    start = float(np.nanmedian(widths)) if len(widths) else 0.2 * separation_px
    start = float(np.clip(start if np.isfinite(start) else 0.2 * separation_px, 0.1 * separation_px,
                          0.3 * separation_px))
    extra_xy, extra_names = lattice_extension(fitted_xy, sublattice, image.shape, separation_px=separation_px,
                                              margin_px=0.5 * separation_px)
    all_names = np.concatenate([sublattice.astype(object), extra_names])
    model = fit_image_model(image, np.concatenate([fitted_xy[:, 0], extra_xy[:, 0]]),
                            np.concatenate([fitted_xy[:, 1], extra_xy[:, 1]]), all_names, sigma_start=start,
                            sigma_bounds=(0.05 * separation_px, 0.5 * separation_px))
    noise = fit_noise_model(image, model.image, n_parameters=model_parameter_count(model),
                            mask=nearest_is_fitted(image.shape, fitted_xy, extra_xy))
    return model, noise, extra_xy


def plan_twin(raw: np.ndarray, table: pd.DataFrame, *, separation_px: float, replicas: int = 4, seed: int = 0,
              truth: str = "deconvolved", max_pixels: int = 384 * 384, line_jitter_px: float = 0.0,
              pixel_size_pm: float | None = None) -> TwinPlan:
    """Model the raw image, fit its noise, and draw the twin's raw replicas.

    ``table``: the sample's columns.csv (COLUMN_FIELDS). The model's columns sit at the
    raw fit (restored where the raw fit failed) for the noise fit; the twin's columns at
    ``truth`` positions, amplitudes and background refitted there. Raises ValueError for
    an unknown ``truth`` or an empty table.
    """
    if len(table) == 0:
        raise ValueError("no columns: nothing to model")
    table = table.reset_index(drop=True)
    if truth not in TRUTH_CHOICES:
        raise ValueError(f"twin truth '{truth}' is not one of {', '.join(TRUTH_CHOICES)}")
    image = np.asarray(raw, dtype=np.float64)
    top, left, rows, cols = whole_box = twin_box(image.shape, max_pixels)
    if (rows, cols) != image.shape:
        # Model only the twin region and a margin of MODEL_MARGIN_SPACINGS spacings around it:
        # the cost then stays bounded by max_pixels, whatever the image size.
        reach = int(math.ceil(MODEL_MARGIN_SPACINGS * separation_px))
        outer_top, outer_left = max(top - reach, 0), max(left - reach, 0)
        outer_bottom = min(top + rows + reach, image.shape[0])
        outer_right = min(left + cols + reach, image.shape[1])
        image = image[outer_top:outer_bottom, outer_left:outer_right]
        table = table.copy()
        for kind in ("raw", "restored"):
            table[f"x_{kind}_px"] -= outer_left
            table[f"y_{kind}_px"] -= outer_top
        start = np.rint(_preferred(table, "restored", "raw"))
        keep = ((start[:, 0] >= 0) & (start[:, 0] <= image.shape[1] - 1)
                & (start[:, 1] >= 0) & (start[:, 1] <= image.shape[0] - 1))
        table = table[keep].reset_index(drop=True)
        top, left = top - outer_top, left - outer_left
    fitted_xy = _preferred(table, "raw", "restored")
    model, noise, extra_xy = model_of_image(image, table, separation_px)
    starts = np.rint(_preferred(table, "restored", "raw"))
    figures: dict[str, Any] = {}
    replica_truths = None  # (R of (N, 2)) where each replica has its own truth (replica_shrinks)
    if truth == "deconvolved":
        box = (top, left, rows, cols)

        def probe_at(xy: np.ndarray | None, probe_starts: np.ndarray, stream: int) -> tuple[pd.DataFrame, list]:
            # Raw-only replicas (no network needed) of the model, its columns moved to xy (None:
            # left at the raw fit), refined from probe_starts, on their own seed stream.
            moved = model if xy is None else refit_amplitudes(
                image, model, np.concatenate([xy[:, 0], extra_xy[:, 0]]), np.concatenate([xy[:, 1], extra_xy[:, 1]]))
            return _region_table(table, fitted_xy if xy is None else xy, probe_starts, box, image.shape), [
                noise.draw(moved.crop(*box).image, replica_seed(seed, stream + r), line_jitter_px)
                for r in range(max(replicas, 2))]

        found = deconvolved_positions(table, fitted_xy, _preferred(table, "restored", "raw"), probe_at, (top, left),
                                      separation_px)
        true_xy, figures["twin_shrink"], figures["twin_raw_scatter_px"] = found.positions, found.shrink, found.scatter_px
        figures.update(found.figures)
        shrinks = replica_shrinks(found, replicas)
        figures["twin_replica_shrinks"] = [float(k) for k in shrinks]
        if not np.allclose(shrinks, shrinks[0]):
            replica_truths = [found.lattice + k * found.displacement for k in shrinks]
        # twin_shrink names the k of x_true_px, the central truth (z = 0); where every replica
        # clipped to one k (a spread far below 0) that one truth serves all, drawn from one model.
        central = float(replica_shrinks(found, 1)[0]) if replica_truths else float(shrinks[0])
        if not math.isclose(central, found.shrink):
            figures["twin_shrink"] = central
            true_xy = found.lattice + central * found.displacement
    else:
        true_xy = twin_truth_positions(table, truth, separation_px)

    def region_model(xy: np.ndarray) -> ImageModel:
        moved = model if truth == "raw" else refit_amplitudes(
            image, model, np.concatenate([xy[:, 0], extra_xy[:, 0]]), np.concatenate([xy[:, 1], extra_xy[:, 1]]))
        return moved.crop(top, left, rows, cols)

    region = region_model(true_xy)
    columns = _region_table(table, true_xy, starts, (top, left, rows, cols), image.shape, replica_truths)
    draws = np.stack([noise.draw((region if replica_truths is None else region_model(replica_truths[r])).image,
                                 replica_seed(seed, r), line_jitter_px) for r in range(replicas)])
    figures.update({
        "noise_gain": noise.gain, "noise_read_sigma": noise.read_noise, "noise_read_variance": noise.read_variance,
        "noise_offset": noise.offset, "noise_reduced_chi_square": noise.reduced_chi_square,
        "noise_method": noise.method, "noise_correlation_x": noise.correlation_x,
        "noise_correlation_y": noise.correlation_y, "noise_kernel_x": noise.kernel_x,
        "noise_kernel_y": noise.kernel_y, "noise_kernel_outer_x": noise.kernel_outer_x,
        "noise_kernel_outer_y": noise.kernel_outer_y, "noise_kernel_misfit_x": noise.kernel_misfit_x,
        "noise_kernel_misfit_y": noise.kernel_misfit_y, "noise_line_sigma": noise.line_sigma,
        "noise_line_length_px": noise.line_length_px if noise.line_variance > 0 else None,
        "noise_line_significance": noise.line_significance, "model_sigma_px": model.sigma,
        **equivalent_dose(model, noise, pixel_size_pm),
        "twin_truth": truth, "twin_replicas": replicas, "twin_seed": seed, "twin_box": list(whole_box),
        "twin_line_jitter_px": line_jitter_px,
    })
    faint, bounds = _faint_columns(region, noise, columns)
    columns["evaluate"] &= ~faint
    figures["twin_faint_columns"] = int(faint.sum())
    from remflow.crlb import image_position_crlb, summarise_crlb

    if bounds is None:
        figures.update(image_position_crlb(region, noise, columns=_region_columns(region, columns)))
    else:
        figures.update(summarise_crlb(bounds[bounds["column"].isin(_region_columns(region, columns))]))
    return TwinPlan(box=whole_box, columns=columns, replicas=draws.astype(np.float32),
                    figures=figures)


def _region_table(table: pd.DataFrame, true_xy: np.ndarray, starts: np.ndarray, box: tuple[int, int, int, int],
                  shape: tuple[int, int], replica_truths: list[np.ndarray] | None = None) -> pd.DataFrame:
    """The twin's columns whose start lies in ``box``, in region coordinates, with ``evaluate``
    False within CROP_CONTEXT_PX of a box edge that lies inside the image; with
    ``replica_truths`` (one (N, 2) px per replica) also ``x_true_px_r{r}``, ``y_true_px_r{r}``."""
    top, left, rows, cols = box
    local_start = starts - np.array([left, top])
    local_true = true_xy - np.array([left, top])
    inside = ((local_start[:, 0] >= 0) & (local_start[:, 0] <= cols - 1)
              & (local_start[:, 1] >= 0) & (local_start[:, 1] <= rows - 1))
    margin = np.full(len(table), np.inf)
    for edge_is_inner, distance in ((top > 0, local_start[:, 1]), (left > 0, local_start[:, 0]),
                                    (top + rows < shape[0], rows - 1 - local_start[:, 1]),
                                    (left + cols < shape[1], cols - 1 - local_start[:, 0])):
        if edge_is_inner:
            margin = np.minimum(margin, distance)
    columns = pd.DataFrame({"column_id": table["column_id"].to_numpy(), "sublattice": table["sublattice"].astype(str),
                            "x_true_px": local_true[:, 0], "y_true_px": local_true[:, 1],
                            "x_start_px": local_start[:, 0], "y_start_px": local_start[:, 1],
                            "fit_ok_raw": table["fit_ok_raw"].astype(bool).to_numpy()})
    for r, xy in enumerate(replica_truths or []):
        columns[f"x_true_px_r{r}"], columns[f"y_true_px_r{r}"] = xy[:, 0] - left, xy[:, 1] - top
    columns["evaluate"] = margin >= CROP_CONTEXT_PX
    return columns[inside].reset_index(drop=True)


@dataclass
class DeconvolvedTruth:
    """What :func:`deconvolved_positions` finds (positions in the frame of the raw fit, px)."""

    positions: np.ndarray  # (N, 2) W x + k (I - W) x
    shrink: float  # k
    scatter_px: float  # s, the raw fit's own scatter
    figures: dict[str, float]  # twin_displacement_sq_px2, its error, twin_raw_displacement_sq_px2
    lattice: np.ndarray  # (N, 2) W x
    displacement: np.ndarray  # (N, 2) (I - W) x

    def shrink_for(self, spread_sq: float) -> float:
        """The k whose truth keeps ``spread_sq`` (px^2) of mean square displacement from its local
        lattice beyond that of ``W x``: ``sqrt(spread_sq / D_L^2)`` within [0, 1] (``shrink``
        where ``D_L^2`` is not measured)."""
        observed = self.figures.get("twin_raw_displacement_sq_px2")
        if observed is None or not observed > 0:
            return self.shrink
        return float(math.sqrt(min(max(spread_sq, 0.0), observed) / observed))


def deconvolved_positions(table: pd.DataFrame, fitted_xy: np.ndarray, start_xy: np.ndarray, probe_at,
                          offset: tuple[int, int], separation_px: float) -> DeconvolvedTruth:
    """True positions with the raw fit's scatter taken out: ``W x + k (I - W) x``.

    ``x``: the raw fit (N, 2) px; ``W``: the local lattice through each column's neighbours
    (:func:`local_lattice_weights`), so ``(I - W) x`` is each column's displacement from it.
    ``D^2``, the mean square of ``(I - W) x`` over the evaluated columns fitted raw, holds the
    real displacements plus the raw fit's noise; the noise's mean square ``s^2`` is measured by
    refining replicas of the raw-position model from the sample's starts (``probe_at(None,
    rint(start_xy), PROBE_STREAM)``: raw-only, no network) and ``k = sqrt(max(D^2 - s^2, 0) /
    D^2)``, so that the twin's truth scatters about its local lattice about as much as the real
    columns do (an empirical-Bayes shrinkage).

    Is that spread resolved at all? ``D^2 - s^2`` cannot say: a displacement from a lattice
    fitted through noisy neighbours carries their noise too (most at the edges, where the fit
    extrapolates), and at low dose the raw fit is pulled towards its start, which hides real
    displacements. So replicas with every column on its local lattice (``probe_at(W x,
    rint(W start_xy), LATTICE_PROBE_STREAM)``: the starts moved onto their local lattice too, as
    a restored image of such a truth would give them) are refined as well and their fits passed
    through the same ``W``: ``S_0``, the mean square of ``(I - W)`` of their fits, is how
    irregular the raw fit of a truth without column displacements looks. Both it and ``D_L^2``,
    the mean square of ``(I - W) x``, run over the same columns: evaluated, fitted raw, locally
    fitted (a row of ``W``), and with a fit of them and of all their neighbours in every such
    replica. ``twin_displacement_sq_px2 = D_L^2 - S_0``, and ``twin_displacement_sq_error_px2`` its
    standard error (two means over columns, columns treated as independent). Within two errors
    of 0 the real displacement spread is not resolved from the raw fit's noise and the twin's
    restored error rests on an uncertain truth
    (:data:`remflow.precision.basis.UNRESOLVED_SPREAD_NOTE`); the replicas' truths then spread
    over that uncertainty (:func:`replica_shrinks`). Validated on 128x128 lattices
    (tests/validate_twin.py, 4 replicas): at 50 e/A^2 every twin is flagged, with 0.15 px per
    axis (seeds 0-9) among them the three whose restored error is 1.40-1.47 times the truth
    (the earlier test, ``D^2 - s^2`` within two errors of 0, flagged only one of those three) and
    with 0.3 px per axis (seeds 0-3) the two at 0.75-0.76 (too optimistic); at 300 e/A^2 the
    spread lies 2.8-3.4 errors from 0 (0.15 px, seeds 0-2: none flagged) and 4.4-5.3 (0.3 px,
    seeds 0-3); at 3000 and 30000 e/A^2 5.6-8 errors, and ``D_L^2 - S_0`` is 0.040-0.053 px^2
    where the truth's own is 0.049-0.056. A perfect lattice gives -0.040 +- 0.072 (50 e/A^2)
    to -0.0001 +- 0.0001 (50000; ``make run``'s dose sweep).

    ``probe_at(positions or None, starts, stream)`` returns (the probe's region table, raw-only
    replica images of the twin region); ``offset`` is that region's (top, left) in the frame of
    ``x``. Returns a :class:`DeconvolvedTruth` (positions, k, s in px, figures, the local lattice
    ``W x`` and the displacement ``(I - W) x``, (N, 2) px each); its figures hold
    ``twin_displacement_sq_px2``, its error and ``twin_raw_displacement_sq_px2`` (``D_L^2``).
    """
    xy = np.asarray(fitted_xy, dtype=np.float64)
    weights, smoothed = local_lattice_weights(xy, table["sublattice"].astype(str).to_numpy(), separation_px)
    residual = _identity_minus(weights)
    base, deviation = np.asarray(weights @ xy), np.asarray(residual @ xy)
    row_of = {column: i for i, column in enumerate(table["column_id"].to_numpy())}
    corner = np.array([offset[1], offset[0]], dtype=np.float64)  # region (x, y) origin in the frame of x

    def refined(xy_truth: np.ndarray | None, starts: np.ndarray, stream: int) -> tuple[np.ndarray, np.ndarray]:
        """(draws, N, 2) refined positions in the frame of x (NaN where the fit failed or the
        column is not probed) and (N,) bool: evaluated and fitted raw in the real image."""
        probe, draws = probe_at(xy_truth, starts, stream)
        rows = np.array([row_of[c] for c in probe["column_id"].to_numpy()], dtype=int)
        use = np.zeros(len(table), dtype=bool)
        use[rows[probe["evaluate"].to_numpy(bool) & probe["fit_ok_raw"].to_numpy(bool)]] = True
        out = np.full((len(draws), len(table), 2), np.nan)
        for i, draw in enumerate(draws):
            fit_xy, ok = refine_like_the_sample(draw, probe, separation_px=separation_px)
            good = ok & np.isfinite(fit_xy).all(axis=1)
            out[i, rows[good]] = fit_xy[good] + corner
        return out, use

    fits, use = refined(None, np.rint(start_xy), PROBE_STREAM)
    noise_all = np.sum((fits - xy)[:, use] ** 2, axis=2).ravel()
    noise_all = noise_all[np.isfinite(noise_all)]
    scatter_sq = float(np.mean(noise_all)) if len(noise_all) else 0.0
    spread_sq = float(np.mean(np.sum(deviation[use] ** 2, axis=1))) if use.any() else 0.0
    shrink = math.sqrt(max(spread_sq - scatter_sq, 0.0) / spread_sq) if spread_sq > 0 else 0.0
    kept = {"twin_displacement_sq_px2": float("nan"), "twin_displacement_sq_error_px2": float("nan"),
            "twin_raw_displacement_sq_px2": float("nan")}
    local = use & smoothed
    if local.any():
        lattice_fits, _ = refined(base, np.rint(np.asarray(weights @ np.asarray(start_xy, dtype=np.float64))),
                                  LATTICE_PROBE_STREAM)
        # NaN where any neighbour lacks a fit: sparse products touch only stored weights.
        floor = np.stack([np.sum(np.asarray(residual @ fit) ** 2, axis=1) for fit in lattice_fits])
        local &= np.isfinite(floor).all(axis=0)
        observed, floor = np.sum(deviation[local] ** 2, axis=1), floor[:, local].ravel()
        if len(observed) >= 2:
            kept["twin_raw_displacement_sq_px2"] = float(np.mean(observed))
            kept["twin_displacement_sq_px2"] = float(np.mean(observed) - np.mean(floor))
            kept["twin_displacement_sq_error_px2"] = math.sqrt(
                np.var(observed, ddof=1) / len(observed) + np.var(floor, ddof=1) / len(floor))
    return DeconvolvedTruth(base + shrink * deviation, shrink, math.sqrt(scatter_sq), kept, base, deviation)


def replica_shrinks(truth: DeconvolvedTruth, replicas: int) -> np.ndarray:
    """(R,) the shrink ``k_r`` of each replica's truth ``W x + k_r (I - W) x``
    (:func:`deconvolved_positions`).

    Where the real displacement spread is resolved (``twin_displacement_sq_px2`` more than two
    of its errors above 0) every replica gets ``truth.shrink``. Where it is not, one raw fit
    leaves the spread uncertain and the twin's restored error with it (at 50 e/A^2 the truths
    of single-``k`` twins kept 0-4 times the real spread: restored 0.75-1.47 of the truth), so
    the replicas spread over the spreads the data allow: replica r's truth has the mean square
    displacement ``T_r = clip(T + z_r e, 0, D_L^2)`` from its local lattice
    (:meth:`DeconvolvedTruth.shrink_for`), ``T`` = ``twin_displacement_sq_px2``, ``e`` its
    standard error, ``z_r`` the normal quantile at ``(r + 1/2) / R``; the twin's interval, which
    resamples replicas, then carries that uncertainty. With R = 1 this is the central truth
    (``z = 0``). Raises ValueError for R < 1.

    Validated (tests/validate_twin.py --choices deconvolved, 4 replicas, 128x128 lattices at
    50 e/A^2, all flagged; twin / truth restored error, and how often the twin's 95 % interval
    holds the truth): 0.15 px per axis, seeds 0-9: 0.88-1.28, 9 of 10 within 25 %, interval
    holding the truth 9 of 10 (one truth for all replicas: 0.89-1.47, 7 and 5 of 10); 0.3 px per
    axis, seeds 0-3: 0.62-0.94, 2 of 4 within 25 %, 2 of 4 held (one truth: 0.75-1.15, 3 and
    1 of 4). So the spread mostly fixes the pessimistic twins, and makes the two optimistic ones
    of 0.3 px more so (0.65 and 0.62 for 0.76 and 0.75): there ``T`` lies 2.3-2.5 errors below
    the real 0.18 px^2 (the raw fit, pulled towards its start on the restored fit, hides real
    displacement), and even replica truths with 0.15 px^2 gave 0.75-0.87 of the truth
    (a diagnostic with k from 0 to 1). Verdicts agreed in all 14 either way. Twins whose spread
    is resolved (300, 3000, 30000 e/A^2) are unchanged.
    """
    from scipy.stats import norm

    from remflow.precision.basis import spread_unresolved

    if replicas < 1:
        raise ValueError(f"need at least one replica, got {replicas}")
    observed = truth.figures.get("twin_raw_displacement_sq_px2")
    if not spread_unresolved(truth.figures) or observed is None or not observed > 0:
        return np.full(replicas, float(truth.shrink))
    z = norm.ppf((np.arange(replicas) + 0.5) / replicas)
    spread = np.clip(truth.figures["twin_displacement_sq_px2"] + z * truth.figures["twin_displacement_sq_error_px2"],
                     0.0, observed)
    return np.array([truth.shrink_for(value) for value in spread])


def _identity_minus(weights):
    """``I - W`` as a sparse matrix without stored zeros (rows of the identity in W give empty rows)."""
    from scipy import sparse

    out = (sparse.identity(weights.shape[0], format="csr") - weights).tocsr()
    out.eliminate_zeros()
    return out


def _faint_columns(region: ImageModel, noise, columns: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame | None]:
    """(len(columns),) bool, per row of ``columns``: evaluated twin columns whose model
    amplitude is below MIN_AMPLITUDE_SIGNIFICANCE times its own Cramér-Rao bound (or below 0).

    Such a "column" (a noise peak on an amorphous support, a stripe of line noise) carries no
    position information: its bound runs to tens of pixels (exp_hrstem_2: up to 750 px along
    one axis, making the image's RMS bound 58 px), while a fit of it stays at its start. Its error
    says nothing about precision; it is left out of the twin's errors and of the bound alike.
    All evaluated columns are kept when the bound cannot be computed. Also returns the bounds
    (:func:`remflow.crlb.image_position_crlbs`: amplitude bounds of all evaluated columns,
    position bounds of at most SUMMARY_MAX_COLUMNS of them, spread evenly; None when not computed)."""
    from remflow.crlb import image_position_crlbs

    faint = np.zeros(len(columns), dtype=bool)
    evaluated = np.flatnonzero(columns["evaluate"].to_numpy(bool))
    if len(evaluated) == 0 or len(region.x) == 0:
        return faint, None
    distance, index = cKDTree(np.column_stack([region.x, region.y])).query(
        columns.loc[evaluated, ["x_true_px", "y_true_px"]].to_numpy(float))
    matched = distance < 1e-6
    try:
        wanted = np.unique(index[matched])
        table = image_position_crlbs(region, noise, wanted, amplitude_columns=wanted)
    except (ArithmeticError, RuntimeError, ValueError):
        return faint, None
    significance = dict(zip(table["column"], table["amplitude"] / table["crlb_amplitude"]))
    for row, model_index, ok in zip(evaluated, index, matched):
        if ok and not significance.get(model_index, np.inf) >= MIN_AMPLITUDE_SIGNIFICANCE:
            faint[row] = True
    return faint, table


def _region_columns(region: ImageModel, columns: pd.DataFrame) -> np.ndarray:
    """Indices of the region model's columns that are evaluated twin columns (matched by true position)."""
    evaluated = columns.loc[columns["evaluate"], ["x_true_px", "y_true_px"]].to_numpy(float)
    if len(evaluated) == 0 or len(region.x) == 0:
        return np.zeros(0, dtype=np.int64)
    distance, index = cKDTree(np.column_stack([region.x, region.y])).query(evaluated)
    return np.unique(index[distance < 1e-6])


# --------------------------------------------------------------------------- fitting the replicas


def refine_like_the_sample(image: np.ndarray, columns: pd.DataFrame, *, separation_px: float,
                           refine: str = "batched") -> tuple[np.ndarray, np.ndarray]:
    """Refine the twin's starts on one replica as fit_columns refines the real image.

    Sublattice A from its starts; a second sublattice B on the image minus A's fitted
    model (atomap's recipe, :func:`remflow.columns.fit_columns`). Returns (N, 2) positions
    and (N,) ``ok``, in the order of ``columns``.
    """
    from remflow.columns import model_image, refine_positions

    image = np.asarray(image, dtype=np.float64)
    xy = np.full((len(columns), 2), np.nan)
    ok = np.zeros(len(columns), dtype=bool)
    starts = columns[["x_start_px", "y_start_px"]].to_numpy(float)
    names = columns["sublattice"].astype(str).to_numpy()
    fitted_a = None
    for name in sorted(set(names)):
        members = np.flatnonzero(names == name)
        if len(members) < 2:
            continue
        target = image
        if name != "A" and fitted_a is not None:
            target = image - model_image(image.shape, fitted_a)
        result = refine_positions(target, starts[members], separation_px=separation_px, method=refine)
        if name == "A":
            fitted_a = result
        xy[members] = np.column_stack([result.x, result.y])
        ok[members] = np.asarray(result.ok, dtype=bool)
    return xy, ok


def fit_replicas(columns: pd.DataFrame, raw_replicas: np.ndarray, restored_replicas: np.ndarray, *,
                 separation_px: float, refine: str = "batched") -> dict[str, np.ndarray]:
    """Error vectors (R, N, 2) fitted minus true, raw and restored, and ``ok`` (R, N) on both.

    Replica r's truth is ``x_true_px_r{r}``, ``y_true_px_r{r}`` where ``columns`` has them
    (:func:`replica_shrinks`), else ``x_true_px``, ``y_true_px``."""
    errors = {"raw": [], "restored": []}
    ok_all = []
    for r, (raw, restored) in enumerate(zip(raw_replicas, restored_replicas)):
        own = [f"x_true_px_r{r}", f"y_true_px_r{r}"]
        true_xy = columns[own if set(own) <= set(columns) else ["x_true_px", "y_true_px"]].to_numpy(float)
        ok_pair = np.ones(len(columns), dtype=bool)
        for kind, image in (("raw", raw), ("restored", restored)):
            xy, ok = refine_like_the_sample(image, columns, separation_px=separation_px, refine=refine)
            errors[kind].append(xy - true_xy)
            ok_pair &= ok
        ok_all.append(ok_pair)
    return {"raw": np.array(errors["raw"]), "restored": np.array(errors["restored"]), "ok": np.array(ok_all)}


# --------------------------------------------------------------------------- figures


def _rms(squared: np.ndarray, weight: np.ndarray) -> float:
    total = weight.sum()
    return float(np.sqrt((squared * weight).sum() / total)) if total > 0 else float("nan")


def shared_fraction(errors: np.ndarray, valid: np.ndarray, xy: np.ndarray, separation_px: float) -> float:
    """Correlation of neighbouring columns' error vectors (see the module docs); NaN without pairs."""
    if len(xy) < 2:
        return float("nan")
    pairs = cKDTree(xy).query_pairs(PAIR_SPACINGS * separation_px, output_type="ndarray")
    if len(pairs) == 0:
        return float("nan")
    i, j = pairs[:, 0], pairs[:, 1]
    both = valid[:, i] & valid[:, j]
    cross = np.where(both, np.sum(errors[:, i] * errors[:, j], axis=2), 0.0).sum()
    own = np.where(both, 0.5 * (np.sum(errors[:, i] ** 2, axis=2) + np.sum(errors[:, j] ** 2, axis=2)), 0.0).sum()
    return float(cross / own) if own > 0 else float("nan")


def twin_figures(columns: pd.DataFrame, fits: dict[str, np.ndarray], *, separation_px: float,
                 pixel_size_pm: float | tuple[float, float] | None = None, n_boot: int = 2000,
                 seed: int = 0) -> dict[str, Any]:
    """The twin's precision figures from :func:`fit_replicas` (keys of TWIN_FIELDS that it computes).

    Only columns with ``evaluate`` count; a (replica, column) cell counts when the fit
    succeeded on both the raw and the restored replica. ``_ci_low``/``_ci_high``: 95 %
    interval of the expected error (bootstrap over replicas and columns). ``_pi_low``/``_pi_high``:
    95 % prediction interval for one image's error (and gain), from the replicas' own RMSEs
    (:func:`remflow.precision.stats.prediction_interval`): one image's truth RMSE scatters about
    the expectation by more than the CI's width (restored: 9 noise draws of one 0.15 px lattice
    at 30000 e/A^2 gave 0.032-0.046 px, mean 0.040, where the twin's CI was [0.036, 0.046]).
    """
    from remflow.precision import verdict
    from remflow.precision.stats import prediction_interval

    evaluate = columns["evaluate"].to_numpy(bool)
    valid = fits["ok"][:, evaluate]
    errors = {kind: fits[kind][:, evaluate] for kind in ("raw", "restored")}
    for kind in errors:
        valid = valid & np.isfinite(errors[kind]).all(axis=2)
    out: dict[str, Any] = {"twin_replicas": int(fits["ok"].shape[0]), "twin_columns": int(valid.any(axis=0).sum())}
    if valid.sum() < 3:
        out["twin_status"] = "too few twin columns fitted"
        return out
    replicas, count = valid.shape
    weight = valid.astype(np.float64)
    scale = np.ones(2) if pixel_size_pm is None else np.broadcast_to(np.asarray(pixel_size_pm, float), (2,))
    units = [("px", np.ones(2))] + ([("pm", scale)] if pixel_size_pm is not None else [])
    rng = np.random.default_rng(seed)
    column_draws = rng.integers(0, count, size=(n_boot, count))
    replica_draws = rng.integers(0, replicas, size=(n_boot, replicas))
    for unit, factor in units:
        squared = {kind: np.where(valid, np.sum((errors[kind] * factor) ** 2, axis=2), 0.0) for kind in errors}
        point = {kind: _rms(squared[kind], weight) for kind in errors}
        boot = {kind: np.empty(n_boot) for kind in errors}
        for b in range(n_boot):
            w = weight[replica_draws[b]][:, column_draws[b]]
            for kind in errors:
                boot[kind][b] = _rms(squared[kind][replica_draws[b]][:, column_draws[b]], w)
        # Each replica's own RMSE: what one image's truth RMSE would be, had it this replica's noise.
        per_replica = {kind: np.array([_rms(squared[kind][r], weight[r]) for r in range(replicas)]) for kind in errors}
        for kind in errors:
            name = f"twin_error_{kind}_{unit}"
            out[name] = point[kind]
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = (float(v) for v in np.nanpercentile(boot[kind], [2.5, 97.5]))
            interval = prediction_interval(per_replica[kind])
            if interval is not None:
                out[f"{name}_pi_low"], out[f"{name}_pi_high"] = interval
        if unit == "px":
            gain_boot = boot["raw"] / boot["restored"]
            out["twin_gain"] = point["raw"] / point["restored"] if point["restored"] > 0 else float("inf")
            out["twin_gain_ci_low"], out["twin_gain_ci_high"] = (float(v) for v in np.nanpercentile(gain_boot, [2.5, 97.5]))
            out["twin_verdict"] = verdict(out["twin_gain_ci_low"], out["twin_gain_ci_high"])
            interval = prediction_interval(per_replica["raw"] / per_replica["restored"])
            if interval is not None:
                out["twin_gain_pi_low"], out["twin_gain_pi_high"] = interval
        bias = np.array([(np.where(valid, errors["restored"][..., a] * factor[a], 0.0)).sum() / weight.sum()
                         for a in range(2)])
        out[f"twin_bias_restored_{unit}"] = float(np.hypot(*bias))
        if unit == "px":
            out["twin_bias_restored_x_px"], out["twin_bias_restored_y_px"] = float(bias[0]), float(bias[1])
    xy = columns.loc[evaluate, ["x_true_px", "y_true_px"]].to_numpy(float)
    for kind in errors:
        out[f"twin_shared_fraction_{kind}"] = shared_fraction(errors[kind], valid, xy, separation_px)
    fraction = out["twin_shared_fraction_restored"]
    if fraction is not None and math.isfinite(fraction):
        out["twin_shared_error_restored_px"] = math.sqrt(max(fraction, 0.0)) * out["twin_error_restored_px"]
    out["twin_status"] = "ok"
    return out


def efficiency(record: dict[str, Any]) -> dict[str, Any]:
    """Error / CRLB (radial) for raw and restored, on the basis the verdict uses (truth, else twin).

    Adds ``error_over_crlb_raw``, ``error_over_crlb_restored``, ``crlb_basis`` and, when the
    restored error is under the bound, ``crlb_note`` = BELOW_BOUND_NOTE; when on the twin basis
    the raw error is clearly under it too (remflow.precision.basis.raw_below_bound), instead
    RAW_BELOW_BOUND_NOTE: the twin then is not the verdict basis.
    An unbiased estimator cannot go below 1 (the bound holds for unbiased estimators only).

    The bound is the image model's: where that model does not hold for the image
    (:func:`remflow.precision.basis.twin_model_problem`: reduced chi-square above
    MAX_TWIN_REDUCED_CHI_SQUARE, noise correlation beyond the kernel's) the bound is not
    reported at all (``crlb_*`` set to None, ``crlb_note`` says why). Why: on the default frame
    exp_hrstem_2 (chi-square 4.08) the model gave a bound of 32 px for columns fitted to
    about 0.6 px, and an efficiency of 0.02 - a number that looks precise and is not.
    """
    from remflow.precision.basis import raw_below_bound, twin_model_problem

    out: dict[str, Any] = {}
    problem = twin_model_problem(record)
    if record.get("crlb_px") is not None and problem:
        out.update(dict.fromkeys(("crlb_px", "crlb_radial_px", "crlb_pm", "crlb_radial_pm")))
        out["crlb_note"] = f"no bound: {problem}; a bound from this model would not hold"
        return out
    bound = record.get("crlb_radial_px")
    if bound is None or not (isinstance(bound, (int, float)) and bound > 0):
        return out
    for basis, prefix in (("truth", "truth_rmse"), ("twin", "twin_error")):
        raw, restored = record.get(f"{prefix}_raw_px"), record.get(f"{prefix}_restored_px")
        if raw is not None and restored is not None:
            out["crlb_basis"] = basis
            out["error_over_crlb_raw"] = raw / bound
            out["error_over_crlb_restored"] = restored / bound
            if basis == "twin" and raw_below_bound(record):
                out["crlb_note"] = RAW_BELOW_BOUND_NOTE
            elif restored / bound < 1:
                out["crlb_note"] = BELOW_BOUND_NOTE
            break
    return out
