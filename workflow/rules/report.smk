rule figure:
    """Raw | restored | difference with fitted columns, displacements and residuals."""
    input:
        raw="results/ingest/{sample}.hspy",
        restored="results/restored/{sample}.hspy",
        columns="results/columns/{sample}.csv",
        precision="results/precision/{sample}.json",
        info="results/ingest/{sample}.json",
        fit="results/columns/{sample}.json",
    output:
        report(
            "results/figures/{sample}.png",
            caption="../report/sample_figure.rst",
            category="Per-sample figures",
            labels={"sample": "{sample}"},
        ),
    log:
        "logs/figure/{sample}.log",
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/plot_sample.py"


rule plot_gain:
    """Precision gain per sample with its confidence interval and verdict."""
    input:
        summary="results/summary.csv",
    output:
        report(
            "results/figures/precision_gain.png",
            caption="../report/precision_gain.rst",
            category="Dataset summary",
            labels={"result": "precision gain per sample"},
        ),
    log:
        "logs/plot_gain.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        kind="gain",
    script:
        "../../scripts/plot_dataset.py"


rule plot_precision_vs_dose:
    """Benchmark: raw and restored truth RMSE against dose, with the Cramér-Rao bound."""
    input:
        table="results/benchmark/precision_vs_dose.csv",
    output:
        report(
            "results/figures/precision_vs_dose.png",
            caption="../report/precision_vs_dose.rst",
            category="Synthetic benchmark",
            labels={"result": "precision vs dose"},
        ),
    log:
        "logs/plot_precision_vs_dose.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        kind="dose",
    script:
        "../../scripts/plot_dataset.py"


rule summary_table:
    """The summary rendered as an HTML table for the report."""
    input:
        summary="results/summary.csv",
    output:
        report(
            "results/summary.html",
            caption="../report/summary_table.rst",
            category="Dataset summary",
            labels={"result": "summary table"},
        ),
    log:
        "logs/summary_table.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        kind="table",
    script:
        "../../scripts/plot_dataset.py"
