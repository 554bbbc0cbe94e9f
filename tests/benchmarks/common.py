"""Shared helpers of the benchmarks: inputs, timing, memory and JSON output."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[2]
EXP_HRSTEM = "package://tk_r_em/test_data/exp_hrstem.h5"
#: The low-dose SrTiO3 frame of tk_r_em's experimental test data.
LOW_DOSE_FRAME = 4


def emit(record: dict[str, Any]) -> None:
    """One JSON object per line on stdout (the benchmark's result)."""
    print(json.dumps(record, default=_plain), flush=True)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def machine() -> dict[str, Any]:
    """What the numbers were measured on (they depend on it, and on other load)."""
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return {"cpu": model, "cores": cores, "load_1min": os.getloadavg()[0], "python": sys.version.split()[0]}


def experimental_frames() -> list[np.ndarray]:
    """The five 768 x 768 HRSTEM frames that ship with tk_r_em (real detector data)."""
    from remflow.ingest import read_image, resolve_path

    path = resolve_path(EXP_HRSTEM)
    return [np.asarray(read_image(path, dataset="x", frame=f).signal.data, dtype=np.float32) for f in range(5)]


def mosaic(size: int) -> np.ndarray:
    """A size x size image of real content: the experimental frames laid side by side (flipped so none repeats)."""
    frames = experimental_frames()
    tiles = [frames[0], frames[1][:, ::-1], frames[2][::-1], frames[3].T, frames[0][::-1, ::-1], frames[1].T,
             frames[2][:, ::-1].T, frames[3][::-1], frames[0].T[::-1]]
    grid = np.block([tiles[0:3], tiles[3:6], tiles[6:9]])
    if size > grid.shape[0]:
        raise ValueError(f"mosaic up to {grid.shape[0]} px")
    return np.ascontiguousarray(grid[:size, :size])


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def memory_mb() -> dict[str, float]:
    """Resident memory now and at its peak so far (VmHWM), in MB (Linux)."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return {"rss_mb": values.get("VmRSS", float("nan")), "peak_rss_mb": values.get("VmHWM", float("nan"))}


def relative_deviation(result: np.ndarray, reference: np.ndarray) -> float:
    """Largest absolute difference as a fraction of the reference's range."""
    reference = np.asarray(reference, dtype=np.float64)
    return float(np.abs(np.asarray(result, dtype=np.float64) - reference).max() / np.ptp(reference))
