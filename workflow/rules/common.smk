import functools
import json
import mimetypes
import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import IncompleteCheckpointException
from snakemake.io import checkpoint_target
from snakemake.utils import validate

# remflow's own folder, from this file: workflow.basedir is the *main* Snakefile's folder,
# which differs when remflow is used as a module of another workflow.
REMFLOW_ROOT = Path(workflow.current_basedir).parents[1]
# The remflow package lives in scripts/; make it importable without installing it, here
# and in the rule scripts (Snakemake appends its own search paths after site-packages, so
# an installed remflow of another checkout would win there).
sys.path.insert(0, str(REMFLOW_ROOT / "scripts"))
_PYTHONPATH = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
os.environ.update(PYTHONPATH=os.pathsep.join([str(REMFLOW_ROOT / "scripts")] + _PYTHONPATH))

from remflow.ingest import resolve_path, split_dataset  # noqa: E402
from remflow.sheet import load_sample_sheet  # noqa: E402
from remflow.synthetic_samples import benchmark_samples  # noqa: E402

validate(config, schema="../schemas/config.schema.yaml")

SAMPLE_SHEET = load_sample_sheet(config["samples"], REMFLOW_ROOT / "workflow" / "schemas" / "samples.schema.yaml")
SAMPLE_SHEET = benchmark_samples(SAMPLE_SHEET, config["benchmark"]["doses"] if config["benchmark"]["enabled"] else [])
SAMPLES = list(SAMPLE_SHEET.index)
BENCHMARK_SAMPLES = [s for s in SAMPLES if SAMPLE_SHEET.loc[s, "benchmark_dose"] is not None]


wildcard_constraints:
    sample="|".join(map(re.escape, SAMPLES)) if SAMPLES else "NO_SAMPLES",
    batch=r"sfr_[a-z]+-\d{4}",


def sample_row(sample):
    return SAMPLE_SHEET.loc[sample]


def raw_file(sample, column="path"):
    """Real path of a sample's file; package:// and #dataset resolved."""
    value = sample_row(sample)[column]
    if value is None:
        return None
    return str(resolve_path(value, sample_row(sample)["base_dir"]))


def existing_inputs(sample):
    """The sample's files that exist. Missing ones are not inputs, so that
    inspect_raw can reject the sample with a reason instead of the whole run failing."""
    files = {}
    for column in ("path", "truth", "reference"):
        path = raw_file(sample, column)
        if path is not None and (Path(path).exists() or path.startswith("results/")):
            files[column] = path
    return files


@functools.cache
def _read_json(path):
    with open(path) as handle:
        return json.load(handle)


def inspection(sample):
    """The ingest JSON of a sample. Until every sample's checkpoint has run, ask for
    all pending ones at once, so that they are scheduled together (and in parallel)."""
    pending = []
    for name in SAMPLES:
        try:
            checkpoints.inspect_raw.get(sample=name)
        except IncompleteCheckpointException:
            pending.append(name)
    if pending:
        raise IncompleteCheckpointException(
            checkpoints.inspect_raw.rule,
            [checkpoint_target(f"results/ingest/{name}.json") for name in pending],
        )
    return _read_json(checkpoints.inspect_raw.get(sample=sample).output.info)


def accepted(samples):
    return [s for s in samples if inspection(s)["status"] == "ok"]


def restore_batches():
    """Accepted samples grouped by network, in batches of restore.batch_size."""
    by_network = {}
    for sample in accepted(SAMPLES):
        by_network.setdefault(inspection(sample)["network"], []).append(sample)
    size = config["restore"]["batch_size"]
    batches = {}
    for network, members in sorted(by_network.items()):
        members = sorted(members)
        for index in range(0, len(members), size):
            batches[f"{network}-{index // size:04d}"] = members[index : index + size]
    return batches


def batch_of(sample):
    return next(b for b, members in restore_batches().items() if sample in members)


def batch_members(batch):
    return restore_batches()[batch]


def per_sample_result(sample):
    """What the summary reads for a sample: its precision, or its rejection."""
    if inspection(sample)["status"] == "ok":
        return f"results/precision/{sample}.json"
    return f"results/ingest/{sample}.json"


def summary_inputs(wildcards):
    return [per_sample_result(s) for s in SAMPLES]


def figure_inputs(wildcards):
    return [f"results/figures/{s}.png" for s in accepted(SAMPLES)]


def dose_inputs(wildcards):
    return {"precision": [per_sample_result(s) for s in BENCHMARK_SAMPLES]}


def methods_benchmark_outputs():
    """The restoration-methods benchmark's tables and figures, when it is switched on."""
    settings = config["benchmark"]
    if not (settings["enabled"] and settings["methods"]):
        return []
    return [
        "results/benchmark/methods.csv",
        "results/benchmark/methods_summary.csv",
        "results/figures/methods_error_vs_dose.png",
        "results/figures/methods_fidelity_vs_dose.png",
        "results/figures/methods_panel.png",
    ]


def all_outputs(wildcards):
    outputs = ["results/summary.csv", "results/summary.html", "results/figures/precision_gain.png"]
    outputs += [f"results/restored/{s}.hspy" for s in accepted(SAMPLES)]
    outputs += figure_inputs(wildcards)
    if BENCHMARK_SAMPLES:
        outputs += ["results/benchmark/precision_vs_dose.csv", "results/figures/precision_vs_dose.png"]
    outputs += methods_benchmark_outputs()
    return outputs


def restore_mem_mb(wildcards, input):
    """Memory for a restoration job: TensorFlow's base plus the activations of its
    largest network call (measured peak: 6.7 GB for a 2048x2048 image, ~1.6 kB per
    pixel; 2 kB allowed), from the float32 images' file sizes, plus the batch's raw and
    restored images, which the job holds together."""
    settings = config["restore"]
    sizes = [Path(f).stat().st_size for f in input.images]
    # A frame series goes through the network frame by frame: its largest call is one frame.
    frames = [_read_json(f).get("n_frames") or 1 for f in input.infos]
    largest_px = max((size / n for size, n in zip(sizes, frames)), default=0) / 4
    if largest_px > settings["max_whole_pixels"]:
        largest_px = settings["tile_batch"] * (settings["tile_px"] + 32) ** 2
    return int(2000 + 0.002 * largest_px + 2 * sum(sizes) / 1e6)


# --- export (rules/export.smk): files for Fiji/ImageJ and atomap --------------------------

# So that the report offers the atomap files as HDF5 downloads, not as text.
mimetypes.add_type("application/x-hdf5", ".hdf5")


def export_outputs(wildcards):
    """The ImageJ TIFF and the two atomap files of every accepted sample."""
    return [
        path
        for sample in accepted(SAMPLES)
        for path in (
            f"results/restored/{sample}.tif",
            f"results/columns/{sample}_raw_atom_lattice.hdf5",
            f"results/columns/{sample}_restored_atom_lattice.hdf5",
        )
    ]
