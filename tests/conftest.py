"""Shared fixtures: a small but complete workflow run on real parts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
INSTRUMENT_FILES = REPO.parent / "shared" / "data" / "instrument-files"

#: Pixel size given to the calibrated simulated sample, in nm (stored as the file's units).
SIM_PIXEL_NM = 0.02
SIM_SHAPE = (256, 192)  # rows, cols: non-square on purpose, ~50 columns


def run_snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 1800) -> subprocess.CompletedProcess:
    """Run the workflow's Snakefile in ``workdir`` with the test's own config."""
    command = [str(SNAKEMAKE), "--snakefile", str(SNAKEFILE), "--directory", str(workdir),
               "--configfile", str(workdir / "config.yaml"), *args]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}")
    return result


def write_simulated_sample(folder: Path) -> tuple[Path, Path]:
    """A calibrated, non-square crop of tk_r_em's simulated HRSTEM pair (noisy, noise-free)."""
    import hyperspy.api as hs

    from remflow.ingest import read_image, resolve_path

    source = resolve_path("package://tk_r_em/test_data/sfr_hrstem.h5")
    paths = []
    for dataset, name in (("x", "sim_hrstem_cal.hspy"), ("y", "sim_hrstem_cal_truth_image.hspy")):
        data = read_image(source, dataset=dataset, frame=3).signal.data[: SIM_SHAPE[0], : SIM_SHAPE[1]]
        signal = hs.signals.Signal2D(np.ascontiguousarray(data))
        for axis in signal.axes_manager.signal_axes:
            axis.scale, axis.units = SIM_PIXEL_NM, "nm"
        signal.metadata.set_item("Acquisition_instrument.TEM.acquisition_mode", "STEM")
        signal.save(folder / name, overwrite=True)
        paths.append(folder / name)
    return paths[0], paths[1]


def noisy_lattice(shape: tuple[int, int], spacing: float = 9.0, sigma: float = 2.0, seed: int = 0,
                  dtype: type = np.float64) -> np.ndarray:
    """A square lattice of Gaussian columns (``spacing``, ``sigma`` in px; first column at
    spacing/2), 200 counts per column peak on 20 background, Poisson noise (``seed``)."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    image = np.zeros(shape)
    for y in np.arange(spacing / 2, shape[0], spacing):
        for x in np.arange(spacing / 2, shape[1], spacing):
            image += np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma**2))
    return np.random.default_rng(seed).poisson(200 * image + 20).astype(dtype)


def make_small_config(workdir: Path, samples: list[dict[str, str]], *, doses: list[float] | None = None,
                      restore: dict[str, int] | None = None, fit: dict[str, object] | None = None,
                      twin_replicas: int = 0, batch_size: int = 2) -> None:
    """Write config.yaml and samples.tsv for a quick run (``restore``/``fit``: extra settings;
    ``batch_size``: samples per job of every per-sample step).

    The noise twin is off unless ``twin_replicas`` asks for it: it adds three batch steps, and
    only the tests about it need it (the session's ``small_run`` has it on)."""
    columns = ["sample", "path", "frame", "modality", "resolution", "reference", "truth"]
    lines = ["\t".join(columns)] + ["\t".join(str(row.get(c, "")) for c in columns) for row in samples]
    (workdir / "samples.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    bench = (f"  enabled: true\n  shape: [96, 96]\n  doses: [{', '.join(str(d) for d in doses)}]\n"
             if doses else "  enabled: false\n")
    restore_lines = "".join(f"  {key}: {value}\n" for key, value in (restore or {}).items())
    fit_lines = "".join(f"  {key}: {value}\n" for key, value in (fit or {}).items())
    (workdir / "config.yaml").write_text(
        f"samples: samples.tsv\nbatch_size: {batch_size}\n" + (f"restore:\n{restore_lines}" if restore_lines else "")
        + (f"fit:\n{fit_lines}" if fit_lines else "") + f"precision:\n  n_bootstrap: 400\nbenchmark:\n{bench}"
        + f"twin:\n  replicas: {twin_replicas}\n",
        encoding="utf-8")


@pytest.fixture(scope="session")
def slurm_cluster():
    """One real one-node Slurm for the whole test session, stopped at its end if started here."""
    from slurm.cluster import one_node_slurm

    with one_node_slurm() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run (with report) on a calibrated simulated image, a real DM3 file,
    a bad file and a two-dose synthetic benchmark."""
    workdir = tmp_path_factory.mktemp("small_run")
    raw_dir = workdir / "raw"
    raw_dir.mkdir()
    sim, sim_truth = write_simulated_sample(raw_dir)
    (raw_dir / "not an image.dm3").write_text("this is a text file\n", encoding="utf-8")
    samples = [
        {"sample": "sim_cal", "path": f"raw/{sim.name}", "modality": "auto", "resolution": "auto",
         "reference": f"raw/{sim_truth.name}"},
        {"sample": "text_as_dm3", "path": "raw/not an image.dm3", "modality": "stem", "resolution": "hr"},
    ]
    if INSTRUMENT_FILES.is_dir():
        samples.append({"sample": "stem_dm3", "path": str(INSTRUMENT_FILES / "test_STEM_image.dm3"),
                        "modality": "auto", "resolution": "auto"})
    make_small_config(workdir, samples, doses=[200, 20000], twin_replicas=4)
    run_snakemake(workdir, "--cores", "2")
    run_snakemake(workdir, "--cores", "1", "--report", "results/report.html")
    return workdir
