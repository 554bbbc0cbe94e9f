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
