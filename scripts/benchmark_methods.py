"""Rule benchmark_methods: every restoration method on the same synthetic images, against the truth."""

import numpy as np

from remflow.atomic import atomic_path, write_json
from remflow.benchmark import run_benchmark, summarise
from remflow.runlog import provenance, setup_logging

log = setup_logging(snakemake.log[0])
settings = snakemake.params.settings
result = run_benchmark(settings, snakemake.params.size, progress=log.info)
with atomic_path(snakemake.output.table) as tmp:
    result.table.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")
with atomic_path(snakemake.output.summary) as tmp:
    summarise(result.table).to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")
with atomic_path(snakemake.output.panel) as tmp:
    with open(tmp, "wb") as handle:
        np.savez_compressed(handle, **{k: v.astype(np.float32) for k, v in result.panel.items()})
images = len(result.table) // max(len(result.seconds), 1)
write_json(snakemake.output.info, {**result.panel_info, "size": snakemake.params.size,
                                   "seconds_per_method": result.seconds, "images": images,
                                   "provenance": provenance({"benchmark": settings})})
log.info("%d rows; seconds per method over %d images: %s", len(result.table), images,
         ", ".join(f"{m} {t:.1f}" for m, t in result.seconds.items()))
