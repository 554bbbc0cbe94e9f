"""Rule twin_model: model and noise model of the raw image, the twin's raw replicas and CRLB."""

import json
import time
import traceback

import hyperspy.api as hs
import numpy as np
import pandas as pd

from remflow.atomic import atomic_path, write_json
from remflow.columns import status_ok
from remflow.precision.twin import plan_twin
from remflow.runlog import provenance, setup_logging

log = setup_logging(snakemake.log[0])
started, cpu_started = time.perf_counter(), time.process_time()
settings = snakemake.params.settings
with open(snakemake.input.info) as handle:
    info = json.load(handle)
with open(snakemake.input.fit) as handle:
    fit = json.load(handle)
record = {"sample": info["sample"], "twin_status": fit["status"]}
replicas = np.zeros((0, 1, 1), dtype=np.float32)
columns = pd.DataFrame()
raw = hs.load(snakemake.input.raw, lazy=False).data if status_ok(fit["status"]) else None
if raw is not None and (raw.ndim != 2 or fit.get("contrast", "bright") != "bright"):
    # The image model holds bright Gaussian columns in one image; dark (ABF/BF) columns and
    # frame series are not modelled yet, and a twin of the wrong model would mislead.
    kind = "a frame series" if raw.ndim != 2 else "dark columns"
    record["twin_status"] = f"no twin: {kind} not modelled yet"
    raw = None
if raw is not None:
    try:
        plan = plan_twin(raw, pd.read_csv(snakemake.input.columns), separation_px=fit["separation_px"],
                         replicas=settings["replicas"], seed=settings["seed"], truth=settings["truth"],
                         max_pixels=settings["max_pixels"], line_jitter_px=settings["line_jitter_px"],
                         pixel_size_pm=info.get("pixel_size_pm"))
    except (ValueError, ArithmeticError, np.linalg.LinAlgError, RuntimeError) as err:
        # The image cannot be modelled: no twin, the sample's other figures stand.
        log.error("no twin:\n%s", traceback.format_exc())
        record["twin_status"] = f"no twin: {type(err).__name__}: {err}"
    else:
        replicas, columns = plan.replicas, plan.columns
        record.update(plan.figures)
        record["twin_status"] = "ok"
        log.info("%s: %s", info["sample"], plan.figures)
with atomic_path(snakemake.output.replicas) as tmp:
    with open(tmp, "wb") as handle:
        np.save(handle, replicas)
with atomic_path(snakemake.output.columns) as tmp:
    columns.to_csv(tmp, index=False, float_format="%.6f", lineterminator="\n")
record["provenance"] = provenance({"twin": settings}, input_sha256=info["sha256"])
write_json(snakemake.output.model, record)
log.info("took %.1f s (%.1f s CPU)", time.perf_counter() - started, time.process_time() - cpu_started)
