rule restore_batch:
    """Restore a batch of images that share a network, loading it once (one GPU job)."""
    input:
        images=lambda wc: [f"results/ingest/{s}.hspy" for s in batch_members(wc.batch)],
        infos=lambda wc: [f"results/ingest/{s}.json" for s in batch_members(wc.batch)],
    output:
        directory("results/restored/batches/{batch}"),
    log:
        "logs/restore_batch/{batch}.log",
    conda:
        "../../envs/restore.yaml"
    resources:
        mem_mb=restore_mem_mb,
        # The GPU as --gpus=1 or as --gres=gpu:1 (config gpu_request); the Slurm plugin
        # refuses both at once, and an empty value requests nothing.
        gpu=lambda wc: 1 if config["gpu_request"] == "gpus" else 0,
        gres=lambda wc: "gpu:1" if config["gpu_request"] == "gres" else "",
    params:
        # Sample names come from the inputs' JSON: a param that reads other samples'
        # checkpoint outputs would fail inside a cluster job.
        settings=config["restore"],
    script:
        "../../scripts/restore_batch.py"


rule restore:
    """Give each restored image its per-sample name (a hard link into the batch folder)."""
    input:
        batch=lambda wc: f"results/restored/batches/{batch_of(wc.sample)}",
    output:
        image="results/restored/{sample}.hspy",
        info="results/restored/{sample}.json",
    log:
        "logs/restore/{sample}.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/link_restored.py"
