"""Rule inspect_raw: check a raw file and decide its network, or record why it is refused."""

import traceback

from remflow.atomic import write_json
from remflow.ingest import inspect_sample
from remflow.runlog import provenance, setup_logging

log = setup_logging(snakemake.log[0])
row = snakemake.params.row
settings = snakemake.params.settings
try:
    record = inspect_sample(row, min_size_px=settings["min_image_px"],
                            hr_max_pixel_pm=settings["hr_max_pixel_size_pm"])
except Exception as err:  # an unforeseen reader failure still must not stop the dataset
    log.error("unexpected failure:\n%s", traceback.format_exc())
    record = {"sample": row["sample"], "path": row["path"],
              "status": f"rejected: sample '{row['sample']}' ({row['path']}): unexpected error "
                        f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
record["provenance"] = provenance(snakemake.params.config)
log.info("%s: %s", row["sample"], record["status"])
write_json(snakemake.output.info, record)
