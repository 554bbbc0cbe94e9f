rule fit_columns:
    """Find atom columns once on the restored image, refine them on raw and restored."""
    input:
        raw="results/ingest/{sample}.hspy",
        restored="results/restored/{sample}.hspy",
        info="results/ingest/{sample}.json",
        truth=lambda wc: existing_inputs(wc.sample).get("truth", []),
    output:
        columns=report(
            "results/columns/{sample}.csv",
            caption="../report/columns_table.rst",
            category="Tables and data",
            subcategory="fitted columns (CSV)",
            labels={"sample": "{sample}"},
        ),
        info="results/columns/{sample}.json",
    log:
        "logs/fit_columns/{sample}.log",
    conda:
        "../../envs/analysis.yaml"
    threads: 2
    params:
        row=lambda wc: sample_row(wc.sample).to_dict(),
        settings=config["fit"],
    script:
        "../../scripts/fit_columns.py"


rule precision:
    """Lattice and truth precision of raw and restored fits, gain and verdict."""
    input:
        columns="results/columns/{sample}.csv",
        fit="results/columns/{sample}.json",
        info="results/ingest/{sample}.json",
        raw="results/ingest/{sample}.hspy",
        restored="results/restored/{sample}.hspy",
        truth=lambda wc: existing_inputs(wc.sample).get("truth", []),
        reference=lambda wc: existing_inputs(wc.sample).get("reference", []),
        twin=twin_result,
    output:
        report(
            "results/precision/{sample}.json",
            caption="../report/precision_json.rst",
            category="Tables and data",
            subcategory="precision figures (JSON)",
            labels={"sample": "{sample}"},
        ),
    log:
        "logs/precision/{sample}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        row=lambda wc: sample_row(wc.sample).to_dict(),
        settings=config["precision"],
    script:
        "../../scripts/precision.py"


rule summary:
    """One row per sample: precision figures, or why the sample was rejected or failed."""
    input:
        unpack(summary_inputs),
    output:
        report(
            "results/summary.csv",
            caption="../report/summary.rst",
            category="Dataset summary",
            labels={"result": "summary.csv (download)"},
        ),
    log:
        "logs/summary.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        samples=SAMPLES,
    script:
        "../../scripts/summary.py"
