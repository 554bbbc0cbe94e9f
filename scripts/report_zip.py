"""Rule report_zip: the sample index, its figures, thumbnails and tables in one zip file."""

from pathlib import Path

from remflow.report_index import write_report_zip
from remflow.runlog import setup_logging

log = setup_logging(snakemake.log[0])
size = write_report_zip(Path(snakemake.input.index).parent, snakemake.output[0])
log.info("wrote %s (%.1f MB)", snakemake.output[0], size / 1e6)
