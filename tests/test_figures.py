"""Figures rendered from synthetic inputs: right content, readable, not blank, reproducible."""

from __future__ import annotations

import html.parser
import math
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Rectangle
from matplotlib.quiver import Quiver
from PIL import Image

from remflow import figures
from remflow.precision import precision_summary

SHAPE = (96, 128)  # rows, cols: non-square on purpose
SPACING_PX = 12.0
SHIFT_PX = (0.8, -0.5)  # restored − raw, applied to every column: a known displacement


def lattice_positions() -> np.ndarray:
    """True (x, y) of a square lattice filling the image."""
    xs = np.arange(6.0, SHAPE[1] - 3, SPACING_PX)
    ys = np.arange(6.0, SHAPE[0] - 3, SPACING_PX)
    grid_x, grid_y = np.meshgrid(xs, ys)
    return np.column_stack([grid_x.ravel(), grid_y.ravel()])


def render(positions: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    image = np.zeros(SHAPE)
    for x, y in positions:
        image += np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma**2))
    return image


def synthetic_sample(seed: int = 1) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """A noisy raw image, a clean restored one, and a columns table in the workflow's format:
    raw fits scattered by 0.4 px, restored fits by 0.1 px and shifted by SHIFT_PX, one failed raw fit."""
    rng = np.random.default_rng(seed)
    truth = lattice_positions()
    clean = 100.0 * render(truth) + 10.0
    raw = rng.poisson(clean).astype(np.float32)
    raw_xy = truth + rng.normal(0, 0.4, truth.shape)
    restored_xy = truth + np.array(SHIFT_PX) + rng.normal(0, 0.1, truth.shape)
    columns = pd.DataFrame({
        "column_id": np.arange(len(truth)), "sublattice": "A",
        "x_raw_px": raw_xy[:, 0], "y_raw_px": raw_xy[:, 1],
        "x_restored_px": restored_xy[:, 0], "y_restored_px": restored_xy[:, 1],
        "sigma_x_raw_px": 2.0, "sigma_y_raw_px": 2.0, "sigma_x_restored_px": 2.0, "sigma_y_restored_px": 2.0,
        "amplitude_raw": 100.0, "amplitude_restored": 100.0, "fit_ok_raw": True, "fit_ok_restored": True,
        "x_true_px": truth[:, 0], "y_true_px": truth[:, 1],
    })
    columns.loc[5, "fit_ok_raw"] = False
    return raw, clean.astype(np.float32), columns


def precision_record(columns: pd.DataFrame, pixel_size_pm: float | None, *, with_truth: bool = False) -> dict:
    """The sample's precision JSON as the workflow's precision rule makes it (real remflow.precision)."""
    truth = pd.DataFrame({"x_px": columns["x_true_px"], "y_px": columns["y_true_px"]}) if with_truth else None
    record = precision_summary(columns, image_shape=SHAPE, separation_px=SPACING_PX, pixel_size_pm=pixel_size_pm,
                               truth=truth, n_boot=200)
    record.update(sample="synthetic_A", network="sfr_hrstem", pixel_size_pm=pixel_size_pm)
    return record


def png_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def assert_not_blank(path: Path, min_size: tuple[int, int]) -> np.ndarray:
    """The PNG is at least ``min_size`` (w, h) px, varies, and uses many colours."""
    pixels = png_pixels(path)
    height, width, _ = pixels.shape
    assert width >= min_size[0] and height >= min_size[1], (width, height)
    assert pixels.std() > 20, "image is (nearly) uniform"
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 50, f"only {len(colours)} distinct colours"
    return pixels


def colour_fraction(pixels: np.ndarray, hex_colour: str, tolerance: int = 12) -> float:
    """Fraction of pixels within ``tolerance`` (per channel) of ``hex_colour``."""
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return float(np.all(np.abs(pixels.astype(int) - rgb) <= tolerance, axis=-1).mean())


# ------------------------------------------------------------------ per sample


def test_sample_figure_png_is_full_size_not_blank_and_reproducible(tmp_path: Path) -> None:
    raw, restored, columns = synthetic_sample()
    record = precision_record(columns, pixel_size_pm=20.0)
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    for path in (first, second):
        figures.plot_sample(raw, restored, columns, record, path, pixel_size_pm=20.0, separation_px=SPACING_PX)
    width_in, height_in = figures.SAMPLE_FIGURE_SIZE_IN
    pixels = assert_not_blank(first, (int(width_in * 100), int(height_in * 100)))
    assert first.read_bytes() == second.read_bytes(), "same inputs must give identical PNG bytes"
    with Image.open(first) as image:
        assert "Software" not in image.info and "Creation Time" not in image.info
    assert b"tIME" not in first.read_bytes()  # no modification-time chunk either
    # Fitted columns are drawn in orange over both images; the failed raw fit in red.
    assert colour_fraction(pixels, "#ff9f1c", tolerance=30) > 1e-4
    assert not list(tmp_path.glob(".*partial*")), "temporary files left behind"


def test_sample_figure_shows_what_its_caption_says() -> None:
    raw, restored, columns = synthetic_sample()
    record = precision_record(columns, pixel_size_pm=20.0, with_truth=True)
    figure = figures.sample_figure(raw, restored, columns, record, pixel_size_pm=20.0, separation_px=SPACING_PX)
    try:
        axes = figure.axes
        raw_axis, restored_axis, difference_axis = axes[0], axes[1], axes[2]
        # Raw and restored share one intensity scale, from percentiles of both images.
        raw_image, restored_image = raw_axis.images[0], restored_axis.images[0]
        assert raw_image.get_clim() == restored_image.get_clim() == figures.robust_limits(raw, restored)
        np.testing.assert_allclose(difference_axis.images[0].get_array(), raw.astype(float) - restored)
        # Scale bar: 0.25 of 128 px × 20 pm = 640 pm, rounded down to 500 pm = 25 px.
        for axis in (raw_axis, restored_axis, difference_axis):
            bars = [p for p in axis.patches if isinstance(p, Rectangle)]
            assert len(bars) == 1 and bars[0].get_width() == pytest.approx(25.0)
            assert "500 pm" in [t.get_text() for t in axis.texts]
        # Columns overlaid: every good fit on raw, failed ones marked separately.
        raw_points = np.vstack([c.get_offsets() for c in raw_axis.collections])
        assert len(raw_points) == len(columns)
        # Displacement arrows: restored − raw, starting at the raw fit.
        quiver = next(c for axis in axes for c in axis.collections if isinstance(c, Quiver))
        both = columns["fit_ok_raw"] & columns["fit_ok_restored"]
        np.testing.assert_allclose(quiver.U, (columns["x_restored_px"] - columns["x_raw_px"])[both])
        np.testing.assert_allclose(quiver.V, (columns["y_restored_px"] - columns["y_raw_px"])[both])
        assert quiver.axes.yaxis_inverted(), "row 0 must be at the top, so +y arrows point down as in the image"
        mean_x, mean_y = float(np.mean(quiver.U)), float(np.mean(quiver.V))
        assert mean_x == pytest.approx(SHIFT_PX[0], abs=0.15) and mean_y == pytest.approx(SHIFT_PX[1], abs=0.15)
        assert f"mean shift ({mean_x:+.3f}, {mean_y:+.3f}) px" in quiver.axes.get_title()
        # Title: sample, network, columns, precision figures with intervals, verdict.
        title = figure._suptitle.get_text()
        for expected in ("synthetic_A", "sfr_hrstem", f"{len(columns)} columns",
                         figures.format_interval(record, "local_precision_raw_px", "px"),
                         figures.format_interval(record, "truth_rmse_restored_pm", "pm"),
                         f"{record['precision_gain']:.2f} [{record['precision_gain_ci_low']:.2f}, "
                         f"{record['precision_gain_ci_high']:.2f}]", "truth-based", "HURTS"):
            assert expected in title, (expected, title)
        # Against the truth the restored fits are worse: they carry the systematic shift.
        assert record["verdict"] == "hurts"
    finally:
        plt.close(figure)


def test_lattice_based_title_reports_the_gain_the_shift_does_not_spoil() -> None:
    raw, restored, columns = synthetic_sample()
    record = precision_record(columns, pixel_size_pm=None)
    figure = figures.sample_figure(raw, restored, columns, record, pixel_size_pm=None, separation_px=SPACING_PX)
    try:
        title = figure._suptitle.get_text()
        assert "local-based" in title and "HELPS" in title and "truth RMSE" not in title
        assert "truth-free basis: cannot see the network's prior" in title
    finally:
        plt.close(figure)


def test_residual_histograms_are_the_local_errors_behind_the_precision_figures() -> None:
    _, _, columns = synthetic_sample()
    record = precision_record(columns, pixel_size_pm=None)
    residuals = figures.sample_residuals(columns, SHAPE, SPACING_PX)
    assert len(residuals["raw"]) == record["n_columns_local"]
    for kind in ("raw", "restored"):
        rms = math.sqrt(float(np.mean(residuals[kind] ** 2)))
        assert rms == pytest.approx(record[f"local_precision_{kind}_px"], rel=1e-9)
    # The synthetic raw fits scatter four times more than the restored ones.
    assert record["local_precision_raw_px"] > 2.5 * record["local_precision_restored_px"]


def test_uncalibrated_sample_has_no_scale_bar_and_says_px(tmp_path: Path) -> None:
    raw, restored, columns = synthetic_sample()
    record = precision_record(columns, pixel_size_pm=None)
    figure = figures.sample_figure(raw, restored, columns, record, pixel_size_pm=None, separation_px=SPACING_PX)
    try:
        for axis in figure.axes[:3]:
            assert not [p for p in axis.patches if isinstance(p, Rectangle)]
        title = figure._suptitle.get_text()
        assert " pm" not in title and " px" in title
        figures._save(figure, tmp_path / "uncalibrated.png")
    finally:
        plt.close(figure)
    assert_not_blank(tmp_path / "uncalibrated.png", (1000, 700))


def test_sample_without_lattice_still_shows_images_and_says_why(tmp_path: Path) -> None:
    raw, restored, columns = synthetic_sample()
    empty = columns.iloc[0:0]
    record = {"sample": "amorphous", "network": "sfr_lrtem", "n_columns": 0, "status": "no lattice found: no peaks",
              "verdict": None, "precision_gain": None, "pixel_size_pm": None}
    figure = figures.sample_figure(raw, restored, empty, record, pixel_size_pm=None, separation_px=None)
    try:
        assert "no lattice found: no peaks" in figure._suptitle.get_text()
        assert "0 columns" in figure._suptitle.get_text()
        texts = " ".join(t.get_text() for axis in figure.axes for t in axis.texts)
        assert "no local errors" in texts and "no column fitted" in texts
        assert not [c for axis in figure.axes for c in axis.collections if isinstance(c, Quiver)]
        figures._save(figure, tmp_path / "amorphous.png")
    finally:
        plt.close(figure)
    assert_not_blank(tmp_path / "amorphous.png", (1000, 700))


def _panel_boxes(figure) -> list[tuple[str, object]]:
    """(name, window extent incl. ticks, labels, titles and texts) of every panel, colour bar
    and secondary axis, and of the figure title, after drawing."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    boxes = [("suptitle", figure._suptitle.get_window_extent(renderer))]
    for index, axis in enumerate(figure.axes):
        boxes.append((f"axes {index} ({axis.get_title()[:30]!r})", axis.get_tightbbox(renderer)))
    return boxes


def _series_record(record: dict) -> dict:
    """A frame series' precision record: per-frame drift and scatter as remflow.precision.series writes them."""
    frames = list(range(12))
    series = {"series_n_frames": 12, "series_frames": frames, "series_n_columns_used": 63,
              "series_precision_raw_px": 0.31, "series_precision_restored_px": 0.12, "series_gain": 2.6,
              "series_verdict": "helps"}
    for kind, scale in (("raw", 1.0), ("restored", 0.4)):
        series[f"series_drift_{kind}_px"] = [[0.3 * f * scale, -12.5 * f * scale] for f in frames]
        series[f"series_frame_rms_{kind}_px"] = [0.3 * scale + 0.01 * f for f in frames]
    return {**record, **series}


@pytest.mark.parametrize("case", ["calibrated", "uncalibrated", "series", "wide", "tall", "large values",
                                  "no columns"])
def test_sample_figure_text_never_overlaps_and_stays_inside(case: str) -> None:
    """The per-sample figure's layout is fixed (no layout solver): every panel's texts, ticks and
    colour-bar labels must still fit their room, for the longest titles and labels it carries."""
    raw, restored, columns = synthetic_sample()
    pixel_size = None if case == "uncalibrated" else 12.345
    record = precision_record(columns, pixel_size_pm=pixel_size, with_truth=True)
    record["sample"] = "a_rather_long_sample_name_from_a_microscope_session_2026-11-30_0042"
    record["status"] = "ok (3 columns near the border left out, 2 fits failed)"
    if case == "series":
        record = _series_record(record)
    if case in ("wide", "tall"):
        take = slice(0, 40) if case == "wide" else (slice(None), slice(0, 40))
        raw, restored = raw[take], restored[take]
        inside = (columns["y_raw_px"] < 40) if case == "wide" else (columns["x_raw_px"] < 40)
        columns = columns[inside].reset_index(drop=True)
    if case == "no columns":  # no lattice: the displacement colour bar is hidden, panels say why
        columns = columns.iloc[0:0]
        record = {"sample": record["sample"], "network": "sfr_hrstem", "n_columns": 0, "verdict": None,
                  "status": "no lattice found: fewer than 10 peaks above the noise", "precision_gain": None}
    if case == "large values":  # intensities in the tens of thousands, displacements of many px
        raw, restored = 1000.0 * raw + 30000.0, 1000.0 * restored + 30000.0
        columns = columns.copy()
        columns["x_restored_px"] += 7.5
    figure = figures.sample_figure(raw, restored, columns, record, pixel_size_pm=pixel_size,
                                   separation_px=None if case == "no columns" else SPACING_PX,
                                   series=case == "series")
    try:
        boxes = _panel_boxes(figure)
        whole = figure.bbox
        assert len(boxes) == 1 + (12 if case == "series" else 9)
        for name, box in boxes:
            assert (box.x0 >= whole.x0 - 0.5 and box.y0 >= whole.y0 - 0.5 and box.x1 <= whole.x1 + 0.5
                    and box.y1 <= whole.y1 + 0.5), f"{name} leaves the figure: {box} vs {whole}"
        for first in range(len(boxes)):
            for second in range(first + 1, len(boxes)):
                (name_a, a), (name_b, b) = boxes[first], boxes[second]
                overlap_x = min(a.x1, b.x1) - max(a.x0, b.x0)
                overlap_y = min(a.y1, b.y1) - max(a.y0, b.y0)
                assert overlap_x <= 0.5 or overlap_y <= 0.5, f"{name_a} overlaps {name_b}: {a} vs {b}"
    finally:
        plt.close(figure)


def test_scale_bar_length_is_round_and_in_a_readable_unit() -> None:
    assert figures.nice_length(37.0) == 20.0
    assert figures.nice_length(5.0) == 5.0
    assert figures.nice_length(0.9) == pytest.approx(0.5)
    assert figures.length_label(500.0) == "500 pm"
    assert figures.length_label(2000.0) == "2 nm"
    assert figures.length_label(5e6) == "5 µm"


def test_displacement_map_takes_the_nearest_column_value_and_masks_gaps() -> None:
    positions = np.array([[10.0, 10.0], [30.0, 10.0]])
    field, extent = figures.displacement_map((20, 40), positions, np.array([1.0, 2.0]), radius_px=6.0)
    assert field.shape == (20, 40) and extent == (-0.5, 39.5, 19.5, -0.5)
    assert field[10, 12] == 1.0 and field[10, 28] == 2.0
    assert np.isnan(field[10, 20]) and np.isnan(field[0, 0])


# ------------------------------------------------------------------ dataset


def summary_rows() -> pd.DataFrame:
    return pd.DataFrame([
        {"sample": "good", "status": "ok", "network": "sfr_hrstem", "pixel_size_pm": 20.0, "n_columns": 80,
         "n_columns_used": 70, "global_lattice_rms_raw_px": 0.5, "global_lattice_rms_raw_px_ci_low": 0.45,
         "global_lattice_rms_raw_px_ci_high": 0.55, "global_lattice_rms_restored_px": 0.2, "global_lattice_rms_restored_px_ci_low": 0.18,
         "global_lattice_rms_restored_px_ci_high": 0.22, "precision_gain": 2.5, "precision_gain_ci_low": 2.2,
         "precision_gain_ci_high": 2.9, "gain_basis": "local", "verdict": "helps"},
        {"sample": "worse", "status": "ok", "network": "sfr_hrtem", "pixel_size_pm": None, "n_columns": 50,
         "n_columns_used": 40, "global_lattice_rms_raw_px": 0.3, "global_lattice_rms_raw_px_ci_low": 0.27,
         "global_lattice_rms_raw_px_ci_high": 0.33, "global_lattice_rms_restored_px": 0.6, "global_lattice_rms_restored_px_ci_low": 0.5,
         "global_lattice_rms_restored_px_ci_high": 0.7, "precision_gain": 0.5, "precision_gain_ci_low": 0.42,
         "precision_gain_ci_high": 0.6, "gain_basis": "truth", "verdict": "hurts"},
        {"sample": "unsure", "status": "ok", "network": "sfr_hrstem", "n_columns": 30, "n_columns_used": 25,
         "global_lattice_rms_raw_px": 0.4, "global_lattice_rms_restored_px": 0.39, "precision_gain": 1.02,
         "precision_gain_ci_low": 0.9, "precision_gain_ci_high": 1.15, "gain_basis": "local",
         "verdict": "inconclusive"},
        {"sample": "<bad & file>", "status": "rejected: <bad & file>: not an image", "network": None},
    ])


def test_gain_plot_shows_each_verdict_and_names_samples_without_a_gain(tmp_path: Path) -> None:
    summary = summary_rows()
    figure = figures.gain_figure(summary)
    try:
        axis = figure.axes[0]
        assert axis.get_yscale() == "log"
        assert [t.get_text() for t in axis.get_xticklabels()] == ["good", "worse", "unsure"]
        footnote = " ".join(t.get_text() for t in figure.texts)
        assert "<bad & file>: rejected" in footnote
    finally:
        plt.close(figure)
    path = tmp_path / "gain.png"
    figures.plot_gain(summary, path)
    pixels = assert_not_blank(path, (700, 500))
    for colour in figures.VERDICT_COLOURS.values():
        assert colour_fraction(pixels, colour) > 1e-4, colour


def test_gain_plot_with_no_gain_at_all_still_renders(tmp_path: Path) -> None:
    summary = summary_rows().iloc[[3]]
    figures.plot_gain(summary, tmp_path / "gain.png")
    with Image.open(tmp_path / "gain.png") as image:
        assert image.size[0] >= 700


def test_precision_vs_dose_plot_is_log_log_with_the_radial_bound(tmp_path: Path) -> None:
    table = pd.DataFrame({
        "dose_e_per_A2": [5000.0, 50.0, 500.0],
        "truth_rmse_raw_px": [0.07, 0.6, 0.2], "truth_rmse_raw_px_ci_low": [0.06, 0.5, 0.18],
        "truth_rmse_raw_px_ci_high": [0.08, 0.7, 0.23],
        "truth_rmse_restored_px": [0.05, 0.2, 0.1], "truth_rmse_restored_px_ci_low": [0.045, 0.17, 0.09],
        "truth_rmse_restored_px_ci_high": [0.06, 0.24, 0.11],
        "crlb_px": [0.04, 0.4, 0.125],
    })
    figure = figures.dose_figure(table)
    try:
        axis = figure.axes[0]
        assert axis.get_xscale() == "log" and axis.get_yscale() == "log"
        bound = next(line for line in axis.get_lines() if line.get_linestyle() == "--")
        np.testing.assert_allclose(bound.get_xdata(), [50.0, 500.0, 5000.0])
        np.testing.assert_allclose(bound.get_ydata(), np.sqrt(2) * np.array([0.4, 0.125, 0.04]))
        labels = axis.get_legend_handles_labels()[1]
        assert any("Cramér-Rao" in label for label in labels)
        assert any(label.startswith("raw") for label in labels)
        assert any(label.startswith("restored") for label in labels)
    finally:
        plt.close(figure)
    path = tmp_path / "dose.png"
    figures.plot_precision_vs_dose(table, path)
    pixels = assert_not_blank(path, (700, 500))
    for colour in figures.KIND_COLOURS.values():
        assert colour_fraction(pixels, colour) > 1e-3


class _TableReader(html.parser.HTMLParser):
    """Rows of the table with id summary-table: (row class, [(cell class, cell text)])."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, list[tuple[str, str]]]] = []
        self._inside = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if tag == "table":
            self._inside = attributes.get("id") == "summary-table"
        elif self._inside and tag == "tr" and "data-sample" in attributes:
            self.rows.append((attributes.get("class", ""), []))
        elif self._inside and tag == "td" and self.rows:
            self._cell = [attributes.get("class", "")]

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1][1].append((self._cell[0], "".join(self._cell[1:])))
            self._cell = None
        elif tag == "table":
            self._inside = False


def test_summary_table_html_has_one_row_per_sample_with_intervals_and_verdicts(tmp_path: Path) -> None:
    path = tmp_path / "summary.html"
    figures.summary_table_html(summary_rows(), path)
    text = path.read_text(encoding="utf-8")
    assert "<script" not in text and "http" not in text  # self-contained, nothing to fetch
    reader = _TableReader()
    reader.feed(text)
    assert len(reader.rows) == 4
    (good_class, good), (_, worse), (_, unsure), (bad_class, bad) = reader.rows
    assert good_class == "" and bad_class == "rejected"
    assert good[0][1] == "good" and bad[0][1] == "<bad & file>"  # escaped in HTML, intact when read
    assert ("number", "2.5 [2.2, 2.9]") in good
    assert ("text helps", "helps") in good and ("text hurts", "hurts") in worse
    assert ("text inconclusive", "inconclusive") in unsure
    # No truth figures in any row: their columns are left out of the main view.
    assert "<th>truth RMSE raw (px)</th>" not in text and "<th>global lattice RMS raw (px)</th>" in text


def test_sample_index_shows_the_errors_the_gain_rests_on_and_names_its_basis(tmp_path: Path) -> None:
    """Each basis' error fields exist in summary.csv (a renamed field would leave empty cells),
    and the index row shows them beside the gain, verdict and basis."""
    from remflow.precision import SUMMARY_FIELDS
    from remflow.precision.basis import GAIN_BASES
    from remflow.precision.series import SERIES_FIELDS
    from remflow.precision.twin import TWIN_FIELDS
    from remflow.report_index import BASIS_ERRORS, index_html

    fields = set(SUMMARY_FIELDS + SERIES_FIELDS + TWIN_FIELDS)
    assert set(BASIS_ERRORS) == {name for name, _, _ in GAIN_BASES}
    rows = []
    for number, (basis, pattern) in enumerate(BASIS_ERRORS.items()):
        row = {"sample": basis, "status": "ok", "gain_basis": basis, "verdict": "helps",
               "precision_gain": 2.0, "precision_gain_ci_low": 1.5, "precision_gain_ci_high": 2.5}
        for kind, value in (("raw", 0.4 + number), ("restored", 0.2 + number)):
            name = pattern.format(kind=kind)
            assert name in fields and f"{name}_ci_low" in fields and f"{name}_ci_high" in fields, name
            row |= {name: value, f"{name}_ci_low": value - 0.1, f"{name}_ci_high": value + 0.1}
        rows.append(row)
    text = index_html(pd.DataFrame(rows), tmp_path)
    for number, basis in enumerate(BASIS_ERRORS):
        start = text.index(f'data-sample="{basis}"')
        cells = re.findall(r"<td>([^<]*)</td>", text[start:text.index("</tr>", start)])
        raw, restored = 0.4 + number, 0.2 + number
        assert cells[-5:] == [f"{raw:.3g} [{raw - 0.1:.3g}, {raw + 0.1:.3g}]",
                              f"{restored:.3g} [{restored - 0.1:.3g}, {restored + 0.1:.3g}]",
                              "2 [1.5, 2.5]", "helps", basis], cells
