"""Sample-sheet checks list every problem at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from remflow.sheet import SampleSheetError, load_sample_sheet

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "samples.schema.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "samples.tsv"
    path.write_text(text, encoding="utf-8")
    return path


def test_default_sheet_is_valid():
    sheet = load_sample_sheet(Path(__file__).resolve().parents[1] / "config" / "samples.tsv", SCHEMA)
    assert "exp_hrstem_4" in sheet.index and sheet.loc["exp_hrstem_4", "frame"] == 4


def test_optional_columns_are_typed_and_base_dir_is_the_sheets_folder(tmp_path):
    sheet = load_sample_sheet(write(tmp_path, "sample\tpath\tmodality\tresolution\tframe\tpixel_size_pm\tsecond_sublattice\n"
                                              "a\tx.dm3\tauto\tauto\t3\t12.5\ttrue\nb\ty.dm3\tsem\tlr\t\t\t\n"), SCHEMA)
    assert sheet.loc["a", "frame"] == 3 and sheet.loc["a", "pixel_size_pm"] == 12.5
    assert sheet.loc["a", "second_sublattice"] is True and sheet.loc["b", "frame"] is None
    assert sheet.loc["a", "base_dir"] == str(tmp_path.resolve())


def test_all_problems_are_listed_together(tmp_path):
    path = write(tmp_path, "sample\tpath\tmodality\tresolution\tframe\tpixel_size_pm\n"
                           "../x\ta\tstem\thr\t\t\n"
                           "/abs\tb\tstem\thr\t\t\n"
                           "c\tc\tXEM\thr\t1.5\t-3\n"
                           "dup\td\tstem\thr\t\t\n"
                           "dup\te\tstem\tauto\t\t\n")
    with pytest.raises(SampleSheetError) as caught:
        load_sample_sheet(path, SCHEMA)
    message = str(caught.value)
    for words in ("line 2 (sample '../x')", "line 3 (sample '/abs')", "'XEM' is not one of",
                  "'frame' must be a whole number", "pixel_size_pm", "'dup' is used 2 times"):
        assert words in message, words


def test_missing_required_column(tmp_path):
    with pytest.raises(SampleSheetError, match="missing column"):
        load_sample_sheet(write(tmp_path, "sample\tpath\n a\tb\n"), SCHEMA)
