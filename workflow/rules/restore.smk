rule restore_batch:
    """Restore a batch of images that share a network, loading it once (one GPU job).
    Writes results/restored/{sample}.hspy (+ .json) for each member."""
    input:
        upstream=lambda wc: batch_folder("ingest", split_batch(wc.batch)[0]),
    output:
        directory("results/batches/restore/{batch}"),
    log:
        "logs/batches/restore/{batch}.log",
    priority: BATCH_PRIORITY["restore_batch"]
    conda:
        "../../envs/restore.yaml"
    resources:
        mem_mb=restore_mem_mb,
        # The GPU as --gpus=1 or as --gres=gpu:1 (config gpu_request); the Slurm plugin
        # refuses both at once, and an empty value requests nothing.
        gpu=lambda wc: 1 if config["gpu_request"] == "gpus" else 0,
        gres=lambda wc: "gpu:1" if config["gpu_request"] == "gres" else "",
    params:
        # Members come from the inspection manifest (an input), never from another
        # batch's checkpoint: params are evaluated again inside a cluster job.
        members=lambda wc: batch_members(wc.batch),
        network=lambda wc: split_batch(wc.batch)[1],
        settings=config["restore"],
    script:
        "../../scripts/restore_batch.py"
