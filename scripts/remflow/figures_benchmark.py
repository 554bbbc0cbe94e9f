"""Figures of the restoration-methods benchmark (:mod:`remflow.benchmark`).

Written with the Agg backend and fixed style settings, without timestamps in the PNG, so the
same tables give the same files; written atomically. Inputs are methods_summary.csv (one row
per method, truth kind and dose, means over images with 95 % t intervals) and the panel of
images that :func:`remflow.benchmark.run_benchmark` keeps.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from remflow.atomic import atomic_path  # noqa: E402

METHOD_COLOURS = {"raw": "#1f77b4", "cnn": "#ff7f0e", "gaussian": "#2ca02c", "nlm": "#9467bd", "tv": "#8c564b",
                  "bragg": "#d62728", "bm3d": "#7f7f7f"}
METHOD_LABELS = {"raw": "raw", "cnn": "tk_r_em network", "gaussian": "Gaussian", "nlm": "non-local means",
                 "tv": "total variation", "bragg": "Bragg filter", "bm3d": "BM3D"}
STYLE = {"font.size": 8, "axes.titlesize": 8, "figure.dpi": 100, "savefig.dpi": 100, "font.family": "DejaVu Sans",
         "svg.hashsalt": "remflow"}
_PNG_METADATA = {"Software": None}


def _save(figure: Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", metadata=_PNG_METADATA)
    plt.close(figure)


def _grid(count: int) -> tuple[int, int]:
    cols = min(count, 4)
    return math.ceil(count / cols), cols


def _errorbars(group: pd.DataFrame, metric: str) -> np.ndarray | None:
    low, high = group[f"{metric}_ci_low"].to_numpy(float), group[f"{metric}_ci_high"].to_numpy(float)
    value = group[metric].to_numpy(float)
    if not np.isfinite(low).any():
        return None
    return np.vstack([np.where(np.isfinite(low), value - low, 0.0), np.where(np.isfinite(high), high - value, 0.0)])


def plot_error_vs_dose(summary: pd.DataFrame, path: str | Path) -> None:
    """Truth RMSE (px, log) against dose (e/Å², log) per method, one panel per truth kind, with the
    Cramér–Rao bound of the raw fit's columns (black dashes); bars: 95 % t intervals over images."""
    kinds = list(dict.fromkeys(summary["truth_kind"]))
    with plt.rc_context(STYLE):
        rows, cols = _grid(len(kinds))
        figure, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.9 * rows), squeeze=False, sharex=True)
        for axis, kind in zip(axes.flat, kinds):
            part = summary[summary["truth_kind"] == kind]
            for method, group in part.groupby("method", sort=False):
                group = group.sort_values("dose_e_per_A2")
                axis.errorbar(group["dose_e_per_A2"], group["truth_rmse_px"], yerr=_errorbars(group, "truth_rmse_px"),
                              marker="o", ms=3, lw=1, capsize=2, color=METHOD_COLOURS.get(method),
                              label=METHOD_LABELS.get(method, method))
            bound = part[part["method"] == "raw"].sort_values("dose_e_per_A2")
            axis.plot(bound["dose_e_per_A2"], bound["crlb_px"], "k--", lw=1, label="Cramér–Rao bound")
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_title(kind)
            axis.set_xlabel("dose (e/Å²)")
            axis.set_ylabel("truth RMSE (px)")
            axis.grid(True, which="major", lw=0.3)
        for axis in list(axes.flat)[len(kinds):]:
            axis.set_visible(False)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), frameon=False)
        figure.tight_layout(rect=(0, 0.07, 1, 1))
        _save(figure, path)


def plot_fidelity_vs_dose(summary: pd.DataFrame, path: str | Path) -> None:
    """Displacement fidelity slope (1 = kept, 0 = erased) against dose per method, one panel per
    truth kind with displacements, plus the recovered polar shift (measured / true) where there is one."""
    panels: list[tuple[str, str, str]] = []
    for kind in dict.fromkeys(summary["truth_kind"]):
        part = summary[summary["truth_kind"] == kind]
        if part["fidelity_slope"].notna().any():
            panels.append((kind, "fidelity_slope", f"{kind}: displacement kept"))
        if part["polar_recovered"].notna().any():
            panels.append((kind, "polar_recovered", f"{kind}: polar shift recovered"))
    if not panels:
        panels = [(summary["truth_kind"].iloc[0], "fidelity_slope", "no displacements in these truths")]
    with plt.rc_context(STYLE):
        rows, cols = _grid(len(panels))
        figure, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.9 * rows), squeeze=False, sharex=True)
        for axis, (kind, metric, title) in zip(axes.flat, panels):
            part = summary[summary["truth_kind"] == kind]
            for method, group in part.groupby("method", sort=False):
                group = group.sort_values("dose_e_per_A2")
                axis.errorbar(group["dose_e_per_A2"], group[metric], yerr=_errorbars(group, metric), marker="o",
                              ms=3, lw=1, capsize=2, color=METHOD_COLOURS.get(method),
                              label=METHOD_LABELS.get(method, method))
            axis.axhline(1.0, color="k", lw=0.8, ls="--")
            axis.axhline(0.0, color="k", lw=0.5, ls=":")
            axis.set_xscale("log")
            axis.set_title(title)
            axis.set_xlabel("dose (e/Å²)")
            axis.set_ylabel("measured / true" if metric == "polar_recovered" else "fidelity slope")
            axis.grid(True, which="major", lw=0.3)
        for axis in list(axes.flat)[len(panels):]:
            axis.set_visible(False)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="lower center", ncol=min(max(len(labels), 1), 7), frameon=False)
        figure.tight_layout(rect=(0, 0.07, 1, 1))
        _save(figure, path)


def plot_panel(images: dict[str, np.ndarray], info: dict[str, Any], path: str | Path) -> None:
    """The noise-free reference, the noisy image and every method's output of one image, on one
    intensity scale (0.5-99.5 percentiles of the reference and the noisy image together)."""
    names = ["reference", "noisy"] + [m for m in info.get("methods", []) if m in images and m != "raw"]
    values = np.concatenate([np.asarray(images[n], dtype=np.float64).ravel() for n in ("reference", "noisy")])
    low, high = np.percentile(values, [0.5, 99.5])
    if not high > low:
        low, high = float(values.min()), float(values.min()) + 1.0
    titles = {"reference": "noise-free", "noisy": "raw (noisy)"}
    with plt.rc_context(STYLE):
        rows, cols = _grid(len(names))
        figure, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 3.0 * rows), squeeze=False)
        for axis, name in zip(axes.flat, names):
            axis.imshow(images[name], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            axis.set_title(titles.get(name, METHOD_LABELS.get(name, name)))
            axis.set_axis_off()
        for axis in list(axes.flat)[len(names):]:
            axis.set_visible(False)
        figure.suptitle(f"truth '{info.get('truth_kind')}', {info.get('dose_e_per_A2', float('nan')):g} e/Å²")
        figure.tight_layout()
        _save(figure, path)
