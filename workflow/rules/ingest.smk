checkpoint inspect_raw:
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
