"""Rule thumbnail: a small JPEG of a sample's figure, for the sample index."""

from remflow.atomic import atomic_path
from remflow.report_index import write_thumbnail
from remflow.runlog import setup_logging

log = setup_logging(snakemake.log[0])
with atomic_path(snakemake.output.thumbnail) as tmp:
    write_thumbnail(snakemake.input.figure, tmp, width_px=snakemake.params.width_px)
log.info("wrote %s", snakemake.output.thumbnail)
