rule synthesise:
    """A synthetic STEM lattice with known column positions at one dose."""
    output:
        image="results/synthetic/{sample}.hspy",
        truth="results/synthetic/{sample}_truth.csv",
    log:
        "logs/synthesise/{sample}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        dose=lambda wc: sample_row(wc.sample)["benchmark_dose"],
        settings=config["benchmark"],
    script:
        "../../scripts/synthesise.py"


rule precision_vs_dose:
    """Truth RMSE of raw and restored fits per dose, next to the Cramér-Rao bound."""
    input:
        unpack(dose_inputs),
    output:
        report(
            "results/benchmark/precision_vs_dose.csv",
            caption="../report/precision_vs_dose_table.rst",
            category="Synthetic benchmark",
            labels={"result": "precision_vs_dose.csv (download)"},
        ),
    log:
        "logs/precision_vs_dose.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        samples=BENCHMARK_SAMPLES,
        settings=config["benchmark"],
    script:
        "../../scripts/precision_vs_dose.py"


rule benchmark_methods:
    """Raw, the tk_r_em network and classical filters on the same synthetic images, against the truth."""
    output:
        table=report(
            "results/benchmark/methods.csv",
            caption="../report/methods_table.rst",
            category="Restoration methods benchmark",
            labels={"result": "methods.csv (download)"},
        ),
        summary=report(
            "results/benchmark/methods_summary.csv",
            caption="../report/methods_summary_table.rst",
            category="Restoration methods benchmark",
            labels={"result": "methods_summary.csv (download)"},
        ),
        panel="results/benchmark/methods_panel.npz",
        info="results/benchmark/methods_panel.json",
    log:
        "logs/benchmark_methods.log",
    conda:
        "../../envs/benchmark.yaml"
    params:
        # Only what the methods benchmark uses: a change to the dose sweep does not rerun it.
        settings={
            key: config["benchmark"][key]
            for key in ("shape", "spacing_px", "sigma_px", "b_ratio", "pixel_size_pm", "seed")
        },
        size=config["benchmark"]["size"],
    script:
        "../../scripts/benchmark_methods.py"


rule plot_benchmark_methods:
    """Figures of the methods benchmark: error and fidelity against dose, one image panel."""
    input:
        summary="results/benchmark/methods_summary.csv",
        panel="results/benchmark/methods_panel.npz",
        info="results/benchmark/methods_panel.json",
    output:
        error=report(
            "results/figures/methods_error_vs_dose.png",
            caption="../report/methods_error_vs_dose.rst",
            category="Restoration methods benchmark",
            labels={"result": "position error vs dose per method"},
        ),
        fidelity=report(
            "results/figures/methods_fidelity_vs_dose.png",
            caption="../report/methods_fidelity_vs_dose.rst",
            category="Restoration methods benchmark",
            labels={"result": "displacement fidelity vs dose per method"},
        ),
        panel=report(
            "results/figures/methods_panel.png",
            caption="../report/methods_panel.rst",
            category="Restoration methods benchmark",
            labels={"result": "one image per method at low dose"},
        ),
    log:
        "logs/plot_benchmark_methods.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/plot_benchmark_methods.py"
