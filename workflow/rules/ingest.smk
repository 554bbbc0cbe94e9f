# Per-sample rules (inspect_raw, ingest, fit_columns, precision, figure, thumbnail) say what
# each step reads, writes and needs for ONE sample. The *_batch rules run them for a whole
# batch in one job: they expand the per-sample rule for each member (common.smk: step_spec)
# and run its script in the batch job's interpreter (scripts/run_batch.py, remflow.batch).
# Change a step in its per-sample rule and script; the batch rules need no change.


rule inspect_raw:
    """Read a raw file, check it is a restorable image and decide its network.
    Bad input is not an error here: the sample is marked rejected with a reason."""
    input:
        unpack(lambda wc: existing_inputs(wc.sample)),
    output:
        info="results/ingest/{sample}.json",
    log:
        "logs/inspect_raw/{sample}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        row=lambda wc: sample_row(wc.sample).to_dict(),
        settings=config["ingest"],
        # Recorded as provenance; how GPUs are requested changes no result.
        config={key: value for key, value in config.items() if key != "gpu_request"},
    script:
        "../../scripts/inspect_raw.py"


rule ingest:
    """Write the accepted image as float32 HyperSpy file, calibration and metadata kept."""
    input:
        raw=lambda wc: raw_file(wc.sample),
        info="results/ingest/{sample}.json",
    output:
        image="results/ingest/{sample}.hspy",
    log:
        "logs/ingest/{sample}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        row=lambda wc: sample_row(wc.sample).to_dict(),
    script:
        "../../scripts/ingest.py"


checkpoint ingest_batch:
    """inspect_raw, then ingest for the accepted ones, for a batch of the sample sheet.
    The manifest (status and network per sample) decides the batches after it."""
    input:
        raw=inspection_inputs,
        scripts=[step_script("inspect_raw"), step_script("ingest")],
    output:
        directory("results/batches/ingest/{batch}"),
    log:
        "logs/batches/ingest/{batch}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        members=batch_params("inspect_raw", "ingest", gate="info"),
    script:
        "../../scripts/run_batch.py"
