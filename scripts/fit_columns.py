"""Rule fit_columns: atom columns found on the restored image, refined on raw and restored."""

import json

import hyperspy.api as hs
import pandas as pd

from remflow.atomic import atomic_path, write_json
from remflow.columns import column_contrast, detector_texts, empty_table, fit_columns, parse_roi
from remflow.frames import fit_series
from remflow.networks import NO_COLUMNS_STATUS, expects_columns
from remflow.runlog import provenance, setup_logging

log = setup_logging(snakemake.log[0])
settings = snakemake.params.settings
row = snakemake.params.row
raw_signal = hs.load(snakemake.input.raw, lazy=False)
raw = raw_signal.data
restored = hs.load(snakemake.input.restored, lazy=False).data
truth = pd.read_csv(snakemake.input.truth) if snakemake.input.truth else None
with open(snakemake.input.info) as handle:
    info = json.load(handle)
contrast = column_contrast(row.get("contrast"), detector_texts(info, raw_signal.metadata.as_dictionary(),
                                                               row.get("path")))
roi = parse_roi(row.get("roi_px"), raw.shape[-2:])
separation = row.get("separation_px") or settings["separation_px"]
second = row.get("second_sublattice")
options = dict(separation_px=separation,
               second_sublattice=settings["second_sublattice"] if second is None else bool(second),
               refine=settings["refine"], min_columns=settings["min_columns"], truth=truth, contrast=contrast,
               roi_px=roi, min_peak_snr=settings.get("min_peak_snr", 4.5))
series = {}
if not expects_columns(info.get("modality"), info.get("resolution")):
    # SEM and low-resolution images have no atom columns by design: nothing to fit.
    table, status, separation = empty_table(truth is not None), NO_COLUMNS_STATUS, None
    raw = raw[0] if raw.ndim == 3 else raw
elif raw.ndim == 3:  # a frame series (frame: all): columns found once, refined on every frame
    result = fit_series(raw, restored, **options)
    series = {"n_frames": result.n_frames, "frame_shifts_px": result.shifts_px.round(4).tolist()}
    raw = raw[0]
    table, status, separation = result.table, result.status, result.separation_px
else:
    result = fit_columns(raw, restored, **options)
    table, status, separation = result.table, result.status, result.separation_px
log.info("%s: %d columns (%s contrast), status %s, separation %.3f px", row["sample"], len(table), contrast, status,
         separation if separation else float("nan"))
with atomic_path(snakemake.output.columns) as tmp:
    table.to_csv(tmp, index=False, float_format="%.6f", lineterminator="\n")
left_out = getattr(result, "left_out", None) if status != NO_COLUMNS_STATUS else None
left_out = left_out if left_out is not None else pd.DataFrame(columns=["x_px", "y_px", "sublattice", "peak_snr",
                                                                       "reason"])
write_json(snakemake.output.info, {
    "sample": row["sample"], "status": status,
    "n_columns": int(table["column_id"].nunique()) if series else int(len(table)),
    "separation_px": separation, "image_shape": list(raw.shape), "contrast": contrast,
    "roi_px": list(roi) if roi else None, "n_not_significant": int(len(left_out)),
    "left_out": [{"x_px": round(float(r.x_px), 3), "y_px": round(float(r.y_px), 3), "sublattice": r.sublattice,
                  "peak_snr": round(float(r.peak_snr), 3), "reason": r.reason} for r in left_out.itertuples()],
    **series, "provenance": provenance({"fit": settings}, input_sha256=info["sha256"])})
