"""Synthetic lattices: columns where the truth says, the dose model, the distortions, the written files."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from remflow.synthetic import (
    AXIS_UNITS,
    Degradation,
    LatticeSpec,
    degrade,
    expected_counts,
    line_jitter_offsets,
    render,
    true_positions,
    write_sample,
)


def _window(image: np.ndarray, x: float, y: float, half: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels within ``half`` of the pixel nearest (x, y), with their column and row indices."""
    col, row = int(round(x)), int(round(y))
    rows, cols = np.mgrid[row - half:row + half + 1, col - half:col + half + 1]
    return image[rows, cols], cols, rows


def _interior(positions: pd.DataFrame, shape: tuple[int, int], margin: float) -> pd.DataFrame:
    rows, cols = shape
    keep = ((positions["x_px"] >= margin) & (positions["x_px"] <= cols - 1 - margin)
            & (positions["y_px"] >= margin) & (positions["y_px"] <= rows - 1 - margin))
    return positions[keep]


def test_columns_are_drawn_where_the_truth_says() -> None:
    """Argmax, centroid and integrated intensity of every column match its true position and amplitude."""
    spec = LatticeSpec(shape=(80, 112), spacing_px=16.0, sigma_px=2.0, amplitude=3.0, background=0.2,
                       position_jitter_px=0.7, seed=5)
    positions = true_positions(spec)
    image = render(spec, positions)
    assert image.shape == (80, 112) and image.dtype == np.float64
    columns = _interior(positions, spec.shape, margin=7)
    assert len(columns) >= 15
    background = spec.background * spec.amplitude
    for column in columns.itertuples():
        values, cols, rows = _window(image, column.x_px, column.y_px, half=6)
        peak = np.unravel_index(np.argmax(values), values.shape)
        assert abs(cols[peak] - column.x_px) <= 0.5 + 1e-9 and abs(rows[peak] - column.y_px) <= 0.5 + 1e-9
        signal = values - background
        # Sampled at pixel centres, a Gaussian of sigma >= 1 px sums to its integral.
        assert signal.sum() == pytest.approx(column.amplitude * 2 * math.pi * spec.sigma_px**2, rel=5e-3)
        assert np.sum(signal * cols) / signal.sum() == pytest.approx(column.x_px, abs=0.01)
        assert np.sum(signal * rows) / signal.sum() == pytest.approx(column.y_px, abs=0.01)
    # Far from every column only the background is left.
    assert image.min() == pytest.approx(background, abs=0.02 * spec.amplitude)


def test_perovskite_has_weaker_b_columns_at_cell_centres() -> None:
    spec = LatticeSpec(kind="perovskite", shape=(96, 96), spacing_px=24.0, sigma_px=2.0, b_ratio=0.4)
    positions = true_positions(spec)
    assert set(positions["sublattice"]) == {"A", "B"}
    a_columns = positions[positions["sublattice"] == "A"]
    b_columns = positions[positions["sublattice"] == "B"]
    assert (a_columns["amplitude"] == spec.amplitude).all()
    np.testing.assert_allclose(b_columns["amplitude"], spec.amplitude * spec.b_ratio)
    # Every B column sits half a cell diagonal from an A column.
    a_xy = a_columns[["x_px", "y_px"]].to_numpy()
    for b_xy in b_columns[["x_px", "y_px"]].to_numpy():
        offsets = a_xy - b_xy
        nearest = offsets[np.argmin(np.hypot(offsets[:, 0], offsets[:, 1]))]
        np.testing.assert_allclose(np.abs(nearest), [spec.spacing_px / 2] * 2, atol=1e-9)
    image = render(spec, positions)
    for column in _interior(b_columns, spec.shape, margin=7).itertuples():
        values, _, _ = _window(image, column.x_px, column.y_px, half=6)
        signal = values - spec.background * spec.amplitude
        assert signal.sum() == pytest.approx(column.amplitude * 2 * math.pi * spec.sigma_px**2, rel=0.01)


def test_non_square_shape_and_truth_coverage() -> None:
    spec = LatticeSpec(shape=(48, 130), spacing_px=12.0)
    positions = true_positions(spec)
    inside = positions[positions["in_image"]]
    assert render(spec, positions).shape == (48, 130)
    assert inside["x_px"].between(-0.5, 129.5).all() and inside["y_px"].between(-0.5, 47.5).all()
    # The lattice fills the whole image in both directions, and columns just outside are drawn too.
    assert inside["x_px"].min() < 12 and inside["x_px"].max() > 130 - 13
    assert inside["y_px"].min() < 12 and inside["y_px"].max() > 48 - 13
    assert (~positions["in_image"]).any()
    assert len(inside) == pytest.approx(48 * 130 / 12**2, rel=0.25)


def test_lattice_is_deterministic_for_a_seed() -> None:
    spec = LatticeSpec(kind="perovskite", position_jitter_px=0.3, seed=11)
    pd.testing.assert_frame_equal(true_positions(spec), true_positions(spec))
    np.testing.assert_array_equal(render(spec, true_positions(spec)), render(spec, true_positions(spec)))
    other = true_positions(LatticeSpec(kind="perovskite", position_jitter_px=0.3, seed=12))
    assert not np.allclose(true_positions(spec)["x_px"].to_numpy()[:5], other["x_px"].to_numpy()[:5])


def test_columns_do_not_sit_on_pixel_centres() -> None:
    positions = true_positions(LatticeSpec(seed=0))
    fractions = positions[["x_px", "y_px"]].to_numpy() % 1.0
    assert np.all(np.abs(fractions - np.rint(fractions)) > 1e-3)


def test_dose_maps_to_counts_through_pixel_area() -> None:
    """The brightest pixel expects dose * (pixel side in A)^2 electrons; the rest in proportion."""
    spec = LatticeSpec(shape=(64, 64))
    clean = render(spec, true_positions(spec))
    expected = expected_counts(clean, Degradation(dose_e_per_A2=1000.0, pixel_size_pm=20.0))
    assert expected.max() == pytest.approx(1000.0 * 0.2**2)
    np.testing.assert_allclose(expected / expected.max(), clean / clean.max(), rtol=1e-12)
    doubled = expected_counts(clean, Degradation(dose_e_per_A2=2000.0, pixel_size_pm=20.0))
    np.testing.assert_allclose(doubled, 2 * expected, rtol=1e-12)
    finer = expected_counts(clean, Degradation(dose_e_per_A2=1000.0, pixel_size_pm=10.0))
    np.testing.assert_allclose(finer, expected / 4, rtol=1e-12)


@pytest.mark.parametrize("read_noise", [0.0, 3.0])
def test_degraded_flat_image_has_poisson_mean_and_variance(read_noise: float) -> None:
    flat = np.ones((128, 128))
    degradation = Degradation(dose_e_per_A2=1000.0, pixel_size_pm=20.0, detector_noise_sigma=read_noise, seed=4)
    noisy = degrade(flat, degradation)
    mean_counts = 40.0  # 1000 e/A^2 * 0.04 A^2
    assert noisy.dtype == np.float32 and noisy.shape == flat.shape
    # Standard error of the mean ~0.05 counts, of the variance ~0.5: generous bounds.
    assert float(noisy.mean()) == pytest.approx(mean_counts, abs=0.5)
    assert float(noisy.var()) == pytest.approx(mean_counts + read_noise**2, rel=0.08)
    if read_noise == 0:
        np.testing.assert_array_equal(noisy, np.round(noisy))  # counts of electrons


def test_degrade_is_reproducible_for_a_seed() -> None:
    spec = LatticeSpec(shape=(64, 64))
    clean = render(spec, true_positions(spec))
    degradation = Degradation(dose_e_per_A2=300.0, detector_noise_sigma=1.0, line_jitter_px=0.5, seed=7)
    np.testing.assert_array_equal(degrade(clean, degradation), degrade(clean, degradation))
    other = Degradation(dose_e_per_A2=300.0, detector_noise_sigma=1.0, line_jitter_px=0.5, seed=8)
    assert not np.array_equal(degrade(clean, degradation), degrade(clean, other))


def test_line_jitter_shifts_each_row_along_x() -> None:
    """A vertical ridge comes out displaced row by row by exactly the drawn line offsets."""
    rows, cols = 96, 64
    x = np.arange(cols, dtype=np.float64)
    ridge_x = 31.3
    clean = np.tile(0.01 + np.exp(-((x - ridge_x) ** 2) / (2 * 2.5**2)), (rows, 1))
    degradation = Degradation(dose_e_per_A2=1e8, line_jitter_px=1.2, seed=9)  # so much dose that noise is negligible
    offsets = line_jitter_offsets(rows, degradation)
    assert offsets.std() == pytest.approx(1.2, rel=0.25)
    noisy = degrade(clean, degradation).astype(np.float64)
    signal = noisy - noisy.min(axis=1, keepdims=True)
    centroids = (signal * x).sum(axis=1) / signal.sum(axis=1)
    np.testing.assert_allclose(centroids - ridge_x, offsets, atol=0.02)
    # Without jitter every row has the ridge in the same place.
    still = degrade(clean, Degradation(dose_e_per_A2=1e8, seed=9)).astype(np.float64)
    still_signal = still - still.min(axis=1, keepdims=True)
    np.testing.assert_allclose((still_signal * x).sum(axis=1) / still_signal.sum(axis=1), ridge_x, atol=0.01)


def test_write_sample_round_trips_through_hyperspy_and_ingest(tmp_path) -> None:
    import hyperspy.api as hs

    from remflow.ingest import read_image
    from remflow.networks import modality_from_metadata

    spec = LatticeSpec(kind="perovskite", shape=(64, 96), position_jitter_px=0.2, seed=2)
    degradation = Degradation(dose_e_per_A2=500.0, pixel_size_pm=20.0, detector_noise_sigma=0.5,
                              line_jitter_px=0.3, seed=3)
    image_path, truth_path = tmp_path / "out" / "bench.hspy", tmp_path / "out" / "bench_truth.csv"
    expected_path = tmp_path / "out" / "bench_expected.hspy"
    write_sample(spec, degradation, image_path, truth_path, expected_path=expected_path)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["bench.hspy", "bench_truth.csv", "bench_expected.hspy"])  # no temporary files left behind

    signal = hs.load(image_path)
    clean = render(spec, true_positions(spec))
    np.testing.assert_array_equal(signal.data, degrade(clean, degradation))
    for axis in signal.axes_manager.signal_axes:
        assert (axis.scale, axis.units) == (20.0, AXIS_UNITS)
    assert signal.metadata.Acquisition_instrument.TEM.acquisition_mode == "STEM"
    assert signal.metadata.Synthetic.degradation.dose_e_per_A2 == 500.0
    assert signal.metadata.Signal.Noise_properties.Variance_linear_model.gain_offset == pytest.approx(0.25)

    raw = read_image(image_path)
    assert raw.pixel_size_x_pm == 20.0 and raw.pixel_size_y_pm == 20.0 and raw.shape == (64, 96)
    assert modality_from_metadata(raw.signal.metadata.as_dictionary())[0] == "stem"
    np.testing.assert_allclose(hs.load(expected_path).data, expected_counts(clean, degradation), rtol=1e-6)

    truth = pd.read_csv(truth_path)
    expected_truth = true_positions(spec)
    assert list(truth.columns[:3]) == ["x_px", "y_px", "sublattice"]
    np.testing.assert_allclose(truth[["x_px", "y_px"]], expected_truth[["x_px", "y_px"]], atol=1e-6)
    assert list(truth["sublattice"]) == list(expected_truth["sublattice"])
    assert list(truth["in_image"]) == list(expected_truth["in_image"])


def test_invalid_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="kind"):
        LatticeSpec(kind="hexagonal")
    with pytest.raises(ValueError, match="sigma_px"):
        LatticeSpec(sigma_px=0)
    with pytest.raises(ValueError, match="dose"):
        Degradation(dose_e_per_A2=-1)


def test_smooth_structure_moves_columns_as_documented() -> None:
    """Strain gradient, bending and polar shifts displace each column by their formulas."""
    base = dict(kind="perovskite", shape=(128, 160), spacing_px=12.0, seed=4)
    spec = LatticeSpec(**base, strain_gradient=0.02, bend_px=1.0, polar_shift_px=0.25)
    moved = true_positions(spec)
    # Ideal sites sit on the undistorted grid of the plain lattice.
    plain = true_positions(LatticeSpec(**base)).iloc[0]
    steps = (moved[["x_ideal_px", "y_ideal_px"]].to_numpy() - [plain["x_px"], plain["y_px"]]) / 6.0
    np.testing.assert_allclose(steps, np.rint(steps), atol=1e-9)
    dx = moved["x_ideal_px"].to_numpy() - (spec.shape[1] - 1) / 2
    np.testing.assert_allclose(moved["x_px"] - moved["x_ideal_px"], 0.02 * dx**2 / (2 * 160))
    polar = np.where(moved["sublattice"] == "B", np.where(dx < 0, 0.25, -0.25), 0.0)
    np.testing.assert_allclose(moved["y_px"] - moved["y_ideal_px"], (2 * dx / 160) ** 2 + polar)
    # Local strain: neighbouring A spacings along x grow across the image by the gradient.
    a_row = moved[(moved["sublattice"] == "A") & (moved["y_ideal_px"] == moved["y_ideal_px"].iloc[0])]
    spacings = np.diff(np.sort(a_row["x_px"].to_numpy()))
    assert spacings[-1] > spacings[0]


def test_two_domains_are_rotated_and_do_not_overlap() -> None:
    spec = LatticeSpec(shape=(160, 160), spacing_px=12.0, domain_angle_deg=8.0, seed=1)
    table = true_positions(spec)
    assert set(table["domain"]) == {0, 1}
    xy = table[["x_px", "y_px"]].to_numpy()
    nearest = np.sort(np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1)), axis=1)[:, 1]
    assert nearest.min() >= 0.6 * spec.spacing_px - 1e-9
    right = table[table["domain"] == 1][["x_px", "y_px"]].to_numpy()
    # Lattice vectors of the right domain point 8 degrees off the axes.
    offsets = right[None, :, :] - right[:, None, :]
    length = np.hypot(offsets[..., 0], offsets[..., 1])
    first = offsets[(length > 11.9) & (length < 12.1)]
    angles = np.degrees(np.arctan2(first[:, 1], first[:, 0])) % 90
    np.testing.assert_allclose(angles, 8.0, atol=1e-6)


def test_vacuum_particle_and_rigid_shift() -> None:
    shape = (96, 128)
    vacuum = true_positions(LatticeSpec(shape=shape, region="vacuum", crystal_fraction=0.5))
    assert vacuum["x_px"].max() < 64 and len(vacuum) > 20
    image = render(LatticeSpec(shape=shape, region="vacuum"), vacuum)
    assert image[:, 90:].max() == pytest.approx(0.1, abs=1e-6)  # only background in the vacuum
    particle = true_positions(LatticeSpec(shape=shape, region="particle", crystal_fraction=0.75))
    radius = np.hypot(particle["x_ideal_px"] - 63.5, particle["y_ideal_px"] - 47.5)
    assert radius.max() <= 0.75 * 96 / 2 and len(particle) > 10
    base = true_positions(LatticeSpec(shape=shape))
    shifted = true_positions(LatticeSpec(shape=shape, shift_px=(1.25, -0.5)))
    assert len(shifted) == len(base)
    np.testing.assert_allclose(shifted["x_px"].to_numpy() - base["x_px"].to_numpy(), 1.25)
    np.testing.assert_allclose(shifted["y_px"].to_numpy() - base["y_px"].to_numpy(), -0.5)


def test_slow_drift_shears_the_image() -> None:
    spec = LatticeSpec(shape=(64, 64))
    clean = render(spec, true_positions(spec))
    drifted = degrade(clean, Degradation(dose_e_per_A2=1e7, drift_px=3.0, seed=0)).astype(float)
    still = degrade(clean, Degradation(dose_e_per_A2=1e7, seed=0)).astype(float)
    # First row unmoved, last row moved by 3 px along x.
    lag = [int(np.argmax(np.correlate(np.r_[row_d, row_d], row_s, mode="valid")[:64]))
           for row_d, row_s in ((drifted[0], still[0]), (drifted[-1], still[-1]))]
    assert lag[0] == 0 and lag[1] == 3
