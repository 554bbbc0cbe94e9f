"""The cluster side on real parts: a one-node Slurm with a fake GPU, plain sbatch, and
Snakemake's Slurm executor driven by the repository's profiles on a toy workflow."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from slurm.cluster import (SlurmCluster, cancel_first_running_job_and_finish, gpus_requested, job_fields, jobs_in,
                           rule_of, time_limit_minutes, wait_for_states)

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
SLURM_PROFILE = REPO / "workflow" / "profiles" / "slurm" / "config.yaml"
DEFAULT_PROFILE = REPO / "workflow" / "profiles" / "default" / "config.yaml"

# Toy rules named like the real ones, so the profiles' per-rule settings apply to them.
# restore_batch asks for its GPU as the real rule does (config gpu_request: gpus), runtime
# and the rest come from the profile; finish_batch hangs on its first
# attempt (the test cancels it) and is quick on a retry.
TOY_SNAKEFILE = textwrap.dedent("""\
    rule all:
        input: "restored.txt", "columns.txt", "precision.txt"

    rule restore_batch:
        output: "restored.txt"
        resources: gpu=1
        shell: "echo job=$SLURM_JOB_ID gpus=${{CUDA_VISIBLE_DEVICES:-none}} > {output}"

    rule analyse_batch:
        output: "columns.txt"
        shell: "echo job=$SLURM_JOB_ID gpus=${{CUDA_VISIBLE_DEVICES:-none}} > {output}"

    rule finish_batch:
        input: "columns.txt"
        output: "precision.txt"
        resources: attempt_no=lambda wildcards, attempt: attempt
        shell:
            "if [ {resources.attempt_no} -eq 1 ]; then sleep 300; fi; "
            "echo attempt={resources.attempt_no} job=$SLURM_JOB_ID > {output}"
    """)


@pytest.fixture
def cluster(slurm_cluster) -> SlurmCluster:
    """The session's test cluster (conftest)."""
    return slurm_cluster


def sbatch(cluster: SlurmCluster, workdir: Path, *options: str, command: str) -> str:
    """Submit ``command`` and return the job id."""
    return subprocess.run(["sbatch", "--parsable", "-D", str(workdir), *options, "--wrap", command],
                          capture_output=True, text=True, check=True, env=cluster.env()).stdout.strip()


def derived_profiles(folder: Path) -> tuple[Path, Path, dict]:
    """The repository's Slurm profile and default workflow profile made fit for a small
    test node: every job asks for 1 CPU and 100 MB so that jobs can run side by side,
    and status checks start sooner. Executor, retries, status command, GPU and runtime
    requests are kept. Returns the two folders and the derived workflow profile."""
    slurm = yaml.safe_load(SLURM_PROFILE.read_text())
    slurm["default-resources"]["mem_mb"] = 100
    slurm["latency-wait"] = 5
    slurm["seconds-between-status-checks"] = 1
    slurm["slurm-init-seconds-before-status-checks"] = 1
    slurm["slurm-keep-successful-logs"] = True
    workflow = yaml.safe_load(DEFAULT_PROFILE.read_text())
    for resources in workflow["set-resources"].values():
        if "mem_mb" in resources:
            resources["mem_mb"] = 100
    workflow["set-threads"] = {rule: 1 for rule in workflow.get("set-threads", {})}
    for name, profile in (("slurm", slurm), ("default", workflow)):
        (folder / name).mkdir(parents=True)
        (folder / name / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder / "slurm", folder / "default", {**slurm, **workflow}


@pytest.mark.slurm
def test_sbatch_records_a_gpu_request_only_for_the_job_that_asked_and_gives_it_the_gpu(cluster, tmp_path):
    with_gpu = sbatch(cluster, tmp_path, "--gres=gpu:1", "-o", "gpu.out",
                      command="echo gpus=${CUDA_VISIBLE_DEVICES:-none}")
    without_gpu = sbatch(cluster, tmp_path, "-o", "cpu.out", command="echo gpus=${CUDA_VISIBLE_DEVICES:-none}")
    fields = wait_for_states(cluster, [with_gpu, without_gpu], {"COMPLETED", "FAILED", "CANCELLED"})

    assert fields[with_gpu]["JobState"] == fields[without_gpu]["JobState"] == "COMPLETED"
    assert fields[with_gpu]["Partition"] == cluster.partition
    assert gpus_requested(fields[with_gpu]) == 1
    assert gpus_requested(fields[without_gpu]) == 0
    # Slurm handed the (fake) device to the GPU job only.
    assert (tmp_path / "gpu.out").read_text().strip() == "gpus=0"
    assert (tmp_path / "cpu.out").read_text().strip() == "gpus=none"


@pytest.mark.slurm
def test_slurm_profile_requests_the_gpu_for_restoration_and_retries_a_cancelled_job(cluster, tmp_path):
    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE)
    slurm_profile, workflow_profile, profile = derived_profiles(tmp_path / "profiles")
    assert profile["executor"] == "slurm" and profile["retries"] >= 1

    run = subprocess.Popen(
        [str(SNAKEMAKE), "--profile", str(slurm_profile), "--workflow-profile", str(workflow_profile),
         "--directory", str(tmp_path),
         "--snakefile", str(tmp_path / "Snakefile")],
        cwd=tmp_path, env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    hanging, output = cancel_first_running_job_and_finish(cluster, tmp_path, "finish_batch", run, timeout_s=240)
    assert run.returncode == 0, output[-6000:]

    jobs = jobs_in(cluster, tmp_path)
    by_rule = {}
    for job in jobs:
        by_rule.setdefault(rule_of(job), []).append(job)
    assert sorted(by_rule) == ["analyse_batch", "finish_batch", "restore_batch"]
    # The cancelled job failed, Snakemake submitted it again, and the retry made the output.
    assert [j["state"] for j in by_rule["finish_batch"]] == ["CANCELLED", "COMPLETED"]
    assert by_rule["finish_batch"][0]["id"] == hanging["id"]
    retry = by_rule["finish_batch"][1]["id"]
    assert (tmp_path / "precision.txt").read_text().split() == ["attempt=2", f"job={retry}"]

    # GPU and runtime as the profile asks: restoration on the GPU, fitting without.
    restore_job = by_rule["restore_batch"][0]["id"]
    fit_job = by_rule["analyse_batch"][0]["id"]
    restore_fields, fit_fields = job_fields(cluster, restore_job), job_fields(cluster, fit_job)
    assert gpus_requested(restore_fields) == 1
    assert gpus_requested(fit_fields) == 0
    assert time_limit_minutes(restore_fields) == profile["set-resources"]["restore_batch"]["runtime"]
    assert time_limit_minutes(fit_fields) == profile["set-resources"]["analyse_batch"]["runtime"]
    assert (tmp_path / "restored.txt").read_text().split() == [f"job={restore_job}", "gpus=0"]
    assert (tmp_path / "columns.txt").read_text().split() == [f"job={fit_job}", "gpus=none"]


@pytest.mark.workflow
def test_default_profile_gpu_request_does_not_stop_a_local_run_without_gpu(tmp_path):
    """restore_batch asks for a GPU (as the real rule does); a local run (no --resources
    gpu=...) must still run it, with the profile's resources attached."""
    (tmp_path / "Snakefile").write_text(textwrap.dedent("""\
        rule restore_batch:
            output: "resources.yaml"
            resources: gpu=1
            run:
                import yaml
                with open(output[0], "w") as handle:
                    yaml.safe_dump({"threads": threads, **dict(resources.items())}, handle)
        """))
    result = subprocess.run(
        [str(SNAKEMAKE), "--workflow-profile", str(DEFAULT_PROFILE.parent), "--cores", "1",
         "--directory", str(tmp_path), "--snakefile", str(tmp_path / "Snakefile")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={key: value for key, value in os.environ.items() if not key.startswith("SLURM")})
    assert result.returncode == 0, result.stderr[-4000:]
    resources = yaml.safe_load((tmp_path / "resources.yaml").read_text())
    profile = yaml.safe_load(DEFAULT_PROFILE.read_text())
    assert resources["gpu"] == 1
    assert "gpu" not in profile["set-resources"]["restore_batch"]  # the rule's, see restore.smk
    assert resources["runtime"] == profile["set-resources"]["restore_batch"]["runtime"]
    # Threads are capped by --cores 1 locally.
    assert resources["threads"] == 1
