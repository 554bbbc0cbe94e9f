"""Rule restore_batch: restore a batch of images with one loaded network."""

import os
import shutil
import time
from pathlib import Path

import hyperspy.api as hs

from remflow.atomic import write_json
from remflow.restore import batch_restorer, restorer_from_settings
from remflow.runlog import provenance, setup_logging

log = setup_logging(snakemake.log[0])
settings = snakemake.params.settings
network, infos = batch_restorer(snakemake.input.infos)
restorer = restorer_from_settings(network, settings)
log.info("network %s on %s", network, restorer.device)

# Build the batch in a scratch folder and rename it: the output is complete or absent.
final = Path(snakemake.output[0])
scratch = final.with_name(final.name + ".partial")
shutil.rmtree(scratch, ignore_errors=True)
scratch.mkdir(parents=True)
raws = [hs.load(path, lazy=False) for path in snakemake.input.images]
started = time.perf_counter()
# Whole images of one shape share network calls on a GPU; big ones go in tiles.
restored_data = restorer.restore_many([raw.data for raw in raws])
log.info("restored %d images in %.1f s", len(raws), time.perf_counter() - started)
for sample, raw, data in zip([info["sample"] for info in infos], raws, restored_data):
    restored = raw.deepcopy()
    restored.data = data
    restored.metadata.General.title = f"{raw.metadata.General.title} (restored with {network})".strip()
    restored.metadata.set_item("Processing.remflow.restore", {"network": network, "device": restorer.device})
    restored.save(scratch / f"{sample}.hspy")
    write_json(scratch / f"{sample}.json", {
        "sample": sample, "network": network, "device": restorer.device,
        # A frame series (n_frames, rows, cols) is restored frame by frame.
        "mode": "whole" if raw.data.shape[-1] * raw.data.shape[-2] <= settings["max_whole_pixels"] else "tiled",
        "shape": list(raw.data.shape), "provenance": provenance({"restore": settings})})
    log.info("wrote %s %s", sample, raw.data.shape)
os.replace(scratch, final)
