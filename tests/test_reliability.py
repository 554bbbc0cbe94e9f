"""Reliability: a dataset mixing good and bad files, read-only inputs, interrupted runs,
reproducible numbers. Real Snakemake runs on real files."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import INSTRUMENT_FILES, SNAKEFILE, SNAKEMAKE, make_small_config, noisy_lattice, run_snakemake

pytestmark = [pytest.mark.workflow,
              pytest.mark.skipif(not INSTRUMENT_FILES.is_dir(), reason="needs ../shared/data/instrument-files")]


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def build_mixed_dataset(raw: Path) -> list[dict[str, str]]:
    """Good and bad files of every kind the issue lists; returns sample rows."""
    import hyperspy.api as hs

    raw.mkdir()
    shutil.copy(INSTRUMENT_FILES / "test_STEM_image.dm3", raw / "good stem.dm3")
    for name in ("test-EELS_spectrum.dm3", "test_fft_packed_complex8.dm4", "optical_Zeiss_AxioVision_RGB.tif",
                 "test_diffraction_pattern.dm3"):
        shutil.copy(INSTRUMENT_FILES / name, raw / name)
    (raw / "empty.dm3").write_bytes(b"")
    (raw / "truncated.dm3").write_bytes((INSTRUMENT_FILES / "test_STEM_image.dm3").read_bytes()[:4000])
    (raw / "truncated.tif").write_bytes((INSTRUMENT_FILES / "FEI-Helios-Ebeam-16bits.tif").read_bytes()[:9000])
    (raw / "notes.tif").write_text("not an image\n", encoding="utf-8")
    hs.signals.Signal1D(np.random.default_rng(2).random((6, 7, 32))).save(raw / "spectrum_image.hspy")
    nan_image = noisy_lattice((64, 64))
    nan_image[5, 6] = np.inf
    np.save(raw / "inf.npy", nan_image)
    np.save(raw / "constant.npy", np.full((48, 48), 3.0))
    np.save(raw / "negative.npy", noisy_lattice((72, 72), seed=3) - 500.0)
    np.save(raw / "tiny.npy", noisy_lattice((12, 12)))
    np.save(raw / "large tiled.npy", noisy_lattice((400, 360), seed=4).astype(np.float32))
    np.save(raw / "odd int16.npy", noisy_lattice((63, 77), seed=5).astype(np.int16))
    np.save(raw / "noise.npy", np.random.default_rng(6).poisson(50, (64, 64)).astype(np.uint16))
    np.save(raw / "Gitter ü.npy", noisy_lattice((64, 80), seed=7))
    stem = {"modality": "stem", "resolution": "hr"}
    return [
        {"sample": "good_dm3", "path": "raw/good stem.dm3", "modality": "auto", "resolution": "auto"},
        {"sample": "missing", "path": "raw/missing.dm3", **stem},
        {"sample": "empty", "path": "raw/empty.dm3", **stem},
        {"sample": "truncated_dm3", "path": "raw/truncated.dm3", **stem},
        {"sample": "truncated_tif", "path": "raw/truncated.tif", **stem},
        {"sample": "text_tif", "path": "raw/notes.tif", **stem},
        {"sample": "spectrum", "path": "raw/test-EELS_spectrum.dm3", **stem},
        {"sample": "spectrum_image", "path": "raw/spectrum_image.hspy", **stem},
        {"sample": "complex", "path": "raw/test_fft_packed_complex8.dm4", **stem},
        {"sample": "rgb", "path": "raw/optical_Zeiss_AxioVision_RGB.tif", **stem},
        {"sample": "diffraction", "path": "raw/test_diffraction_pattern.dm3", **stem},
        {"sample": "inf_pixels", "path": "raw/inf.npy", **stem},
        {"sample": "constant", "path": "raw/constant.npy", **stem},
        {"sample": "negative", "path": "raw/negative.npy", **stem},
        {"sample": "too_small", "path": "raw/tiny.npy", **stem},
        {"sample": "large", "path": "raw/large tiled.npy", **stem},
        {"sample": "odd_int16", "path": "raw/odd int16.npy", **stem},
        {"sample": "no_lattice", "path": "raw/noise.npy", **stem},
        {"sample": "non_ascii", "path": "raw/Gitter ü.npy", **stem},
    ]


EXPECTED_REJECTIONS = {
    "missing": "file not found", "empty": "empty", "truncated_dm3": "unreadable or truncated",
    "truncated_tif": "unreadable or truncated", "text_tif": "unreadable", "spectrum": "a spectrum, not an image",
    "spectrum_image": "spectrum image", "complex": "complex data", "rgb": "colour", "diffraction": "reciprocal-space",
    "inf_pixels": "NaN or infinite", "too_small": "too small to restore",
}


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("mixed")
    samples = build_mixed_dataset(workdir / "raw")
    # Small tiles so that the 400x360 image is restored tiled.
    make_small_config(workdir, samples,
                      restore={"max_whole_pixels": 100000, "tile_px": 256, "context_px": 96, "blend_px": 32})
    before = hashes(workdir / "raw")
    run_snakemake(workdir, "--cores", "2", "--keep-going")
    assert hashes(workdir / "raw") == before, "the workflow changed its inputs"
    return workdir


def test_good_samples_finish_and_every_bad_one_is_listed_with_its_reason(mixed_run):
    summary = pd.read_csv(mixed_run / "results" / "summary.csv").set_index("sample")
    assert len(summary) == 19
    for sample, words in EXPECTED_REJECTIONS.items():
        status = summary.loc[sample, "status"]
        assert status.startswith(f"rejected: sample '{sample}'"), (sample, status)
        assert words in status, (sample, status)
        assert "Traceback" not in status
    for sample in ("good_dm3", "constant", "negative", "large", "odd_int16", "no_lattice", "non_ascii"):
        assert not summary.loc[sample, "status"].startswith("rejected"), (sample, summary.loc[sample, "status"])
        assert (mixed_run / "results" / "restored" / f"{sample}.hspy").is_file()
    assert summary.loc["no_lattice", "status"].startswith("no lattice found")
    assert summary.loc["constant", "status"].startswith("no lattice found")


def test_uncalibrated_samples_have_px_figures_and_empty_pm_figures(mixed_run):
    summary = pd.read_csv(mixed_run / "results" / "summary.csv").set_index("sample")
    row = summary.loc["non_ascii"]
    assert row["status"] == "ok", row["status"]
    assert row["local_precision_raw_px"] > 0 and pd.isna(row["local_precision_raw_pm"])
    assert pd.isna(row["pixel_size_pm"])


def test_restored_images_keep_shape_for_odd_large_and_integer_inputs(mixed_run):
    import hyperspy.api as hs

    for sample, shape in (("odd_int16", (63, 77)), ("large", (400, 360)), ("negative", (72, 72))):
        restored = hs.load(mixed_run / "results" / "restored" / f"{sample}.hspy")
        assert restored.data.shape == shape and restored.data.dtype == np.float32
        assert np.isfinite(restored.data).all()
    negative = hs.load(mixed_run / "results" / "restored" / "negative.hspy").data
    assert negative.mean() < 0  # intensity units kept, negative offset included


def test_two_clean_runs_give_identical_tables(mixed_run, tmp_path):
    copy = tmp_path / "again"
    copy.mkdir()
    shutil.copytree(mixed_run / "raw", copy / "raw")
    shutil.copy(mixed_run / "samples.tsv", copy / "samples.tsv")
    shutil.copy(mixed_run / "config.yaml", copy / "config.yaml")
    run_snakemake(copy, "--cores", "2", "--keep-going")
    first, second = mixed_run / "results", copy / "results"
    assert (first / "summary.csv").read_bytes() == (second / "summary.csv").read_bytes()
    tables = sorted(p.name for p in (first / "columns").glob("*.csv"))
    assert tables and tables == sorted(p.name for p in (second / "columns").glob("*.csv"))
    for name in tables:
        assert (first / "columns" / name).read_bytes() == (second / "columns" / name).read_bytes(), name


def test_a_run_killed_during_restoration_resumes_to_identical_results(tmp_path):
    """SIGKILL the whole run while a restoration batch is being written, then resume: what was
    finished (inspections, restored images with their stamps) is kept, the rest is redone."""
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    for workdir in (clean, killed):
        workdir.mkdir()
        raw = workdir / "raw"
        raw.mkdir()
        samples = []
        for index in range(4):
            np.save(raw / f"lattice{index}.npy", noisy_lattice((256, 256), seed=10 + index).astype(np.float32))
            samples.append({"sample": f"s{index}", "path": f"raw/lattice{index}.npy", "modality": "stem",
                            "resolution": "hr"})
        make_small_config(workdir, samples, batch_size=4)
    run_snakemake(clean, "--cores", "2")

    command = [str(SNAKEMAKE), "--snakefile", str(SNAKEFILE), "--directory", str(killed), "--configfile",
               str(killed / "config.yaml"), "--cores", "2"]
    process = subprocess.Popen(command, cwd=killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    restored = killed / "results" / "restored"
    deadline = time.monotonic() + 600
    while not (restored.is_dir() and any(restored.glob("*.hspy"))):
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "restoration never started"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "results" / "batches" / "restore" / "0000-sfr_hrstem").exists()
    stamps = killed / "results" / ".stamps" / "restore"
    finished = {restored / f"{p.stem}.hspy": (restored / f"{p.stem}.hspy").stat().st_mtime_ns
                for p in stamps.glob("*.stamp")} if stamps.is_dir() else {}

    inspected = {p: p.stat().st_mtime_ns for p in (killed / "results" / "ingest").glob("*.json")}
    assert len(inspected) == 4
    run_snakemake(killed, "--unlock")  # the killed run left its lock behind
    run_snakemake(killed, "--cores", "2", "--rerun-incomplete")
    assert {p: p.stat().st_mtime_ns for p in inspected} == inspected, "finished inspections were redone"
    assert {p: p.stat().st_mtime_ns for p in finished} == finished, "finished restorations were redone"
    for name in ["summary.csv"] + [f"columns/s{i}.csv" for i in range(4)]:
        assert (killed / "results" / name).read_bytes() == (clean / "results" / name).read_bytes(), name


def mixed_summary_status(workdir: Path, sample: str) -> str:
    return str(pd.read_csv(workdir / "results" / "summary.csv").set_index("sample").loc[sample, "status"])


def test_a_sample_that_fails_fails_alone_and_a_rerun_redoes_only_it(mixed_run, tmp_path):
    """odd_int16 shares its batch with another accepted sample. Break odd_int16's restored image
    and redo the batch's fit: odd_int16 is recorded as failed (summary, figure batch), the other
    member is kept as it was (not refitted), and the rest of the dataset is untouched.

    Runs in the module's run itself, not a copy (it is the last test of this module that uses it):
    the sheet's rows hold the absolute folder of the run, so in a copied folder every step's
    params and stamps differ and everything is redone."""
    copy = mixed_run
    results = copy / "results"
    members_of = {folder.name: [row.split("\t")[0] for row in (folder / "manifest.tsv").read_text().splitlines()[1:]]
                  for folder in (results / "batches" / "fit").iterdir()}
    batch = next(name for name, members in members_of.items() if "odd_int16" in members)
    members = members_of[batch]
    assert len(members) == 2, members_of
    other = next(name for name in members if name != "odd_int16")
    kept = {p: p.stat().st_mtime_ns for p in results.glob(f"*/{other}.*")}
    assert len(kept) >= 4, kept
    others = {p: p.stat().st_mtime_ns for p in (results / "columns").glob("*.csv") if p.stem not in members}
    (results / "restored" / "odd_int16.hspy").write_bytes(b"not an HDF5 file")
    run_snakemake(copy, "--cores", "2", "--keep-going", "--forcerun", "analyse_batch",
                  f"results/batches/fit/{batch}")
    run_snakemake(copy, "--cores", "2", "--keep-going")

    summary = pd.read_csv(results / "summary.csv").set_index("sample")
    status = summary.loc["odd_int16", "status"]
    assert status.startswith("failed in fit_columns: sample 'odd_int16': "), status
    assert summary.loc[other, "status"] == mixed_summary_status(mixed_run, other)
    assert not (results / "columns" / "odd_int16.csv").exists()
    assert "Traceback" in (copy / "logs" / "fit_columns" / "odd_int16.log").read_text()
    assert {p: p.stat().st_mtime_ns for p in kept} == kept, "the other member of the batch was redone"
    assert {p: p.stat().st_mtime_ns for p in others} == others, "other batches were redone"
    figures = (results / "batches" / "figure" / batch / "manifest.tsv").read_text()
    assert "odd_int16\tfailed in fit_columns" in figures and not (results / "figures" / "odd_int16.png").exists()
