"""Precision figures: recomputed independently from the column table, verdicts on real atomap
fits of images whose noise we set, detection counts, lattice indexing and bootstrap.

Run: .venv/bin/python -m pytest tests/test_precision.py
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from remflow.columns import COLUMN_FIELDS, empty_table, fit_columns
from remflow.precision import (SUMMARY_FIELDS, bootstrap_ci, fit_ideal_lattice, lattice_residuals,
                               precision_summary, truth_errors)
from test_columns import lattice_truth, render_columns

SHAPE = (96, 104)
SPACING = 11.0
DOSE = 30.0  # counts per unit intensity of the noisy image


@pytest.fixture(scope="module")
def lattice() -> tuple[pd.DataFrame, np.ndarray]:
    """A perfect square lattice (random sub-pixel phase) and its noise-free image."""
    truth = lattice_truth(SHAPE, SPACING, seed=3)
    return truth, render_columns(SHAPE, truth, 2.0)


def poisson(clean: np.ndarray, dose: float, seed: int) -> np.ndarray:
    """Shot noise at ``dose`` counts per unit intensity, back in the clean image's units."""
    return np.random.default_rng(seed).poisson(clean * dose).astype(np.float64) / dose


@pytest.fixture(scope="module")
def fits(lattice) -> dict[str, tuple[pd.DataFrame, float]]:
    """(table, separation) of real fits: restored much less noisy than raw, the reverse, and equal noise."""
    truth, clean = lattice
    noisy, noisy_again, quiet = poisson(clean, DOSE, 1), poisson(clean, DOSE, 2), poisson(clean, 30 * DOSE, 3)
    out = {}
    for name, (raw, restored) in {"helps": (noisy, quiet), "hurts": (quiet, noisy),
                                  "equal": (noisy, noisy_again)}.items():
        fit = fit_columns(raw, restored, truth=truth)
        assert fit.status == "ok", fit.status
        out[name] = (fit.table, fit.separation_px)
    return out


def independent_figures(table: pd.DataFrame, separation: float, scale: tuple[float, float] = (1.0, 1.0)) -> dict:
    """Lattice RMS and truth RMSE from the table with numpy only: usable columns are both
    fits good and restored position >= one separation from each edge; lattice indices come
    from the known true lattice (a perfect square lattice here), not from fitted vectors."""
    x, y = table["x_restored_px"].to_numpy(), table["y_restored_px"].to_numpy()
    usable = (table["fit_ok_raw"] & table["fit_ok_restored"]).to_numpy() & (x >= separation) & (y >= separation) \
        & (x <= SHAPE[1] - 1 - separation) & (y <= SHAPE[0] - 1 - separation)
    rows = table[usable]
    true_xy = rows[["x_true_px", "y_true_px"]].to_numpy()
    indices = np.round((true_xy - true_xy.min(axis=0)) / SPACING)
    design = np.column_stack([np.ones(len(rows)), indices])
    out = {}
    for kind in ("raw", "restored"):
        xy = rows[[f"x_{kind}_px", f"y_{kind}_px"]].to_numpy()
        residual = xy - design @ np.linalg.lstsq(design, xy, rcond=None)[0]
        out[f"lattice_{kind}"] = np.sqrt(np.mean(np.sum((residual * scale) ** 2, axis=1)))
        out[f"truth_{kind}"] = np.sqrt(np.mean(np.sum(((xy - true_xy) * scale) ** 2, axis=1)))
    out["n"] = len(rows)
    return out


def test_figures_agree_with_an_independent_computation_from_the_table(fits, lattice):
    truth, _ = lattice
    table, separation = fits["helps"]
    summary = precision_summary(table, image_shape=SHAPE, separation_px=separation, pixel_size_pm=None, truth=truth)
    expected = independent_figures(table, separation)
    assert expected["n"] >= 40 and summary["n_columns_used"] == expected["n"]
    for kind in ("raw", "restored"):
        assert summary[f"global_lattice_rms_{kind}_px"] == pytest.approx(expected[f"lattice_{kind}"], rel=1e-9)
        assert summary[f"truth_rmse_{kind}_px"] == pytest.approx(expected[f"truth_{kind}"], rel=1e-9)
        assert summary[f"global_lattice_rms_{kind}_pm"] is None
    assert summary["precision_gain"] == pytest.approx(expected["truth_raw"] / expected["truth_restored"], rel=1e-9)
    assert summary["gain_basis"] == "truth"
    residuals = lattice_residuals(table, "raw", image_shape=SHAPE, separation_px=separation)
    assert np.sqrt(np.mean(residuals**2)) == pytest.approx(expected["lattice_raw"], rel=1e-9)
    errors, missed, spurious = truth_errors(table, "restored", separation_px=separation, truth=truth, image_shape=SHAPE)
    assert np.sqrt(np.mean(errors**2)) == pytest.approx(expected["truth_restored"], rel=1e-9)
    assert (missed, spurious) == (summary["n_missed_restored"], summary["n_spurious_restored"]) == (0, 0)


def test_calibrated_figures_scale_each_displacement_component_before_the_norm(fits, lattice):
    truth, _ = lattice
    table, separation = fits["helps"]
    square = precision_summary(table, image_shape=SHAPE, separation_px=separation, pixel_size_pm=20.0, truth=truth)
    for name in ("global_lattice_rms_raw", "local_precision_restored", "truth_rmse_restored"):
        for suffix in ("", "_ci_low", "_ci_high"):
            assert square[f"{name}_pm{suffix}"] == pytest.approx(20.0 * square[f"{name}_px{suffix}"], rel=1e-9)
    oblong = precision_summary(table, image_shape=SHAPE, separation_px=separation, pixel_size_pm=(20.0, 30.0),
                               truth=truth)
    expected = independent_figures(table, separation, scale=(20.0, 30.0))
    for kind in ("raw", "restored"):
        assert oblong[f"global_lattice_rms_{kind}_pm"] == pytest.approx(expected[f"lattice_{kind}"], rel=1e-9)
        assert oblong[f"truth_rmse_{kind}_pm"] == pytest.approx(expected[f"truth_{kind}"], rel=1e-9)
    # With non-square pixels the gain is that of the physical displacements.
    assert oblong["precision_gain"] == pytest.approx(expected["truth_raw"] / expected["truth_restored"], rel=1e-9)


@pytest.mark.parametrize("case, verdict", [("helps", "helps"), ("hurts", "hurts"), ("equal", "inconclusive")])
@pytest.mark.parametrize("with_truth", [True, False])
def test_verdict_follows_the_noise_of_raw_and_restored(fits, lattice, case, verdict, with_truth):
    truth, _ = lattice
    table, separation = fits[case]
    summary = precision_summary(table, image_shape=SHAPE, separation_px=separation, pixel_size_pm=None,
                                truth=truth if with_truth else None)
    assert summary["gain_basis"] == ("truth" if with_truth else "local")
    assert summary["verdict"] == verdict, summary
    assert summary["precision_gain_ci_low"] <= summary["precision_gain"] <= summary["precision_gain_ci_high"]
    if case == "helps":  # 30x the dose: about sqrt(30) ~ 5.5 times more precise
        assert 3.5 < summary["precision_gain"] < 8.0
    if not with_truth:
        assert summary["truth_rmse_raw_px"] is None and summary["n_missed_raw"] is None


def test_summary_is_reproducible_json_with_every_summary_field(fits, lattice):
    truth, _ = lattice
    table, separation = fits["equal"]
    first = precision_summary(table, image_shape=SHAPE, separation_px=separation, pixel_size_pm=25.0, truth=truth)
    second = precision_summary(table, image_shape=SHAPE, separation_px=separation, pixel_size_pm=25.0, truth=truth)
    assert json.dumps(first, allow_nan=False) == json.dumps(second, allow_nan=False)
    other_seed = precision_summary(table, image_shape=SHAPE, separation_px=separation, pixel_size_pm=25.0,
                                   truth=truth, seed=1)
    assert other_seed["precision_gain"] == first["precision_gain"]
    assert other_seed["precision_gain_ci_low"] != first["precision_gain_ci_low"]
    assert set(SUMMARY_FIELDS) - {"sample", "network", "pixel_size_pm", "n_not_significant"} <= set(first)
    assert SUMMARY_FIELDS[:5] == ["sample", "status", "network", "pixel_size_pm", "n_columns"]
    assert SUMMARY_FIELDS[-8:] == ["precision_gain", "precision_gain_ci_low", "precision_gain_ci_high", "verdict",
                                   "gain_basis", "local_gain", "local_gain_ci_low", "local_gain_ci_high"]
    px = [f for f in SUMMARY_FIELDS if f.endswith("_px") or "_px_" in f]
    pm = [f for f in SUMMARY_FIELDS if (f.endswith("_pm") or "_pm_" in f) and f != "pixel_size_pm"]
    assert max(map(SUMMARY_FIELDS.index, px)) < min(map(SUMMARY_FIELDS.index, pm)), "px figures, then pm twins"
    assert [f.replace("_px", "_pm") for f in px] == pm


# ---------------------------------------------------------------- synthetic tables (no fitting)


def table_from(xy_raw: np.ndarray, xy_restored: np.ndarray, sublattice: str = "A") -> pd.DataFrame:
    """A column table in fit_columns' format with the given positions and good fits."""
    n = len(xy_raw)
    return pd.DataFrame({
        "column_id": np.arange(n), "sublattice": sublattice,
        "x_raw_px": xy_raw[:, 0], "y_raw_px": xy_raw[:, 1],
        "x_restored_px": xy_restored[:, 0], "y_restored_px": xy_restored[:, 1],
        "sigma_x_raw_px": 2.0, "sigma_y_raw_px": 2.0, "sigma_x_restored_px": 2.0, "sigma_y_restored_px": 2.0,
        "amplitude_raw": 1.0, "amplitude_restored": 1.0, "fit_ok_raw": True, "fit_ok_restored": True,
        "peak_snr": 50.0,
    })[COLUMN_FIELDS]


def grid(shape: tuple[int, int], spacing: float, offset: float = 3.3) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(offset, shape[1], spacing), np.arange(offset, shape[0], spacing))
    return np.column_stack([xs.ravel(), ys.ravel()])


def test_the_gain_interval_is_paired_over_columns():
    true_xy = grid((100, 100), 10.0)
    noise = np.random.default_rng(0).normal(0, 0.2, true_xy.shape)
    table = table_from(true_xy + noise, true_xy + noise / 2)  # every displacement exactly halved
    truth = pd.DataFrame({"x_px": true_xy[:, 0], "y_px": true_xy[:, 1]})
    summary = precision_summary(table, image_shape=(100, 100), separation_px=10.0, pixel_size_pm=None, truth=truth)
    # Unpaired resampling would scatter the ratio; paired resampling keeps it at 2 exactly.
    assert summary["precision_gain"] == pytest.approx(2.0)
    assert summary["precision_gain_ci_low"] == pytest.approx(2.0)
    assert summary["precision_gain_ci_high"] == pytest.approx(2.0)
    assert summary["truth_rmse_raw_px_ci_low"] < summary["truth_rmse_raw_px"] < summary["truth_rmse_raw_px_ci_high"]
    assert summary["verdict"] == "helps"


def test_missed_and_spurious_columns_are_counted_one_to_one():
    shape, spacing = (100, 100), 10.0
    true_xy = grid(shape, spacing)
    truth = pd.DataFrame({"x_px": true_xy[:, 0], "y_px": true_xy[:, 1]})
    fitted = true_xy + np.random.default_rng(1).normal(0, 0.1, true_xy.shape)
    centre = np.argmin(np.linalg.norm(true_xy - [50, 50], axis=1))
    failed_raw = np.argmin(np.linalg.norm(true_xy - [30, 70], axis=1))
    keep = np.ones(len(fitted), dtype=bool)
    keep[centre] = False  # a true column never found: missed on both
    extra = np.array([[true_xy[failed_raw, 0] + 5.0, true_xy[failed_raw, 1] + 5.0],  # between columns: spurious
                      fitted[0] + 0.3])  # a doubled peak on a found column: spurious (one to one)
    positions = np.vstack([fitted[keep], extra])
    table = table_from(positions, positions)
    table.loc[int(keep[:failed_raw].sum()), "fit_ok_raw"] = False  # the raw fit failed here: missed on raw
    for which, missed in (("raw", 2), ("restored", 1)):
        errors, n_missed, n_spurious = truth_errors(table, which, separation_px=spacing, truth=truth, image_shape=shape)
        assert (n_missed, n_spurious) == (missed, 2), which
        assert errors.max() < 0.5
    summary = precision_summary(table, image_shape=shape, separation_px=spacing, pixel_size_pm=None, truth=truth)
    assert (summary["n_missed_raw"], summary["n_spurious_raw"], summary["n_missed_restored"]) == (2, 2, 1)
    assert summary["n_fit_failed_raw"] == 1 and summary["n_fit_failed_restored"] == 0


def test_lattice_residuals_leave_out_border_columns_and_failed_fits():
    shape, spacing = (100, 100), 10.0
    xy = grid(shape, spacing) + np.random.default_rng(2).normal(0, 0.05, (100, 2))
    table = table_from(xy, xy)
    inside = ((xy >= spacing) & (xy <= np.array(shape[::-1]) - 1 - spacing)).all(axis=1)
    assert len(lattice_residuals(table, "raw", image_shape=shape, separation_px=spacing)) == inside.sum()
    table.loc[np.flatnonzero(inside)[3], "fit_ok_restored"] = False
    residuals = lattice_residuals(table, "raw", image_shape=shape, separation_px=spacing)
    assert len(residuals) == inside.sum() - 1
    assert 0.03 < np.sqrt(np.mean(residuals**2)) < 0.1  # ~ sqrt(2) x 0.05 px of noise


@pytest.mark.parametrize("a, b", [
    ((10.0, 0.0), (0.0, 10.0)),
    ((9.0 * np.cos(0.4), 9.0 * np.sin(0.4)), (-9.0 * np.sin(0.4), 9.0 * np.cos(0.4))),  # rotated square
    ((8.0, 0.0), (0.0, 11.3)),  # rectangular, e.g. a perovskite along [110]
    ((9.0, 0.0), (4.5, 9.0 * np.sqrt(3) / 2)),  # hexagonal
])
def test_ideal_lattice_recovers_lattice_vectors_and_indices(a, b):
    a, b = np.array(a), np.array(b)
    i, j = np.meshgrid(np.arange(-6, 7), np.arange(-6, 7))
    indices = np.column_stack([i.ravel(), j.ravel()])
    ideal = np.array([50.3, 48.9]) + indices[:, :1] * a + indices[:, 1:] * b
    xy = ideal + np.random.default_rng(4).normal(0, 0.05, ideal.shape)
    lattice = fit_ideal_lattice(xy, separation_px=float(min(np.hypot(*a), np.hypot(*b))))
    assert lattice.indexed.all()
    assert np.abs(lattice.ideal(lattice.indices) - ideal).max() < 0.05
    cell = abs(np.cross(a, b))
    assert abs(np.cross(lattice.a, lattice.b)) == pytest.approx(cell, rel=1e-3)


def test_bootstrap_interval_of_a_mean():
    values = np.random.default_rng(5).normal(5.0, 1.0, 400)
    low, high = bootstrap_ci(values, np.mean, n_boot=2000, seed=0)
    assert low < values.mean() < high
    assert high - low == pytest.approx(2 * 1.96 / np.sqrt(400), rel=0.2)
    assert bootstrap_ci(values, np.mean, n_boot=2000, seed=0) == (low, high)


def test_prediction_interval_holds_one_further_draw_95_percent_of_the_time():
    """With 4 draws the interval must widen by Student's t and sqrt(1 + 1/R): the normal quantile
    covers about 85 %, t without the sqrt(1 + 1/R) about 93.5 % (20000 trials: sd 0.0015)."""
    from remflow.precision.stats import prediction_interval

    rng = np.random.default_rng(11)
    trials, replicas = 20000, 4
    draws = np.exp(rng.normal(-3.0, 0.2, (trials, replicas + 1)))
    intervals = np.array([prediction_interval(row[:replicas]) for row in draws])
    covered = (intervals[:, 0] <= draws[:, replicas]) & (draws[:, replicas] <= intervals[:, 1])
    assert covered.mean() == pytest.approx(0.95, abs=0.006)
    # Positive only, ratios invert: the interval of 1/x is the inverted interval of x.
    low, high = prediction_interval(draws[0, :replicas])
    assert prediction_interval(1 / draws[0, :replicas]) == pytest.approx((1 / high, 1 / low), rel=1e-12)
    assert prediction_interval(np.array([0.1, np.nan, 0.0])) is None


def test_bootstrap_of_means_gives_the_intervals_of_the_per_resample_loop():
    """The vectorised bootstrap (precision figures) draws the same resamples as bootstrap_ci."""
    from remflow.precision.stats import _ratio_of_rms, _ratio_of_rms_of_means, _rms_of, _rms_of_means
    from remflow.precision.stats import bootstrap_ci_of_means

    rng = np.random.default_rng(3)
    squared = np.column_stack([rng.chisquare(2, 537) * 0.3, rng.chisquare(2, 537) * 0.1])
    for values, loop, vectorised in ((squared[:, 0], _rms_of, _rms_of_means),
                                     (squared, _ratio_of_rms, _ratio_of_rms_of_means)):
        expected = bootstrap_ci(values, loop, n_boot=2000, seed=7)
        assert bootstrap_ci_of_means(values, vectorised, n_boot=2000, seed=7) == pytest.approx(expected, rel=1e-12)
    # A restored error of exactly 0 gives an infinite gain, as the loop's statistic does.
    assert _ratio_of_rms_of_means(np.array([[1.0, 0.0], [0.0, 0.0], [4.0, 1.0]])).tolist() == [np.inf, np.inf, 2.0]


def test_a_table_without_usable_columns_gives_no_figures_and_no_crash():
    summary = precision_summary(empty_table(False), image_shape=(64, 64), separation_px=10.0, pixel_size_pm=20.0)
    assert summary["status"].startswith("too few usable columns")
    assert summary["precision_gain"] is None and summary["verdict"] == "inconclusive"
    assert summary["n_columns"] == 0
    json.dumps(summary, allow_nan=False)
