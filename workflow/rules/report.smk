# results/figures/{sample}.png would also match the dataset figures: every rule that
# writes a figure into results/figures/ must be listed before `figure`.
ruleorder: plot_gain > plot_precision_vs_dose > plot_benchmark_methods > plot_twin > figure


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


rule thumbnail:
    """A small JPEG of a sample's figure for the sample index."""
    input:
        figure="results/figures/{sample}.png",
    output:
        thumbnail="results/thumbs/{sample}.jpg",
    log:
        "logs/thumbnail/{sample}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        width_px=360,
    script:
        "../../scripts/thumbnail.py"


rule sample_index:
    """results/index.html: one row per sample with its thumbnail, status and precision gain,
    linking its full figure. Opens in a browser at any dataset size (figures load on click)."""
    input:
        summary="results/summary.csv",
        figures=figure_folders,
    output:
        "results/index.html",
    log:
        "logs/sample_index.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/sample_index.py"


rule report_zip:
    """results/report.zip: the sample index with every figure and table beside it, for
    datasets whose self-contained report.html would be too large for a browser."""
    input:
        index="results/index.html",
        summary="results/summary.csv",
        table="results/summary.html",
        gain="results/figures/precision_gain.png",
        figures=figure_folders,
        dose=lambda wc: ["results/figures/precision_vs_dose.png"] if BENCHMARK_SAMPLES else [],
    output:
        "results/report.zip",
    log:
        "logs/report_zip.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/report_zip.py"


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
