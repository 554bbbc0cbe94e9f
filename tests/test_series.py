"""Frame series (sample sheet ``frame: all``): stacks read whole, every frame restored, the
series precision against the truth through the real workflow, and the estimator's formula."""

from __future__ import annotations

import json
import struct

import hyperspy.api as hs
import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from conftest import INSTRUMENT_FILES, make_small_config, run_snakemake
from remflow.ingest import inspect_sample, read_image
from remflow.precision.series import series_precision, series_residuals

#: Drift of the synthetic series: (dx, dy) of every frame (px), about a pixel per frame.
SERIES_SHIFTS = [(0.0, 0.0), (0.9, -0.6), (1.7, -1.1), (2.8, -1.4), (3.6, -2.2)]
SERIES_SHAPE = (120, 120)
SPACING = 12.0


# --------------------------------------------------------------------------- the formula


def _lattice_table(positions: np.ndarray) -> pd.DataFrame:
    """columns.csv-like rows (frame, column_id, raw = restored positions) of positions (F, C, 2)."""
    frames, columns = positions.shape[:2]
    rows = []
    for frame in range(frames):
        for column in range(columns):
            x, y = positions[frame, column]
            rows.append({"frame": frame, "column_id": column, "sublattice": "A", "x_raw_px": x, "y_raw_px": y,
                         "x_restored_px": x, "y_restored_px": y, "fit_ok_raw": True, "fit_ok_restored": True})
    return pd.DataFrame(rows)


def test_series_formula_recovers_known_scatter_and_drift_and_cannot_see_static_errors():
    rng = np.random.default_rng(5)
    grid = np.stack(np.meshgrid(np.arange(20, 180, 12.0), np.arange(20, 180, 12.0)), axis=-1).reshape(-1, 2)
    drift = np.array([[0, 0], [1.3, -0.4], [2.1, -1.0], [3.9, -1.2], [4.4, -2.5]])
    sigma_axis = 0.1
    noise = rng.normal(0, sigma_axis, size=(len(drift), len(grid), 2))
    positions = grid[None] + drift[:, None] + noise
    figures = series_precision(_lattice_table(positions), image_shape=(205, 205), separation_px=12.0, n_boot=300)
    expected = np.sqrt(2) * sigma_axis  # radial
    assert figures["series_n_frames"] == 5 and figures["series_n_columns_used"] == len(grid)
    assert figures["series_precision_raw_px"] == pytest.approx(expected, rel=0.05)
    assert figures["series_precision_raw_px_ci_low"] < expected < figures["series_precision_raw_px_ci_high"]
    assert np.allclose(figures["series_drift_raw_px"], drift, atol=0.04)  # SE ~0.01 px
    # A static error, the same in every frame (a bias, a prior, real structure), is invisible.
    static = rng.normal(0, 0.5, size=(1, len(grid), 2))
    biased = series_precision(_lattice_table(positions + static), image_shape=(205, 205), separation_px=12.0,
                              n_boot=300)
    assert biased["series_precision_raw_px"] == pytest.approx(figures["series_precision_raw_px"], rel=1e-9)
    # Columns missing from some frames (failed fits, drifted out): the same figure within its error.
    table = _lattice_table(positions)
    table.loc[rng.random(len(table)) < 0.15, "fit_ok_raw"] = False
    gappy = series_precision(table, image_shape=(205, 205), separation_px=12.0, n_boot=300)
    assert gappy["series_n_columns_used"] >= 0.9 * len(grid) and gappy["series_n_frames"] == 5
    assert gappy["series_precision_raw_px"] == pytest.approx(expected, rel=0.06)
    assert np.allclose(gappy["series_drift_raw_px"], drift, atol=0.04)
    # The k factor makes the double-centred residuals unbiased: 2 frames, 3 columns, exact.
    residuals, _, scale = series_residuals(np.zeros((2, 3, 2)) + np.array([[[1.0, 0.0]], [[0.0, 0.0]]]))
    assert scale == pytest.approx(np.sqrt(2 / 1 * 3 / 2)) and np.allclose(residuals, 0)


@pytest.mark.parametrize("dose", [300, 10000])
def test_series_precision_of_raw_fits_matches_their_truth_at_low_and_high_dose(tmp_path, dose):
    """fit_series on the raw frames alone (no network): the series figure against the truth RMSE."""
    from remflow.frames import fit_series
    from remflow.synthetic import Degradation, LatticeSpec, write_series

    spec = LatticeSpec(shape=SERIES_SHAPE, spacing_px=SPACING, sigma_px=2.5, seed=3)
    truth = write_series(spec, Degradation(dose_e_per_A2=dose, seed=11), SERIES_SHIFTS,
                         tmp_path / "series.hspy", tmp_path / "truth.csv")
    stack = hs.load(tmp_path / "series.hspy").data
    fit = fit_series(stack, stack, refine="batched")
    assert fit.status == "ok", fit.status
    print(f"coarse shifts {np.round(fit.shifts_px, 2).tolist()}")
    assert np.allclose(fit.shifts_px, SERIES_SHIFTS, atol=0.3)  # coarse: the fits need ~0.5 px
    figures = series_precision(fit.table, image_shape=SERIES_SHAPE, separation_px=fit.separation_px, n_boot=200)
    truth_rmse, _ = _truth_rmse_raw(fit.table, truth)
    print(f"dose {dose}: series precision raw {figures['series_precision_raw_px']:.4f} px, "
          f"truth RMSE raw {truth_rmse:.4f} px")
    assert figures["series_precision_raw_px"] == pytest.approx(truth_rmse, rel=0.15)


# --------------------------------------------------------------------------- reading and restoring stacks


def test_frame_all_reads_every_frame_of_a_real_velox_stack_with_its_calibration():
    path = INSTRUMENT_FILES / "fei_example_tem_stack.emd"
    if not path.exists():
        pytest.skip("instrument files not available")
    image = read_image(path, frame="all", min_size_px=2)
    assert image.signal.data.shape == (2, 3, 3) and image.signal.data.dtype == np.float32
    assert image.pixel_size_pm == pytest.approx(8.1729, rel=1e-4)
    record = inspect_sample({"sample": "stack", "path": str(path), "frame": "all", "modality": "tem",
                             "resolution": "hr"}, min_size_px=2)
    assert record["status"] == "ok" and record["n_frames"] == 2 and record["shape"] == [3, 3]


def test_tiff_stack_of_odd_frames_is_read_whole_and_each_frame_restored_as_on_its_own(tmp_path):
    from remflow.restore import Restorer

    rng = np.random.default_rng(1)
    frames = (rng.poisson(30, size=(3, 33, 35))).astype(np.float32)
    signal = hs.signals.Signal2D(frames)
    for axis in signal.axes_manager.signal_axes:
        axis.scale, axis.units = 0.05, "nm"
    signal.save(tmp_path / "stack.tif")
    image = read_image(tmp_path / "stack.tif", frame="all")
    assert image.signal.data.shape == (3, 33, 35) and image.pixel_size_pm == pytest.approx(50.0)
    assert "all 3 frames" in " ".join(image.notes)
    restorer = Restorer("sfr_hrstem")
    single = rng.normal(10, 2, size=(40, 32)).astype(np.float32)
    stack_out, single_out = restorer.restore_many([image.signal.data, single])
    assert stack_out.shape == (3, 33, 35) and single_out.shape == (40, 32)
    for index in range(3):
        alone = restorer.restore(image.signal.data[index])
        assert np.abs(stack_out[index] - alone).max() <= 1e-5 * np.ptp(alone)


# --------------------------------------------------------------------------- the workflow


def _png_size(path) -> tuple[int, int]:
    with open(path, "rb") as handle:
        head = handle.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def series_run(tmp_path_factory):
    """A real run on a synthetic 5-frame series with drift and on a real (tiny) Velox stack."""
    from remflow.synthetic import Degradation, LatticeSpec, write_series

    workdir = tmp_path_factory.mktemp("series_run")
    (workdir / "raw").mkdir()
    spec = LatticeSpec(shape=SERIES_SHAPE, spacing_px=SPACING, sigma_px=2.5, seed=3)
    write_series(spec, Degradation(dose_e_per_A2=1000, seed=11), SERIES_SHIFTS,
                 workdir / "raw" / "series.hspy", workdir / "raw" / "series_truth.csv")
    samples = [{"sample": "series", "path": "raw/series.hspy", "frame": "all", "modality": "auto",
                "resolution": "auto"}]
    velox = INSTRUMENT_FILES / "fei_example_tem_stack.emd"
    if velox.exists():
        samples.append({"sample": "velox_stack", "path": str(velox), "frame": "all", "modality": "tem",
                        "resolution": "hr"})
    make_small_config(workdir, samples)
    with open(workdir / "config.yaml", "a", encoding="utf-8") as handle:
        handle.write("ingest:\n  min_image_px: 2\n")  # the real stack's frames are 3x3 px
    run_snakemake(workdir, "--cores", "2")
    return workdir


def _truth_rmse_raw(columns: pd.DataFrame, truth: pd.DataFrame) -> tuple[float, list[float]]:
    """Truth RMSE of the raw fits over the columns fitted in every frame whose true position is at
    least one spacing inside every frame: matched here to each frame's true positions."""
    squared: dict[int, dict[int, float]] = {}
    for frame, rows in columns.groupby("frame"):
        true = truth[truth["frame"] == frame]
        distance, index = cKDTree(true[["x_px", "y_px"]].to_numpy()).query(rows[["x_raw_px", "y_raw_px"]].to_numpy())
        matched = true.iloc[index]
        inside = ((matched["x_px"] >= SPACING) & (matched["y_px"] >= SPACING)
                  & (matched["x_px"] <= SERIES_SHAPE[1] - 1 - SPACING)
                  & (matched["y_px"] <= SERIES_SHAPE[0] - 1 - SPACING)).to_numpy()
        good = (rows["fit_ok_raw"].astype(bool) & rows["fit_ok_restored"].astype(bool)).to_numpy()
        good = good & inside & (distance < 0.5 * SPACING)
        squared[int(frame)] = dict(zip(rows["column_id"].to_numpy()[good], distance[good] ** 2))
    every = set.intersection(*(set(d) for d in squared.values()))
    per_frame = [float(np.sqrt(np.mean([squared[f][c] for c in every]))) for f in sorted(squared)]
    return float(np.sqrt(np.mean(np.square(per_frame)))), per_frame


@pytest.mark.workflow
def test_series_precision_matches_the_truth_of_the_raw_fits(series_run):
    columns = pd.read_csv(series_run / "results" / "columns" / "series.csv")
    truth = pd.read_csv(series_run / "raw" / "series_truth.csv")
    assert list(columns.columns[:2]) == ["frame", "column_id"]
    assert sorted(columns["frame"].unique()) == [0, 1, 2, 3, 4]
    per_frame_ids = [tuple(rows["column_id"]) for _, rows in columns.groupby("frame")]
    assert all(ids == per_frame_ids[0] for ids in per_frame_ids) and len(per_frame_ids[0]) >= 50
    truth_rmse, per_frame = _truth_rmse_raw(columns, truth)
    precision = json.loads((series_run / "results" / "precision" / "series.json").read_text())
    series = precision["series_precision_raw_px"]
    print(f"series precision raw {series:.4f} px, truth RMSE raw {truth_rmse:.4f} px "
          f"(per frame {np.round(per_frame, 4).tolist()}); restored series "
          f"{precision['series_precision_restored_px']:.4f} px; gain {precision['series_gain']:.2f}")
    assert series == pytest.approx(truth_rmse, rel=0.15)
    assert precision["series_precision_raw_px_ci_low"] < series < precision["series_precision_raw_px_ci_high"]
    assert precision["series_n_frames"] == 5 and precision["series_n_columns_used"] >= 30
    # Drift: the mean column shift of each frame is the imposed one.
    # Drift: each frame's mean column shift is the imposed one, within 4 standard errors of the
    # difference of two frames' means of the raw fits (radial scatter / sqrt(columns) per axis; the
    # restored fits inherit the raw noise, so their series scatter cannot bound their drift error).
    tolerance = 4 * series / np.sqrt(precision["series_n_columns_used"])
    for kind in ("raw", "restored"):
        drift = np.asarray(precision[f"series_drift_{kind}_px"])
        assert np.allclose(drift, np.asarray(SERIES_SHIFTS) - SERIES_SHIFTS[0], atol=tolerance), kind
    # Without truth the verdict rests on the series figure, and the summary says so.
    summary = pd.read_csv(series_run / "results" / "summary.csv").set_index("sample")
    row = summary.loc["series"]
    assert row["gain_basis"] == "series" and row["verdict"] == row["series_verdict"]
    assert row["precision_gain"] == pytest.approx(precision["series_gain"], rel=1e-5)
    assert row["series_precision_raw_pm"] == pytest.approx(20.0 * series, rel=1e-5)  # 20 pm pixels


@pytest.mark.workflow
def test_series_stacks_are_restored_frame_by_frame_and_drawn_with_a_per_frame_panel(series_run):
    raw = hs.load(series_run / "results" / "ingest" / "series.hspy")
    restored = hs.load(series_run / "results" / "restored" / "series.hspy")
    assert raw.data.shape == restored.data.shape == (5, *SERIES_SHAPE) and raw.data.dtype == np.float32
    assert restored.axes_manager.signal_axes[0].scale == pytest.approx(20.0)
    # Each frame restored on its own: no two restored frames are alike (noise differs), all finite.
    assert np.isfinite(restored.data).all()
    assert min(np.abs(restored.data[i] - restored.data[0]).max() for i in range(1, 5)) > 0
    width, height = _png_size(series_run / "results" / "figures" / "series.png")
    assert height > 1.3 * 1050 and width == 1500  # the third row: per-frame panels
    if (series_run / "results" / "ingest" / "velox_stack.json").exists():
        info = json.loads((series_run / "results" / "ingest" / "velox_stack.json").read_text())
        assert info["status"] == "ok" and info["n_frames"] == 2
        velox = hs.load(series_run / "results" / "restored" / "velox_stack.hspy")
        assert velox.data.shape == (2, 3, 3) and np.isfinite(velox.data).all()
        assert velox.axes_manager.signal_axes[0].scale == pytest.approx(8.1729, rel=1e-4)
        summary = pd.read_csv(series_run / "results" / "summary.csv").set_index("sample")
        assert summary.loc["velox_stack", "status"].startswith("no lattice found")
