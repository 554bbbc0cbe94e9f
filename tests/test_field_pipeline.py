"""Field cases through restoration, fitting and precision (library calls, real network and fits)."""

from __future__ import annotations

from pathlib import Path

import hyperspy.api as hs
import numpy as np
import pandas as pd
import pytest

from remflow.columns import fit_columns
from remflow.ingest import read_image
from remflow.precision import precision_summary
from remflow.restore import Restorer

FIELD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "field-cases"
pytestmark = pytest.mark.skipif(not FIELD.is_dir(), reason=f"field cases not found at {FIELD}")


@pytest.fixture(scope="module")
def restorer() -> Restorer:
    return Restorer("sfr_hrstem")


def test_counts_and_beam_fractions_restore_alike(restorer):
    counts = read_image(FIELD / "c11a_counts.hspy").signal.data
    fraction = read_image(FIELD / "c11b_beam_fraction.hspy").signal.data
    np.testing.assert_allclose(fraction / 1e-4, counts, atol=1e-3)  # the same image
    restored_counts, restored_fraction = restorer.restore_many([counts, fraction])
    assert np.abs(restored_fraction / 1e-4 - restored_counts).max() <= 1e-4 * np.ptp(restored_counts)


def _precision(image: np.ndarray, restorer: Restorer, truth: pd.DataFrame) -> dict:
    restored = restorer.restore(image)
    fit = fit_columns(image, restored, refine="batched", truth=truth)
    return precision_summary(fit.table, image_shape=image.shape, separation_px=fit.separation_px,
                             pixel_size_pm=None, truth=truth, n_boot=400)


def test_hot_pixels_are_replaced_and_precision_is_that_of_the_clean_image(restorer, tmp_path):
    source = hs.load(FIELD / "c11a_counts.hspy")
    hot = [(10, 200), (40, 41), (100, 150), (128, 128), (200, 17), (250, 250)]
    for row, col in hot:
        source.data[row, col] = 65535.0  # saturated
    source.save(tmp_path / "hot.hspy")
    spoiled = read_image(tmp_path / "hot.hspy")
    assert spoiled.details["n_outlier_pixels"] == len(hot)
    assert {(p["row"], p["col"]) for p in spoiled.details["outlier_pixels"]} == set(hot)
    truth = pd.read_csv(FIELD / "c11_truth.csv")
    clean = _precision(read_image(FIELD / "c11a_counts.hspy").signal.data, restorer, truth)
    cleaned = _precision(spoiled.signal.data, restorer, truth)
    assert clean["n_columns"] == cleaned["n_columns"]
    for kind in ("raw", "restored"):
        name = f"truth_rmse_{kind}_px"
        assert cleaned[f"{name}_ci_low"] <= clean[name] <= cleaned[f"{name}_ci_high"]
        assert clean[f"{name}_ci_low"] <= cleaned[name] <= clean[f"{name}_ci_high"]
    assert clean["verdict"] == cleaned["verdict"]
