"""Per-image overhead of the whole workflow: 200 small lattice images end to end, local executor.

overhead_per_image_s = wall time per image minus the restoration and fitting time per image
measured inside the jobs (restore_batch's network time; fit_columns' time per member, where
the first member of each batch, which pays atomap's import, counts with its batch's median).
Also reported: where the rest goes (seconds per step summed over members), the size of the
sample index and of the zip report, and how long headless Chromium takes to open the index.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from common import REPO, emit, machine

sys.path.insert(0, str(REPO / "tests"))
from conftest import noisy_lattice  # noqa: E402  (the tests' lattice, one definition)

SNAKEMAKE = Path(sys.executable).with_name("snakemake")
# The per-sample rules whose time the batch manifests record (step_seconds), by the folder of
# the batch job that runs them.
STEPS = {"ingest": ("inspect_raw", "ingest"), "fit": ("fit_columns", "twin_model"),
         "precision": ("twin_fit", "precision", "figure", "thumbnail", "export")}
FITTING = ("fit_columns", "twin_fit")


def snakemake(workdir: Path, *args: str) -> float:
    command = [str(SNAKEMAKE), "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(workdir / "config.yaml"), *args]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "scripts")})
    if done.returncode != 0:
        raise SystemExit(f"snakemake failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def manifests(results: Path, step: str) -> list[list[dict[str, str]]]:
    out = []
    for path in sorted((results / "batches" / step).glob("*/manifest.tsv")):
        with open(path, encoding="utf-8", newline="") as handle:
            out.append(list(csv.DictReader(handle, delimiter="\t")))
    return out


def step_seconds(batches: list[list[dict[str, str]]]) -> dict[str, float]:
    """Seconds per per-sample rule, summed over members. The first member of each batch also
    imports what the step needs (atomap, matplotlib): it counts with its batch's median."""
    totals: dict[str, float] = {}
    for rows in batches:
        per_rule: dict[str, list[float]] = {}
        for row in rows:
            for item in (row.get("step_seconds") or "").split():
                name, value = item.split("=")
                per_rule.setdefault(name, []).append(float(value))
        for name, values in per_rule.items():
            if len(values) > 1:
                values[0] = statistics.median(values[1:])
            totals[name] = totals.get(name, 0.0) + sum(values)
    return totals


def restore_seconds(logs: Path) -> float:
    """Network time inside the restoration jobs (images and the noise twin's replicas)."""
    pattern = re.compile(r"restored \d+ (?:images|replicas) in ([\d.]+) s")
    return sum(float(m.group(1)) for step in ("restore", "restore_twin")
               for path in (logs / "batches" / step).glob("*.log")
               for m in pattern.finditer(path.read_text(encoding="utf-8")))


def chromium_load_seconds(index: Path) -> dict[str, float | int]:
    """Open the unzipped index in headless Chromium; seconds to the load event and to the
    first screen of thumbnails decoded."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_report_browser import browser_session, open_index

    with browser_session() as devtools:
        return open_index(devtools, index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--snakemake-args", default="", help="extra arguments of the timed run, one string")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/remflow-bench-overhead"))
    args = parser.parse_args()
    workdir = args.workdir
    subprocess.run(["rm", "-rf", str(workdir)], check=True)
    (workdir / "raw").mkdir(parents=True)
    lines = ["sample\tpath\tmodality\tresolution"]
    for index in range(args.images):
        np.save(workdir / "raw" / f"l{index:04d}.npy", noisy_lattice((args.size, args.size), seed=index,
                                                                     dtype=np.float32))
        lines.append(f"l{index:04d}\traw/l{index:04d}.npy\tstem\thr")
    (workdir / "samples.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (workdir / "config.yaml").write_text(f"samples: samples.tsv\nbatch_size: {args.batch_size}\n"
                                         "benchmark:\n  enabled: false\n", encoding="utf-8")
    wall = snakemake(workdir, "--cores", str(args.cores), *shlex.split(args.snakemake_args))
    results = workdir / "results"
    per_step: dict[str, float] = {}
    for folder in STEPS:
        for name, value in step_seconds(manifests(results, folder)).items():
            per_step[name] = round(value, 2)
    restore_s, fit_s = restore_seconds(workdir / "logs"), sum(per_step.get(name, 0.0) for name in FITTING)
    zip_s = snakemake(workdir, "--cores", "1", "results/report.zip")
    record = {
        "benchmark": "workflow_overhead", "images": args.images, "image_px": [args.size, args.size],
        "batch_size": args.batch_size, "cores": args.cores, "wall_s": round(wall, 1),
        "wall_per_image_s": wall / args.images, "restore_network_s": round(restore_s, 2), "fit_s": round(fit_s, 2),
        "overhead_per_image_s": (wall - restore_s - fit_s) / args.images,
        "member_seconds_per_step": per_step,
        "ok": sum(r["status"] == "ok" for rows in manifests(results, "precision") for r in rows),
        "index_html_mb": (results / "index.html").stat().st_size / 1e6,
        "report_zip_mb": (results / "report.zip").stat().st_size / 1e6, "report_zip_s": round(zip_s, 1),
    }
    unpacked = workdir / "report"
    with zipfile.ZipFile(results / "report.zip") as archive:
        archive.extractall(unpacked)
    try:
        record.update(chromium_load_seconds(unpacked / "index.html"))
    except Exception as err:  # noqa: BLE001 - a missing browser must not hide the timing
        record["chromium_error"] = f"{type(err).__name__}: {err}"
    emit({**record, **machine()})


if __name__ == "__main__":
    main()
