"""Run remflow's benchmarks against their anchors; print one JSON object per line.

    TF_USE_LEGACY_KERAS=1 .venv/bin/python tests/benchmarks/run.py [fit restore tiling overhead bfloat16]

Each benchmark runs in its own process (its memory and TensorFlow settings stay its
own). Not part of the tests: timings depend on the machine and on other load, so
nothing here passes or fails; each line says whether its target was met. A benchmark
that crashes prints {"benchmark": name, "error": ...} and the others still run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: name -> (script, extra arguments); cheapest first.
BENCHMARKS = {
    "fit": ("bench_fit.py", []),
    "overhead": ("bench_overhead.py", []),
    "restore": ("bench_restore.py", []),
    "bfloat16": ("bench_bfloat16.py", []),
    "bfloat16_positions": ("bench_bfloat16_positions.py", []),
    "dag": ("bench_dag.py", []),
    "workflow_overhead": ("bench_workflow_overhead.py", []),
    # tile_batch 1: one tile per network call, so memory is bounded by the tile (batching does not
    # speed up the CPU); 1536 (the workflow's default: two 2048x1152 strips) against square 1152 px tiles.
    "tiling": ("bench_tiling.py", ["--tile-batch", "1", "--tile-px", "1152", "1536"]),
}


def main(names: list[str]) -> int:
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    failures = 0
    for name in names or list(BENCHMARKS):
        script, extra = BENCHMARKS[name]
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(HERE / script), *extra], cwd=HERE, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        for line in lines:
            print(line, flush=True)
        if done.returncode != 0 or not lines:
            failures += 1
            print(json.dumps({"benchmark": name, "error": f"exit {done.returncode}",
                              "stderr_tail": done.stderr[-2000:]}), flush=True)
        print(f"# {name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
