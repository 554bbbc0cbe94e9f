"""Rule plot_twin: twin (or truth) errors of raw and restored fits against each image's CRLB."""

import pandas as pd

from remflow.runlog import setup_logging
from remflow.twin_figures import plot_twin

log = setup_logging(snakemake.log[0])
plot_twin(pd.read_csv(snakemake.input.summary), snakemake.output[0])
log.info("wrote %s", snakemake.output[0])
