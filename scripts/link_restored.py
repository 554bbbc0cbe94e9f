"""Rule restore: give a restored image its per-sample name, linked from its batch folder."""

import os
import shutil
from pathlib import Path

from remflow.runlog import setup_logging

log = setup_logging(snakemake.log[0])
sample = snakemake.wildcards.sample
batch = Path(snakemake.input.batch)
for source, target in ((batch / f"{sample}.hspy", snakemake.output.image),
                       (batch / f"{sample}.json", snakemake.output.info)):
    tmp = Path(target).with_name(f".{Path(target).name}.partial")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)  # same data, no copy, on the same file system
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)
    log.info("%s -> %s", source, target)
