# The CPU batch jobs after restoration (see common.smk: ANALYSE_STEPS, FINISH_STEPS). They run
# the per-sample rules of the other rule files for every member of a batch in one interpreter
# (scripts/run_batch.py, remflow.batch), so this file comes after all of them.


rule analyse_batch:
    """Fit the columns of every sample of a batch and run the steps after it that need no network."""
    input:
        upstream=lambda wc: batch_folder("restore", wc.batch),
        scripts=[step_script(name) for name in ANALYSE_STEPS],
    output:
        **step_outputs(ANALYSE_STEPS),
    log:
        "logs/batches/analyse/{batch}.log",
    priority: BATCH_PRIORITY["analyse_batch"]
    conda:
        "../../envs/analysis.yaml"
    params:
        members=batch_params(*ANALYSE_STEPS),
        folders=step_folders(ANALYSE_STEPS),
    script:
        "../../scripts/run_batch.py"


if TWIN:

    rule restore_twin_batch:
        """Restore the twin replicas of a batch of samples that share a network, loading it once.
        Writes results/twin/{sample}.restored.npy for each member with a twin model."""
        input:
            upstream=lambda wc: batch_folder("twin_model", wc.batch),
        output:
            directory("results/batches/restore_twin/{batch}"),
        log:
            "logs/batches/restore_twin/{batch}.log",
        priority: BATCH_PRIORITY["restore_twin_batch"]
        conda:
            "../../envs/restore.yaml"
        resources:
            mem_mb=lambda wc: restore_mem_mb(wc, twin=True),
            gpu=lambda wc: 1 if config["gpu_request"] == "gpus" else 0,
            gres=lambda wc: "gpu:1" if config["gpu_request"] == "gres" else "",
        params:
            members=lambda wc: batch_members(wc.batch),
            network=lambda wc: split_batch(wc.batch)[1],
            settings=config["restore"],
        script:
            "../../scripts/restore_twin_batch.py"

    rule finish_batch:
        """The twin's fit, precision, figures and export of every sample of a batch, in one job."""
        input:
            upstream=lambda wc: batch_folder("restore_twin", wc.batch),
            scripts=[step_script(name) for name in FINISH_STEPS],
        output:
            **step_outputs(FINISH_STEPS),
        log:
            "logs/batches/finish/{batch}.log",
        priority: BATCH_PRIORITY["finish_batch"]
        conda:
            "../../envs/analysis.yaml"
        params:
            members=batch_params(*FINISH_STEPS),
            folders=step_folders(FINISH_STEPS),
        script:
            "../../scripts/run_batch.py"
