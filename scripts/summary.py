"""Rule summary: one row per sample, precision figures or the reason it was rejected or failed."""

from remflow.atomic import atomic_path
from remflow.batch import sample_records, statuses
from remflow.runlog import setup_logging
from remflow.summary import summary_table

log = setup_logging(snakemake.log[0])
records = sample_records(snakemake.params.samples, statuses(snakemake.input.ingest), statuses(snakemake.input.precision))
table = summary_table(records)
with atomic_path(snakemake.output[0]) as tmp:
    table.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")
log.info("%d samples, %d rejected, %d failed", len(table), int(table["status"].str.startswith("rejected").sum()),
         int(table["status"].str.startswith("failed").sum()))
