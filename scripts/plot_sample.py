"""Rule figure: raw | restored | difference, displacements and local errors of one sample."""

import json

import hyperspy.api as hs
import pandas as pd

from remflow.figures import plot_sample
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
# The scale bar is horizontal: use the x pixel size when the axes differ.
pixel_size_pm = info.get("pixel_size_x_pm") or info.get("pixel_size_pm")
plot_sample(raw, restored, columns, precision, snakemake.output[0], pixel_size_pm=pixel_size_pm,
            separation_px=fit.get("separation_px"), left_out=pd.DataFrame(fit.get("left_out") or [],
                                                                          columns=["x_px", "y_px"]))
log.info("wrote %s", snakemake.output[0])
