"""Rule ingest: write the accepted image as a float32 HyperSpy file, calibration and metadata kept."""

import json

from remflow.atomic import atomic_path
from remflow.ingest import read_sample_image, sha256_of
from remflow.runlog import setup_logging

log = setup_logging(snakemake.log[0])
with open(snakemake.input.info) as handle:
    info = json.load(handle)
if sha256_of(snakemake.input.raw) != info["sha256"]:
    raise SystemExit(f"sample '{info['sample']}': {info['path']} changed since it was inspected; rerun inspect_raw")
image = read_sample_image(snakemake.params.row, min_size_px=1)
image.signal.metadata.set_item("Processing.remflow.ingest", {
    "sample": info["sample"], "source": info["path"], "sha256": info["sha256"], "network": info["network"]})
with atomic_path(snakemake.output.image) as tmp:
    image.signal.save(tmp)
log.info("wrote %s %s", snakemake.output.image, image.shape)
