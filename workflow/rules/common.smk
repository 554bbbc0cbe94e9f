import functools
import json
import mimetypes
import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import IncompleteCheckpointException
from snakemake.io import checkpoint_target
from snakemake.iocontainers import Wildcards
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

from remflow.batch import MANIFEST, chunks, plain_namedlist, read_manifest  # noqa: E402
from remflow.ingest import resolve_path, split_dataset  # noqa: E402
from remflow.sheet import load_sample_sheet  # noqa: E402
from remflow.synthetic_samples import benchmark_samples  # noqa: E402

validate(config, schema="../schemas/config.schema.yaml")

SAMPLE_SHEET = load_sample_sheet(config["samples"], REMFLOW_ROOT / "workflow" / "schemas" / "samples.schema.yaml")
SAMPLE_SHEET = benchmark_samples(SAMPLE_SHEET, config["benchmark"]["doses"] if config["benchmark"]["enabled"] else [])
SAMPLES = list(SAMPLE_SHEET.index)
BENCHMARK_SAMPLES = [s for s in SAMPLES if SAMPLE_SHEET.loc[s, "benchmark_dose"] is not None]


wildcard_constraints:
    # The sheet's characters (remflow.sheet checks names). Not the list of names: Snakemake
    # copies constraints into every pattern, and a 10,000-name alternation made each
    # wildcard substitution cost ~1 ms.
    sample=r"[A-Za-z0-9_.\-]+",
    batch=r"\d{4}(-sfr_[a-z]+)?",


class SampleRow(dict):
    """A sheet row as a dict (None where empty); .to_dict() as a pandas row has."""

    def to_dict(self):
        return dict(self)


# Rows looked up once: .loc per call costs ~0.5 ms, and input functions ask per sample and step.
_SAMPLE_ROWS = {name: SampleRow(record) for name, record in zip(SAMPLE_SHEET.index, SAMPLE_SHEET.to_dict("records"))}


def sample_row(sample):
    return _SAMPLE_ROWS[sample]


@functools.cache
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


# --- batches ------------------------------------------------------------------------------
# Every per-sample step runs in batch jobs (remflow.batch): the DAG holds batches, not
# samples, and is planned in time linear in the number of samples. Inspection batches are
# the sheet cut into chunks of batch_size (known before anything runs); after inspection,
# each inspection batch splits by network into the batches that restore, fit, measure and
# draw ("0003-sfr_hrstem"). A batch job reads its members from its own inputs, so nothing
# but the dataset-level rules ever waits for another batch's checkpoint.

BATCH_SIZE = config["restore"].get("batch_size", config["batch_size"])
INGEST_BATCHES = chunks(SAMPLES, BATCH_SIZE)
STEP_FOLDER = "results/batches/{step}/{batch}"


def batch_folder(step, batch):
    return STEP_FOLDER.format(step=step, batch=batch)


@functools.cache
def _manifest(folder, mtime_ns):
    return read_manifest(folder)


def manifest(folder):
    """A batch's manifest rows, read once per version of the file."""
    return _manifest(folder, (Path(folder) / MANIFEST).stat().st_mtime_ns)


def split_batch(batch):
    ingest_batch, network = batch.split("-", 1)
    return ingest_batch, network


def accepted_by_network(ingest_batch):
    """Accepted samples of an inspection batch, by network, in sheet order."""
    by_network = {}
    for row in manifest(batch_folder("ingest", ingest_batch)):
        if row["status"] == "ok":
            by_network.setdefault(row["network"], []).append(row["sample"])
    return by_network


def batch_members(batch):
    ingest_batch, network = split_batch(batch)
    return accepted_by_network(ingest_batch).get(network, [])


def analysis_batches(ingest_batches=None):
    """The batches after inspection. Until every inspection batch has run, ask for all the
    pending ones at once: they are scheduled together, and this is not re-walked per sample."""
    ingest_batches = list(INGEST_BATCHES) if ingest_batches is None else ingest_batches
    pending = []
    for batch in ingest_batches:
        try:
            checkpoints.ingest_batch.get(batch=batch)
        except IncompleteCheckpointException:
            pending.append(batch)
    if pending:
        raise IncompleteCheckpointException(
            checkpoints.ingest_batch.rule,
            [checkpoint_target(batch_folder("ingest", batch)) for batch in pending],
        )
    return [f"{b}-{network}" for b in ingest_batches for network in sorted(accepted_by_network(b))]


# Rule names as registered: with `use rule * from remflow as remflow_*` they carry the
# prefix. The modifier in force now (while this file is parsed) knows it; later it is gone.
_RULE_NAME = workflow.modifier.modify_rulename


def step_rule_of(rule_name):
    """A per-sample rule, by its name in remflow's own files."""
    try:
        return workflow.get_rule(_RULE_NAME(rule_name))
    except Exception:  # the rename did not apply (remflow is the main workflow)
        return workflow.get_rule(rule_name)


def step_script(rule_name):
    """Absolute path of a per-sample rule's script."""
    step_rule = step_rule_of(rule_name)
    return str(Path(step_rule.basedir.get_path_or_uri(secret_free=True)) / step_rule.script)


def step_spec(rule_name, sample, gate=None):
    """A per-sample rule's input, output, params and log for one sample, ready for
    remflow.batch.run_step: the batch job runs that rule's script with them."""
    step_rule = step_rule_of(rule_name)
    wildcards = Wildcards(fromdict={"sample": sample})
    input_files = step_rule.expand_input(wildcards)[0]
    output_files = step_rule.expand_output(wildcards)[0]
    params = step_rule.expand_params(wildcards, input_files, output_files, None)[0]
    return {
        "rule": rule_name,
        "sample": sample,
        "script": step_script(rule_name),
        "input": plain_namedlist(input_files),
        "output": plain_namedlist(output_files),
        "log": plain_namedlist(step_rule.expand_log(wildcards)),
        "params": dict(params.items()),
        "wildcards": {"sample": sample},
        "gate": gate,
    }


def batch_params(*rule_names, gate=None):
    """params.members of a batch rule running the per-sample rules ``rule_names`` in order."""

    def members(wildcards):
        samples = INGEST_BATCHES[wildcards.batch] if "-" not in wildcards.batch else batch_members(wildcards.batch)
        return [
            {
                "sample": s,
                "steps": [step_spec(name, s, gate=gate if i == 0 else None) for i, name in enumerate(rule_names)],
            }
            for s in samples
        ]

    return members


def inspection_inputs(wildcards):
    files = {}
    for sample in INGEST_BATCHES[wildcards.batch]:
        files.update(dict.fromkeys(existing_inputs(sample).values()))
    return list(files)


def sample_batches(samples):
    """The analysis batches that hold any of ``samples``."""
    wanted = {BATCH_OF_SAMPLE[s] for s in samples}
    return [b for b in analysis_batches(sorted(wanted)) if split_batch(b)[0] in wanted]


BATCH_OF_SAMPLE = {s: b for b, members in INGEST_BATCHES.items() for s in members}


TWIN = config["twin"]["replicas"] > 0


def twin_result(wildcards):
    """The sample's noise-twin figures, or nothing when twin.replicas is 0."""
    return f"results/twin/{wildcards.sample}.json" if TWIN else []


# --- CPU batch jobs (rules/batches.smk) -------------------------------------------------------
# After restoration, one job per batch runs every per-sample step that needs no network, one
# interpreter for all of them (imports once): fit -> precision -> figure -> export. The noise
# twin needs the network between its model and its fit, so with the twin on the chain is cut
# there: analyse_batch (fit, twin model), restore_twin_batch, finish_batch (the rest).
if TWIN:
    ANALYSE_STEPS = ["fit_columns", "twin_model"]
    FINISH_STEPS = ["twin_fit", "precision", "figure", "thumbnail", "export"]
else:
    ANALYSE_STEPS = ["fit_columns", "precision", "figure", "thumbnail", "export"]
    FINISH_STEPS = []

# Earlier stages first when cores are short: every batch is restored, then analysed, then its
# twin restored, then finished, so that the last jobs of a run are several finish_batch jobs
# side by side. Without it, Snakemake left one batch's analysis waiting for 3.6 min while
# later stages ran, and the run ended on one long chain with a core idle (bench_workflow_overhead,
# 200 images on 2 cores: ~60 s of one idle core at the end of a 394 s run).
BATCH_PRIORITY = {"restore_batch": 4, "analyse_batch": 3, "restore_twin_batch": 2, "finish_batch": 1}

# The folder (results/batches/<step>/<batch>) that holds each per-sample rule's outputs.
STEP_OF_RULE = {
    "fit_columns": "fit",
    "twin_model": "twin_model",
    "twin_fit": "twin_fit",
    "precision": "precision",
    "figure": "figure",
    "thumbnail": "figure",
    "export": "export",
}
# Per-sample files that go into Snakemake's report, by step folder.
STEP_REPORT = {
    "fit": dict(
        patterns=["{sample}.csv"],
        caption="../report/columns_table.rst",
        category="Tables and data",
        subcategory="fitted columns (CSV)",
        labels={"sample": "{sample}"},
    ),
    "precision": dict(
        patterns=["{sample}.json"],
        caption="../report/precision_json.rst",
        category="Tables and data",
        subcategory="precision figures (JSON)",
        labels={"sample": "{sample}"},
    ),
    "figure": dict(
        patterns=["{sample}.png"],
        caption="../report/sample_figure.rst",
        category="Per-sample figures",
        labels={"sample": "{sample}"},
    ),
}


def step_folders(rule_names):
    """{step: [rule, ...]} for the per-sample rules a batch job runs."""
    folders = {}
    for name in rule_names:
        folders.setdefault(STEP_OF_RULE[name], []).append(name)
    return folders


def step_outputs(rule_names):
    """A batch job's outputs: one directory per step (named by the step), in the report where
    STEP_REPORT says so."""
    outputs = {}
    for step in step_folders(rule_names):
        folder = directory(STEP_FOLDER.format(step=step, batch="{batch}"))
        outputs[step] = report(folder, **STEP_REPORT[step]) if step in STEP_REPORT else folder
    return outputs


def summary_inputs(wildcards):
    return {
        "ingest": [batch_folder("ingest", b) for b in INGEST_BATCHES],
        "precision": [batch_folder("precision", b) for b in analysis_batches()],
    }


def dose_inputs(wildcards):
    return {
        "ingest": [batch_folder("ingest", b) for b in sorted({BATCH_OF_SAMPLE[s] for s in BENCHMARK_SAMPLES})],
        "precision": [batch_folder("precision", b) for b in sample_batches(BENCHMARK_SAMPLES)],
    }


def figure_folders(wildcards):
    return [batch_folder("figure", b) for b in analysis_batches()]


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
    outputs = [
        "results/summary.csv",
        "results/summary.html",
        "results/figures/precision_gain.png",
        "results/index.html",
    ]
    outputs += figure_folders(wildcards)
    if TWIN:
        outputs.append("results/figures/twin_crlb.png")
    if BENCHMARK_SAMPLES:
        outputs += ["results/benchmark/precision_vs_dose.csv", "results/figures/precision_vs_dose.png"]
    outputs += methods_benchmark_outputs()
    return outputs


def restore_mem_mb(wildcards, twin=False):
    """Memory for a restoration job: TensorFlow's base plus the activations of its
    largest network call (measured peak: 6.7 GB for a 2048x2048 image, ~1.6 kB per
    pixel; 2 kB allowed), from the float32 images' file sizes, plus the batch's raw and
    restored images, which the job holds together. ``twin``: the noise twin's replica
    stacks (results/twin/{sample}.replicas.npy) instead of the ingested images."""
    settings = config["restore"]
    sizes, largest_px = [], 0.0
    for sample in batch_members(wildcards.batch):
        if twin:
            image, info = Path(f"results/twin/{sample}.replicas.npy"), None
        else:
            image, info = Path(f"results/ingest/{sample}.hspy"), Path(f"results/ingest/{sample}.json")
        if not image.exists():  # a dry run before ingest
            continue
        sizes.append(image.stat().st_size)
        # A frame series or a replica stack goes through the network image by image.
        if twin:
            frames = config["twin"]["replicas"]
        else:
            frames = json.loads(info.read_text()).get("n_frames") or 1 if info.exists() else 1
        largest_px = max(largest_px, sizes[-1] / frames / 4)
    if largest_px > settings["max_whole_pixels"]:
        largest_px = settings["tile_batch"] * (settings["tile_px"] + 32) ** 2
    return int(2000 + 0.002 * largest_px + 2 * sum(sizes) / 1e6)


# --- export (rules/export.smk): files for Fiji/ImageJ and atomap --------------------------

# So that the report offers the atomap files as HDF5 downloads, not as text.
mimetypes.add_type("application/x-hdf5", ".hdf5")


def export_outputs(wildcards):
    """The ImageJ TIFF and the two atomap files of every accepted sample (rule export, run
    by export_batch): the batch folders, whose manifests say which samples have them."""
    return [batch_folder("export", b) for b in analysis_batches()]
