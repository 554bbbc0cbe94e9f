"""Ingest of real instrument files: pixel size in pm, modality, or the reason for refusal."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from remflow.ingest import RejectedInput, inspect_sample, length_unit_to_pm, read_image, resolve_path

FILES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "instrument-files"
pytestmark = pytest.mark.skipif(not FILES.is_dir(), reason=f"instrument files not found at {FILES}")


def inspect(name: str, modality: str = "auto", resolution: str = "auto", **extra) -> dict:
    row = {"sample": name.replace(" ", "_"), "path": str(FILES / name), "modality": modality,
           "resolution": resolution, **extra}
    return inspect_sample(row)


# file, shape, pixel size (pm), modality, network (all decided automatically)
ACCEPTED = [
    ("test_STEM_image.dm3", (68, 68), 248.538, "stem", "sfr_lrstem"),
    ("multi_signal.dm3", (512, 512), 17.7516, "stem", "sfr_hrstem"),
    ("128x128-TEM_search.emi", (128, 128), 5261.21, "tem", "sfr_lrtem"),
    ("FEI-Helios-Ebeam-16bits.tif", (442, 512), 3372400.0, "sem", "sfr_lrsem"),
    ("test_tiff_Zeiss_SEM_512pix.tif", (350, 512), 11649.976, "sem", "sfr_lrsem"),
    ("JEOL-SightX-TEM-mag-dummy.tif", (556, 556), 1820.79, "tem", "sfr_lrtem"),
    ("Elid2Version2.elid", (35, 40), 812042.2, "sem", "sfr_lrsem"),
]


@pytest.mark.parametrize("name, shape, pixel_pm, modality, network", ACCEPTED)
def test_real_images_ingest_with_pixel_size_in_pm_and_modality(name, shape, pixel_pm, modality, network):
    record = inspect(name)
    assert record["status"] == "ok", record["status"]
    assert tuple(record["shape"]) == shape
    assert record["pixel_size_pm"] == pytest.approx(pixel_pm, rel=1e-4)
    assert record["modality"] == modality
    assert record["network"] == network
    assert len(record["sha256"]) == 64


@pytest.mark.parametrize("name, words", [
    ("test_diffraction_pattern.dm3", "reciprocal-space"),
    ("test-EELS_spectrum.dm3", "spectrum, not an image"),
    ("test_fft_packed_complex8.dm4", "complex data"),
    ("optical_Zeiss_AxioVision_RGB.tif", "colour"),
    ("fei_example_tem_stack.emd", "stack of 2 frames; set the 'frame' column"),
])
def test_non_images_are_refused_with_their_reason(name, words):
    record = inspect(name, modality="tem", resolution="hr")
    assert record["status"].startswith("rejected: "), record["status"]
    assert words in record["status"]
    assert name in record["status"] and "\n" not in record["status"]


def test_a_frame_of_a_stack_of_tiny_frames_is_too_small():
    record = inspect("fei_example_tem_stack.emd", modality="tem", resolution="hr", frame=1)
    assert "3x3 px is too small to restore" in record["status"]


def test_auto_modality_without_metadata_names_the_column_to_fill():
    record = inspect("HAADFscan.mrc")
    assert record["status"].startswith("rejected: sample 'HAADFscan.mrc'")
    assert "fill the 'modality' column" in record["status"]
    given = inspect("HAADFscan.mrc", modality="stem")
    assert given["status"] == "ok" and given["network"] == "sfr_lrstem"
    assert given["pixel_size_pm"] == pytest.approx(5679.13, rel=1e-4)


def test_ser_without_its_emi_has_calibration_but_no_modality():
    record = inspect("128x128-TEM_search_1.ser")
    assert "fill the 'modality' column" in record["status"]
    given = inspect("128x128-TEM_search_1.ser", modality="tem")
    assert given["network"] == "sfr_lrtem" and given["pixel_size_pm"] == pytest.approx(5261.21, rel=1e-4)


def test_uncalibrated_auto_resolution_names_the_column_to_fill(tmp_path):
    np.save(tmp_path / "plain.npy", np.random.default_rng(0).random((32, 40)))
    row = {"sample": "plain", "path": str(tmp_path / "plain.npy"), "modality": "stem", "resolution": "auto"}
    assert "fill the 'resolution' column" in inspect_sample(row)["status"]
    row["resolution"] = "hr"
    record = inspect_sample(row)
    assert record["status"] == "ok" and record["pixel_size_pm"] is None and record["shape"] == [32, 40]


def test_sheet_pixel_size_overrides_the_file_and_decides_hr():
    record = inspect("test_STEM_image.dm3", pixel_size_pm=50.0)
    assert record["pixel_size_pm"] == 50.0 and record["network"] == "sfr_hrstem"
    assert record["calibration_source"] == "sample sheet pixel_size_pm"


def test_read_keeps_calibration_metadata_and_gives_float32():
    image = read_image(FILES / "multi_signal.dm3")
    assert image.signal.data.dtype == np.float32
    x_axis = image.signal.axes_manager.signal_axes[0]
    assert x_axis.units == "nm" and x_axis.scale == pytest.approx(0.0177516, rel=1e-5)
    assert image.signal.metadata.Acquisition_instrument.TEM.acquisition_mode == "STEM"
    assert image.signal.original_metadata.as_dictionary()  # vendor tags kept


def test_package_paths_and_tk_r_em_layout():
    path = resolve_path("package://tk_r_em/test_data/sfr_hrstem.h5#y")
    assert path.name == "sfr_hrstem.h5" and path.is_file()
    noisy = read_image(path, dataset="x", frame=2).signal.data
    clean = read_image(path, dataset="y", frame=2).signal.data
    assert noisy.shape == clean.shape == (256, 256)
    # The noisy and clean image of a pair show the same lattice: strongly correlated.
    assert np.corrcoef(noisy.ravel(), clean.ravel())[0, 1] > 0.5


@pytest.mark.parametrize("units, factor", [("nm", 1e3), ("µm", 1e6), ("um", 1e6), ("Å", 100.0), ("A", 100.0),
                                           ("m", 1e12), ("pm", 1.0), ("px", None), ("", None), (None, None)])
def test_length_units(units, factor):
    assert length_unit_to_pm(units) == factor


def test_reciprocal_units_are_refused():
    with pytest.raises(RejectedInput, match="reciprocal"):
        length_unit_to_pm("1/nm")


def test_bad_files_give_one_line_reasons(tmp_path):
    (tmp_path / "empty.dm3").write_bytes(b"")
    (tmp_path / "text.tif").write_text("this is not an image\n")
    truncated = tmp_path / "truncated.dm3"
    truncated.write_bytes((FILES / "test_STEM_image.dm3").read_bytes()[:3000])
    image = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    image[3, 4] = np.nan
    np.save(tmp_path / "nan.npy", image)
    expected = {"missing.dm3": "file not found", "empty.dm3": "empty", "text.tif": "unreadable",
                "truncated.dm3": "unreadable or truncated", "nan.npy": "NaN"}
    for name, words in expected.items():
        record = inspect_sample({"sample": "s", "path": str(tmp_path / name), "modality": "stem", "resolution": "hr"})
        assert record["status"].startswith("rejected: sample 's'"), (name, record["status"])
        assert words in record["status"], (name, record["status"])
        assert "\n" not in record["status"]


def test_constant_images_are_kept_with_a_note(tmp_path):
    np.save(tmp_path / "constant.npy", np.full((32, 32), 7.0))
    record = inspect_sample({"sample": "c", "path": str(tmp_path / "constant.npy"), "modality": "stem",
                             "resolution": "hr"})
    assert record["status"] == "ok" and "constant image (every pixel is 7)" in record["notes"]


def test_paths_with_spaces_and_non_ascii_letters(tmp_path):
    folder = tmp_path / "Proben mit Ümläuten"
    folder.mkdir()
    shutil.copy(FILES / "test_STEM_image.dm3", folder / "STEM Bild ø.dm3")
    record = inspect_sample({"sample": "umlaut", "path": "Proben mit Ümläuten/STEM Bild ø.dm3",
                             "base_dir": str(tmp_path), "modality": "auto", "resolution": "auto"})
    assert record["status"] == "ok" and record["network"] == "sfr_lrstem"
