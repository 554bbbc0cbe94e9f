"""Rules *_batch: run a per-sample step for every sample of a batch in this one interpreter.

Each member runs the step's own per-sample rule script (e.g. fit_columns.py) with that
sample's inputs, outputs, params and log; see remflow.batch for what is kept per sample.
"""

from remflow.batch import run_batch
from remflow.runlog import setup_logging

log = setup_logging(snakemake.log[0])
upstream = snakemake.input.get("upstream", [])
# One job may run several steps (params.folders: output name -> rules): a folder per step.
folders = snakemake.params.get("folders")
target = {getattr(snakemake.output, name): rules for name, rules in folders.items()} if folders else snakemake.output[0]
rows = run_batch(snakemake.params.members, target, snakemake.config,
                 upstream=[upstream] if isinstance(upstream, str) else list(upstream))
failed = [row for row in rows if row["status"].startswith("failed")]
log.info("%d samples, %d redone, %d failed", len(rows), sum(1 for r in rows if r["redone"]), len(failed))
for row in failed:
    log.error("%s", row["status"])
