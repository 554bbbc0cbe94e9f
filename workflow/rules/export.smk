rule export:
    """The restored image as ImageJ TIFF (Fiji) and both fits as atomap Atom_Lattice files."""
    input:
        raw="results/ingest/{sample}.hspy",
        restored="results/restored/{sample}.hspy",
        restored_info="results/restored/{sample}.json",
        columns="results/columns/{sample}.csv",
        info="results/ingest/{sample}.json",
    output:
        tiff=report(
            "results/restored/{sample}.tif",
            caption="../report/restored_tiff.rst",
            category="Tables and data",
            subcategory="restored images (ImageJ TIFF)",
            labels={"sample": "{sample}"},
        ),
        raw_lattice=report(
            "results/columns/{sample}_raw_atom_lattice.hdf5",
            caption="../report/atom_lattice.rst",
            category="Tables and data",
            subcategory="atom lattices (atomap HDF5)",
            labels={"sample": "{sample}", "image": "raw"},
        ),
        restored_lattice=report(
            "results/columns/{sample}_restored_atom_lattice.hdf5",
            caption="../report/atom_lattice.rst",
            category="Tables and data",
            subcategory="atom lattices (atomap HDF5)",
            labels={"sample": "{sample}", "image": "restored"},
        ),
    log:
        "logs/export/{sample}.log",
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/export.py"


rule export_batch:
    """export for every sample of a batch, in one job."""
    input:
        upstream=lambda wc: batch_folder("fit", wc.batch),
        scripts=[step_script("export")],
    output:
        directory("results/batches/export/{batch}"),
    params:
        members=batch_params("export"),
    log:
        "logs/batches/export/{batch}.log",
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/run_batch.py"
