"""Rule summary: one row per sample, precision figures or the reason it was rejected."""

import json

from remflow.atomic import atomic_path
from remflow.runlog import setup_logging
from remflow.summary import summary_table

log = setup_logging(snakemake.log[0])
records = []
for path in snakemake.input:
    with open(path) as handle:
        records.append(json.load(handle))
table = summary_table(records)
with atomic_path(snakemake.output[0]) as tmp:
    table.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")
log.info("%d samples, %d rejected", len(table), int(table["status"].str.startswith("rejected").sum()))
