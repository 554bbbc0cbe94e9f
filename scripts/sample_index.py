"""Rule sample_index: results/index.html, one row per sample with thumbnail and link to its figure."""

from pathlib import Path

import pandas as pd

from remflow.atomic import write_text
from remflow.report_index import index_html
from remflow.runlog import setup_logging

log = setup_logging(snakemake.log[0])
summary = pd.read_csv(snakemake.input.summary, keep_default_na=False)
root = Path(snakemake.output[0]).parent
write_text(snakemake.output[0], index_html(summary, root))
log.info("%d samples", len(summary))
