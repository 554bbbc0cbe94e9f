"""Bounded-memory tiled restoration of a 2048 x 2048 image against whole-image inference.

Each mode runs in a fresh process, as a workflow job does (network loaded, one image
restored), so that its peak memory is its own and first-call costs count as they do
in the workflow. Tile settings default to the workflow's (config/config.yaml).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from common import REPO, emit, machine, memory_mb, mosaic, relative_deviation, timed

TARGET_RATIO = 1.2
MAX_DEVIATION = 0.01  # tiled against whole, of the range


def workflow_tiling() -> dict[str, int]:
    """The restore settings of config/config.yaml, or the Restorer's defaults."""
    from remflow import restore

    settings = {"tile_px": restore.DEFAULT_TILE_PX, "context_px": restore.DEFAULT_CONTEXT_PX,
                "blend_px": restore.DEFAULT_BLEND_PX, "tile_batch": restore.DEFAULT_TILE_BATCH}
    try:
        import yaml

        config = yaml.safe_load((REPO / "config" / "config.yaml").read_text()).get("restore", {})
        settings.update({key: int(config[key]) for key in settings if key in config})
    except (OSError, ImportError, AttributeError):
        pass
    return settings


def child(mode: str, size: int, settings: dict[str, int], network: str, output: Path) -> None:
    """Restore the image in one mode; print time and memory as JSON."""
    from remflow.restore import Restorer

    image = mosaic(size)
    limit = image.size if mode == "whole" else 0
    restorer = Restorer(network, max_whole_pixels=limit, **settings)
    before = memory_mb()
    seconds, restored = timed(lambda: restorer.restore(image))
    after = memory_mb()
    np.save(output, restored)
    print(json.dumps({"seconds": seconds, "rss_before_mb": before["rss_mb"], "peak_rss_mb": after["peak_rss_mb"]}))


def run_child(mode: str, size: int, settings: dict[str, int], network: str, output: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", mode, "--size", str(size), "--network", network,
               "--settings", json.dumps(settings), "--output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--network", default="sfr_hrstem")
    parser.add_argument("--tile-px", type=int, nargs="*", default=None,
                        help="tile sizes to compare (default: the workflow's)")
    parser.add_argument("--tile-batch", type=int, default=None)
    parser.add_argument("--child", choices=["whole", "tiled"])
    parser.add_argument("--settings")
    parser.add_argument("--output")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.size, json.loads(args.settings), args.network, Path(args.output))
        return

    from remflow.restore import TILE_ALIGN_PX, plan_tiles

    base = workflow_tiling()
    if args.tile_batch is not None:
        base["tile_batch"] = args.tile_batch
    with tempfile.TemporaryDirectory() as folder:
        whole_path = Path(folder) / "whole.npy"
        whole = run_child("whole", args.size, base, args.network, whole_path)
        reference = np.load(whole_path)
        for tile_px in args.tile_px or [base["tile_px"]]:
            settings = {**base, "tile_px": tile_px}
            tiled_path = Path(folder) / f"tiled_{tile_px}.npy"
            tiled = run_child("tiled", args.size, settings, args.network, tiled_path)
            overlap = 2 * settings["context_px"] + settings["blend_px"]
            rows, cols = plan_tiles(args.size, args.size, tile_px, overlap, TILE_ALIGN_PX)
            ratio = tiled["seconds"] / whole["seconds"]
            deviation = relative_deviation(np.load(tiled_path), reference)
            emit({
                "benchmark": "tiled_vs_whole", "network": args.network, "image_px": [args.size, args.size],
                "tiled_time_vs_whole": round(ratio, 3), "target": f"<= {TARGET_RATIO}",
                "met": bool(ratio <= TARGET_RATIO and deviation <= MAX_DEVIATION),
                "whole_s": whole["seconds"], "tiled_s": tiled["seconds"],
                "whole_peak_rss_mb": round(whole["peak_rss_mb"]), "tiled_peak_rss_mb": round(tiled["peak_rss_mb"]),
                "whole_inference_mb": round(whole["peak_rss_mb"] - whole["rss_before_mb"]),
                "tiled_inference_mb": round(tiled["peak_rss_mb"] - tiled["rss_before_mb"]),
                "tiles": len(rows) * len(cols),
                "tile_shapes_px": sorted({(h, w) for _, h in rows for _, w in cols}),
                "computed_area_vs_image": round(sum(h for _, h in rows) * sum(w for _, w in cols) / args.size ** 2, 3),
                "max_deviation_of_range": deviation, "deviation_bound": MAX_DEVIATION, **settings,
                "note": "each mode in a fresh process, one image, as a workflow job runs it (first calls included)",
                **machine()})


if __name__ == "__main__":
    main()
