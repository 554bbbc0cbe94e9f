"""tests/gpu/check.sh runs (dry, on the CPU, tiny sizes) and prints the JSON the GPU run prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO


def test_gpu_check_dry_run_prints_every_figure():
    done = subprocess.run(["bash", str(REPO / "tests" / "gpu" / "check.sh"), "--dry"], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    assert result["dry"] is True and set(result["runs"]) == {"tf32_on", "tf32_off"}
    for run in result["runs"].values():
        for size in ("64", "96"):
            figures = run[size]
            assert figures["images_per_s"] > 0 and figures["megapixels_per_s"] > 0
            assert figures["max_deviation_from_cpu_of_range"] >= 0
            if result["device"] == "CPU:0":  # the same arithmetic on the same device
                assert figures["max_deviation_from_cpu_of_range"] <= 1e-6
        (shift,) = run["dose_sweep_positions"].values()
        assert shift["columns"] >= 20 and shift["max_shift_px"] >= 0 and shift["ci_width_px"] > 0
