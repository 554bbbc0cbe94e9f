"""Rule fit_columns: atom columns found on the restored image, refined on raw and restored."""

import json

import hyperspy.api as hs
import pandas as pd

from remflow.atomic import atomic_path, write_json
from remflow.columns import empty_table, fit_columns
from remflow.frames import fit_series
from remflow.networks import NO_COLUMNS_STATUS, expects_columns
from remflow.runlog import provenance, setup_logging

log = setup_logging(snakemake.log[0])
settings = snakemake.params.settings
row = snakemake.params.row
raw = hs.load(snakemake.input.raw, lazy=False).data
restored = hs.load(snakemake.input.restored, lazy=False).data
truth = pd.read_csv(snakemake.input.truth) if snakemake.input.truth else None
with open(snakemake.input.info) as handle:
    info = json.load(handle)
separation = row.get("separation_px") or settings["separation_px"]
second = row.get("second_sublattice")
options = dict(separation_px=separation,
               second_sublattice=settings["second_sublattice"] if second is None else bool(second),
               refine=settings["refine"], min_columns=settings["min_columns"], truth=truth)
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
log.info("%s: %d columns, status %s, separation %.3f px", row["sample"], len(table), status,
         separation if separation else float("nan"))
with atomic_path(snakemake.output.columns) as tmp:
    table.to_csv(tmp, index=False, float_format="%.6f", lineterminator="\n")
sha256 = info["sha256"]
write_json(snakemake.output.info, {
    "sample": row["sample"], "status": status,
    "n_columns": int(table["column_id"].nunique()) if series else int(len(table)),
    "separation_px": separation, "image_shape": list(raw.shape), **series,
    "provenance": provenance({"fit": settings}, input_sha256=sha256)})
