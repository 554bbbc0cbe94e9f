"""Every file of ../shared/data/real/ and ../shared/data/field-cases/ through the workflow (read in
place): the inspection stage of all of them in one `snakemake --keep-going` run, and a small
subset end to end, so that the summary lists each with its value or reason."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import INSTRUMENT_FILES, run_snakemake

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL = SHARED / "real"
FIELD = SHARED / "field-cases"
pytestmark = [pytest.mark.workflow,
              pytest.mark.skipif(not REAL.is_dir() or not FIELD.is_dir(), reason=f"shared data not found at {SHARED}")]

# file: (sheet columns, expected pixel size in pm (None: uncalibrated), modality) as the READMEs state.
EXPECTED = {
    "16_STOimage.emi": ({}, 10.0127, "stem"),
    "16_STOimage_1.ser": ({"modality": "stem"}, 10.0127, "stem"),
    "test_ADF_cropped.hdf5": ({"modality": "stem"}, 9.326, "stem"),
    "test_ABF_cropped.hdf5": ({"modality": "stem"}, 9.326, "stem"),
    "Cropped_PTO-SRO_Aligned.hspy": ({}, 15.0, "stem"),
    "PZO.dm3": ({"modality": "stem"}, 15.99, "stem"),
    "Sample_ABF.dm3": ({"modality": "stem"}, 15.99, "stem"),
    "REBCO-ROI_raw.dm3": ({"modality": "stem"}, 54.08, "stem"),
    "REBCO.tif": ({}, 1908.0, "sem"),
    "1-as-cast_16_Sch_10k_InLens.tif": ({}, 11170.0, "sem"),
    "DMReader_Image_SI-Survey.dm3": ({"resolution": "hr"}, None, "stem"),
    "NSMO110_cryo_HAADF_48frame_average.tif": ({"modality": "stem", "resolution": "hr"}, None, "stem"),
    "c11a_counts.hspy": ({"modality": "stem", "truth": "c11_truth.csv"}, 40.0, "stem"),
    "c11b_beam_fraction.hspy": ({"modality": "stem", "truth": "c11_truth.csv"}, 40.0, "stem"),
    "c05_velox_3det.emd": ({"truth": "c05_truth.csv"}, 40.0, "stem"),
    "c04_two_page.tif": ({"modality": "stem", "resolution": "hr"}, None, "stem"),
    "c07a_f64_pedestal1e8.hspy": ({"modality": "stem", "truth": "c07_truth.csv"}, 40.0, "stem"),
    "c07c_f64_reference.hspy": ({"modality": "stem", "truth": "c07_truth.csv"}, 40.0, "stem"),
    "c01b_mrc_cell0.mrc": ({"modality": "stem", "resolution": "hr"}, None, "stem"),
    "c14b_no_B_columns.hspy": ({"modality": "stem", "truth": "c14b_no_B_columns_truth.csv",
                                "second_sublattice": "true"}, 25.0, "stem"),
}
COLUMNS = ["sample", "path", "modality", "resolution", "truth", "second_sublattice", "signal"]


def image_files() -> list[Path]:
    """Every file of both folders except READMEs and truth tables."""
    return sorted(p for folder in (REAL, FIELD) for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() not in (".md", ".csv"))


def sample_name(path: Path) -> str:
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in path.stem) + "_" + path.suffix.lstrip(".")


def write_sheet(workdir: Path, rows: list[dict[str, str]]) -> None:
    lines = ["\t".join(COLUMNS)] + ["\t".join(str(row.get(c, "")) for c in COLUMNS) for row in rows]
    (workdir / "samples.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (workdir / "config.yaml").write_text("samples: samples.tsv\nprecision:\n  n_bootstrap: 200\n"
                                         "benchmark:\n  enabled: false\n", encoding="utf-8")


def row_for(path: Path) -> dict[str, str]:
    sheet, _, _ = EXPECTED.get(path.name, ({}, None, None))
    row = {"sample": sample_name(path), "path": str(path), "modality": "auto", "resolution": "auto", **sheet}
    if "truth" in row:
        row["truth"] = str(path.parent / row["truth"])
    return row


@pytest.fixture(scope="module")
def inspected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    workdir = tmp_path_factory.mktemp("field_inspect")
    files = image_files()
    write_sheet(workdir, [row_for(p) for p in files])
    targets = [f"results/ingest/{sample_name(p)}.json" for p in files]
    run_snakemake(workdir, "--cores", "2", "--keep-going", *targets)
    return workdir, files


def test_every_shared_file_gets_its_readme_value_or_a_reason(inspected):
    workdir, files = inspected
    assert set(EXPECTED) <= {p.name for p in files}, "a file named in the READMEs is missing"
    for path in files:
        record = json.loads((workdir / "results" / "ingest" / f"{sample_name(path)}.json").read_text())
        assert record["status"] == "ok" or record["status"].startswith("rejected: sample "), record["status"]
        if path.name not in EXPECTED:
            continue  # a new file: a status is all that can be asked
        _, pixel_pm, modality = EXPECTED[path.name]
        assert record["status"] == "ok", (path.name, record["status"])
        assert record["modality"] == modality, path.name
        if pixel_pm is None:
            assert record["pixel_size_pm"] is None, path.name
        else:
            assert record["pixel_size_pm"] == pytest.approx(pixel_pm, rel=1e-3), path.name


def test_inspection_records_what_ingest_chose_and_changed(inspected):
    workdir, _ = inspected

    def record(name: str) -> dict:
        return json.loads((workdir / "results" / "ingest" / f"{sample_name(Path(name))}.json").read_text())

    assert record("c05_velox_3det.emd")["signal"]["title"] == "HAADF"
    assert record("c04_two_page.tif")["signal"]["dtype"] == "uint16"
    assert record("REBCO.tif")["data_bar_rows"] == 59
    assert record("1-as-cast_16_Sch_10k_InLens.tif")["data_bar_rows"] == 78
    assert record("c07a_f64_pedestal1e8.hspy")["intensity_offset"] == 1e8
    assert record("test_ADF_cropped.hdf5")["reader"] == "HSPY"
    assert record("REBCO.tif")["network"] == "sfr_lrsem"


@pytest.mark.skipif(not INSTRUMENT_FILES.is_dir(), reason="needs ../shared/data/instrument-files")
def test_a_subset_end_to_end_lists_each_with_its_value_or_reason(tmp_path):
    rows = [row_for(FIELD / "c05_velox_3det.emd"), row_for(REAL / "REBCO-ROI_raw.dm3"),
            {"sample": "lr_stem", "path": str(INSTRUMENT_FILES / "test_STEM_image.dm3"),
             "modality": "auto", "resolution": "auto"},
            {"sample": "pzo_auto", "path": str(REAL / "PZO.dm3"), "modality": "auto", "resolution": "auto"}]
    write_sheet(tmp_path, rows)
    run_snakemake(tmp_path, "--cores", "2", "--keep-going")
    summary = pd.read_csv(tmp_path / "results" / "summary.csv").set_index("sample")
    assert list(summary.index) == [row["sample"] for row in rows]
    c05 = summary.loc[sample_name(FIELD / "c05_velox_3det.emd")]
    assert c05["status"] == "ok" and c05["signal"] == "HAADF" and c05["gain_basis"] == "truth"
    assert c05["n_spurious_restored"] <= 0.05 * c05["n_columns"]  # the HAADF columns, not BF gaps
    rebco = summary.loc[sample_name(REAL / "REBCO-ROI_raw.dm3")]
    assert rebco["pixel_size_pm"] == pytest.approx(54.08, rel=1e-3)
    lr = summary.loc["lr_stem"]
    assert lr["status"] == "restored (no atom columns)" and lr["network"] == "sfr_lrstem"
    assert lr["noise_sigma_restored"] < lr["noise_sigma_raw"]
    assert (tmp_path / "results" / "figures" / "lr_stem.png").stat().st_size > 10000
    assert "fill the 'modality' column" in summary.loc["pzo_auto", "status"]
    assert summary["n_outlier_pixels"].fillna(0).eq(0).all()
