"""Batches of samples: one job (one Python interpreter) runs a step for many samples.

Why: a job per sample and step pays Python, HyperSpy and atomap start-up (~7 s) every
time, and a Snakemake DAG of one job per sample and step grows past what Snakemake plans
quickly. So every per-sample step runs in batch jobs, and the DAG holds batches only.

How it stays per sample:

- The per-sample code is the unchanged per-sample rule script (e.g. ``scripts/fit_columns.py``)
  with its per-sample rule (``rule fit_columns`` in ``workflow/rules/*.smk``): the batch rule
  expands that rule's input/output/params/log for each member and :func:`run_member` executes
  the script for it in the batch job's interpreter, with a real ``snakemake.iocontainers.Snakemake``
  object. Per-sample outputs keep their names (``results/columns/{sample}.csv``).
- A member whose script raises is recorded as ``failed in <step>: <error>`` in the batch's
  manifest, its partial outputs are removed, and the other members go on (one bad sample fails
  alone). Later steps skip it and carry its status into the summary.
- A member is redone only when its *stamp* changed: the SHA-256 of its script, its params and
  the size and modification time of each of its input files. Unchanged members of a re-run batch
  keep their outputs (a rerun redoes only what changed).
- The batch's declared output is a directory holding ``manifest.tsv`` (one row per member:
  sample, status, network) and hard links to the members' outputs (the report reads figures
  from there), built under ``….partial`` and renamed when complete.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import runpy
import shutil
import sys
import time
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("remflow.batch")

MANIFEST = "manifest.tsv"
MANIFEST_FIELDS = ["sample", "status", "network", "seconds", "redone", "step_seconds"]
#: Where the stamps of finished member steps live (one small file per sample and step).
STAMP_DIR = Path("results") / ".stamps"


def chunks(samples: Sequence[str], size: int) -> dict[str, list[str]]:
    """Samples in sheet order cut into batches of ``size``: ``{"0000": [...], "0001": [...]}``."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    return {f"{index // size:04d}": list(samples[index:index + size]) for index in range(0, len(samples), size)}


# --- Snakemake's named lists <-> JSON-ready dicts (params travel to cluster jobs) ---------------

def plain_namedlist(items: Any) -> dict[str, Any]:
    """A Snakemake ``Namedlist`` (input, output, log) as ``{"items": [...], "names": [[name, start, end]]}``."""
    names = [[name, start, end] for name, (start, end) in items._names.items()] if hasattr(items, "_names") else []
    return {"items": [str(item) for item in items], "names": names}


def namedlist(data: dict[str, Any]) -> Any:
    """Rebuild a Snakemake ``Namedlist`` from :func:`plain_namedlist`'s dict."""
    from snakemake.iocontainers import Namedlist

    result = Namedlist(toclone=list(data["items"]))
    for name, start, end in data["names"]:
        result._set_name(name, start, end)
    return result


def _files(data: dict[str, Any]) -> list[str]:
    return [str(item) for item in data["items"]]


# --- stamps: is a member's step up to date? ----------------------------------------------------

def file_digest(path: str | os.PathLike[str]) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def stamp(spec: dict[str, Any]) -> str:
    """What a member's step depends on: its script, params and input files (size, mtime)."""
    inputs = []
    for path in _files(spec["input"]):
        try:
            info = os.stat(path)
            inputs.append([path, info.st_size, info.st_mtime_ns])
        except OSError:
            inputs.append([path, None, None])
    payload = {"rule": spec["rule"], "script": file_digest(spec["script"]), "params": spec["params"],
               "input": inputs, "output": spec["output"]["items"]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _stamp_path(spec: dict[str, Any]) -> Path:
    return STAMP_DIR / spec["rule"] / f"{spec['sample']}.stamp"


def up_to_date(spec: dict[str, Any]) -> bool:
    """All outputs exist and the stamp written when they were made still matches."""
    path = _stamp_path(spec)
    if not path.is_file() or not all(Path(f).exists() for f in _files(spec["output"])):
        return False
    return path.read_text(encoding="utf-8").strip() == stamp(spec)


def write_stamp(spec: dict[str, Any]) -> None:
    path = _stamp_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(stamp(spec) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --- running one member ------------------------------------------------------------------------

def _snakemake_object(spec: dict[str, Any], config: dict[str, Any]) -> Any:
    """The ``snakemake`` object a rule script sees, for one sample (Snakemake's own class)."""
    from snakemake.iocontainers import Namedlist, Params, Snakemake, Wildcards

    params = Params(fromdict=spec["params"])
    wildcards = Wildcards(fromdict=spec["wildcards"])
    resources = Namedlist(fromdict={"_cores": 1, "_nodes": 1})
    return Snakemake(namedlist(spec["input"]), namedlist(spec["output"]), params, wildcards, 1, resources,
                     namedlist(spec["log"]), config, spec["rule"], None, scriptdir=str(Path(spec["script"]).parent))


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".strip().rstrip(":")


def remove_outputs(spec: dict[str, Any]) -> None:
    """Remove a member step's outputs and stamp (after a failure, here or upstream)."""
    _stamp_path(spec).unlink(missing_ok=True)
    for path in _files(spec["output"]):
        if Path(path).is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            Path(path).unlink(missing_ok=True)


def run_step(spec: dict[str, Any], config: dict[str, Any]) -> tuple[str, bool]:
    """Run one per-sample step unless it is up to date. Returns (status, redone).

    ``status`` is ``ok`` or ``failed in <rule>: <error>``; on failure the step's outputs are
    removed (complete or absent) and the traceback goes to the member's log.
    """
    if up_to_date(spec):
        return "ok", False
    _stamp_path(spec).unlink(missing_ok=True)
    for path in _files(spec["output"]) + _files(spec["log"]):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    stderr, root = sys.stderr, logging.getLogger()
    handlers = list(root.handlers)
    try:
        runpy.run_path(spec["script"], init_globals={"snakemake": _snakemake_object(spec, config)},
                       run_name="__remflow_batch_member__")
        missing = [f for f in _files(spec["output"]) if not Path(f).exists()]
        if missing:
            raise RuntimeError(f"the step wrote no {', '.join(missing)}")
    except (Exception, SystemExit) as err:  # noqa: BLE001 - one sample's failure must not stop its batch
        remove_outputs(spec)
        detail = traceback.format_exc()
        for path in _files(spec["log"]):
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(detail)
        return f"failed in {spec['rule']}: sample '{spec['sample']}': {_one_line(err)}", True
    finally:
        # Rule scripts point logging and stderr at their own log file: take them back.
        if sys.stderr is not stderr:
            try:
                sys.stderr.close()
            except Exception:  # noqa: BLE001
                pass
        sys.stderr = stderr
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
    write_stamp(spec)
    return "ok", True


def gate_of(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON record a gated step wrote (its ``gate`` output), which decides whether later steps run."""
    gate = spec.get("gate")
    if not gate:
        return None
    with open(getattr(namedlist(spec["output"]), gate), encoding="utf-8") as handle:
        return json.load(handle)


def run_member(steps: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """Run a member's steps in order; a failed step, or a gate whose ``status`` is not ``ok``
    (e.g. a rejected raw file), ends the member there. Returns its manifest row."""
    row = {"sample": steps[0]["sample"], "status": "ok", "network": "", "redone": 0, "seconds": 0.0}
    started = time.perf_counter()
    timings = []
    for index, spec in enumerate(steps):
        step_started = time.perf_counter()
        status, redone = run_step(spec, config)
        timings.append(f"{spec['rule']}={time.perf_counter() - step_started:.3f}")
        row["redone"] += int(redone)
        if status == "ok":
            record = gate_of(spec)
            if record is not None:
                row["network"] = record.get("network") or ""
                status = "ok" if record.get("status") == "ok" else record.get("status") or "rejected"
        if status != "ok":
            row["status"] = status
            for later in steps[index + 1:]:  # outputs of an earlier run would no longer match
                remove_outputs(later)
            break
    row["seconds"] = round(time.perf_counter() - started, 3)
    # Seconds per step ("fit_columns=0.412 precision=0.105"), for make bench's breakdown.
    row["step_seconds"] = " ".join(timings)
    return row


# --- manifests and batch folders ---------------------------------------------------------------

def read_manifest(folder: str | os.PathLike[str]) -> list[dict[str, str]]:
    with open(Path(folder) / MANIFEST, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def statuses(folders: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> dict[str, dict[str, str]]:
    """Manifest rows of several batch folders, by sample."""
    rows: dict[str, dict[str, str]] = {}
    for folder in [folders] if isinstance(folders, (str, os.PathLike)) else folders:
        for row in read_manifest(folder):
            rows[row["sample"]] = row
    return rows


def write_batch_folder(folder: str | os.PathLike[str], rows: list[dict[str, Any]], files: Iterable[str]) -> None:
    """The batch's declared output: manifest.tsv and hard links to its members' outputs,
    built under ``….partial`` and renamed, so it is complete or absent."""
    final = Path(folder)
    scratch = final.with_name(final.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for path in files:
        target = scratch / Path(path).name
        try:
            os.link(path, target)  # same data, no copy, on the same file system
        except OSError:
            shutil.copyfile(path, target)
    with open(scratch / MANIFEST, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS, delimiter="\t", lineterminator="\n",
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(scratch, final)


def run_batch(members: list[dict[str, Any]], folder: str | dict[str, Sequence[str]], config: dict[str, Any],
              upstream: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Run every member's steps (``members``: ``[{"sample": ..., "steps": [spec, ...]}]``) and write
    the batch folder(s). Members that failed upstream (a row in an ``upstream`` manifest whose status
    is not ``ok``) are not run; their status is carried over.

    ``folder``: one folder for every step's outputs, or ``{folder: [rule, ...]}`` when one job runs
    several steps: each folder gets the manifest and the outputs of its rules, so that later rules
    and the report read each step's folder whichever job made it.
    """
    folders = {folder: None} if isinstance(folder, (str, os.PathLike)) else dict(folder)
    before = statuses(upstream)
    rows = []
    outputs: dict[str, list[str]] = {name: [] for name in folders}
    for member in members:
        sample = member["sample"]
        earlier = before.get(sample)
        if earlier is not None and earlier["status"] != "ok":
            for spec in member["steps"]:  # outputs of an earlier run would no longer match
                remove_outputs(spec)
            rows.append({"sample": sample, "status": earlier["status"], "network": earlier.get("network", ""),
                         "redone": 0, "seconds": 0.0})
            continue
        row = run_member(member["steps"], config)
        if not row["network"] and earlier is not None:
            row["network"] = earlier.get("network", "")
        rows.append(row)
        log.info("%s: %s (%.2f s, %d step(s) redone)", sample, row["status"], row["seconds"], row["redone"])
        for spec in member["steps"]:
            for name, rules in folders.items():
                if rules is None or spec["rule"] in rules:
                    outputs[name] += [f for f in _files(spec["output"]) if Path(f).is_file()]
    for name in folders:
        write_batch_folder(name, rows, outputs[name])
    return rows


def sample_records(samples: Sequence[str], ingest: dict[str, dict[str, str]], final: dict[str, dict[str, str]],
                   result: str = "results/precision/{sample}.json",
                   inspection: str = "results/ingest/{sample}.json") -> list[dict[str, Any]]:
    """One record per sample for the dataset tables: its result JSON when every step went
    through; else the inspection record (rejected) or a record naming the step that failed."""
    records = []
    for sample in samples:
        first, last = ingest.get(sample), final.get(sample)
        if first is None:
            records.append({"sample": sample, "status": "failed: no inspection result"})
        elif first["status"] != "ok":
            path = Path(inspection.format(sample=sample))
            if first["status"].startswith("rejected") and path.is_file():
                records.append(json.loads(path.read_text(encoding="utf-8")))
            else:
                records.append({"sample": sample, "status": first["status"], "network": first.get("network") or None})
        elif last is None or last["status"] != "ok":
            status = last["status"] if last is not None else "failed: no result"
            records.append({"sample": sample, "status": status, "network": first.get("network") or None})
        else:
            records.append(json.loads(Path(result.format(sample=sample)).read_text(encoding="utf-8")))
    return records
