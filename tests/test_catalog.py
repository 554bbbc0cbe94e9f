"""Catalog conventions and use as a module: the .test/ run that CI does, remflow imported into
another workflow with Snakemake's `module` directive, snakefmt and `snakemake --lint` clean."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, SNAKEFILE, SNAKEMAKE
from test_export import check_exports

pytestmark = pytest.mark.workflow

DOT_TEST = REPO / ".test"
SNAKEFMT = Path(sys.executable).with_name("snakefmt")
#: What the .test sheet's two samples must come out as.
DOT_TEST_STATUS = {"sim_hrstem_3": "no lattice found", "sim_hrstem_0": "no lattice found", "bench_dose005000": "ok"}


def run(command: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, f"{command} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    return result


def check_dot_test_results(results: Path) -> None:
    summary = pd.read_csv(results / "summary.csv")
    assert list(summary["sample"]) == list(DOT_TEST_STATUS)
    for sample, status in zip(summary["sample"], summary["status"]):
        assert status.startswith(DOT_TEST_STATUS[sample]), (sample, status)
    assert check_exports(results, "bench_dose005000") >= 20
    assert check_exports(results, "sim_hrstem_0") == 0  # atomap files without sublattices
    for sample in DOT_TEST_STATUS:
        assert (results / "figures" / f"{sample}.png").stat().st_size > 10_000


def test_catalog_file_describes_usage_and_software_deployment():
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text(encoding="utf-8"))
    usage = catalog["usage"]
    assert usage["mandatory-flags"]["desc"] and "--cores" in usage["mandatory-flags"]["flags"]
    deployment = usage["software-stack-deployment"]
    assert deployment["conda"] is True and set(deployment) <= {"conda", "singularity", "singularity+conda"}
    # The catalog's "standardized usage" needs these files where it looks for them.
    for path in ("workflow/Snakefile", "config/README.md", "config/config.yaml", ".test/config/config.yaml"):
        assert (REPO / path).is_file(), path


def test_snakefmt_and_snakemake_lint_are_clean():
    run([str(SNAKEFMT), "--check", "workflow/Snakefile", "workflow/rules/"], cwd=REPO, timeout=120)
    result = run([str(SNAKEMAKE), "--lint"], cwd=REPO, timeout=300)
    assert "Congratulations" in result.stdout + result.stderr


def test_dot_test_runs_end_to_end_as_ci_does(tmp_path):
    """`snakemake --directory .test` (the catalog's CI), on a copy so the checkout stays clean."""
    workdir = tmp_path / "dot_test"
    shutil.copytree(DOT_TEST, workdir, ignore=shutil.ignore_patterns("results", "logs", ".snakemake"))
    run([str(SNAKEMAKE), "--snakefile", str(SNAKEFILE), "--directory", str(workdir), "--cores", "2"], cwd=workdir)
    check_dot_test_results(workdir / "results")


MODULE_SNAKEFILE = """\
configfile: "config.yaml"


module remflow:
    snakefile:
        "{snakefile}"
    config:
        config["remflow"]


use rule * from remflow as remflow_*


rule all:
    input:
        rules.remflow_all.input,
    default_target: True
"""


def test_remflow_runs_as_a_module_of_another_workflow(tmp_path):
    """A user's own Snakefile elsewhere imports remflow with `module` and `use rule *`
    (the README's snippet) and runs it, report included, on the .test sheet's two samples."""
    settings = yaml.safe_load((DOT_TEST / "config" / "config.yaml").read_text(encoding="utf-8"))
    settings["samples"] = str(DOT_TEST / "config" / "samples.tsv")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"remflow": settings}), encoding="utf-8")
    (tmp_path / "Snakefile").write_text(MODULE_SNAKEFILE.format(snakefile=SNAKEFILE), encoding="utf-8")
    run([str(SNAKEMAKE), "--cores", "2"], cwd=tmp_path)
    check_dot_test_results(tmp_path / "results")
    run([str(SNAKEMAKE), "--cores", "1", "--report", "report.html"], cwd=tmp_path, timeout=300)
    report = (tmp_path / "report.html").read_text(encoding="utf-8", errors="replace")
    assert "sim_hrstem_3" in report and "Tables and data" in report
    # The rules are remflow's, prefixed: nothing of the module ran under its own names.
    logs = {p.name for p in (tmp_path / ".snakemake" / "log").glob("*.log")}
    text = "".join((tmp_path / ".snakemake" / "log" / name).read_text() for name in logs)
    assert "remflow_analyse_batch" in text and "rule analyse_batch:" not in text
