"""Dataset figure of the noise twin: raw and restored position errors next to each image's CRLB."""

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
from remflow.precision.basis import twin_model_flags  # noqa: E402

KIND_COLOURS = {"raw": "#4d4d4d", "restored": "#2166ac"}


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def twin_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """Samples with a CRLB and errors on some basis (truth where known, else the twin), one row each:
    sample, basis, error/low/high/pi_low/pi_high per kind (px), crlb_radial_px."""
    rows = []
    for _, row in summary.iterrows():
        bound = _number(row.get("crlb_radial_px"))
        for basis, prefix in (("truth", "truth_rmse"), ("twin", "twin_error")):
            raw, restored = _number(row.get(f"{prefix}_raw_px")), _number(row.get(f"{prefix}_restored_px"))
            if raw is None or restored is None:
                continue
            label = basis
            flags = twin_model_flags(row.to_dict()) if basis == "twin" else None
            if flags:  # the twin of a model that does not hold for the image is shown, flagged, never bare
                label = f"twin, {flags}: unvalidated"
            entry = {"sample": row["sample"], "basis": label, "crlb_radial_px": bound}
            for kind in ("raw", "restored"):
                name = f"{prefix}_{kind}_px"
                entry[kind] = _number(row.get(name))
                entry[f"{kind}_low"] = _number(row.get(f"{name}_ci_low"))
                entry[f"{kind}_high"] = _number(row.get(f"{name}_ci_high"))
                # one image's 95 % prediction interval (twin only; truth is one image already)
                entry[f"{kind}_pi_low"] = _number(row.get(f"{name}_pi_low"))
                entry[f"{kind}_pi_high"] = _number(row.get(f"{name}_pi_high"))
            rows.append(entry)
            break
    return pd.DataFrame(rows)


def twin_figure(summary: pd.DataFrame) -> Figure:
    """Per sample: raw and restored error (truth RMSE where known, else the twin; 95 % intervals of
    the expected error, and as a pale band the twin's 95 % prediction interval for one image's
    error) and the image's radial Cramér-Rao bound (black bar); log axis."""
    table = twin_rows(summary)
    figure, axis = plt.subplots(figsize=(10.0, max(2.5, 0.45 * len(table) + 1.5)), layout="constrained")
    if table.empty:
        axis.text(0.5, 0.5, "no sample has twin or truth errors with a CRLB", ha="center", va="center")
        axis.set_axis_off()
        return figure
    positions = np.arange(len(table))
    for offset, kind in ((-0.15, "raw"), (0.15, "restored")):
        values = table[kind].to_numpy(float)
        pi_low, pi_high = table[f"{kind}_pi_low"].to_numpy(float), table[f"{kind}_pi_high"].to_numpy(float)
        shown = np.isfinite(pi_low) & np.isfinite(pi_high)
        axis.hlines(positions[shown] + offset, pi_low[shown], pi_high[shown], color=KIND_COLOURS[kind], alpha=0.35,
                    linewidth=4, label=f"{kind}: one image (twin, 95 %)" if shown.any() else None)
        low = np.nan_to_num(values - table[f"{kind}_low"].to_numpy(float), nan=0.0)
        high = np.nan_to_num(table[f"{kind}_high"].to_numpy(float) - values, nan=0.0)
        axis.errorbar(values, positions + offset, xerr=[np.clip(low, 0, None), np.clip(high, 0, None)], fmt="o",
                      color=KIND_COLOURS[kind], label=kind, capsize=2)
    bounds = table["crlb_radial_px"].to_numpy(float)
    axis.scatter(bounds, positions, marker="|", s=300, color="black", label="CRLB (radial)", zorder=3)
    axis.set_yticks(positions, [f"{s} ({b})" for s, b in zip(table["sample"], table["basis"])])
    axis.invert_yaxis()
    axis.set_xscale("log")
    axis.set_xlabel("RMS position error (px): truth where known, else the noise twin")
    axis.set_title("Position error of raw and restored fits\nagainst this image's Cramér-Rao bound", fontsize=10)
    axis.legend(loc="best", fontsize=8)
    axis.grid(True, axis="x", which="both", alpha=0.3)
    return figure


def plot_twin(summary: pd.DataFrame, path: str | Path) -> None:
    """Write :func:`twin_figure` as a PNG, atomically."""
    figure = twin_figure(summary)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    plt.close(figure)
