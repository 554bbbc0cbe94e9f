"""Real files from other groups and small field cases (../shared/data/{real,field-cases}/, read in
place): each gives the pixel size, modality, chosen image or refusal reason its README states."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from remflow.cleaning import data_bar_height, replace_outlier_pixels, to_float32_lossless
from remflow.ingest import RejectedInput, inspect_sample, length_unit_to_pm, read_image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL = SHARED / "real"
FIELD = SHARED / "field-cases"
INSTRUMENT = SHARED / "instrument-files"
pytestmark = pytest.mark.skipif(not REAL.is_dir() or not FIELD.is_dir(), reason=f"shared data not found at {SHARED}")


def inspect(path: Path, modality: str = "auto", resolution: str = "auto", **extra) -> dict:
    return inspect_sample({"sample": path.stem.replace(" ", "_"), "path": str(path), "modality": modality,
                           "resolution": resolution, **extra})


# file, sheet modality, sheet resolution, pixel size (pm; None = uncalibrated), modality, shape (after crops)
REAL_FILES = [
    ("16_STOimage.emi", "auto", "auto", 10.0127, "stem", (1024, 1024)),
    ("test_ADF_cropped.hdf5", "stem", "auto", 9.326, "stem", (400, 380)),
    ("test_ABF_cropped.hdf5", "stem", "auto", 9.326, "stem", (400, 380)),
    ("Cropped_PTO-SRO_Aligned.hspy", "auto", "auto", 15.0, "stem", (224, 1312)),
    ("PZO.dm3", "stem", "auto", 15.99, "stem", (525, 525)),
    ("Sample_ABF.dm3", "stem", "auto", 15.99, "stem", (323, 323)),
    ("REBCO-ROI_raw.dm3", "stem", "auto", 54.08, "stem", (128, 128)),
    ("REBCO.tif", "auto", "auto", 1908.0, "sem", (884, 1024)),  # 59-row FEI data bar cropped
    ("1-as-cast_16_Sch_10k_InLens.tif", "auto", "auto", 11170.0, "sem", (690, 1024)),  # Zeiss bar cropped
    ("DMReader_Image_SI-Survey.dm3", "auto", "hr", None, "stem", (512, 512)),
    ("NSMO110_cryo_HAADF_48frame_average.tif", "stem", "hr", None, "stem", (898, 963)),
]


@pytest.mark.parametrize("name, modality, resolution, pixel_pm, expected_modality, shape", REAL_FILES)
def test_real_files_give_the_readme_values(name, modality, resolution, pixel_pm, expected_modality, shape):
    record = inspect(REAL / name, modality, resolution)
    assert record["status"] == "ok", record["status"]
    if pixel_pm is None:
        assert record["pixel_size_pm"] is None
    else:
        assert record["pixel_size_pm"] == pytest.approx(pixel_pm, rel=1e-3)
    assert record["modality"] == expected_modality
    assert tuple(record["shape"]) == shape
    assert record["n_outlier_pixels"] == 0  # real images: no column or feature taken for a hot pixel


@pytest.mark.parametrize("name", ["PZO.dm3", "Sample_ABF.dm3", "REBCO-ROI_raw.dm3"])
def test_files_without_instrument_tags_ask_for_the_modality(name):
    assert "fill the 'modality' column" in inspect(REAL / name)["status"]


def test_ambiguous_hdf5_extension_tries_every_reader():
    record = inspect(REAL / "test_ADF_cropped.hdf5", "stem")
    assert record["reader"] == "HSPY"
    assert any("read as nm" in note for note in record["notes"])


def test_refusal_names_every_reader_when_none_reads_the_file(tmp_path):
    import h5py

    with h5py.File(tmp_path / "other.hdf5", "w") as handle:  # valid HDF5, but no reader's layout
        handle["measurements/frame"] = np.zeros((8, 8))
    status = inspect(tmp_path / "other.hdf5", "stem", "hr")["status"]
    assert status.startswith("rejected: ") and "none of the readers" in status and "HSPY" in status
    assert "\n" not in status


def test_velox_emd_with_three_detectors_chooses_haadf_and_records_the_others():
    record = inspect(FIELD / "c05_velox_3det.emd")
    assert record["status"] == "ok" and record["modality"] == "stem"
    assert record["signal"]["title"] == "HAADF" and record["signal"]["index"] == 1
    assert sorted(o["title"] for o in record["other_signals"]) == ["BF", "DF4-A"]
    assert record["pixel_size_pm"] == pytest.approx(40.0)


@pytest.mark.parametrize("wanted, title", [("BF", "BF"), ("df4-a", "DF4-A"), ("0", "BF"), ("2", "DF4-A")])
def test_the_sheet_signal_column_names_the_image(wanted, title):
    record = inspect(FIELD / "c05_velox_3det.emd", "stem", signal=wanted)
    assert record["status"] == "ok" and record["signal"]["title"] == title


def test_a_signal_not_in_the_file_is_refused_listing_what_is_there():
    status = inspect(FIELD / "c05_velox_3det.emd", "stem", signal="iDPC")["status"]
    assert "signal 'iDPC'" in status and "1 'HAADF'" in status


@pytest.mark.parametrize("frame", [None, 0])
def test_colour_preview_page_is_never_analysed(frame):
    record = inspect(FIELD / "c04_two_page.tif", "stem", "hr", **({"frame": frame} if frame is not None else {}))
    assert record["status"] == "ok", record["status"]
    assert record["shape"] == [256, 384] and record["signal"]["dtype"] == "uint16"
    assert record["other_signals"][0]["kind"] == "grey-rgb"


def test_rgb_with_equal_channels_is_grey_and_colour_is_refused(tmp_path):
    import tifffile

    grey = np.random.default_rng(0).integers(0, 255, (40, 48), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "grey_rgb.tif", np.stack([grey] * 3, axis=-1), photometric="rgb")
    colour = np.stack([grey, grey[::-1], grey], axis=-1)
    tifffile.imwrite(tmp_path / "colour.tif", colour, photometric="rgb")
    record = inspect(tmp_path / "grey_rgb.tif", "stem", "hr")
    assert record["status"] == "ok" and record["shape"] == [40, 48]
    assert np.array_equal(read_image(tmp_path / "grey_rgb.tif").signal.data, grey.astype(np.float32))
    assert "colour" in inspect(tmp_path / "colour.tif", "stem", "hr")["status"]


def test_mrc_with_zero_cell_is_uncalibrated_and_runs_when_the_sheet_gives_resolution():
    record = inspect(FIELD / "c01b_mrc_cell0.mrc", "stem", "hr")
    assert record["status"] == "ok" and record["pixel_size_pm"] is None and record["network"] == "sfr_hrstem"
    assert "fill the 'resolution' column" in inspect(FIELD / "c01b_mrc_cell0.mrc", "stem")["status"]


def test_float64_on_a_pedestal_keeps_every_level_and_the_offset():
    pedestal = read_image(FIELD / "c07a_f64_pedestal1e8.hspy")
    reference = read_image(FIELD / "c07c_f64_reference.hspy")
    assert pedestal.details["intensity_offset"] == 1e8
    assert np.array_equal(pedestal.signal.data, reference.signal.data)  # all 66 levels
    assert pedestal.signal.metadata.Processing.remflow.intensity_offset == 1e8
    assert reference.details["intensity_offset"] == 0.0


def test_lost_levels_are_noted():
    counts = np.random.default_rng(0).poisson(30.0, (64, 64)).astype(np.float64)
    shifted = to_float32_lossless(counts + 1e8)
    assert shifted.offset == 1e8 + counts.min() and np.array_equal(shifted.data, counts - counts.min())
    values = counts + 1e8
    values[0, 0] = 0.0  # one dead pixel under the pedestal: the offset cannot help
    converted = to_float32_lossless(values)
    assert converted.offset == 0.0 and any("precision lost" in n for n in converted.notes)
    smooth = np.linspace(0, 1000, 64 * 64).reshape(64, 64) + counts  # float64 that float32 holds well enough
    assert to_float32_lossless(smooth).offset == 0.0 and not to_float32_lossless(smooth).notes


@pytest.mark.parametrize("units, factor", [
    ("nm", 1e3), (" nm ", 1e3), ("n_m", 1e3), ("NM", 1e3), ("nanometer", 1e3), ("µm", 1e6), ("μm", 1e6),
    ("um", 1e6), ("u_m", 1e6), ("micron", 1e6), ("Å", 100.0), ("\u212b", 100.0), ("A", 100.0), (" a ", 100.0),
    ("angstrom", 100.0), ("Angstroms", 100.0), ("pm", 1.0), ("p_m", 1.0), ("m", 1e12), ("mm", 1e9),
    ("px", None), ("pixels", None), ("", None), (" ", None), (None, None), ("<undefined>", None)])
def test_unit_spellings(units, factor):
    assert length_unit_to_pm(units) == factor


@pytest.mark.parametrize("units", ["1/nm", "nm^-1", "eV", "s"])
def test_units_that_are_not_lengths_are_refused(units):
    with pytest.raises(RejectedInput):
        length_unit_to_pm(units)


def test_units_in_imagej_metadata_and_zero_scale(tmp_path):
    import hyperspy.api as hs
    import tifffile

    data = np.random.default_rng(0).random((32, 40)).astype(np.float32)
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, resolution=(1 / 0.05, 1 / 0.05),
                     metadata={"unit": "nm"})
    assert inspect(tmp_path / "ij.tif", "stem")["pixel_size_pm"] == pytest.approx(50.0, rel=1e-6)
    signal = hs.signals.Signal2D(data)
    for axis in signal.axes_manager.signal_axes:
        axis.scale, axis.units = 0.0, "nm"
    signal.save(tmp_path / "zero.hspy")
    record = inspect(tmp_path / "zero.hspy", "stem", "hr")
    assert record["status"] == "ok" and record["pixel_size_pm"] is None


@pytest.mark.skipif(not INSTRUMENT.is_dir(), reason="instrument files not found")
@pytest.mark.parametrize("path, rows, bar", [
    (REAL / "REBCO.tif", 884, 59), (REAL / "1-as-cast_16_Sch_10k_InLens.tif", 690, 78),
    (INSTRUMENT / "FEI-Helios-Ebeam-16bits.tif", 442, 29), (INSTRUMENT / "test_tiff_Zeiss_SEM_512pix.tif", 350, 34)])
def test_sem_data_bars_are_cropped_and_recorded(path, rows, bar):
    record = inspect(path)
    assert record["status"] == "ok" and record["modality"] == "sem"
    assert record["shape"][0] == rows and record["data_bar_rows"] == bar
    if "FEI" in path.name:
        return  # its scanned area itself ends in black rows (ResolutionY = 442)
    image = read_image(path).signal.data
    # What is left is image: no row near the bottom is dominated by one value (a bar's background).
    for row in image[-5:]:
        assert np.unique(row, return_counts=True)[1].max() < 0.5 * row.size


def test_a_suspected_bar_of_unknown_height_is_refused(tmp_path):
    import hyperspy.api as hs

    data = np.random.default_rng(0).integers(50, 200, (200, 256)).astype(np.uint8)
    data[170] = 0  # flat lines at the bottom that frame no uniform block
    data[185] = 255
    signal = hs.signals.Signal2D(data)
    signal.metadata.set_item("Acquisition_instrument.SEM.beam_energy", 5.0)
    signal.save(tmp_path / "sem_bar.hspy")
    status = inspect(tmp_path / "sem_bar.hspy", resolution="lr")["status"]
    assert status.startswith("rejected: ") and "data bar" in status and "height is not in the metadata" in status
    with pytest.raises(ValueError):
        data_bar_height(data, {})


def _lattice(dose_scale: float, seed: int = 0, shape=(128, 128), spacing: float = 10.0, sigma: float = 1.4) -> np.ndarray:
    """Poisson image of Gaussian columns (peak ``dose_scale`` counts over a background of 5%)."""
    rows, cols = np.mgrid[:shape[0], :shape[1]].astype(float)
    clean = np.zeros(shape)
    for y in np.arange(5, shape[0], spacing):
        for x in np.arange(5, shape[1], spacing):
            clean += np.exp(-((rows - y) ** 2 + (cols - x) ** 2) / (2 * sigma**2))
    return np.random.default_rng(seed).poisson(dose_scale * (clean + 0.05)).astype(np.float32)


@pytest.mark.parametrize("dose", [0.5, 3.0, 30.0, 3000.0])
def test_atom_columns_are_never_taken_for_hot_pixels(dose):
    # From single counts per column (0.5) to a clean high-dose image, and sharp columns.
    for sigma in (0.7, 1.4):
        image = _lattice(dose, sigma=sigma)
        assert replace_outlier_pixels(image).count == 0
        assert replace_outlier_pixels(image * 1e-4).count == 0  # unit-free


def test_isolated_hot_and_dead_pixels_are_found_whatever_the_unit():
    image = _lattice(30.0)
    hot = [(20, 33), (77, 101), (3, 3), (100, 47), (64, 64), (127, 0)]
    spoiled = image.copy()
    for row, col in hot:
        spoiled[row, col] = 65535.0
    flat = np.random.default_rng(1).poisson(1000.0, (64, 64)).astype(np.float32)
    flat[30, 40] = 0.0
    for scale in (1.0, 1e-4):
        result = replace_outlier_pixels(spoiled * scale)
        assert {(p["row"], p["col"]) for p in result.pixels} == set(hot) and result.count == len(hot)
        assert all(p["kind"] == "hot" and p["replaced_by"] < 100 * scale for p in result.pixels)
        untouched = np.ones(image.shape, dtype=bool)
        untouched[tuple(np.array(hot).T)] = False
        assert np.array_equal(result.data[untouched], (spoiled * scale).astype(np.float32)[untouched])
        dead = replace_outlier_pixels(flat * scale)
        assert [(p["row"], p["col"], p["kind"]) for p in dead.pixels] == [(30, 40, "dead")]
