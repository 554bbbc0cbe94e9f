"""Rule plot_benchmark_methods: error and fidelity against dose per method, and one image panel."""

import json

import numpy as np
import pandas as pd

from remflow.figures_benchmark import plot_error_vs_dose, plot_fidelity_vs_dose, plot_panel
from remflow.runlog import setup_logging

log = setup_logging(snakemake.log[0])
summary = pd.read_csv(snakemake.input.summary)
plot_error_vs_dose(summary, snakemake.output.error)
plot_fidelity_vs_dose(summary, snakemake.output.fidelity)
with np.load(snakemake.input.panel) as panel, open(snakemake.input.info, encoding="utf-8") as handle:
    plot_panel({name: panel[name] for name in panel.files}, json.load(handle), snakemake.output.panel)
log.info("wrote %s", ", ".join(snakemake.output))
