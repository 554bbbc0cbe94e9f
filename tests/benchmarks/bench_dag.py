"""How long Snakemake takes to plan a run (``snakemake -n``) of 1,000 and 10,000 samples.

The sample sheet points at tiny .npy lattices; inspection is taken as done by writing what
the inspection batches leave behind (their folders with manifest.tsv, every sample accepted
for sfr_hrstem), so the dry run plans everything after inspection: restoration, fitting,
precision, figures and the dataset tables of every batch, as a real second call does.
Wall time depends on what else runs on the machine; the CPU time (user + system) of the
single-threaded dry run is what it takes on an idle one.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import REPO, emit, machine

SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def fabricate(workdir: Path, count: int, batch_size: int) -> None:
    """Sheet, raw files and finished inspection batches for ``count`` samples."""
    raw = workdir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(0).poisson(50, (16, 16)).astype(np.float32)
    lines = ["sample\tpath\tmodality\tresolution"]
    for index in range(count):
        path = raw / f"s{index:05d}.npy"
        np.save(path, image)
        lines.append(f"s{index:05d}\traw/{path.name}\tstem\thr")
    (workdir / "samples.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (workdir / "config.yaml").write_text(
        f"samples: samples.tsv\nbatch_size: {batch_size}\nbenchmark:\n  enabled: false\n", encoding="utf-8")
    later = time.time() + 60  # inspection finished after the raw files were written
    for first in range(0, count, batch_size):
        folder = workdir / "results" / "batches" / "ingest" / f"{first // batch_size:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        rows = ["sample\tstatus\tnetwork\tseconds\tredone"]
        rows += [f"s{i:05d}\tok\tsfr_hrstem\t0\t1" for i in range(first, min(first + batch_size, count))]
        (folder / "manifest.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        for path in (folder / "manifest.tsv", folder):
            os.utime(path, (later, later))


def dry_run_seconds(workdir: Path) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system: the wall time on an otherwise idle machine,
    Snakemake plans on one core) and number of jobs of one dry run."""
    command = [str(SNAKEMAKE), "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(workdir / "config.yaml"), "--cores", "2", "-n", "--quiet", "rules"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "scripts")})
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"dry run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    jobs = 0
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
            jobs = int(parts[1])
    return seconds, cpu, jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/remflow-bench-dag"))
    args = parser.parse_args()
    record = {"benchmark": "dag", "batch_size": args.batch_size}
    for count in args.counts:
        workdir = args.workdir / str(count)
        subprocess.run(["rm", "-rf", str(workdir)], check=True)
        fabricate(workdir, count, args.batch_size)
        seconds, cpu, jobs = dry_run_seconds(workdir)
        record[f"dag_seconds_{count}"] = round(seconds, 2)
        record[f"dag_cpu_seconds_{count}"] = round(cpu, 2)
        record[f"dag_jobs_{count}"] = jobs
        subprocess.run(["rm", "-rf", str(workdir)], check=True)
    emit({**record, **machine()})


if __name__ == "__main__":
    main()
