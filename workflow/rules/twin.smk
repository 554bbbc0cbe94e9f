# The noise twin (remflow.precision.twin): a model of each raw image, replicas with known
# true positions, restored in batch jobs (one network load, a GPU on a cluster), fitted
# like the real image. Separate rules so that they can be batched like the others.


rule twin_model:
    """Model image and noise model of the raw image; the twin's raw replicas and its CRLB."""
    input:
        raw="results/ingest/{sample}.hspy",
        columns="results/columns/{sample}.csv",
        fit="results/columns/{sample}.json",
        info="results/ingest/{sample}.json",
    output:
        replicas="results/twin/{sample}.replicas.npy",
        columns="results/twin/{sample}.columns.csv",
        model="results/twin/{sample}.model.json",
    log:
        "logs/twin_model/{sample}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        settings=config["twin"],
    script:
        "../../scripts/twin_model.py"


rule twin_fit:
    """Refine the restored and raw replicas from the sample's starts: twin errors, gain, bias."""
    input:
        replicas="results/twin/{sample}.replicas.npy",
        restored="results/twin/{sample}.restored.npy",
        columns="results/twin/{sample}.columns.csv",
        model="results/twin/{sample}.model.json",
        fit="results/columns/{sample}.json",
        info="results/ingest/{sample}.json",
    output:
        "results/twin/{sample}.json",
    log:
        "logs/twin_fit/{sample}.log",
    conda:
        "../../envs/analysis.yaml"
    threads: 2
    params:
        fit=config["fit"],
        precision=config["precision"],
    script:
        "../../scripts/twin_fit.py"


rule plot_twin:
    """Raw and restored errors (twin, or truth where known) against each image's Cramér-Rao bound."""
    input:
        summary="results/summary.csv",
    output:
        report(
            "results/figures/twin_crlb.png",
            caption="../report/twin_crlb.rst",
            category="Dataset summary",
            labels={"result": "noise twin and CRLB"},
        ),
    log:
        "logs/plot_twin.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/plot_twin.py"
