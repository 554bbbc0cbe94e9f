"""Rule twin_fit: refine the twin's raw and restored replicas, the twin's precision figures."""

import json
import time

import numpy as np
import pandas as pd

from remflow.atomic import write_json
from remflow.precision.twin import fit_replicas, twin_figures
from remflow.runlog import setup_logging

log = setup_logging(snakemake.log[0])
started, cpu_started = time.perf_counter(), time.process_time()
with open(snakemake.input.model) as handle:
    record = json.load(handle)
with open(snakemake.input.fit) as handle:
    fit = json.load(handle)
with open(snakemake.input.info) as handle:
    info = json.load(handle)
record.pop("provenance", None)
if record.get("twin_status") == "ok":
    columns = pd.read_csv(snakemake.input.columns)
    raw = np.load(snakemake.input.replicas)
    restored = np.load(snakemake.input.restored)
    fits = fit_replicas(columns, raw, restored, separation_px=fit["separation_px"],
                        refine=snakemake.params.fit["refine"])
    pixel = info.get("pixel_size_pm")
    if pixel is not None and info.get("pixel_size_x_pm") != info.get("pixel_size_y_pm"):
        pixel = (info["pixel_size_x_pm"], info["pixel_size_y_pm"])
    record.update(twin_figures(columns, fits, separation_px=fit["separation_px"], pixel_size_pm=pixel,
                               n_boot=snakemake.params.precision["n_bootstrap"],
                               seed=snakemake.params.precision["seed"]))
    if info.get("pixel_size_pm") is not None and info.get("pixel_size_x_pm") == info.get("pixel_size_y_pm"):
        for name in ("crlb_px", "crlb_radial_px"):
            if record.get(name) is not None:
                record[name.removesuffix("_px") + "_pm"] = record[name] * info["pixel_size_pm"]
log.info("%s: %s", info["sample"], record)
write_json(snakemake.output[0], record)
log.info("took %.1f s (%.1f s CPU)", time.perf_counter() - started, time.process_time() - cpu_started)
