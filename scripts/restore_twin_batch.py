"""Rule restore_twin_batch: restore the twin replicas of a batch of samples with one loaded network."""

import os
import shutil
import time
from pathlib import Path

import numpy as np

from remflow.atomic import write_json
from remflow.restore import batch_restorer, restorer_from_settings
from remflow.runlog import setup_logging

log = setup_logging(snakemake.log[0])
settings = snakemake.params.settings
network, infos = batch_restorer(snakemake.input.infos)
stacks = [np.load(path) for path in snakemake.input.images]
final = Path(snakemake.output[0])
scratch = final.with_name(final.name + ".partial")
shutil.rmtree(scratch, ignore_errors=True)
scratch.mkdir(parents=True)
images = [image for stack in stacks for image in stack]
restored = []
device = "none"
if images:  # samples without columns have no replicas: no network needed
    restorer = restorer_from_settings(network, settings)
    device = restorer.device
    started, cpu_started = time.perf_counter(), time.process_time()
    restored = restorer.restore_many(images)
    log.info("restored %d replicas in %.1f s (%.1f s CPU) on %s", len(images), time.perf_counter() - started,
             time.process_time() - cpu_started, device)
first = 0
for info, stack in zip(infos, stacks):
    out = np.array(restored[first:first + len(stack)], dtype=np.float32).reshape(stack.shape)
    first += len(stack)
    np.save(scratch / f"{info['sample']}.npy", out)
    write_json(scratch / f"{info['sample']}.json", {"sample": info["sample"], "network": network, "device": device,
                                                    "replicas": int(len(stack))})
os.replace(scratch, final)
