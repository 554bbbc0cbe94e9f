"""Restoration with the real networks: whole vs tiled, odd sizes, and what it achieves."""

from __future__ import annotations

import numpy as np
import pytest

from remflow.ingest import read_image, resolve_path
from remflow.restore import Restorer, blend_weights, plan_axis, plan_tiles

SIM = resolve_path("package://tk_r_em/test_data/sfr_hrstem.h5")


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    noisy = read_image(SIM, dataset="x", frame=1).signal.data
    clean = read_image(SIM, dataset="y", frame=1).signal.data
    return noisy, clean


@pytest.fixture(scope="module")
def restorer() -> Restorer:
    return Restorer("sfr_hrstem", tile_px=320, context_px=96, blend_px=32)


def test_whole_image_matches_the_networks_own_signature(restorer, pair):
    import tensorflow as tf

    noisy = pair[0][:128, :96]
    signature = restorer._model.signatures["serving_default"]
    direct = signature(input_gen=tf.constant(noisy[None, :, :, None]))["gen_r_em_out"].numpy()[0, :, :, 0]
    ours = restorer.restore_whole(noisy)
    assert np.abs(ours - direct).max() <= 1e-4 * np.ptp(direct)


def test_tiled_and_whole_differ_by_at_most_one_percent_of_the_range(restorer, pair):
    # Two frames one above the other: 512 x 250 px, non-square, not a multiple of the alignment.
    noisy = np.concatenate([pair[0], read_image(SIM, dataset="x", frame=2).signal.data])[:, :250]
    whole = restorer.restore_whole(noisy)
    tiled = restorer.restore_tiled(noisy)
    assert tiled.shape == whole.shape == noisy.shape
    assert len(plan_axis(512, 320, 224, 32)) == 3  # really tiled
    assert np.abs(tiled - whole).max() <= 0.01 * np.ptp(whole)


@pytest.mark.parametrize("shape", [(33, 47), (64, 31), (17, 16)])
def test_odd_sizes_keep_their_shape(restorer, pair, shape):
    noisy = pair[0][: shape[0], : shape[1]]
    out = restorer.restore(noisy)
    assert out.shape == shape and out.dtype == np.float32 and np.isfinite(out).all()


def test_restoration_brings_a_simulated_image_much_closer_to_its_ground_truth(restorer, pair):
    noisy, clean = pair
    restored = restorer.restore(noisy)
    mse_raw = np.mean((noisy.astype(np.float64) - clean) ** 2)
    mse_restored = np.mean((restored.astype(np.float64) - clean) ** 2)
    assert mse_raw / mse_restored >= 5


def test_output_keeps_the_input_intensity_scale(restorer, pair):
    noisy = pair[0][:64, :64]
    out = restorer.restore(noisy)
    scaled = restorer.restore(3 * noisy + 100)
    assert np.allclose(scaled, 3 * out + 100, atol=1e-3 * np.ptp(3 * out))


def test_blend_weights_cross_fade_to_one_where_tiles_meet():
    plan = plan_axis(512, 320, 224, 32)
    total = np.zeros(512)
    for start, size in plan:
        total[start:start + size] += blend_weights(size, start, 512, 96, 32)
    assert total.min() > 0.5 and total.max() <= len(plan)


def test_plan_axis_covers_with_aligned_starts():
    for length in (258, 512, 1000, 2048, 4098):
        plan = plan_axis(length, 512, 160, 32)
        assert plan[0][0] == 0 and plan[-1][0] + plan[-1][1] == length
        assert all(start % 32 == 0 for start, _ in plan)
        assert all(a + sa - b >= 160 for (a, sa), (b, _) in zip(plan, plan[1:]))


def computed_area(rows: list[tuple[int, int]], cols: list[tuple[int, int]]) -> int:
    return sum(h for _, h in rows) * sum(w for _, w in cols)


@pytest.mark.parametrize("shape", [(2048, 2048), (4096, 4096), (3000, 2000), (10000, 300), (400, 360), (1100, 1100)])
def test_plan_tiles_keeps_the_pixel_budget_covers_the_image_and_computes_least_area(shape):
    height, width, budget_px, overlap, align = *shape, 1536, 224, 32
    if shape == (400, 360):
        budget_px = 256
    rows, cols = plan_tiles(height, width, budget_px, overlap, align)
    for plan, length in ((rows, height), (cols, width)):
        assert plan[0][0] == 0 and plan[-1][0] + plan[-1][1] == length
        assert all(start % align == 0 for start, _ in plan)
        assert all(a + sa - b >= overlap for (a, sa), (b, _) in zip(plan, plan[1:]))
    # Every tile but the last row/column (which may reach up to `align` px further) keeps the budget.
    assert rows[0][1] * cols[0][1] <= budget_px**2
    # No square tiling of the same budget computes less.
    square = (plan_axis(height, budget_px, overlap, align), plan_axis(width, budget_px, overlap, align))
    assert computed_area(rows, cols) <= computed_area(*square)


def test_a_square_image_twice_the_budget_is_cut_in_two_strips():
    rows, cols = plan_tiles(2048, 2048, 1536, 224, 32)
    assert len(rows) * len(cols) == 2
    assert computed_area(rows, cols) / 2048**2 < 1.13


@pytest.mark.parametrize("k", [1e-6, 1e-3, 1e3, 1e6])
def test_restoration_does_not_depend_on_the_intensity_unit(restorer, pair, k):
    # Counts vs the same image as a fraction of the beam: the networks' std floor of 0.1
    # used to restore these differently (39% of the range at k = 1e-4).
    whole = pair[0][:128, :96]
    tiled = pair[0][:384, :128]  # two tiles of at most 320 px
    for image, restore in ((whole, restorer.restore_whole), (tiled, restorer.restore_tiled)):
        reference = restore(image).astype(np.float64)
        scaled = restore((k * image.astype(np.float64)).astype(np.float32)).astype(np.float64)
        assert np.abs(scaled / k - reference).max() <= 1e-4 * np.ptp(reference)
