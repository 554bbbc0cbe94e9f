"""Column fitting with real atomap fits on small synthetic lattices made here with numpy.

Run: .venv/bin/python -m pytest tests/test_columns.py
Benchmark (prints the time per column): .venv/bin/python tests/test_columns.py
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from remflow.columns import (COLUMN_FIELDS, TRUTH_FIELDS, ColumnFit, estimate_separation, find_columns, fit_columns,
                             fit_ok, refine_positions)

SHAPE = (88, 120)  # rows, cols: not square, so a swapped x/y cannot pass
SPACING = 11.0
SIGMA = 2.0


def lattice_truth(shape: tuple[int, int], spacing: float, *, seed: int, jitter: float = 0.0,
                  perovskite: bool = False) -> pd.DataFrame:
    """True positions ``x_px, y_px, sublattice, amplitude`` of a square lattice with a random
    sub-pixel phase, uniform random offsets of up to ``jitter`` px per axis, and, for a
    perovskite, B columns (half as bright) at the cell centres. Covers a margin beyond the
    image so that edge columns' tails reach in as in a real crop."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, spacing, 2)
    xs = np.arange(phase[0] - 3 * spacing, shape[1] + 3 * spacing, spacing)
    ys = np.arange(phase[1] - 3 * spacing, shape[0] + 3 * spacing, spacing)
    grid_x, grid_y = (g.ravel() for g in np.meshgrid(xs, ys))
    parts = [pd.DataFrame({"x_px": grid_x, "y_px": grid_y, "sublattice": "A", "amplitude": 1.0})]
    if perovskite:
        parts.append(pd.DataFrame({"x_px": grid_x + spacing / 2, "y_px": grid_y + spacing / 2,
                                   "sublattice": "B", "amplitude": 0.5}))
    truth = pd.concat(parts, ignore_index=True)
    truth["x_px"] += rng.uniform(-jitter, jitter, len(truth))
    truth["y_px"] += rng.uniform(-jitter, jitter, len(truth))
    return truth


def render_columns(shape: tuple[int, int], truth: pd.DataFrame, sigma: float, background: float = 0.1) -> np.ndarray:
    """Isotropic Gaussian columns evaluated at pixel centres (pixel i centred at i), plus a background."""
    rows = np.arange(shape[0], dtype=np.float64)[:, None]
    cols = np.arange(shape[1], dtype=np.float64)[None, :]
    image = np.full(shape, background)
    for x, y, amplitude in truth[["x_px", "y_px", "amplitude"]].to_numpy(float):
        image += amplitude * np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma**2))
    return image


def interior(table: pd.DataFrame, shape: tuple[int, int], margin: float) -> pd.Series:
    """Columns whose true position is at least ``margin`` px from every edge."""
    return ((table["x_true_px"] >= margin) & (table["y_true_px"] >= margin)
            & (table["x_true_px"] <= shape[1] - 1 - margin) & (table["y_true_px"] <= shape[0] - 1 - margin))


@pytest.fixture(scope="module")
def square() -> tuple[pd.DataFrame, np.ndarray, ColumnFit]:
    """Noise-free square lattice, true positions jittered by up to 0.3 px; raw is the same
    lattice in other intensity units (scaled, offset) so the two fits are not one fit."""
    truth = lattice_truth(SHAPE, SPACING, seed=1, jitter=0.3)
    clean = render_columns(SHAPE, truth, SIGMA)
    return truth, clean, fit_columns(3.0 * clean - 5.0, clean, truth=truth)


def test_noise_free_positions_are_within_0p02_px_of_truth_on_both_images(square):
    truth, _, fit = square
    table = fit.table
    assert fit.status == "ok"
    assert abs(fit.separation_px - SPACING) <= 1.0
    inner = table[interior(table, SHAPE, SPACING)]
    assert len(inner) >= 40
    assert inner[["fit_ok_raw", "fit_ok_restored"]].all().all()
    for kind in ("raw", "restored"):
        error = np.hypot(inner[f"x_{kind}_px"] - inner["x_true_px"], inner[f"y_{kind}_px"] - inner["y_true_px"])
        assert error.max() < 0.02, (kind, error.max())
    assert (inner["amplitude_raw"] > 0).all() and (inner["sigma_x_restored_px"] > 0).all()


def test_table_has_the_documented_columns_order_and_ids(square):
    _, _, fit = square
    table = fit.table
    assert list(table.columns) == COLUMN_FIELDS + TRUTH_FIELDS
    assert table["column_id"].tolist() == list(range(len(table)))
    assert set(table["sublattice"]) == {"A"}
    assert table["fit_ok_raw"].dtype == bool
    # Every true column inside the image (away from the edge atomap's peak finder skips) was found once.
    true_inside = lattice_truth(SHAPE, SPACING, seed=1, jitter=0.3)
    true_inside = true_inside[interior(true_inside.rename(columns={"x_px": "x_true_px", "y_px": "y_true_px"}),
                                       SHAPE, SPACING)]
    matched = table.dropna(subset=["x_true_px"])
    assert len(matched.drop_duplicates(["x_true_px", "y_true_px"])) == len(matched)
    assert set(map(tuple, true_inside[["x_px", "y_px"]].to_numpy())) <= set(
        map(tuple, matched[["x_true_px", "y_true_px"]].to_numpy()))


def test_rows_are_sorted_by_start_and_a_rerun_gives_an_identical_table(square):
    truth, clean, fit = square
    again = fit_columns(3.0 * clean - 5.0, clean, truth=truth)
    pd.testing.assert_frame_equal(fit.table, again.table)
    starts = find_columns(clean, fit.separation_px)
    # Sorted by y, then x of the starting position; refined positions stay within the start's half spacing.
    assert np.array_equal(starts[np.lexsort((starts[:, 0], starts[:, 1]))], starts)
    assert len(starts) == len(fit.table)
    # Intensity units do not matter, negative ones included (the finder's threshold is relative).
    assert np.array_equal(find_columns(2.0 * clean - 100.0, fit.separation_px), starts)
    moved = np.hypot(fit.table["x_restored_px"] - starts[:, 0], fit.table["y_restored_px"] - starts[:, 1])
    assert moved.max() < 1.0


def test_a_column_without_a_true_position_gets_nan_truth(square):
    truth, clean, fit = square
    inner = fit.table[interior(fit.table, SHAPE, SPACING)]
    removed = inner.iloc[len(inner) // 2]
    reduced = truth[~np.isclose(truth["x_px"], removed["x_true_px"]) | ~np.isclose(truth["y_px"], removed["y_true_px"])]
    assert len(reduced) == len(truth) - 1
    table = fit_columns(3.0 * clean - 5.0, clean, truth=reduced).table
    row = table.loc[table["column_id"] == removed["column_id"]].iloc[0]
    assert np.isnan(row["x_true_px"]) and np.isnan(row["y_true_px"])
    assert table["x_true_px"].notna().sum() == fit.table["x_true_px"].notna().sum() - 1


def test_perovskite_gives_two_sublattices_with_accurate_b_positions():
    shape, spacing = (112, 112), 14.0
    truth = lattice_truth(shape, spacing, seed=2, jitter=0.2, perovskite=True)
    clean = render_columns(shape, truth, SIGMA)
    fit = fit_columns(clean, clean, second_sublattice=True, truth=truth)
    table = fit.table
    assert fit.status == "ok"
    assert abs(fit.separation_px - spacing) <= 1.0, "the A-A spacing, not the A-B one"
    assert table["sublattice"].tolist() == sorted(table["sublattice"]), "A rows first, then B"
    true_sublattice = truth.set_index(["x_px", "y_px"])["sublattice"]
    for name in ("A", "B"):
        rows = table[(table["sublattice"] == name) & interior(table, shape, spacing)]
        renamed = truth.rename(columns={"x_px": "x_true_px", "y_px": "y_true_px"})
        expected = truth[(truth["sublattice"] == name) & interior(renamed, shape, 1.5 * spacing)]
        assert len(rows) >= len(expected) >= 16, (name, len(rows), len(expected))
        assert (true_sublattice.loc[list(zip(rows["x_true_px"], rows["y_true_px"]))] == name).all()
        assert rows[["fit_ok_raw", "fit_ok_restored"]].all().all()
        error = np.hypot(rows["x_raw_px"] - rows["x_true_px"], rows["y_raw_px"] - rows["y_true_px"])
        assert error.max() < 0.02, (name, error.max())


def _amorphous(shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blobs = pd.DataFrame({"x_px": rng.uniform(0, shape[1], 200), "y_px": rng.uniform(0, shape[0], 200),
                          "amplitude": rng.uniform(0.5, 1.0, 200)})
    return render_columns(shape, blobs, 2.0)


@pytest.mark.parametrize("name, image, separation", [
    ("constant", np.full((64, 64), 3.0), None),
    ("constant, separation given", np.full((64, 64), 3.0), 10.0),
    ("pure noise", np.random.default_rng(0).poisson(50, (96, 96)).astype(float), None),
    ("pure noise, separation given", np.random.default_rng(0).poisson(50, (96, 96)).astype(float), 6.0),
    ("amorphous blobs", _amorphous((96, 96), 1), None),
    ("amorphous blobs, separation given", _amorphous((96, 96), 1), 8.0),
])
def test_images_without_a_lattice_report_no_lattice_found(name, image, separation):
    fit = fit_columns(image, image, separation_px=separation, truth=pd.DataFrame({"x_px": [1.0], "y_px": [2.0]}))
    assert fit.status.startswith("no lattice found: "), (name, fit.status)
    assert len(fit.table) == 0
    assert list(fit.table.columns) == COLUMN_FIELDS + TRUTH_FIELDS


def test_estimate_separation_finds_the_spacing_or_none():
    truth = lattice_truth((96, 96), 9.0, seed=4)
    assert abs(estimate_separation(render_columns((96, 96), truth, SIGMA)) - 9.0) <= 1.0
    perovskite = render_columns((96, 96), lattice_truth((96, 96), 12.0, seed=4, perovskite=True), SIGMA)
    assert abs(estimate_separation(perovskite) - 12.0 / np.sqrt(2)) <= 1.0
    assert abs(estimate_separation(perovskite, strongest_shell=True) - 12.0) <= 1.0
    assert estimate_separation(np.random.default_rng(3).normal(size=(96, 96))) is None
    assert estimate_separation(np.zeros((32, 32))) is None


def test_a_column_in_an_empty_region_is_marked_failed_and_the_rest_still_fit():
    truth = lattice_truth((66, 66), SPACING, seed=5)
    image = render_columns((66, 66), truth, SIGMA)
    starts = find_columns(image, SPACING)
    blank = image.copy()
    blank[22:44, 22:44] = 0.1  # erase the central columns: their regions are flat
    refined = refine_positions(blank, starts, separation_px=SPACING)
    erased = (starts[:, 0] >= 25) & (starts[:, 0] <= 41) & (starts[:, 1] >= 25) & (starts[:, 1] <= 41)
    assert erased.any() and not refined.ok[erased].any()
    assert refined.ok[~erased].mean() >= 0.75
    assert np.isfinite(refined.x).all() and np.isfinite(refined.y).all()


def test_fit_ok_rejects_fallbacks_escapes_and_long_moves():
    start = np.array([[10.0, 10.0]] * 5)
    x = np.array([10.2, 10.2, -3.0, 16.0, np.nan])
    y = np.array([9.9, 9.9, 10.0, 10.0, 10.0])
    amplitude = np.array([5.0, 0.0, 5.0, 5.0, 5.0])
    assert fit_ok(x, y, start, amplitude, (30, 30), separation_px=10.0).tolist() == [True, False, False, False, False]


def test_unknown_refinement_methods_are_refused():
    image = render_columns((40, 40), lattice_truth((40, 40), 10.0, seed=0), SIGMA)
    with pytest.raises(ValueError, match="unknown refinement method"):
        refine_positions(image, np.array([[10.0, 10.0], [20.0, 10.0]]), separation_px=10.0, method="magic")
    with pytest.raises(ValueError, match="unknown refinement method"):
        fit_columns(image, image, refine="magic")

