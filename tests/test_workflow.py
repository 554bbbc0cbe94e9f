"""End-to-end: a real Snakemake run with real TensorFlow and atomap on tiny samples."""

from __future__ import annotations

import json

import hyperspy.api as hs
import numpy as np
import pandas as pd
import pytest

from conftest import SIM_PIXEL_NM, SIM_SHAPE, run_snakemake

pytestmark = pytest.mark.workflow


def test_every_sample_has_a_summary_row_and_bad_ones_say_why(small_run):
    summary = pd.read_csv(small_run / "results" / "summary.csv")
    assert list(summary["sample"])[:2] == ["sim_cal", "text_as_dm3"]
    status = dict(zip(summary["sample"], summary["status"]))
    assert status["text_as_dm3"].startswith("rejected: sample 'text_as_dm3' (raw/not an image.dm3): unreadable")
    assert not status["sim_cal"].startswith("rejected")
    assert {"bench_dose000200", "bench_dose020000"} <= set(summary["sample"])
    assert not (small_run / "results" / "restored" / "text_as_dm3.hspy").exists()


def test_calibrated_non_square_simulation_keeps_shape_and_calibration_and_gets_closer_to_truth(small_run):
    raw = hs.load(small_run / "raw" / "sim_hrstem_cal.hspy")
    restored = hs.load(small_run / "results" / "restored" / "sim_cal.hspy")
    assert restored.data.shape == raw.data.shape == SIM_SHAPE
    for axis_raw, axis_restored in zip(raw.axes_manager.signal_axes, restored.axes_manager.signal_axes):
        assert axis_restored.scale == pytest.approx(SIM_PIXEL_NM) and axis_restored.units == axis_raw.units
    assert restored.metadata.Processing.remflow.restore.network == "sfr_hrstem"
    truth = hs.load(small_run / "raw" / "sim_hrstem_cal_truth_image.hspy").data.astype(np.float64)
    mse_raw = np.mean((raw.data - truth) ** 2)
    mse_restored = np.mean((restored.data - truth) ** 2)
    assert mse_raw / mse_restored >= 5
    precision = json.loads((small_run / "results" / "precision" / "sim_cal.json").read_text())
    assert precision["mse_reduction"] == pytest.approx(mse_raw / mse_restored, rel=1e-6)
    info = json.loads((small_run / "results" / "ingest" / "sim_cal.json").read_text())
    assert info["pixel_size_pm"] == pytest.approx(SIM_PIXEL_NM * 1000) and info["network"] == "sfr_hrstem"


def test_workflow_restoration_equals_direct_inference(small_run):
    import tensorflow as tf

    from remflow.restore import network_dir

    raw = hs.load(small_run / "raw" / "sim_hrstem_cal.hspy").data
    restored = hs.load(small_run / "results" / "restored" / "sim_cal.hspy").data
    serve = tf.saved_model.load(str(network_dir("sfr_hrstem"))).signatures["serving_default"]
    direct = serve(input_gen=tf.constant(raw[None, :, :, None]))["gen_r_em_out"].numpy()[0, :, :, 0]
    assert np.abs(restored - direct).max() <= 0.01 * np.ptp(direct)


def test_benchmark_table_has_raw_restored_and_bound_for_every_dose(small_run):
    table = pd.read_csv(small_run / "results" / "benchmark" / "precision_vs_dose.csv")
    assert list(table["dose_e_per_A2"]) == [200, 20000]
    for column in ("truth_rmse_raw_px", "truth_rmse_restored_px", "crlb_px"):
        assert table[column].notna().all() and (table[column] > 0).all()
    # More dose, tighter bound.
    assert table["crlb_px"].iloc[1] < table["crlb_px"].iloc[0]


def test_a_finished_run_has_nothing_left_to_do(small_run):
    result = run_snakemake(small_run, "--cores", "1", "--dry-run")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_sheet_problems_are_all_listed_before_any_job_runs(tmp_path):
    (tmp_path / "samples.tsv").write_text(
        "sample\tpath\tmodality\tresolution\n"
        "../x\ta.dm3\tstem\thr\n"
        "/abs\tb.dm3\tstem\thr\n"
        "ok\tc.dm3\tXEM\thr\n"
        "dup\td.dm3\tstem\thr\n"
        "dup\te.dm3\tstem\tmr\n", encoding="utf-8")
    (tmp_path / "config.yaml").write_text("samples: samples.tsv\n", encoding="utf-8")
    result = run_snakemake(tmp_path, "--cores", "1", check=False)
    text = result.stdout + result.stderr
    assert result.returncode != 0
    for words in ("'../x'", "'/abs'", "'XEM'", "'dup' is used 2 times", "'mr'"):
        assert words in text, words
    assert not (tmp_path / "results").exists()


def test_default_run_includes_the_small_methods_benchmark(small_run):
    table = pd.read_csv(small_run / "results" / "benchmark" / "methods.csv")
    assert {"raw", "cnn", "gaussian", "nlm", "tv", "bragg"} <= set(table["method"])
    assert set(table["truth_kind"]) == {"static", "strain", "polar"}
    assert table["truth_rmse_px"].notna().all() and (table["crlb_px"] > 0).all()
    summary = pd.read_csv(small_run / "results" / "benchmark" / "methods_summary.csv")
    assert len(summary) == len(table)  # one image per dose in the small size
    for name in ("methods_error_vs_dose", "methods_fidelity_vs_dose", "methods_panel"):
        assert (small_run / "results" / "figures" / f"{name}.png").stat().st_size > 10_000
