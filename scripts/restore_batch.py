"""Rule restore_batch: restore a batch of images with one loaded network.

Each member gets results/restored/{sample}.hspy and .json, written atomically; members
whose inputs and settings did not change since they were restored are kept (stamps of
remflow.batch); a member whose restoration fails is recorded as failed, the others go on.
"""

import time
import traceback
from pathlib import Path

import hyperspy.api as hs

from remflow.atomic import atomic_path, write_json
from remflow.batch import remove_outputs, up_to_date, write_batch_folder, write_stamp
from remflow.restore import restore_members, restorer_from_settings
from remflow.runlog import provenance, setup_logging

log = setup_logging(snakemake.log[0])
settings = snakemake.params.settings
network = snakemake.params.network
script = str(Path(snakemake.scriptdir) / "restore_batch.py")


def spec_of(sample):
    """What a member's restoration depends on and writes (for its stamp)."""
    return {"rule": "restore", "sample": sample, "script": script,
            "params": {"network": network, "settings": settings},
            "input": {"items": [f"results/ingest/{sample}.hspy", f"results/ingest/{sample}.json"], "names": []},
            "output": {"items": [f"results/restored/{sample}.hspy", f"results/restored/{sample}.json"], "names": []}}


specs = {sample: spec_of(sample) for sample in snakemake.params.members}
todo = [sample for sample, spec in specs.items() if not up_to_date(spec)]
status = {sample: "ok" for sample in specs}
log.info("%d members, %d to restore with %s", len(specs), len(todo), network)
if todo:
    restorer = restorer_from_settings(network, settings)
    log.info("network %s on %s (%s)", network, restorer.device, restorer.dtype)
    raws = {}
    for sample in todo:
        try:
            raws[sample] = hs.load(f"results/ingest/{sample}.hspy", lazy=False)
        except Exception as err:  # noqa: BLE001 - one unreadable member fails alone
            log.error("%s", traceback.format_exc())
            status[sample] = f"failed in restore: sample '{sample}': {type(err).__name__}: {err}"
    started = time.perf_counter()
    # Whole images of one shape share network calls on a GPU; big ones go in tiles.
    restored_lists, failures = restore_members(restorer, {s: [raw.data] for s, raw in raws.items()}, "restore")
    status.update(failures)
    restored_data = {sample: images[0] for sample, images in restored_lists.items() if sample not in failures}
    log.info("restored %d images in %.3f s (network time inside this job)", len(restored_data),
             time.perf_counter() - started)
    for sample, data in restored_data.items():
        raw = raws[sample]
        restored = raw.deepcopy()
        restored.data = data
        restored.metadata.General.title = f"{raw.metadata.General.title} (restored with {network})".strip()
        restored.metadata.set_item("Processing.remflow.restore",
                                   {"network": network, "device": restorer.device, "dtype": restorer.dtype})
        target = f"results/restored/{sample}.hspy"
        with atomic_path(target) as tmp:
            restored.save(tmp)
        write_json(f"results/restored/{sample}.json", {
            "sample": sample, "network": network, "device": restorer.device, "dtype": restorer.dtype,
            # A frame series (n_frames, rows, cols) is restored frame by frame.
            "mode": "whole" if raw.data.shape[-1] * raw.data.shape[-2] <= settings["max_whole_pixels"] else "tiled",
            "shape": list(raw.data.shape), "provenance": provenance({"restore": settings})})
        write_stamp(specs[sample])
        log.info("wrote %s %s", sample, raw.data.shape)
for sample in specs:
    if status[sample] != "ok":
        remove_outputs(specs[sample])  # no restored image from an earlier run may stand in
rows = [{"sample": sample, "status": status[sample], "network": network, "redone": int(sample in todo)}
        for sample in specs]
outputs = [f for sample in specs if status[sample] == "ok" for f in specs[sample]["output"]["items"]]
write_batch_folder(snakemake.output[0], rows, outputs)
