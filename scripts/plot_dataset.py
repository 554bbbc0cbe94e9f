"""Rules plot_gain, plot_precision_vs_dose and summary_table: dataset-level figures and the table."""

import pandas as pd

from remflow.figures import plot_gain, plot_precision_vs_dose, summary_table_html
from remflow.runlog import setup_logging

log = setup_logging(snakemake.log[0])
kind = snakemake.params.kind
if kind == "gain":
    plot_gain(pd.read_csv(snakemake.input.summary), snakemake.output[0])
elif kind == "table":
    summary_table_html(pd.read_csv(snakemake.input.summary), snakemake.output[0])
elif kind == "dose":
    plot_precision_vs_dose(pd.read_csv(snakemake.input.table), snakemake.output[0])
else:
    raise ValueError(f"unknown dataset output kind {kind!r}")
log.info("wrote %s", snakemake.output[0])
