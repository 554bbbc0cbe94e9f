"""Rule export: the restored image as ImageJ TIFF, the raw and restored fits as atomap files."""

import json

import hyperspy.api as hs

from remflow.export import export_sample
from remflow.runlog import setup_logging

log = setup_logging(snakemake.log[0])
sample = snakemake.wildcards.sample
with open(snakemake.input.info) as handle:
    info = json.load(handle)
with open(snakemake.input.restored_info) as handle:
    network = json.load(handle).get("network")
counts = export_sample(
    sample=sample, raw=hs.load(snakemake.input.raw, lazy=False).data,
    restored=hs.load(snakemake.input.restored, lazy=False).data, columns_csv=snakemake.input.columns,
    info=info, network=network, tiff=snakemake.output.tiff,
    lattice_paths={"raw": snakemake.output.raw_lattice, "restored": snakemake.output.restored_lattice})
log.info("%s: TIFF (pixel size %s pm) and atom lattices with columns %s", sample,
         (info.get("pixel_size_x_pm"), info.get("pixel_size_y_pm")), counts or "none (no lattice found)")
