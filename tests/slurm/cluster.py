"""A real one-node Slurm cluster for tests: ``with one_node_slurm() as cluster: ...``.

Starts munged, slurmctld and slurmd with ``slurm_up.sh`` (installing Slurm from the
Debian packages if needed) and stops them again with ``slurm_down.sh``. As root it
always runs, so CI really exercises Slurm. Without root it can only use a test
cluster that is already up (``sudo tests/slurm/slurm_up.sh``); otherwise it skips and
says why.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SLURM_UP = HERE / "slurm_up.sh"
SLURM_DOWN = HERE / "slurm_down.sh"
#: slurm_up.sh's exit status when it would have to start something but is not root.
NEEDS_ROOT = 77


@dataclass(frozen=True)
class SlurmCluster:
    """Where the running test cluster is and what it offers."""

    partition: str
    node: str
    conf: Path
    log_dir: Path
    started_here: bool

    def env(self) -> dict[str, str]:
        """The environment for Slurm clients (sbatch, squeue, snakemake) of this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}


def _parse_exports(text: str) -> dict[str, str]:
    """``export NAME=value`` lines of slurm_up.sh's stdout as a dict."""
    return dict(re.findall(r"^export (\w+)=(.*)$", text, flags=re.MULTILINE))


def _slurm_installed() -> bool:
    return any(Path(d, "slurmctld").exists() for d in ("/usr/sbin", "/usr/local/sbin", "/sbin"))


@contextlib.contextmanager
def one_node_slurm(timeout_s: int = 900) -> Iterator[SlurmCluster]:
    """Bring the one-node test cluster up, yield it, and stop it afterwards if this call
    started it (a cluster someone started by hand is left running).

    Skips only when not root and the cluster cannot be started; as root any failure
    to start is an error, with slurm_up.sh's message and the log location.
    """
    if os.geteuid() != 0 and not _slurm_installed():
        pytest.skip("Slurm is not installed and installing it needs root "
                    "(run the tests as root, or `sudo tests/slurm/slurm_up.sh` first)")
    # The timeout covers a first-time apt-get install of slurm-wlm and munge.
    result = subprocess.run(["bash", str(SLURM_UP)], capture_output=True, text=True, timeout=timeout_s)
    if result.returncode == NEEDS_ROOT:
        pytest.skip("no Slurm test cluster running and starting one needs root "
                    "(run the tests as root, or `sudo tests/slurm/slurm_up.sh` first)")
    if result.returncode != 0:
        raise RuntimeError(f"slurm_up.sh failed ({result.returncode}):\n{result.stderr[-4000:]}")
    exports = _parse_exports(result.stdout)
    cluster = SlurmCluster(
        partition=exports["REMFLOW_SLURM_PARTITION"],
        node=exports["REMFLOW_SLURM_NODE"],
        conf=Path(exports["SLURM_CONF"]),
        log_dir=Path(exports["REMFLOW_SLURM_LOGS"]),
        started_here=exports["REMFLOW_SLURM_STARTED"] == "1",
    )
    try:
        yield cluster
    finally:
        if cluster.started_here:
            subprocess.run(["bash", str(SLURM_DOWN)], capture_output=True, text=True, timeout=120)


def job_fields(cluster: SlurmCluster, job_id: str) -> dict[str, str]:
    """``scontrol show job -o <id>`` as a dict of its Key=Value pairs (a value is cut
    at its first space, which only matters for paths with spaces)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                         text=True, check=True, env=cluster.env()).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def gpus_requested(fields: dict[str, str]) -> int:
    """GPUs a job asked for, whether with --gres=gpu:N (TresPerNode) or --gpus=N
    (TresPerJob); 0 if it asked for none."""
    total = 0
    for key in ("TresPerNode", "TresPerJob", "TresPerTask", "TresPerSocket"):
        for count in re.findall(r"gres[:/]gpu(?::[\w.]+)?[:=](\d+)", fields.get(key, "")):
            total += int(count)
    return total


def wait_for_states(cluster: SlurmCluster, job_ids: list[str], states: set[str],
                    timeout_s: float = 120) -> dict[str, dict[str, str]]:
    """Poll until every job is in one of ``states``; their scontrol fields."""
    deadline = time.monotonic() + timeout_s
    while True:
        fields = {job: job_fields(cluster, job) for job in job_ids}
        if all(f.get("JobState") in states for f in fields.values()):
            return fields
        if time.monotonic() > deadline:
            found = {job: f.get("JobState") for job, f in fields.items()}
            raise TimeoutError(f"jobs not in {states} after {timeout_s} s: {found}")
        time.sleep(0.5)


def time_limit_minutes(fields: dict[str, str]) -> int:
    """A job's TimeLimit ([D-]HH:MM:SS) in minutes."""
    limit = fields["TimeLimit"]
    days, _, clock = limit.rpartition("-")
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return int(days or 0) * 24 * 60 + hours * 60 + minutes + (seconds > 0)


def jobs_in(cluster: SlurmCluster, workdir: Path) -> list[dict[str, str]]:
    """All jobs (also finished ones: MinJobAge=600) whose working directory is ``workdir``,
    oldest first, with their id, state and comment (Snakemake's ``rule_<name>[_wildcards_...]``)."""
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%T|%k|%Z"], capture_output=True,
                         text=True, check=True, env=cluster.env()).stdout
    rows = [dict(zip(("id", "state", "comment", "workdir"), line.split("|"))) for line in out.splitlines()]
    return sorted((r for r in rows if r["workdir"] == str(workdir)), key=lambda r: int(r["id"]))


def rule_of(job: dict[str, str]) -> str:
    """The Snakemake rule of a job, from its comment."""
    return job["comment"].removeprefix("rule_").split("_wildcards_")[0]


def cancel_first_running_job_and_finish(cluster: SlurmCluster, workdir: Path, rule: str, run: subprocess.Popen,
                                        timeout_s: float, settle_s: float = 0.0) -> tuple[dict[str, str], str]:
    """scancel the first job of ``rule`` once it runs (after ``settle_s`` more seconds), as a
    cluster does on preemption, then wait for snakemake (``run``) to end. Returns the
    cancelled job and snakemake's output; snakemake is stopped if it outlives ``timeout_s``."""
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            running = [j for j in jobs_in(cluster, workdir) if rule_of(j) == rule and j["state"] == "RUNNING"]
            if running:
                break
            if run.poll() is not None:
                raise AssertionError(f"snakemake ended ({run.returncode}) before rule {rule} ran:\n"
                                     f"{run.stdout.read()[-6000:] if run.stdout else ''}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no running job of rule {rule} after {timeout_s} s")
            time.sleep(0.3)
        time.sleep(settle_s)
        subprocess.run(["scancel", running[0]["id"]], check=True, env=cluster.env())
        try:
            output, _ = run.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            run.send_signal(signal.SIGINT)  # snakemake then cancels its Slurm jobs
            output, _ = run.communicate(timeout=60)
            raise AssertionError(f"snakemake still running after {timeout_s} s:\n{output[-6000:]}")
        return running[0], output
    finally:
        if run.poll() is None:
            run.kill()
