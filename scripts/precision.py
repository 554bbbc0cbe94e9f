"""Rule precision: local, global-lattice and truth precision of raw and restored fits, the gain and its verdict."""

import json

import hyperspy.api as hs
import numpy as np
import pandas as pd

from remflow.atomic import write_json
from remflow.cleaning import noise_sigma
from remflow.columns import status_ok
from remflow.ingest import read_sample_image
from remflow.precision import precision_summary
from remflow.precision.basis import apply_gain_basis
from remflow.precision.twin import efficiency
from remflow.precision.series import series_summary
from remflow.runlog import provenance, setup_logging

log = setup_logging(snakemake.log[0])
settings = snakemake.params.settings
row = snakemake.params.row
with open(snakemake.input.info) as handle:
    info = json.load(handle)
with open(snakemake.input.fit) as handle:
    fit = json.load(handle)
table = pd.read_csv(snakemake.input.columns)
truth = pd.read_csv(snakemake.input.truth) if snakemake.input.truth else None
record = {"sample": info["sample"], "network": info["network"], "pixel_size_pm": info["pixel_size_pm"],
          "n_columns": fit["n_columns"], "status": fit["status"], "n_not_significant": fit.get("n_not_significant"),
          "contrast": fit.get("contrast")}
# What ingest changed in the image travels to the summary.
record.update({key: info.get(key) for key in ("modality", "n_outlier_pixels", "data_bar_rows", "intensity_offset")})
record["signal"] = (info.get("signal") or {}).get("title")
if fit.get("n_frames"):
    record["series_n_frames"] = fit["n_frames"]
if status_ok(fit["status"]):
    pixel = info["pixel_size_pm"]
    if pixel is not None and info["pixel_size_x_pm"] != info["pixel_size_y_pm"]:
        pixel = (info["pixel_size_x_pm"], info["pixel_size_y_pm"])
    # A frame series (columns.csv with a frame column) adds the series figures to frame 0's.
    summarise = series_summary if "frame" in table.columns else precision_summary
    figures = summarise(table, image_shape=tuple(fit["image_shape"]), separation_px=fit["separation_px"],
                        pixel_size_pm=pixel, truth=truth, seed=settings["seed"], n_boot=settings["n_bootstrap"])
    status = figures.pop("status")
    record.update(figures)
    if status != "ok":
        record["status"] = status
    if truth is not None and figures.get("gain_basis") != "truth":
        # A truth file that matches no fitted column means the columns are not the true ones
        # (e.g. the wrong detector's image): a lattice-based verdict would hide that.
        record["status"] = "no verdict: the truth file matches none of the fitted columns"
        record["verdict"] = None
        for key in ("precision_gain", "precision_gain_ci_low", "precision_gain_ci_high", "gain_basis"):
            record[key] = None
if not fit["n_columns"]:
    # No columns (SEM, LR, or none found): what restoration did is told by the pixel noise.
    raw_image = hs.load(snakemake.input.raw, lazy=False).data
    restored_image = hs.load(snakemake.input.restored, lazy=False).data
    record["noise_sigma_raw"] = noise_sigma(raw_image)
    record["noise_sigma_restored"] = noise_sigma(restored_image)
if snakemake.input.reference:
    # Simulated samples carry their noise-free image: how close does each get to it?
    reference = read_sample_image({**row, "path": row["reference"]}, min_size_px=1).signal.data
    raw = hs.load(snakemake.input.raw, lazy=False).data
    restored = hs.load(snakemake.input.restored, lazy=False).data
    if reference.shape == raw.shape:
        record["mse_raw_vs_reference"] = float(np.mean((raw.astype(np.float64) - reference) ** 2))
        record["mse_restored_vs_reference"] = float(np.mean((restored.astype(np.float64) - reference) ** 2))
        record["mse_reduction"] = record["mse_raw_vs_reference"] / max(record["mse_restored_vs_reference"], 1e-300)
    else:
        log.warning("reference shape %s differs from image shape %s; no MSE", reference.shape, raw.shape)
if snakemake.input.twin:
    # The noise twin's figures; with no truth they decide the verdict (remflow.precision.basis).
    with open(snakemake.input.twin) as handle:
        twin = json.load(handle)
    record.update({key: value for key, value in twin.items() if key not in ("sample", "status")})
    if record.get("truth_rmse_raw_px") is not None and record.get("precision_gain") is not None:
        record["truth_gain"], record["truth_verdict"] = record["precision_gain"], record.get("verdict")
        record["truth_gain_ci_low"] = record.get("precision_gain_ci_low")
        record["truth_gain_ci_high"] = record.get("precision_gain_ci_high")
# Every sample: the verdict's basis, and what a truth-free basis cannot see (basis_note).
record = apply_gain_basis(record)
if snakemake.input.twin:
    record.update(efficiency(record))
record["provenance"] = provenance({"precision": settings}, input_sha256=info["sha256"])
log.info("%s: %s", info["sample"], {k: v for k, v in record.items() if k != "provenance"})
write_json(snakemake.output[0], record)
