"""Figures a microscopist reads at a glance: one per sample, and across the dataset.

Every figure is written with the Agg backend, fixed style settings and no timestamp or
software tag in the PNG, so the same inputs give byte-identical files; files are
written atomically (:func:`remflow.atomic.atomic_path`).

Conventions: ``x`` is the horizontal pixel coordinate (column index), ``y`` the row,
pixel ``i`` is centred at ``i``; images are shown with row 0 at the top. Displacements
between fits are *restored − raw*: where restoration moved a column's fitted position.
"""

from __future__ import annotations

import html
import math
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.patheffects as path_effects  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402
from PIL import Image  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

from remflow.atomic import atomic_path, write_text  # noqa: E402
from remflow.precision import column_roles, local_errors  # noqa: E402
from remflow.precision.basis import TRUTH_FREE_BASES  # noqa: E402

VERDICT_COLOURS = {"helps": "#1a9850", "hurts": "#d73027", "inconclusive": "#7f7f7f"}
KIND_COLOURS = {"raw": "#1f77b4", "restored": "#ff7f0e"}
#: Column markers by role (see remflow.precision.column_roles): used, or why left out.
ROLE_STYLES = {"used": ("#ff9f1c", "+"), "border": ("#00e5ff", "+"), "no neighbours": ("#00e5ff", "+"),
               "fit failed": ("red", "x"), "not significant": ("#ff4fd8", "o")}
#: (figure prefix, name) of the precision figures in the order they are shown.
PRECISION_FIGURES = (("local_precision", "local precision"), ("global_lattice_rms", "global lattice RMS"),
                     ("truth_rmse", "truth RMSE"))
#: Fixed style: figures must not depend on a user's matplotlibrc.
STYLE = {"font.size": 9, "axes.titlesize": 9, "figure.dpi": 100, "savefig.dpi": 100,
         "font.family": "DejaVu Sans", "image.interpolation": "antialiased", "svg.hashsalt": "remflow"}
#: Percentiles that set the common intensity range of raw and restored images.
INTENSITY_PERCENTILES = (0.5, 99.5)
#: The displacement colour map is evaluated on at most this many points per side.
MAX_MAP_SIDE = 512
SAMPLE_FIGURE_SIZE_IN = (15.0, 10.5)
_OUTLINE = [path_effects.withStroke(linewidth=2.0, foreground="black")]


# --------------------------------------------------------------------------- helpers


def robust_limits(*images: np.ndarray, low: float = INTENSITY_PERCENTILES[0],
                  high: float = INTENSITY_PERCENTILES[1]) -> tuple[float, float]:
    """One intensity range for several images, from percentiles of all their finite pixels."""
    values = np.concatenate([np.asarray(image, dtype=np.float64).ravel() for image in images])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [low, high])
    return (float(lo), float(hi)) if hi > lo else (float(lo) - 0.5, float(lo) + 0.5)


def nice_length(target: float) -> float:
    """The largest of 1, 2 or 5 times a power of ten that is at most ``target`` (> 0)."""
    power = 10.0 ** math.floor(math.log10(target))
    return max(m * power for m in (1, 2, 5) if m * power <= target * (1 + 1e-12))


def length_label(length_pm: float) -> str:
    """A length in pm written in the unit that keeps the number between 1 and 1000."""
    for factor, unit in ((1e6, "µm"), (1e3, "nm")):
        if length_pm >= factor:
            return f"{length_pm / factor:g} {unit}"
    return f"{length_pm:g} pm"


def add_scale_bar(axis: Any, image_shape: tuple[int, int], pixel_size_pm: float | None) -> float | None:
    """A white, black-edged bar of a round physical length in the lower left.

    Nothing is drawn for an uncalibrated image. Returns the bar's length in pm.
    """
    if not pixel_size_pm or not math.isfinite(pixel_size_pm) or pixel_size_pm <= 0:
        return None
    rows, cols = image_shape
    length_pm = nice_length(0.25 * cols * pixel_size_pm)
    bar_px = length_pm / pixel_size_pm
    height = max(1.0, 0.015 * rows)
    x0, y0 = 0.05 * cols - 0.5, 0.93 * rows - 0.5
    axis.add_patch(Rectangle((x0, y0), bar_px, height, facecolor="white", edgecolor="black", linewidth=0.8))
    axis.text(x0 + bar_px / 2, y0 - 0.01 * rows, length_label(length_pm), color="white", ha="center", va="bottom",
              fontsize=9, fontweight="bold", path_effects=_OUTLINE)
    return length_pm


def _value(record: dict[str, Any], name: str) -> float | None:
    """A finite number from a record (JSON dict or summary row), else None."""
    value = record.get(name)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def format_interval(record: dict[str, Any], name: str, unit: str) -> str:
    """``value [low, high] unit`` with the 95% interval stored as ``{name}_ci_low/_ci_high``."""
    value = _value(record, name)
    if value is None:
        return "n/a"
    # px: sub-pixel precision needs three decimals; pm: one, or two below 10 pm.
    digits = 3 if unit == "px" else (2 if abs(value) < 10 else 1)
    low, high = _value(record, f"{name}_ci_low"), _value(record, f"{name}_ci_high")
    interval = f" [{low:.{digits}f}, {high:.{digits}f}]" if low is not None and high is not None else ""
    return f"{value:.{digits}f}{interval} {unit}".rstrip()


def _measure(record: dict[str, Any], prefix: str, kind: str) -> str:
    """One precision figure in px, followed by its pm twin when calibrated."""
    text = format_interval(record, f"{prefix}_{kind}_px", "px")
    if _value(record, f"{prefix}_{kind}_pm") is not None:
        text += f" = {format_interval(record, f'{prefix}_{kind}_pm', 'pm')}"
    return text


def sample_title(sample: str, precision: dict[str, Any]) -> str:
    """Sample, network, column count, status, and the precision figures with their 95% intervals."""
    n_columns = precision.get("n_columns")
    lines = [f"{sample}   |   network {precision.get('network')}   |   "
             f"{0 if n_columns is None else int(n_columns)} columns fitted   |   status: {precision.get('status')}"]
    first = " (frame 0)" if _value(precision, "series_n_frames") else ""  # a series: single-image figures of frame 0
    figures = [(prefix, f"{name}{first}") for prefix, name in PRECISION_FIGURES]
    figures.append(("series_precision", f"series precision ({_count(precision, 'series_n_frames')} frames)"))
    for prefix, name in figures:
        if _value(precision, f"{prefix}_raw_px") is not None:
            lines.append(f"{name}: raw {_measure(precision, prefix, 'raw')}   →   "
                         f"restored {_measure(precision, prefix, 'restored')}")
    gain = _value(precision, "precision_gain")
    if gain is not None:
        low, high = _value(precision, "precision_gain_ci_low"), _value(precision, "precision_gain_ci_high")
        interval = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
        lines.append(f"precision gain raw/restored ({precision.get('gain_basis')}-based): {gain:.2f}{interval}"
                     f"   →   restoration {_verdict_words(str(precision.get('verdict')))}")
        if precision.get("gain_basis") in TRUTH_FREE_BASES:
            # basis_note (summary) says more; the figure keeps the warning to one line.
            twin = _value(precision, "twin_gain")
            lines.append("truth-free basis: cannot see the network's prior, may overstate the gain"
                         + (f"; the twin (not validated here) says {twin:.2f}" if twin is not None else ""))
    else:
        lines.append("no precision figures for this sample (see status)")
    return "\n".join(lines)


def _verdict_words(verdict: str) -> str:
    return {"helps": "HELPS", "hurts": "HURTS", "inconclusive": "is INCONCLUSIVE"}.get(verdict, verdict)


def _save(figure: Figure, path: str | Path) -> None:
    """PNG without timestamp or software tag, so that reruns give identical files; atomic.

    Drawn once (savefig draws twice under a layout engine: once without rendering, only to run
    it) and, when opaque, written as RGB at zlib level 3: for a per-sample figure that is about
    half the encoding time of RGBA at the default level 6, and a smaller file.
    """
    with plt.rc_context(STYLE), atomic_path(path) as tmp:
        figure.canvas.draw()
        pixels = np.asarray(figure.canvas.buffer_rgba())
        if (pixels[..., 3] == 255).all():
            pixels = pixels[..., :3]
        # PIL writes no tIME or text chunk unless asked: no Software tag, no timestamp.
        Image.fromarray(pixels).save(tmp, format="png", compress_level=3, dpi=(figure.dpi, figure.dpi))
    plt.close(figure)


# --------------------------------------------------------------------------- per sample


def _column_marker_size(figure: Figure, image_shape: tuple[int, int], separation_px: float | None) -> float:
    """Scatter marker area (pt²) of about half the displayed column spacing."""
    if not separation_px:
        return 16.0
    panel_width_pt = figure.get_figwidth() * 72 / 3 * 0.85  # three image panels per row
    spacing_pt = panel_width_pt / max(image_shape) * separation_px
    return float(np.clip(0.5 * spacing_pt, 1.5, 9.0) ** 2)


def _draw_columns(axis: Any, columns: pd.DataFrame, kind: str, size: float, roles: np.ndarray | None = None,
                  left_out: pd.DataFrame | None = None) -> None:
    """Fitted positions by role: orange + for columns behind the local precision, cyan + for
    columns left out (border, no lattice neighbours), red x where this image's Gaussian fit
    failed, magenta o for candidate peaks that were not significant (not columns)."""
    if not columns.empty:
        ok = columns[f"fit_ok_{kind}"].astype(bool).to_numpy()
        x, y = columns[f"x_{kind}_px"].to_numpy(float), columns[f"y_{kind}_px"].to_numpy(float)
        role = np.where(ok, "used", "fit failed").astype(object) if roles is None else np.asarray(roles, dtype=object)
        role = np.where(~ok, "fit failed", role)
        for name in ("used", "border", "no neighbours", "fit failed"):
            pick = role == name
            if pick.any():
                colour, marker = ROLE_STYLES[name]
                factor = 1.5 if name == "fit failed" else 1.0
                axis.scatter(x[pick], y[pick], s=size * factor, c=colour, marker=marker,
                             linewidths=1.0 if name == "fit failed" else 0.8, label=name)
    if left_out is not None and len(left_out):
        colour, marker = ROLE_STYLES["not significant"]
        axis.scatter(left_out["x_px"].to_numpy(float), left_out["y_px"].to_numpy(float), s=size, facecolors="none",
                     edgecolors=colour, marker=marker, linewidths=0.8, label="not significant")


def displacement_vectors(columns: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Raw positions (N, 2) and displacements restored − raw (N, 2), for columns fitted on both images."""
    both = columns["fit_ok_raw"].astype(bool) & columns["fit_ok_restored"].astype(bool)
    chosen = columns[both]
    raw_xy = chosen[["x_raw_px", "y_raw_px"]].to_numpy(float)
    restored_xy = chosen[["x_restored_px", "y_restored_px"]].to_numpy(float)
    return raw_xy, restored_xy - raw_xy


def displacement_map(image_shape: tuple[int, int], positions: np.ndarray, values: np.ndarray,
                     radius_px: float) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Each point of a grid over the image takes the value of its nearest column (a Voronoi map),
    masked (NaN) farther than ``radius_px`` from any column. Returns the map and its imshow extent."""
    rows, cols = image_shape
    step = max(1, math.ceil(max(rows, cols) / MAX_MAP_SIDE))
    grid_y, grid_x = np.mgrid[0:rows:step, 0:cols:step]
    distance, nearest = cKDTree(positions).query(np.column_stack([grid_x.ravel(), grid_y.ravel()]))
    field = values[nearest].astype(np.float64)
    field[distance > radius_px] = np.nan
    field = field.reshape(grid_x.shape)
    extent = (-0.5, grid_x.shape[1] * step - 0.5, grid_y.shape[0] * step - 0.5, -0.5)
    return field, extent


def _plot_displacements(figure: Figure, axis: Any, restored: np.ndarray, columns: pd.DataFrame,
                        separation_px: float | None, pixel_size_pm: float | None, limits: tuple[float, float],
                        bar_axis: Any) -> None:
    """Colour map of |restored − raw| per column, with arrows for the direction (magnified);
    its colour bar in ``bar_axis`` (hidden when there is nothing to show)."""
    axis.set_axis_off()
    raw_xy, delta = displacement_vectors(columns) if not columns.empty else (np.empty((0, 2)), np.empty((0, 2)))
    if len(delta) == 0:
        axis.set_title("where restoration moved each column (restored − raw fit)")
        axis.text(0.5, 0.5, "no column fitted on both images", ha="center", va="center", transform=axis.transAxes)
        bar_axis.set_axis_off()
        return
    axis.imshow(restored, cmap="gray", vmin=limits[0], vmax=limits[1], alpha=0.35)
    magnitude = np.hypot(delta[:, 0], delta[:, 1])
    spacing = separation_px
    if not spacing:  # no spacing from the fit: the median nearest-neighbour distance
        spacing = float(np.median(cKDTree(raw_xy).query(raw_xy, k=2)[0][:, 1])) if len(raw_xy) > 1 else 10.0
    field, extent = displacement_map(restored.shape, raw_xy, magnitude, 0.5 * spacing)
    top = max(float(np.percentile(magnitude, 99)), 1e-3)
    shown = axis.imshow(field, cmap="viridis", vmin=0, vmax=top, extent=extent, alpha=0.85, interpolation="nearest")
    label = "|restored − raw| fitted position (px)"
    if pixel_size_pm:
        label += f"\n1 px = {pixel_size_pm:.4g} pm"
    figure.colorbar(shown, cax=bar_axis, label=label, extend="max")
    # Arrows magnified so that a 95th-percentile displacement spans 0.8 column spacings.
    typical = max(float(np.percentile(magnitude, 95)), 1e-3)
    magnification = 0.8 * spacing / typical
    axis.quiver(raw_xy[:, 0], raw_xy[:, 1], delta[:, 0], delta[:, 1], angles="xy", scale_units="xy",
                scale=1.0 / magnification, color="white", edgecolor="black", linewidth=0.3,
                width=0.0035, headwidth=3.5, headlength=4, minlength=0)
    mean = delta.mean(axis=0)
    axis.set_title(f"where restoration moved each column (restored − raw fit)\n"
                   f"arrows ×{magnification:.3g}; mean shift ({mean[0]:+.3f}, {mean[1]:+.3f}) px; "
                   f"n={len(delta)}", fontsize=8.5)


def sample_residuals(columns: pd.DataFrame, image_shape: tuple[int, int],
                     separation_px: float | None) -> dict[str, np.ndarray] | None:
    """Per-column local errors sqrt(m_i) (px), raw and restored, as remflow.precision.local
    computes them for the local precision (same columns, same pairs); None without any."""
    if columns.empty or not separation_px:
        return None
    errors = local_errors(columns, image_shape=image_shape, separation_px=separation_px)
    if len(errors.rows) == 0:
        return None
    return {kind: np.sqrt(errors.squared[:, index]) for index, kind in enumerate(("raw", "restored"))}


def _plot_residuals(axis: Any, residuals: dict[str, np.ndarray] | None, pixel_size_pm: float | None,
                    status: str) -> None:
    """Histograms of each column's local error (vs the midpoint of its opposite neighbours), raw and restored."""
    axis.set_title("local error of each column: deviation from the midpoint of opposite\n"
                   "neighbours / sqrt(1.5) (what the local precision averages)", fontsize=8.5)
    if not residuals:
        axis.set_axis_off()
        axis.text(0.5, 0.5, f"no local errors:\n{status}", ha="center", va="center", wrap=True,
                  transform=axis.transAxes)
        return
    upper = float(np.percentile(np.concatenate([residuals["raw"], residuals["restored"]]), 99.5))
    bins = np.linspace(0.0, max(upper, 1e-3), 36)
    for kind in ("raw", "restored"):
        values = residuals[kind]
        rms = float(np.sqrt(np.mean(values**2)))
        axis.hist(np.clip(values, 0, bins[-1]), bins=bins, histtype="stepfilled", alpha=0.3, color=KIND_COLOURS[kind])
        axis.hist(np.clip(values, 0, bins[-1]), bins=bins, histtype="step", linewidth=1.5, color=KIND_COLOURS[kind],
                  label=f"{kind}: RMS {rms:.3f} px (n={len(values)})")
        axis.axvline(rms, color=KIND_COLOURS[kind], linestyle="--", linewidth=1)
    axis.legend(title="dashed: RMS", loc="upper right")
    axis.set_xlabel("local radial error (px); last bin holds larger values")
    axis.set_ylabel("number of columns")
    axis.set_xlim(0, bins[-1])
    if pixel_size_pm:
        top = axis.secondary_xaxis("top", functions=(lambda px: px * pixel_size_pm, lambda pm: pm / pixel_size_pm))
        top.set_xlabel("distance (pm)")


def _count(record: dict[str, Any], name: str) -> str:
    value = _value(record, name)
    return "n/a" if value is None else str(int(value))


def figure_notes(precision: dict[str, Any], pixel_size_pm: float | None, separation_px: float | None) -> str:
    """The numbers behind the figure, as plain text lines."""
    lines = [f"pixel size: {pixel_size_pm:.4g} pm" if pixel_size_pm else "pixel size: uncalibrated (px only)",
             f"column spacing: {separation_px:.2f} px" if separation_px else "column spacing: n/a",
             f"columns fitted: {_count(precision, 'n_columns')}, "
             f"used for precision: {_count(precision, 'n_columns_used')}",
             f"with lattice neighbours (local): {_count(precision, 'n_columns_local')}, "
             f"peaks not significant: {_count(precision, 'n_not_significant')}"]
    for kind in ("raw", "restored"):
        missed, spurious = precision.get(f"n_missed_{kind}"), precision.get(f"n_spurious_{kind}")
        if missed is not None:
            lines.append(f"{kind}: {missed} true columns missed, {spurious} spurious")
    if _value(precision, "mse_reduction") is not None:
        lines.append(f"MSE to noise-free reference: raw/restored = {precision['mse_reduction']:.3g}x")
    lines += ["",
              "local precision: RMS deviation of each column",
              "  from the midpoint of opposite neighbours,",
              "  / sqrt(1.5); blind to smooth strain, bending,",
              "  domains, drift; sees line jitter; cannot tell",
              "  static real displacements from noise.",
              "global lattice RMS: distance from one ideal",
              "  lattice; includes real structure and scan",
              "  distortion (second figure, not the verdict).",
              "truth RMSE: RMS distance from true positions.",
              "markers: orange used, cyan border/no neighbours,",
              "  red x fit failed, magenta o not significant.",
              "gain = error raw / error restored (>1: better).",
              "[ ]: 95% paired bootstrap interval over columns.",
              "verdict helps/hurts only when the whole gain",
              "  interval lies above/below 1."]
    return "\n".join(lines)


#: Room (inches) of the per-sample figure's fixed layout: titles, colour bars and axis labels get
#: room sized for the longest text they carry (checked by tests/test_figures.py for overlaps),
#: the images get the rest. Why fixed: constrained layout measured every text twice per figure
#: (0.6 s of a 1.2 s figure under cProfile; 1.0 -> 0.7 CPU s per figure in
#: bench_workflow_overhead), the largest per-image cost of a dataset run after restoration and fitting.
#: The columns are a third of the figure's width each (SAMPLE_FIGURE_SIZE_IN).
_LAYOUT_IN = {"top": 0.08, "title_line": 0.2, "title_gap": 0.12, "image_title": 0.3,
              "bar_gap": 0.1, "bar": 0.14, "bar_labels": 0.5, "row2_head": 0.95, "row3_head": 0.5,
              "bottom_labels": 0.5, "column": SAMPLE_FIGURE_SIZE_IN[0] / 3, "side": 0.15, "y_labels": 0.8, "map_bar_room": 1.05}


def _sample_axes(figure: Figure, title_lines: int, series: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """Axes (rows x 3) and colour-bar axes ("intensity", "difference", "displacement") of the
    per-sample figure, placed at fixed positions (:data:`_LAYOUT_IN`) below a title of
    ``title_lines`` lines; a third, shorter row for a frame series. The axes are created in
    reading order (raw, restored, difference first)."""
    width, height = figure.get_size_inches()
    room = _LAYOUT_IN
    column, side = room["column"], room["side"]

    def add(left: float, top: float, w: float, h: float) -> Any:
        # inches from the figure's left and top edges
        return figure.add_axes((left / width, 1.0 - (top + h) / height, w / width, h / height))

    head = room["top"] + title_lines * room["title_line"] + room["title_gap"]
    bar_block = room["bar_gap"] + room["bar"] + room["bar_labels"]
    fixed = head + room["image_title"] + bar_block + room["row2_head"] + room["bottom_labels"]
    if series:
        fixed += room["row3_head"] + room["bottom_labels"]
    image_height = (height - fixed) / (2.7 if series else 2.0)
    if image_height <= 0.5:
        raise ValueError(f"a title of {title_lines} lines leaves no room for the images")
    axes = np.empty((3 if series else 2, 3), dtype=object)
    top = head + room["image_title"]
    for index in range(3):
        axes[0, index] = add(index * column + side, top, column - 2 * side, image_height)
    bar_top = top + image_height + room["bar_gap"]
    bars = {"intensity": add(0.2 * 2 * column, bar_top, 0.6 * 2 * column, room["bar"]),
            "difference": add(2 * column + 0.1 * column, bar_top, 0.8 * column, room["bar"])}
    top = bar_top + room["bar"] + room["bar_labels"] + room["row2_head"]
    map_width = column - side - room["map_bar_room"]
    axes[1, 0] = add(side, top, map_width, image_height)
    axes[1, 1] = add(column + room["y_labels"], top, column - room["y_labels"] - side, image_height)
    axes[1, 2] = add(2 * column + side, top, column - 2 * side, image_height)
    bars["displacement"] = add(side + map_width + 0.1, top + 0.075 * image_height, 0.15, 0.85 * image_height)
    if series:
        top += image_height + room["bottom_labels"] + room["row3_head"]
        small = 0.7 * image_height
        for index in range(2):
            axes[2, index] = add(index * column + room["y_labels"], top, column - room["y_labels"] - side, small)
        axes[2, 2] = add(2 * column + side, top, column - 2 * side, small)
    return axes, bars


def plot_sample(raw: np.ndarray, restored: np.ndarray, columns: pd.DataFrame, precision: dict[str, Any],
                path: str | Path, *, pixel_size_pm: float | None, separation_px: float | None = None,
                residuals: dict[str, np.ndarray] | None = None, left_out: pd.DataFrame | None = None,
                series: bool = False) -> None:
    """Write the per-sample figure (see :func:`sample_figure`) as a PNG to ``path``."""
    _save(sample_figure(raw, restored, columns, precision, pixel_size_pm=pixel_size_pm, separation_px=separation_px,
                        residuals=residuals, left_out=left_out, series=series), path)


def sample_figure(raw: np.ndarray, restored: np.ndarray, columns: pd.DataFrame, precision: dict[str, Any], *,
                  pixel_size_pm: float | None, separation_px: float | None = None,
                  residuals: dict[str, np.ndarray] | None = None, left_out: pd.DataFrame | None = None,
                  series: bool = False) -> Figure:
    """The per-sample figure.

    Top: raw | restored | raw − restored, raw and restored on one robust intensity scale,
    fitted columns overlaid, scale bar when calibrated. Bottom: displacement of each
    column's fit (restored − raw), distributions of local errors raw vs restored, and
    the numbers. ``residuals`` default to :func:`sample_residuals` of ``columns``. Columns are
    marked by role (:data:`ROLE_STYLES`); ``left_out`` (x_px, y_px) are candidate peaks that
    were not significant. Images are shown as recorded (dark columns stay dark).
    With ``series`` (a frame series: ``raw``/``restored`` are the registered mean frames and
    ``columns`` the mean positions, see :func:`remflow.frames.mean_frame_view`) a third row
    shows the per-frame drift and the per-frame scatter (:func:`plot_series_panels`).
    """
    raw = np.asarray(raw, dtype=np.float64)
    restored = np.asarray(restored, dtype=np.float64)
    if raw.shape != restored.shape:
        raise ValueError(f"raw {raw.shape} and restored {restored.shape} images differ in shape")
    status_ok = str(precision.get("status")) == "ok" or str(precision.get("status")).startswith("ok (")
    if residuals is None and status_ok:
        residuals = sample_residuals(columns, raw.shape, separation_px)
    roles = (column_roles(columns, image_shape=raw.shape, separation_px=separation_px)
             if separation_px and not columns.empty else None)
    title = sample_title(str(precision.get("sample")), precision)
    with plt.rc_context(STYLE):
        rows = 3 if series else 2
        size = (SAMPLE_FIGURE_SIZE_IN[0], SAMPLE_FIGURE_SIZE_IN[1] * rows / 2)
        figure = plt.figure(figsize=size)
        axes, bars = _sample_axes(figure, title.count("\n") + 1, series)
        limits = robust_limits(raw, restored)
        marker = _column_marker_size(figure, raw.shape, separation_px)
        for axis, image, kind in ((axes[0, 0], raw, "raw"), (axes[0, 1], restored, "restored")):
            shown = axis.imshow(image, cmap="gray", vmin=limits[0], vmax=limits[1])
            _draw_columns(axis, columns, kind, marker, roles, left_out)
            add_scale_bar(axis, image.shape, pixel_size_pm)
            axis.set_title(f"{kind}" + (" + fitted columns" if not columns.empty else ""))
            axis.set_axis_off()
        figure.colorbar(shown, cax=bars["intensity"], orientation="horizontal",
                        label=f"intensity (file units), one scale for raw and restored: "
                              f"{INTENSITY_PERCENTILES[0]}–{INTENSITY_PERCENTILES[1]} percentiles of both")
        difference = raw - restored
        bound = max(abs(v) for v in robust_limits(difference, low=1, high=99)) or 1.0
        shown = axes[0, 2].imshow(difference, cmap="RdBu_r", vmin=-bound, vmax=bound)
        add_scale_bar(axes[0, 2], difference.shape, pixel_size_pm)
        axes[0, 2].set_title("raw − restored: what restoration removed")
        axes[0, 2].set_axis_off()
        bar = figure.colorbar(shown, cax=bars["difference"], orientation="horizontal",
                              label="intensity difference (file units; 1–99 percentile range)", extend="both")
        bar.locator = MaxNLocator(5, symmetric=True)
        bar.update_ticks()
        _plot_displacements(figure, axes[1, 0], restored, columns, separation_px, pixel_size_pm, limits,
                            bars["displacement"])
        _plot_residuals(axes[1, 1], residuals, pixel_size_pm, str(precision.get("status")))
        axes[1, 2].set_axis_off()
        axes[1, 2].text(0.0, 1.0, figure_notes(precision, pixel_size_pm, separation_px), va="top", ha="left",
                        family="DejaVu Sans Mono", fontsize=8.5, transform=axes[1, 2].transAxes)
        if series:
            plot_series_panels(axes[2, 0], axes[2, 1], axes[2, 2], precision)
            for axis in axes[0, :2]:
                axis.set_title(axis.get_title() + " (registered mean of the frames)")
        figure.suptitle(title, fontsize=11, y=1.0 - _LAYOUT_IN["top"] / size[1], va="top")
    return figure


def no_columns_figure(raw: np.ndarray, restored: np.ndarray, precision: dict[str, Any], *,
                      pixel_size_pm: float | None) -> Figure:
    """The figure of an image without atom columns (SEM, LR, or none found): raw | restored |
    raw − restored, each titled with its pixel noise (:func:`remflow.cleaning.noise_sigma`,
    file units), so that what restoration removed is visible without any empty panel."""
    from remflow.cleaning import noise_sigma

    raw = np.asarray(raw, dtype=np.float64)
    restored = np.asarray(restored, dtype=np.float64)
    if raw.shape != restored.shape:
        raise ValueError(f"raw {raw.shape} and restored {restored.shape} images differ in shape")
    difference = raw - restored
    sigma = {"raw": precision.get("noise_sigma_raw"), "restored": precision.get("noise_sigma_restored")}
    sigma = {k: (v if v is not None else noise_sigma(image)) for (k, v), image in zip(sigma.items(), (raw, restored))}
    ratio = sigma["raw"] / sigma["restored"] if sigma["restored"] else float("inf")
    rows, cols = raw.shape
    width = 15.0
    height = min(9.0, max(3.8, width / 3 * rows / max(cols, 1) + 1.8))
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(1, 3, figsize=(width, height), layout="constrained")
        limits = robust_limits(raw, restored)
        for axis, image, kind in ((axes[0], raw, "raw"), (axes[1], restored, "restored")):
            shown = axis.imshow(image, cmap="gray", vmin=limits[0], vmax=limits[1])
            add_scale_bar(axis, image.shape, pixel_size_pm)
            axis.set_title(f"{kind}: pixel noise σ ≈ {sigma[kind]:.4g} (file units)")
            axis.set_axis_off()
        figure.colorbar(shown, ax=axes[:2], location="bottom", shrink=0.6, aspect=40,
                        label="intensity (file units), one scale for raw and restored")
        bound = max(abs(v) for v in robust_limits(difference, low=1, high=99)) or 1.0
        shown = axes[2].imshow(difference, cmap="RdBu_r", vmin=-bound, vmax=bound)
        add_scale_bar(axes[2], difference.shape, pixel_size_pm)
        axes[2].set_title(f"raw − restored: std {float(difference.std()):.4g}; noise reduced {ratio:.3g}x")
        axes[2].set_axis_off()
        figure.colorbar(shown, ax=axes[2], location="bottom", shrink=0.8, aspect=30,
                        label="intensity difference (file units; 1–99 percentile range)", extend="both")
        figure.suptitle(f"{precision.get('sample')}   |   network {precision.get('network')}   |   "
                        f"status: {precision.get('status')}\nno atom columns: no precision figures; noise σ is "
                        "the wavelet estimate of the pixel noise (Donoho), smooth structure excluded", fontsize=10)
    return figure


def plot_no_columns(raw: np.ndarray, restored: np.ndarray, precision: dict[str, Any], path: str | Path, *,
                    pixel_size_pm: float | None) -> None:
    """Write :func:`no_columns_figure` as a PNG to ``path``."""
    _save(no_columns_figure(raw, restored, precision, pixel_size_pm=pixel_size_pm), path)
def plot_series_panels(drift_axis: Any, scatter_axis: Any, text_axis: Any, precision: dict[str, Any]) -> None:
    """A frame series' per-frame panels: drift (mean column shift from frame 0, x and y, raw and
    restored) and the per-frame scatter from each column's mean (``series_frame_rms_*``, scaled
    as the series figure, whose value is the dashed line), plus what the figure can and cannot see."""
    for kind in ("raw", "restored"):
        drift = precision.get(f"series_drift_{kind}_px")
        if drift:
            drift = np.asarray(drift, dtype=np.float64)
            frames = np.asarray(precision.get("series_frames") or np.arange(len(drift)))
            style = "-" if kind == "raw" else ":"
            drift_axis.plot(frames, drift[:, 0], style, marker="o", color="#2ca02c", label=f"x, {kind}")
            drift_axis.plot(frames, drift[:, 1], style, marker="s", color="#9467bd", label=f"y, {kind}")
        values = precision.get(f"series_frame_rms_{kind}_px")
        if values:
            frames = np.asarray(precision.get("series_frames") or np.arange(len(values)))
            scatter_axis.plot(frames, values, "-o", color=KIND_COLOURS[kind], label=f"{kind}")
            total = _value(precision, f"series_precision_{kind}_px")
            if total is not None:
                scatter_axis.axhline(total, color=KIND_COLOURS[kind], linestyle="--", linewidth=1)
    drift_axis.set_title("drift: mean column shift from the first frame")
    drift_axis.set_xlabel("frame")
    drift_axis.set_ylabel("shift (px)")
    scatter_axis.set_title("per-frame scatter of each column about its mean position\n"
                           "(dashed: series precision over all frames)")
    scatter_axis.set_xlabel("frame")
    scatter_axis.set_ylabel("RMS deviation, radial (px)")
    for axis in (drift_axis, scatter_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(True, alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="best", fontsize=8)
        else:
            axis.text(0.5, 0.5, "too few columns seen in several frames", ha="center", va="center", transform=axis.transAxes)
    text_axis.set_axis_off()
    text_axis.text(0.0, 1.0, "\n".join([
        f"frame series: {_count(precision, 'series_n_frames')} frames, "
        f"{_count(precision, 'series_n_columns_used')} columns (each in >= half the frames)",
        f"series precision raw: {_measure(precision, 'series_precision', 'raw')}",
        f"series precision restored: {_measure(precision, 'series_precision', 'restored')}",
        f"series gain: {format_interval(precision, 'series_gain', '')} -> {precision.get('series_verdict') or 'n/a'}",
        "",
        "series precision: each column's radial RMS",
        "  scatter about its own mean over the frames,",
        "  after removing each frame's drift.",
        "Sees: shot noise, fit error, scan jitter,",
        "  drift that differs between frames.",
        "Cannot see: anything repeated in every frame:",
        "  static fit bias, a network prior that is the",
        "  same each frame, scan distortion identical in",
        "  all frames, real static displacements.",
        "Images above: registered mean of the frames."]),
        va="top", ha="left", family="DejaVu Sans Mono", fontsize=8.5, transform=text_axis.transAxes)


# --------------------------------------------------------------------------- dataset


def _plain_log_axis(axis: Any, which: str = "y", subs: tuple[float, ...] = (1.0, 2.0, 5.0)) -> None:
    """Log axis with plain numbers (0.5, 1, 2) instead of 10^x labels."""
    target = axis.yaxis if which == "y" else axis.xaxis
    target.set_major_locator(LogLocator(base=10, subs=subs))
    target.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    target.set_minor_formatter(NullFormatter())


def plot_gain(summary: pd.DataFrame, path: str | Path) -> None:
    """Write the precision-gain plot (see :func:`gain_figure`) as a PNG to ``path``."""
    _save(gain_figure(summary), path)


def gain_figure(summary: pd.DataFrame) -> Figure:
    """Precision gain (raw/restored) per sample with its 95% interval, coloured by verdict, log axis.

    Samples without a gain (rejected, no lattice, too few columns) are named below the plot.
    """
    if "precision_gain" in summary:
        gains = pd.to_numeric(summary["precision_gain"], errors="coerce")
    else:
        gains = pd.Series(np.nan, index=summary.index)
    has_gain = gains.notna() & np.isfinite(gains) & (gains > 0)
    rows = summary[has_gain].reset_index(drop=True)
    skipped = summary[~has_gain]
    with plt.rc_context(STYLE):
        figure, axis = plt.subplots(figsize=(max(7.0, 0.6 * len(rows) + 4.0), 5.5), layout="constrained")
        for index, row in rows.iterrows():
            gain = float(row["precision_gain"])
            low = _value(row, "precision_gain_ci_low")
            high = _value(row, "precision_gain_ci_high")
            low = gain if low is None else low
            high = gain if high is None else high
            marker = {"truth": "D", "local": "o", "series": "s"}.get(str(row.get("gain_basis")), "v")
            axis.errorbar(index, gain, yerr=[[max(gain - low, 0.0)], [max(high - gain, 0.0)]], fmt=marker, markersize=7,
                          color=VERDICT_COLOURS.get(str(row.get("verdict")), "black"), capsize=5, elinewidth=1.5)
        axis.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        axis.set_xticks(range(len(rows)), [str(name) for name in rows["sample"]], rotation=40, ha="right")
        axis.set_xlim(-0.7, max(len(rows) - 0.3, 0.7))
        axis.set_yscale("log")
        _plain_log_axis(axis, "y", subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0))
        axis.grid(True, axis="y", which="major", alpha=0.3)
        axis.set_ylabel("precision gain = position error raw / restored\n(> 1: restoration helps; log scale)")
        for verdict, colour in VERDICT_COLOURS.items():
            axis.plot([], [], "s", color=colour, label=verdict)
        axis.plot([], [], "o", color="black", fillstyle="none", label="local-precision-based")
        axis.plot([], [], "D", color="black", fillstyle="none", label="truth-based")
        axis.plot([], [], "s", color="black", fillstyle="none", label="frame-series-based")
        axis.legend(title="verdict (95% CI) / basis", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        axis.set_title("Precision gain per sample, with 95% paired-bootstrap intervals")
        if rows.empty:
            axis.text(0.5, 0.5, "no sample has a precision gain", ha="center", va="center", transform=axis.transAxes)
        if len(skipped):
            _footnote(figure, "not shown (no gain): "
                      + "; ".join(f"{row['sample']}: {row['status']}" for _, row in skipped.iterrows()))
    return figure


def _footnote(figure: Figure, text: str, max_lines: int = 8) -> None:
    """Wrapped text under the axes; the layout leaves room for exactly its lines."""
    width_chars = int(figure.get_figwidth() * 72 / 4.6)  # ~4.6 pt per character at 8 pt
    lines = textwrap.wrap(text, width_chars)
    if len(lines) > max_lines:
        lines = lines[:max_lines - 1] + ["… (see the summary table)"]
    figure.text(0.01, 0.005, "\n".join(lines), ha="left", va="bottom", fontsize=8)
    height = (len(lines) * 10.5 + 6) / (figure.get_figheight() * 72)
    figure.get_layout_engine().set(rect=(0, height, 1, 1 - height))


def radial_crlb(table: pd.DataFrame) -> tuple[np.ndarray, str]:
    """The Cramér-Rao bound on an RMS *distance* sqrt(mean(dx² + dy²)), the quantity truth RMSE is.

    Uses ``crlb_radial_px`` when present; otherwise ``crlb_px``, which remflow.crlb defines as
    the per-axis bound sqrt((var_x + var_y) / 2), times √2.
    """
    if "crlb_radial_px" in table:
        return table["crlb_radial_px"].to_numpy(float), "Cramér-Rao lower bound (raw image model)"
    bound = math.sqrt(2.0) * table["crlb_px"].to_numpy(float)
    return bound, "Cramér-Rao lower bound (raw image model, √2 × per axis)"


def plot_precision_vs_dose(table: pd.DataFrame, path: str | Path) -> None:
    """Write the precision-vs-dose plot (see :func:`dose_figure`) as a PNG to ``path``."""
    _save(dose_figure(table), path)


def dose_figure(table: pd.DataFrame) -> Figure:
    """Truth RMSE of raw and restored fits against dose, with the Cramér-Rao bound (log-log)."""
    table = table.sort_values("dose_e_per_A2")
    dose = table["dose_e_per_A2"].to_numpy(float)
    with plt.rc_context(STYLE):
        figure, axis = plt.subplots(figsize=(7.5, 5.5), layout="constrained")
        for kind, marker in (("raw", "o"), ("restored", "s")):
            value = pd.to_numeric(table[f"truth_rmse_{kind}_px"], errors="coerce").to_numpy(float)
            low = pd.to_numeric(table.get(f"truth_rmse_{kind}_px_ci_low", table[f"truth_rmse_{kind}_px"]),
                                errors="coerce").to_numpy(float)
            high = pd.to_numeric(table.get(f"truth_rmse_{kind}_px_ci_high", table[f"truth_rmse_{kind}_px"]),
                                 errors="coerce").to_numpy(float)
            error = [np.nan_to_num(np.clip(value - low, 0, None)), np.nan_to_num(np.clip(high - value, 0, None))]
            axis.errorbar(dose, value, yerr=error, fmt=f"-{marker}", color=KIND_COLOURS[kind], capsize=3,
                          label=f"{kind}: truth RMSE with 95% CI")
        bound, label = radial_crlb(table)
        axis.plot(dose, bound, "k--", label=label)
        axis.set_xscale("log")
        axis.set_yscale("log")
        _plain_log_axis(axis, "y", subs=(1.0, 2.0, 3.0, 5.0))
        _plain_log_axis(axis, "x")
        axis.set_xlabel("electron dose (e⁻/Å²)")
        axis.set_ylabel("RMS distance of fitted from true positions (px)")
        axis.set_title("Synthetic lattice: position error against dose")
        axis.legend(loc="upper right")
        axis.grid(True, which="both", alpha=0.3)
    return figure


# --------------------------------------------------------------------------- summary table

#: (heading, value column or prefix, kind) of the table's main view; kind "ci" shows value [low, high].
_TABLE_LAYOUT = [
    ("sample", "sample", "text"), ("verdict", "verdict", "text"),
    ("precision gain raw/restored", "precision_gain", "ci"), ("gain basis", "gain_basis", "text"),
    ("basis note", "basis_note", "text"),
    ("status", "status", "text"), ("network", "network", "text"),
    ("pixel size (pm)", "pixel_size_pm", "number"), ("columns fitted", "n_columns", "int"),
    ("columns used", "n_columns_used", "int"),
    *[(f"{name} {kind} ({unit})", f"{prefix}_{kind}_{unit}", "ci")
      for unit in ("px", "pm") for prefix, name in (*PRECISION_FIGURES, ("series_precision", "series precision"))
      for kind in ("raw", "restored")],
    ("frames", "series_n_frames", "int"), ("series gain", "series_gain", "ci"),
    *[(f"twin error {kind} (px)", f"twin_error_{kind}_px", "ci") for kind in ("raw", "restored")],
    ("twin verdict", "twin_verdict", "text"), ("CRLB radial (px)", "crlb_radial_px", "number"),
    ("restored error / CRLB", "error_over_crlb_restored", "number"), ("CRLB note", "crlb_note", "text"),
]

_TABLE_CSS = """
body { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 13px; margin: 12px; color: #111; background: #fff; }
h1 { font-size: 16px; }
table { border-collapse: collapse; margin-bottom: 16px; }
th, td { border: 1px solid #bbb; padding: 3px 6px; text-align: right; white-space: nowrap; }
th { background: #eee; position: sticky; top: 0; }
td.text { text-align: left; white-space: normal; max-width: 28em; }
table.full td { white-space: normal; max-width: 28em; }
tr.rejected td { background: #fdecea; }
tr.nolattice td { background: #fff7e0; }
td.helps { color: #fff; background: #1a9850; font-weight: bold; }
td.hurts { color: #fff; background: #d73027; font-weight: bold; }
td.inconclusive { color: #fff; background: #7f7f7f; font-weight: bold; }
.ci { color: #555; }
p.note { max-width: 60em; }
"""


def _format_number(value: float) -> str:
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


def _cell(row: pd.Series, column: str, kind: str) -> tuple[str, str]:
    """HTML content and class of one cell."""
    if kind == "text":
        value = row.get(column)
        text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
        css = f"text {text}" if column == "verdict" and text else "text"
        return html.escape(text), css
    value = _value(row, column)
    if value is None:
        return "", "number"
    if kind == "int":
        return str(int(round(value))), "number"
    content = html.escape(_format_number(value))
    low, high = _value(row, f"{column}_ci_low"), _value(row, f"{column}_ci_high")
    if kind == "ci" and low is not None and high is not None:
        content += f' <span class="ci">[{html.escape(_format_number(low))}, {html.escape(_format_number(high))}]</span>'
    return content, "number"


def _row_class(row: pd.Series) -> str:
    status = str(row.get("status") or "")
    if status.startswith("rejected"):
        return "rejected"
    return "nolattice" if not (status == "ok" or status.startswith("ok (")) else ""


def summary_table_html(summary: pd.DataFrame, path: str | Path) -> None:
    """results/summary.csv as a self-contained HTML page: the main figures with 95% intervals
    (columns with no value in any row are left out), rejected and lattice-less samples shaded,
    then every column of the CSV."""
    layout = [entry for entry in _TABLE_LAYOUT
              if entry[1] in summary.columns and (entry[2] == "text" or summary[entry[1]].notna().any())]
    head = "".join(f"<th>{html.escape(heading)}</th>" for heading, _, _ in layout)
    body = []
    for _, row in summary.iterrows():
        cells = "".join('<td class="{1}">{0}</td>'.format(*_cell(row, column, kind)) for _, column, kind in layout)
        body.append(f'<tr class="{_row_class(row)}" data-sample="{html.escape(str(row.get("sample")))}">{cells}</tr>')
    full = summary.to_html(index=False, na_rep="", float_format=_format_number, border=0, classes="full",
                           table_id="summary-all-columns")
    counts = summary["verdict"].value_counts().to_dict() if "verdict" in summary else {}
    rejected = int(summary["status"].astype(str).str.startswith("rejected").sum()) if "status" in summary else 0
    overview = (f"{len(summary)} samples: {rejected} rejected; verdicts "
                + ", ".join(f"{name} {counts.get(name, 0)}" for name in VERDICT_COLOURS))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>remflow summary</title><style>{_TABLE_CSS}</style></head>
<body>
<h1>remflow summary: precision of fitted column positions, raw vs restored</h1>
<p class="note">{html.escape(overview)}. Values: estimate [95% paired-bootstrap interval]. Local precision
is the RMS deviation of each column from the midpoint of its opposite neighbours (divided by sqrt(1.5)), blind to
smooth strain, bending, domains and drift; global lattice RMS and truth RMSE are RMS distances of fitted column
positions from one ideal lattice and from the true positions; precision gain = error raw / error restored
(truth-based where true positions are known, else local-precision-based). Red rows: rejected input; yellow
rows: no precision figures (status says why).</p>
<table id="summary-table"><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
<h1>All columns of summary.csv</h1>
{full}
</body></html>
"""
    write_text(path, page)
