"""Local precision and where columns count: real atomap-model fits (remflow's batched refinement)
of synthetic images whose true columns carry strain, bending and two rotated domains, imaged
with shot noise and line jitter; vacuum and particle regions; dark (ABF) columns of a real
file; a real nanoparticle frame; a field case without B columns.

Run: PYTHONPATH=scripts .venv/bin/python -m pytest tests/test_local_precision.py
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from remflow.columns import column_contrast, detector_texts, fit_columns, parse_roi, status_ok
from remflow.precision import local_errors, match_nearest, opposite_pairs, periodic_regions, precision_summary
from remflow.synthetic import Degradation, LatticeSpec, degrade, render, true_positions

SHAPE = (192, 192)
SPACING = 12.0
STRUCTURE = {"strain_gradient": 0.015, "bend_px": 1.0, "domain_angle_deg": 8.0}
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
FIELD = Path(__file__).resolve().parents[2] / "shared" / "data" / "field-cases"


def synthetic(dose: float, *, seed: int = 0, jitter: float = 0.0, **lattice) -> tuple[np.ndarray, np.ndarray,
                                                                                      pd.DataFrame]:
    """(raw, smoothed raw as the image columns are found on, truth) of a synthetic lattice."""
    spec = LatticeSpec(shape=SHAPE, spacing_px=SPACING, sigma_px=2.5, seed=seed, **lattice)
    truth = true_positions(spec)
    raw = degrade(render(spec, truth), Degradation(dose_e_per_A2=dose, line_jitter_px=jitter, seed=seed + 7))
    raw = raw.astype(np.float64)
    return raw, ndimage.gaussian_filter(raw, 1.0), truth


def fit_to_csv(raw: np.ndarray, restored: np.ndarray, truth: pd.DataFrame | None = None, **kw) -> tuple:
    """fit_columns, then the table through CSV text as the workflow writes and reads columns.csv."""
    fit = fit_columns(raw, restored, separation_px=SPACING, refine="batched", truth=truth, **kw)
    text = io.StringIO()
    fit.table.to_csv(text, index=False, float_format="%.6f")
    return fit, pd.read_csv(io.StringIO(text.getvalue()))


def interior_truth_rmse(table: pd.DataFrame, kind: str = "raw") -> float:
    """Truth RMSE recomputed from columns.csv: columns fitted on both images, matched to a true
    column and at least one spacing inside the image (where the local figure looks)."""
    x, y = table["x_restored_px"], table["y_restored_px"]
    rows = table[table.fit_ok_raw & table.fit_ok_restored & table.x_true_px.notna() & (x >= SPACING) & (y >= SPACING)
                 & (x <= SHAPE[1] - 1 - SPACING) & (y <= SHAPE[0] - 1 - SPACING)]
    return math.sqrt(float(np.mean((rows[f"x_{kind}_px"] - rows.x_true_px) ** 2
                                   + (rows[f"y_{kind}_px"] - rows.y_true_px) ** 2)))


# ---------------------------------------------------------------- the estimator on known positions


def table_of(raw_xy: np.ndarray, restored_xy: np.ndarray) -> pd.DataFrame:
    n = len(raw_xy)
    return pd.DataFrame({"column_id": np.arange(n), "sublattice": "A", "x_raw_px": raw_xy[:, 0],
                         "y_raw_px": raw_xy[:, 1], "x_restored_px": restored_xy[:, 0],
                         "y_restored_px": restored_xy[:, 1], "fit_ok_raw": True, "fit_ok_restored": True})


def test_midpoint_factor_gives_the_radial_error_and_ignores_smooth_fields_but_not_line_jitter():
    rng = np.random.default_rng(0)
    i, j = np.meshgrid(np.arange(40), np.arange(40))
    ideal = np.column_stack([10 + 10.0 * i.ravel(), 10 + 10.0 * j.ravel()])
    shape = (410, 410)
    noise = rng.normal(0, 0.1, ideal.shape)  # 0.1 px per axis: radial RMS 0.141 px
    dx = ideal[:, 0] - 205.0
    smooth = np.column_stack([0.015 * dx**2 / (2 * 410), 1.0 * (2 * dx / 410) ** 2])  # strain gradient, bending
    right = dx > 0  # a second domain, rotated by 8 degrees
    c, s = math.cos(math.radians(8)), math.sin(math.radians(8))
    rotated = ideal.copy()
    rotated[right] = (ideal[right] - 205) @ np.array([[c, s], [-s, c]]) + 205
    for positions, truth_rms in ((ideal + noise, 0.1 * math.sqrt(2)), (rotated + smooth + noise, 0.1 * math.sqrt(2))):
        errors = local_errors(table_of(positions, positions), image_shape=shape, separation_px=10.0)
        assert math.sqrt(errors.squared[:, 0].mean()) == pytest.approx(truth_rms, rel=0.06)
    # Line jitter: columns on one scan line (same row) share one x shift of 0.2 px per line.
    rows = np.unique(ideal[:, 1], return_inverse=True)[1]
    jitter = np.column_stack([rng.normal(0, 0.2, rows.max() + 1)[rows], np.zeros(len(ideal))])
    jittered = ideal + noise + jitter
    true_rms = math.sqrt(float(np.mean(np.sum((noise + jitter) ** 2, axis=1))))
    errors = local_errors(table_of(jittered, jittered), image_shape=shape, separation_px=10.0)
    assert math.sqrt(errors.squared[:, 0].mean()) == pytest.approx(true_rms, rel=0.08)
    # Pairs along a scan line would miss the jitter: the estimator used only cross-line pairs.
    pairs = opposite_pairs(jittered)
    along = ~pairs.cross_line
    along_line = np.sum((jittered[pairs.centre] - 0.5 * (jittered[pairs.first] + jittered[pairs.second]))[along] ** 2,
                        axis=1) / 1.5
    assert math.sqrt(along_line.mean()) < 0.8 * true_rms


def test_random_peaks_hold_no_locally_periodic_region_and_a_lattice_does():
    rng = np.random.default_rng(1)
    random = rng.uniform(0, 200, (300, 2))
    assert (np.bincount(periodic_regions(random, 10.0)[periodic_regions(random, 10.0) >= 0]).max(initial=0)) < 20
    i, j = np.meshgrid(np.arange(8), np.arange(8))
    grain = np.column_stack([300 + 10.0 * i.ravel(), 300 + 10.0 * j.ravel()])
    labels = periodic_regions(np.vstack([random, grain]), 10.0)
    assert np.all(labels[len(random):][np.r_[9:15, 17:23]] == 0)  # the grain's interior is the largest region


# ---------------------------------------------------------------- real fits of structured lattices


@pytest.mark.parametrize("dose, jitter, lattice", [
    (300.0, 0.0, STRUCTURE),   # low dose: strain gradient, 1 px bending, two domains 8 degrees apart
    (5000.0, 0.0, STRUCTURE),  # high dose, same structure
])
def test_local_raw_figure_matches_the_truth_rmse_of_raw(dose, jitter, lattice):
    raw, restored, truth = synthetic(dose, jitter=jitter, **lattice)
    fit, table = fit_to_csv(raw, restored, truth)
    assert fit.status == "ok"
    summary = precision_summary(table, image_shape=SHAPE, separation_px=SPACING, pixel_size_pm=None, n_boot=300)
    truth_rmse = interior_truth_rmse(table)
    assert summary["gain_basis"] == "local" and summary["n_columns_local"] >= 100
    assert summary["local_precision_raw_px"] == pytest.approx(truth_rmse, rel=0.15), (summary, truth_rmse)
    if lattice:  # one ideal lattice cannot follow strain, bending and domains: the old figure is far off
        assert summary["global_lattice_rms_raw_px"] > 3 * truth_rmse


def test_line_jitter_counts_in_the_local_figure_as_in_the_truth():
    # A 192 px image holds only ~14 lattice rows, i.e. 14 independent jitter values; three
    # images are pooled so that the comparison is not decided by the luck of those few draws.
    local, truth_sq = [], []
    for seed in (0, 1, 2):
        raw, restored, truth = synthetic(2000.0, seed=seed, jitter=0.4)
        fit, table = fit_to_csv(raw, restored, truth)
        assert fit.status == "ok"
        local.append(local_errors(table, image_shape=SHAPE, separation_px=SPACING).squared[:, 0])
        truth_sq.append(interior_truth_rmse(table) ** 2)
        no_jitter = synthetic(2000.0, seed=seed)
        if seed == 0:  # the jitter is a real part of the error here: more than without it
            _, clean_table = fit_to_csv(*no_jitter)
            assert interior_truth_rmse(table) > 1.3 * interior_truth_rmse(clean_table)
    local_rms = math.sqrt(float(np.mean(np.concatenate(local))))
    assert local_rms == pytest.approx(math.sqrt(float(np.mean(truth_sq))), rel=0.15)


def test_a_crystal_next_to_vacuum_has_no_column_in_the_vacuum_and_the_crystal_s_precision():
    raw, restored, truth = synthetic(1000.0, region="vacuum", crystal_fraction=0.5)
    fit, table = fit_to_csv(raw, restored, truth)
    edge = 0.5 * SHAPE[1] + 0.5 * SPACING  # the last crystal column and its tail
    assert fit.status == "ok" and len(table) > 60
    assert (table["x_restored_px"] < edge).all(), table[table["x_restored_px"] >= edge]
    assert (fit.left_out["x_px"] >= edge).sum() >= 10  # the peak finder did pick vacuum noise: left out
    # Without the significance test those vacuum peaks become columns.
    unfiltered, _ = fit_to_csv(raw, restored, truth, min_peak_snr=0.0)
    assert (unfiltered.table["x_restored_px"] >= edge).sum() >= 10
    # The crystal alone: the same image limited to the crystal half (roi_px), so the same noise.
    alone = fit_to_csv(raw, restored, truth, roi_px=(0, 0, int(edge), SHAPE[0]))[1]
    half = precision_summary(table, image_shape=SHAPE, separation_px=SPACING, pixel_size_pm=None, n_boot=300)
    full = precision_summary(alone, image_shape=SHAPE, separation_px=SPACING, pixel_size_pm=None, n_boot=300)
    low, high = half["local_precision_raw_px_ci_low"], half["local_precision_raw_px_ci_high"]
    assert low <= full["local_precision_raw_px"] <= high
    assert half["local_precision_raw_px"] == pytest.approx(interior_truth_rmse(table), rel=0.15)


def test_a_particle_gives_columns_inside_it_and_a_precision_figure():
    raw, restored, truth = synthetic(1000.0, region="particle", crystal_fraction=0.7)
    fit, table = fit_to_csv(raw, restored, truth)
    assert status_ok(fit.status), fit.status
    radius = 0.7 * min(SHAPE) / 2 + SPACING
    distance = np.hypot(table["x_restored_px"] - (SHAPE[1] - 1) / 2, table["y_restored_px"] - (SHAPE[0] - 1) / 2)
    assert len(table) >= 60 and (distance <= radius).all()
    summary = precision_summary(table, image_shape=SHAPE, separation_px=SPACING, pixel_size_pm=None, n_boot=300)
    assert summary["status"] == "ok" and summary["local_precision_raw_px"] is not None
    assert summary["local_precision_raw_px"] == pytest.approx(interior_truth_rmse(table), rel=0.2)


def test_roi_limits_the_columns_to_the_rectangle():
    raw, restored, _ = synthetic(1000.0)
    roi = parse_roi("20,30,150,170", SHAPE)
    fit = fit_columns(raw, restored, separation_px=SPACING, refine="batched", roi_px=roi)
    x, y = fit.table["x_restored_px"], fit.table["y_restored_px"]
    assert fit.status == "ok" and len(fit.table) >= 60
    assert ((x >= 19) & (x < 151) & (y >= 29) & (y < 171)).all()
    with pytest.raises(ValueError, match="roi_px"):
        parse_roi("1,2,3", SHAPE)


def test_contrast_auto_follows_the_detector_named_in_metadata_title_or_file():
    assert column_contrast("auto", ["HAADF"]) == "bright"
    assert column_contrast(None, ["DF4", "ADF"]) == "bright"
    assert column_contrast("auto", ["ABF"]) == "dark"
    assert column_contrast("", ["Bright Field"]) == "dark"
    assert column_contrast("auto", detector_texts({"signal": {"title": "BF"}}, {})) == "dark"
    no_title = {"General": {"title": ""}}
    assert column_contrast("auto", detector_texts({}, no_title, "/data/test_ABF_cropped.hdf5")) == "dark"
    assert column_contrast("auto", detector_texts({}, {"Acquisition_instrument": {"TEM": {"Detector": {
        "name": "HAADF"}}}}, "/data/scan_07.dm4")) == "bright"
    assert column_contrast("bright", ["ABF"]) == "bright" and column_contrast("dark", []) == "dark"
    with pytest.raises(ValueError, match="contrast"):
        column_contrast("grey", [])


# ---------------------------------------------------------------- real files


def load_hspy(path: Path) -> tuple[np.ndarray, dict]:
    """A HyperSpy HDF5 file read directly (the .hdf5 extension matches several readers)."""
    import hyperspy.api as hs

    signal = hs.load(path, reader="hspy", lazy=False)
    return np.asarray(signal.data, dtype=np.float64), signal.metadata.as_dictionary()


@pytest.mark.skipif(not (REAL / "test_ABF_cropped.hdf5").exists(), reason="../shared/data/real not present")
def test_abf_dark_columns_are_found_as_minima_like_the_adf_columns_of_the_same_area():
    fits = {}
    for detector in ("ADF", "ABF"):
        path = REAL / f"test_{detector}_cropped.hdf5"
        image, metadata = load_hspy(path)
        image = image[:256, :256]
        contrast = column_contrast("auto", detector_texts({}, metadata, str(path)))
        assert contrast == ("dark" if detector == "ABF" else "bright")
        # The column finding and fitting under test; a mild smoothing stands in for the restoration.
        fits[detector] = fit_columns(image, ndimage.gaussian_filter(image, 1.0), refine="batched", contrast=contrast)
        assert fits[detector].status == "ok", (detector, fits[detector].status)
        if detector == "ABF":
            fits["ABF as bright"] = fit_columns(image, ndimage.gaussian_filter(image, 1.0), refine="batched",
                                                contrast="bright")
    assert len(fits["ABF"].table) >= 0.9 * len(fits["ADF"].table), {k: len(f.table) for k, f in fits.items()}
    adf = fits["ADF"].table[["x_raw_px", "y_raw_px"]].to_numpy()

    def on_adf_columns(fit) -> float:
        """Fraction of the fitted columns within 4 px (0.15 of the 29 px column distance) of an ADF column."""
        xy = fit.table[["x_raw_px", "y_raw_px"]].to_numpy()
        return float(np.mean(match_nearest(xy, adf, 4.0) >= 0)) if len(xy) else 0.0

    # Dark columns fitted as minima sit where the ADF columns are; the bright gaps between them do not.
    assert on_adf_columns(fits["ABF"]) >= 0.9
    assert on_adf_columns(fits["ABF as bright"]) < 0.5


@pytest.mark.skipif(not (FIELD / "c14b_no_B_columns.hspy").exists(), reason="../shared/data/field-cases not present")
def test_a_second_sublattice_without_columns_is_not_fitted_on_background():
    image, _ = load_hspy(FIELD / "c14b_no_B_columns.hspy")
    truth = pd.read_csv(FIELD / "c14b_no_B_columns_truth.csv")
    fit = fit_columns(image, ndimage.gaussian_filter(image, 1.0), refine="batched", second_sublattice=True, truth=truth)
    assert fit.status.startswith("ok (no second sublattice found"), fit.status
    assert set(fit.table["sublattice"]) == {"A"} and status_ok(fit.status)
    assert (fit.left_out["sublattice"] == "B").sum() >= 100  # the empty B sites, left out
    summary = precision_summary(fit.table, image_shape=image.shape, separation_px=fit.separation_px,
                                pixel_size_pm=None, truth=truth, n_boot=200)
    assert summary["status"] == "ok" and summary["n_spurious_raw"] == 0
