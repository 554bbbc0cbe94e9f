"""Rule restore_twin_batch: restore the noise twin's replicas of a batch with one loaded network.

Each member whose twin model went through gets results/twin/{sample}.restored.npy (an empty
stack when its image has no twin); members whose inputs did not change keep theirs (stamps of
remflow.batch); members that failed upstream keep their status; a member whose restoration
fails is recorded as failed, the others go on.
"""

import time
import traceback
from pathlib import Path

import numpy as np

from remflow.atomic import atomic_path
from remflow.batch import remove_outputs, statuses, up_to_date, write_batch_folder, write_stamp
from remflow.restore import restore_members, restorer_from_settings
from remflow.runlog import setup_logging

log = setup_logging(snakemake.log[0])
settings = snakemake.params.settings
network = snakemake.params.network
script = str(Path(snakemake.scriptdir) / "restore_twin_batch.py")
upstream = statuses(snakemake.input.upstream)


def spec_of(sample):
    """What a member's restored replicas depend on and are (for its stamp)."""
    return {"rule": "restore_twin", "sample": sample, "script": script,
            "params": {"network": network, "settings": settings},
            "input": {"items": [f"results/twin/{sample}.replicas.npy"], "names": []},
            "output": {"items": [f"results/twin/{sample}.restored.npy"], "names": []}}


specs = {sample: spec_of(sample) for sample in snakemake.params.members}
status = {sample: upstream.get(sample, {}).get("status", "failed: no twin model") for sample in specs}
todo = [s for s in specs if status[s] == "ok" and not up_to_date(specs[s])]
stacks = {}
for sample in todo:
    try:
        stacks[sample] = np.load(f"results/twin/{sample}.replicas.npy")
    except Exception as err:  # noqa: BLE001 - one unreadable member fails alone
        log.error("%s", traceback.format_exc())
        status[sample] = f"failed in restore_twin: sample '{sample}': {type(err).__name__}: {err}"
n_images = sum(len(stack) for stack in stacks.values())
restored = {sample: [] for sample in stacks}  # members without replicas keep an empty stack
log.info("%d members, %d to restore (%d replicas) with %s", len(specs), len(stacks), n_images, network)
if n_images:  # samples without columns have no replicas: no network needed
    restorer = restorer_from_settings(network, settings)
    started, cpu_started = time.perf_counter(), time.process_time()
    restored, failures = restore_members(restorer, {sample: list(stack) for sample, stack in stacks.items()},
                                         "restore_twin")
    status.update(failures)
    log.info("restored %d replicas in %.1f s (%.1f s CPU) on %s (network time inside this job)", n_images,
             time.perf_counter() - started, time.process_time() - cpu_started, restorer.device)
for sample, stack in stacks.items():
    if status[sample] != "ok":
        continue
    out = np.array(restored[sample], dtype=np.float32).reshape(stack.shape)
    with atomic_path(f"results/twin/{sample}.restored.npy") as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, out)
    write_stamp(specs[sample])
for sample in specs:
    if status[sample] != "ok":
        remove_outputs(specs[sample])  # no replicas of an earlier run may stand in
rows = [{"sample": s, "status": status[s], "network": network, "redone": int(s in stacks)} for s in specs]
outputs = [f for s in specs if status[s] == "ok" for f in specs[s]["output"]["items"]]
write_batch_folder(snakemake.output[0], rows, outputs)
