"""The real workflow on a real one-node Slurm with the shipped profiles: restoration jobs
ask for the (fake) GPU, fitting jobs do not, a restoration job cancelled mid-run is
retried, and the results equal those of a local run. Then, on the same cluster, the
restoration jobs again with `--config gpu_request=gres`: the GPU as --gres=gpu:1, every
other resource as before. A 40-sample dataset takes at most 30 Slurm jobs (every step runs
in batches) and gives the same tables as a local run."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import hyperspy.api as hs
import numpy as np
import pytest
import yaml

from conftest import (REPO, SNAKEFILE, SNAKEMAKE, make_small_config, noisy_lattice, run_snakemake,
                      write_simulated_sample)
from slurm.cluster import (SlurmCluster, cancel_first_running_job_and_finish, gpus_requested, job_fields, jobs_in,
                           rule_of, time_limit_minutes)

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

SLURM_PROFILE = REPO / "workflow" / "profiles" / "slurm"
#: Tables that must come out the same on the cluster as on this machine.
TABLES = ["summary.csv", "columns/sim_cal.csv", "columns/srtio3.csv"]


def write_two_tiny_samples(workdir: Path) -> None:
    """A calibrated simulated HRSTEM crop and a crop of the low-dose SrTiO3 frame, one
    restoration batch each (batch_size 1), so that one batch can be cancelled."""
    from remflow.ingest import read_image, resolve_path

    raw = workdir / "raw"
    raw.mkdir(parents=True)
    sim, _ = write_simulated_sample(raw)
    frame = read_image(resolve_path("package://tk_r_em/test_data/exp_hrstem.h5"), frame=4).signal.data
    np.save(raw / "srtio3.npy", np.ascontiguousarray(frame[:384, :384]))
    make_small_config(workdir, [
        {"sample": "sim_cal", "path": f"raw/{sim.name}", "modality": "auto", "resolution": "auto"},
        {"sample": "srtio3", "path": "raw/srtio3.npy", "modality": "stem", "resolution": "hr"},
    ], batch_size=1)


def start_on_slurm(cluster: SlurmCluster, workdir: Path, *extra: str) -> subprocess.Popen:
    """snakemake --profile workflow/profiles/slurm, as a user runs it (the default workflow
    profile comes in by itself); only the status polling is made quicker for the test."""
    command = [str(SNAKEMAKE), "--snakefile", str(SNAKEFILE), "--directory", str(workdir),
               "--configfile", str(workdir / "config.yaml"), "--profile", str(SLURM_PROFILE),
               "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2",
               "--latency-wait", "10", *extra]
    return subprocess.Popen(command, cwd=workdir, env=cluster.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("local")
    write_two_tiny_samples(workdir)
    run_snakemake(workdir, "--cores", "2")
    return workdir


def test_workflow_on_slurm_gpu_for_restoration_retry_after_scancel_and_same_results(slurm_cluster, local_run,
                                                                                     tmp_path):
    workdir = tmp_path / "cluster"
    write_two_tiny_samples(workdir)
    run = start_on_slurm(slurm_cluster, workdir)
    # Cancelled once it is into TensorFlow, mid-restoration.
    cancelled, output = cancel_first_running_job_and_finish(slurm_cluster, workdir, "restore_batch", run,
                                                            timeout_s=1500, settle_s=3)
    assert run.returncode == 0, output[-8000:]

    jobs = jobs_in(slurm_cluster, workdir)
    by_rule: dict[str, list[dict[str, str]]] = {}
    for job in jobs:
        by_rule.setdefault(rule_of(job), []).append(job)
    # Local rules (summary, plots, index) never reach Slurm; every batch step did.
    assert set(by_rule) == {"ingest_batch", "restore_batch", "analyse_batch"}
    # The cancelled batch was submitted again and completed; every final job completed.
    same_batch = [j for j in by_rule["restore_batch"] if j["comment"] == cancelled["comment"]]
    assert [j["state"] for j in same_batch] == ["CANCELLED", "COMPLETED"], same_batch
    assert len(by_rule["restore_batch"]) == 3 and len(by_rule["analyse_batch"]) == 2

    gpus_fields = [job_fields(slurm_cluster, job["id"]) for job in by_rule["restore_batch"]]
    for fields in gpus_fields:
        # --gpus=1 is a per-job request (TresPerJob=gres:gpu:1; older Slurm writes gres/gpu:1).
        assert gpus_requested(fields) == 1 and re.fullmatch(r"gres[:/]gpu:1", fields.get("TresPerJob", "")), fields
        assert not fields.get("TresPerNode"), fields
        assert time_limit_minutes(fields) == 120  # the workflow profile's restore_batch runtime
    profile = REPO / "workflow" / "profiles" / "default" / "config.yaml"
    threads = yaml.safe_load(profile.read_text(encoding="utf-8"))["set-threads"]["restore_batch"]
    for fields in gpus_fields:
        assert int(fields["NumCPUs"]) == threads  # the workflow profile's restore_batch threads
    for rule in ("ingest_batch", "analyse_batch"):
        for job in by_rule[rule]:
            assert gpus_requested(job_fields(slurm_cluster, job["id"])) == 0, job

    results, local = workdir / "results", local_run / "results"
    for name in TABLES:
        assert (results / name).read_bytes() == (local / name).read_bytes(), name
    for sample in ("sim_cal", "srtio3"):
        on_cluster = hs.load(results / "restored" / f"{sample}.hspy").data
        here = hs.load(local / "restored" / f"{sample}.hspy").data
        np.testing.assert_array_equal(on_cluster, here)
        assert (results / "figures" / f"{sample}.png").stat().st_size > 10_000

    # Sites that refuse --gpus: the switch asks for the GPU as --gres=gpu:1 instead and keeps
    # the rest. Only the restoration jobs run again (forced): flipping the switch made
    # nothing else outdated.
    before = {job["id"] for job in jobs}
    batches = sorted(f"results/batches/restore/{p.name}" for p in (results / "batches" / "restore").iterdir()
                     if p.is_dir())
    rerun = start_on_slurm(slurm_cluster, workdir, "--config", "gpu_request=gres", "--force", *batches)
    output, _ = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, output[-8000:]
    new_jobs = [job for job in jobs_in(slurm_cluster, workdir) if job["id"] not in before]
    assert sorted(rule_of(job) for job in new_jobs) == ["restore_batch", "restore_batch"], new_jobs
    for job in new_jobs:
        fields = job_fields(slurm_cluster, job["id"])
        assert job["state"] == "COMPLETED", job
        # --gres=gpu:1 is a per-node request: TresPerNode=gres:gpu:1 (gres/gpu:1), nothing per job.
        assert re.fullmatch(r"gres[:/]gpu:1", fields.get("TresPerNode", "")) and not fields.get("TresPerJob"), fields
        assert gpus_requested(fields) == 1
        same = next(f for f in gpus_fields if f["Comment"] == fields["Comment"])
        for key in ("TimeLimit", "NumCPUs", "MinMemoryNode", "Partition"):
            assert fields.get(key) == same.get(key), (key, fields.get(key), same.get(key))

def write_lattice_dataset(workdir: Path, count: int = 40) -> None:
    """``count`` small noisy lattices (64x64 px), batches of 20."""
    raw = workdir / "raw"
    raw.mkdir(parents=True)
    samples = []
    for index in range(count):
        np.save(raw / f"l{index:02d}.npy", noisy_lattice((64, 64), seed=index, dtype=np.float32))
        samples.append({"sample": f"l{index:02d}", "path": f"raw/l{index:02d}.npy", "modality": "stem",
                        "resolution": "hr"})
    make_small_config(workdir, samples, batch_size=20)


def test_forty_samples_take_at_most_thirty_slurm_jobs_and_equal_a_local_run(slurm_cluster, tmp_path):
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    for workdir in (local, cluster):
        write_lattice_dataset(workdir)
    run_snakemake(local, "--cores", "2")
    run = start_on_slurm(slurm_cluster, cluster)
    output, _ = run.communicate(timeout=3000)
    assert run.returncode == 0, output[-8000:]
    jobs = jobs_in(slurm_cluster, cluster)
    assert len(jobs) <= 30, [job["comment"] for job in jobs]
    # Per batch: inspection + ingest, restoration, and one job for fit, precision, figure and export.
    assert {rule_of(job) for job in jobs} == {"ingest_batch", "restore_batch", "analyse_batch"}
    summary = (cluster / "results" / "summary.csv").read_text()
    assert summary.count("\nl") == 40 and summary == (local / "results" / "summary.csv").read_text()
    for index in range(40):
        name = f"columns/l{index:02d}.csv"
        assert (cluster / "results" / name).read_bytes() == (local / "results" / name).read_bytes(), name
