"""Files for the next tools: the restored image as ImageJ TIFF (Fiji), the fits as atomap
Atom_Lattice files. Read back with tifffile, HyperSpy, remflow's own ingest and atomap."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import hyperspy.api as hs
import numpy as np
import pytest
import tifffile

from remflow.export import write_imagej_tiff
from remflow.ingest import read_image


def tiff_calibration(path: Path) -> tuple[str, float, float]:
    """(ImageJ unit, x and y size of a pixel in that unit) as Fiji computes them:
    1 / XResolution and 1 / YResolution (pixels per unit), unit from the ImageJ description."""
    with tifffile.TiffFile(path) as tiff:
        assert tiff.is_imagej
        page = tiff.pages[0]
        x_num, x_den = page.tags["XResolution"].value
        y_num, y_den = page.tags["YResolution"].value
        return tiff.imagej_metadata["unit"], x_den / x_num, y_den / y_num


def csv_positions(path: Path, kind: str) -> dict[str, tuple[list[float], list[float]]]:
    """{sublattice: (x, y)} of one image's fit, parsed from the CSV text with Python's float."""
    positions: dict[str, tuple[list[float], list[float]]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            x, y = positions.setdefault(row["sublattice"], ([], []))
            x.append(float(row[f"x_{kind}_px"]))
            y.append(float(row[f"y_{kind}_px"]))
    return positions


@pytest.mark.parametrize("size_pm", [(12.3456789, 20.0), (50.0, 50.0)])
def test_calibrated_tiff_reads_back_with_its_pixel_size_in_tifffile_hyperspy_and_remflow(tmp_path, size_pm):
    image = np.random.default_rng(0).normal(size=(40, 56)).astype(np.float32)
    path = tmp_path / "restored.tif"
    write_imagej_tiff(path, image, pixel_size_x_pm=size_pm[0], pixel_size_y_pm=size_pm[1], info="a note")

    data = tifffile.imread(path)
    assert data.dtype == np.float32 and np.array_equal(data, image)
    unit, size_x, size_y = tiff_calibration(path)
    assert unit == "nm"
    assert size_x == pytest.approx(size_pm[0] / 1000, rel=1e-7) and size_y == pytest.approx(size_pm[1] / 1000, rel=1e-7)

    signal = hs.load(path)
    assert np.array_equal(signal.data, image)
    x_axis, y_axis = signal.axes_manager.signal_axes
    assert x_axis.size == 56 and y_axis.size == 40
    assert (x_axis.units, y_axis.units) == ("nm", "nm")
    assert x_axis.scale == pytest.approx(size_pm[0] / 1000, rel=1e-7)
    assert y_axis.scale == pytest.approx(size_pm[1] / 1000, rel=1e-7)

    again = read_image(path)  # remflow reads its own output as a calibrated image
    assert again.pixel_size_x_pm == pytest.approx(size_pm[0], rel=1e-7)
    assert again.pixel_size_y_pm == pytest.approx(size_pm[1], rel=1e-7)


def test_uncalibrated_tiff_says_pixel_and_reads_back_uncalibrated(tmp_path):
    image = np.arange(32 * 48, dtype=np.float32).reshape(32, 48)
    path = tmp_path / "restored.tif"
    write_imagej_tiff(path, image, pixel_size_x_pm=None, pixel_size_y_pm=None)
    assert tiff_calibration(path) == ("pixel", 1.0, 1.0)
    signal = hs.load(path)
    assert [(a.scale, a.units) for a in signal.axes_manager.signal_axes] == [(1.0, "px"), (1.0, "px")]
    assert read_image(path).pixel_size_x_pm is None


def test_bad_image_or_pixel_size_writes_nothing(tmp_path):
    image = np.ones((20, 20), dtype=np.float32)
    image[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_imagej_tiff(tmp_path / "a.tif", image, pixel_size_x_pm=None, pixel_size_y_pm=None)
    with pytest.raises(ValueError, match="positive"):
        write_imagej_tiff(tmp_path / "b.tif", np.ones((20, 20)), pixel_size_x_pm=-1.0, pixel_size_y_pm=1.0)
    assert list(tmp_path.iterdir()) == []


def check_exports(results: Path, sample: str) -> int:
    """The sample's TIFF equals its restored image with the ingest calibration, and its atomap
    files hold exactly the CSV's sublattices and positions. Returns the number of columns."""
    import atomap.api as am

    info = json.loads((results / "ingest" / f"{sample}.json").read_text())
    restored = hs.load(results / "restored" / f"{sample}.hspy").data
    tiff = results / "restored" / f"{sample}.tif"
    assert np.array_equal(tifffile.imread(tiff), restored)
    unit, size_x, size_y = tiff_calibration(tiff)
    signal = hs.load(tiff)
    if info["pixel_size_x_pm"] is None:
        assert (unit, size_x, size_y) == ("pixel", 1.0, 1.0)
    else:
        assert unit == "nm"
        assert size_x == pytest.approx(info["pixel_size_x_pm"] / 1000, rel=1e-7)
        assert size_y == pytest.approx(info["pixel_size_y_pm"] / 1000, rel=1e-7)
        assert [a.units for a in signal.axes_manager.signal_axes] == ["nm", "nm"]
        assert signal.axes_manager.signal_axes[0].scale == pytest.approx(info["pixel_size_x_pm"] / 1000, rel=1e-7)

    columns = results / "columns" / f"{sample}.csv"
    for kind in ("raw", "restored"):
        lattice = am.load_atom_lattice_from_hdf5(str(results / "columns" / f"{sample}_{kind}_atom_lattice.hdf5"),
                                                 construct_zone_axes=False)
        expected = csv_positions(columns, kind)
        assert [s.name for s in lattice.sublattice_list] == list(expected)
        for sublattice in lattice.sublattice_list:
            x, y = expected[sublattice.name]
            assert np.array_equal(sublattice.x_position, x) and np.array_equal(sublattice.y_position, y)
        assert lattice.image.shape == restored.shape
    return sum(len(x) for x, _ in csv_positions(columns, "raw").values())


@pytest.mark.workflow
def test_workflow_exports_fiji_tiff_and_atom_lattices_equal_to_the_csv(small_run):
    results = small_run / "results"
    accepted = [p.stem for p in (results / "restored").glob("*.hspy")]
    assert "sim_cal" in accepted
    counts = {sample: check_exports(results, sample) for sample in accepted}
    assert counts["sim_cal"] >= 20
    # A rejected sample gets none (it has no restored image).
    assert not (results / "restored" / "text_as_dm3.tif").exists()
    assert not list((results / "columns").glob("text_as_dm3*"))


@pytest.mark.workflow
def test_atom_lattice_opens_with_atomaps_defaults_and_keeps_the_widths(small_run):
    import atomap.api as am

    results = small_run / "results"
    lattice = am.load_atom_lattice_from_hdf5(str(results / "columns" / "sim_cal_restored_atom_lattice.hdf5"))
    (sublattice,) = lattice.sublattice_list
    assert sublattice.zones_axis_average_distances  # atomap's zone axes were constructed on load
    with open(results / "columns" / "sim_cal.csv", newline="", encoding="utf-8") as handle:
        sigma_x = [float(row["sigma_x_restored_px"]) for row in csv.DictReader(handle)]
    assert np.array_equal(sublattice.sigma_x, sigma_x)
    assert lattice.name == "sim_cal restored"
    assert sublattice.units == "nm" and sublattice.pixel_size == pytest.approx(0.02)
