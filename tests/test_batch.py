"""remflow.batch: one interpreter runs a per-sample rule script for every member of a batch.
Real scripts run with runpy and Snakemake's own script object; no workflow needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remflow.batch import chunks, read_manifest, run_batch, sample_records, statuses

STEP = '''
from remflow.runlog import setup_logging
log = setup_logging(snakemake.log[0])
with open(snakemake.input.raw) as handle:
    text = handle.read()
if "boom" in text:
    raise ValueError(f"cannot use {snakemake.wildcards.sample}")
with open(snakemake.output.result, "w") as handle:
    handle.write(snakemake.params.prefix + text.upper())
'''


def spec(tmp: Path, sample: str, script: Path) -> dict:
    return {"rule": "shout", "sample": sample, "script": str(script), "gate": None,
            "input": {"items": [f"raw/{sample}.txt"], "names": [["raw", 0, None]]},
            "output": {"items": [f"results/shout/{sample}.txt"], "names": [["result", 0, None]]},
            "log": {"items": [f"logs/shout/{sample}.log"], "names": []},
            "params": {"prefix": ">"}, "wildcards": {"sample": sample}}


@pytest.fixture
def batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[dict]]:
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "shout.py"
    script.write_text(STEP, encoding="utf-8")
    (tmp_path / "raw").mkdir()
    for sample, text in (("a", "one"), ("bad", "boom"), ("c", "three")):
        (tmp_path / "raw" / f"{sample}.txt").write_text(text, encoding="utf-8")
    return script, [{"sample": s, "steps": [spec(tmp_path, s, script)]} for s in ("a", "bad", "c")]


def test_chunks_keep_sheet_order():
    assert chunks(["x", "y", "z"], 2) == {"0000": ["x", "y"], "0001": ["z"]}
    with pytest.raises(ValueError):
        chunks(["x"], 0)


def test_a_failing_member_fails_alone_with_its_reason(batch):
    _, members = batch
    rows = run_batch(members, "results/batches/shout/0000", config={})
    assert [row["status"] for row in rows][::2] == ["ok", "ok"]
    assert rows[1]["status"] == "failed in shout: sample 'bad': ValueError: cannot use bad"
    assert Path("results/shout/a.txt").read_text() == ">ONE" and not Path("results/shout/bad.txt").exists()
    assert "Traceback" in Path("logs/shout/bad.log").read_text()
    manifest = read_manifest("results/batches/shout/0000")
    assert [row["sample"] for row in manifest] == ["a", "bad", "c"]
    # the batch folder links the members' outputs, under their own names
    assert sorted(p.name for p in Path("results/batches/shout/0000").iterdir()) == ["a.txt", "c.txt", "manifest.tsv"]


def test_a_rerun_redoes_only_what_changed(batch):
    script, members = batch
    run_batch(members, "results/batches/shout/0000", config={})
    before = Path("results/shout/a.txt").stat().st_mtime_ns
    Path("raw/c.txt").write_text("changed", encoding="utf-8")
    rows = {row["sample"]: row for row in run_batch(members, "results/batches/shout/0000", config={})}
    assert rows["a"]["redone"] == 0 and rows["c"]["redone"] == 1 and rows["bad"]["redone"] == 1  # failures retry
    assert Path("results/shout/a.txt").stat().st_mtime_ns == before
    assert Path("results/shout/c.txt").read_text() == ">CHANGED"
    members[0]["steps"][0]["params"] = {"prefix": "!"}  # changed settings redo the member
    rows = {row["sample"]: row for row in run_batch(members, "results/batches/shout/0000", config={})}
    assert rows["a"]["redone"] == 1 and Path("results/shout/a.txt").read_text() == "!ONE"
    script.write_text(STEP + "\n# changed code\n", encoding="utf-8")  # so does changed code
    rows = {row["sample"]: row for row in run_batch(members, "results/batches/shout/0000", config={})}
    assert rows["a"]["redone"] == 1 and rows["c"]["redone"] == 1


def test_upstream_failures_are_carried_and_stale_outputs_removed(batch):
    _, members = batch
    run_batch(members, "results/batches/shout/0000", config={})
    Path("results/batches/up/0000").mkdir(parents=True)
    Path("results/batches/up/0000/manifest.tsv").write_text(
        "sample\tstatus\tnetwork\tseconds\tredone\na\tfailed in restore: sample 'a': OSError: disk\tsfr_hrstem\t0\t1\n"
        "bad\tok\tsfr_hrstem\t0\t1\nc\tok\tsfr_hrstem\t0\t1\n", encoding="utf-8")
    rows = run_batch(members, "results/batches/shout/0000", config={}, upstream=["results/batches/up/0000"])
    assert rows[0]["status"] == "failed in restore: sample 'a': OSError: disk"
    assert not Path("results/shout/a.txt").exists(), "an output of an earlier run stood in for a failed sample"
    Path("results/shout/c.json").write_text(json.dumps({"sample": "c", "status": "ok", "gain": 2.0}))
    records = sample_records(["a", "c"], statuses(["results/batches/up/0000"]),
                             statuses("results/batches/shout/0000"), result="results/shout/{sample}.json")
    assert records == [{"sample": "a", "status": "failed in restore: sample 'a': OSError: disk",
                        "network": "sfr_hrstem"}, {"sample": "c", "status": "ok", "gain": 2.0}]
