"""Rule figure: raw | restored | difference, displacements and lattice residuals of one sample."""

import json

import hyperspy.api as hs
import pandas as pd

from remflow.figures import plot_no_columns, plot_sample, sample_residuals
from remflow.frames import mean_frame_view
from remflow.runlog import setup_logging

log = setup_logging(snakemake.log[0])
with open(snakemake.input.precision) as handle:
    precision = json.load(handle)
with open(snakemake.input.info) as handle:
    info = json.load(handle)
with open(snakemake.input.fit) as handle:
    fit = json.load(handle)
raw = hs.load(snakemake.input.raw, lazy=False).data
restored = hs.load(snakemake.input.restored, lazy=False).data
columns = pd.read_csv(snakemake.input.columns)
series = raw.ndim == 3 and not columns.empty
residuals = None
if series:  # a frame series: the registered mean frames and each column's mean position
    if precision.get("status") == "ok":  # the residual panel shows frame 0's, as the precision figures do
        first = columns[columns["frame"] == columns["frame"].min()].drop(columns="frame").reset_index(drop=True)
        residuals = sample_residuals(first, tuple(fit["image_shape"]), fit.get("separation_px"))
    raw, restored, columns = mean_frame_view(raw, restored, columns, separation_px=fit.get("separation_px"),
                                             coarse_shifts_px=fit.get("frame_shifts_px"))
# The scale bar is horizontal: use the x pixel size when the axes differ.
pixel_size_pm = info.get("pixel_size_x_pm") or info.get("pixel_size_pm")
if columns.empty:  # SEM, LR or no lattice: images and their noise, no empty precision panels
    if raw.ndim == 3:  # a frame series without columns: its mean frames
        raw, restored = raw.mean(axis=0), restored.mean(axis=0)
    plot_no_columns(raw, restored, precision, snakemake.output[0], pixel_size_pm=pixel_size_pm)
else:
    plot_sample(raw, restored, columns, precision, snakemake.output[0], pixel_size_pm=pixel_size_pm,
                separation_px=fit.get("separation_px"), residuals=residuals, series=series)
log.info("wrote %s", snakemake.output[0])
