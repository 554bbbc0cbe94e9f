"""Restoration on a GPU: throughput, peak memory, TF32 against float32, and fitted positions.

Prints one JSON object:
- per image size (256², 1024², 4096²; 4096² is restored in tiles, the workflow's defaults)
  and per TF32 setting (TensorFlow's default on Ampere and newer GPUs is TF32 *on*):
  images/s, megapixels/s, peak GPU memory (MB), and the largest deviation from the CPU
  float32 output as a fraction of its range;
- for the synthetic dose sweep: how far columns refined on the GPU-restored image lie from
  those on the CPU-restored one (px; same starts), next to the width of the 95% interval of
  the CPU result's truth RMSE.
``--dry`` runs the same code on whatever device there is with tiny sizes (CI check).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from common import emit, machine, mosaic, relative_deviation
from positions import dose_sweep, position_shift, reference_fit

REAL = {"sizes": [256, 1024, 4096], "counts": {256: 64, 1024: 16, 4096: 2}, "doses": (50.0, 500.0, 5000.0, 50000.0),
        "sweep_shape": None}
DRY = {"sizes": [64, 96], "counts": {64: 2, 96: 1}, "doses": (500.0,), "sweep_shape": (72, 72)}


def test_images(size: int, count: int) -> list[np.ndarray]:
    """``count`` different size x size crops of real detector data (reflected beyond the mosaic)."""
    base = mosaic(min(size, 2304))
    if size > base.shape[0]:
        extra = size - base.shape[0]
        base = np.pad(base, ((0, extra), (0, extra)), mode="reflect")
    return [np.ascontiguousarray(np.rot90(base, k) if k % 2 == 0 else np.rot90(base, k).T)
            for k in range(count)]


def peak_memory_mb(device: str) -> float | None:
    import tensorflow as tf

    try:
        return tf.config.experimental.get_memory_info(device)["peak"] / 1e6
    except (ValueError, RuntimeError):
        return None


def reset_memory(device: str) -> None:
    import tensorflow as tf

    try:
        tf.config.experimental.reset_memory_stats(device)
    except (ValueError, RuntimeError):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dry", action="store_true")
    parser.add_argument("--network", default="sfr_hrstem")
    args = parser.parse_args()
    plan = DRY if args.dry else REAL
    started = time.perf_counter()

    import tensorflow as tf

    from remflow.restore import Restorer

    gpus = tf.config.list_physical_devices("GPU")
    device = "GPU:0" if gpus else "CPU:0"
    restorer = Restorer(args.network)
    images = {size: test_images(size, plan["counts"][size]) for size in plan["sizes"]}
    sweep = dose_sweep(plan["doses"], shape=plan["sweep_shape"])

    # CPU float32 references: one image per size and the dose sweep.
    with tf.device("/CPU:0"):
        cpu = {size: restorer.restore(images[size][0]) for size in plan["sizes"]}
        for case in sweep:
            case["cpu"] = restorer.restore(case["image"])
    for case in sweep:
        case["reference"] = reference_fit(case["image"], case["cpu"], case["truth"])

    runs: dict[str, Any] = {}
    for tf32 in (True, False):
        tf.config.experimental.enable_tensor_float_32_execution(tf32)
        key = "tf32_on" if tf32 else "tf32_off"
        result: dict[str, Any] = {}
        with tf.device(f"/{device}"):
            for size in plan["sizes"]:
                restorer.restore_many(images[size][:1])  # build the kernels for this shape first
                reset_memory(device)
                start = time.perf_counter()
                restorer.restore_many(images[size])
                seconds = time.perf_counter() - start
                count = len(images[size])
                result[f"{size}"] = {
                    "images": count, "seconds": seconds, "images_per_s": count / seconds,
                    "megapixels_per_s": count * size * size / 1e6 / seconds,
                    "peak_memory_mb": peak_memory_mb(device),
                    "max_deviation_from_cpu_of_range": relative_deviation(restorer.restore(images[size][0]), cpu[size]),
                }
            shifts = {}
            for case in sweep:
                reference = case["reference"]
                if reference["status"] != "ok":
                    shifts[case["name"]] = {"status": reference["status"]}
                    continue
                shift = position_shift(case["cpu"], restorer.restore(case["image"]), reference["starts"],
                                       reference["separation_px"])
                shifts[case["name"]] = {**shift, "ci_width_px": reference["ci_width_px"],
                                        "max_shift_over_ci_width": shift["max_shift_px"] / reference["ci_width_px"]}
            result["dose_sweep_positions"] = shifts
        runs[key] = result
    tf.config.experimental.enable_tensor_float_32_execution(True)  # TensorFlow's default again
    emit({"benchmark": "gpu_check", "dry": args.dry, "device": device, "restorer_device": restorer.device,
          "gpu": [gpu.name for gpu in gpus], "tensorflow": tf.__version__, "network": args.network,
          "runs": runs, "seconds": time.perf_counter() - started, **machine()})


if __name__ == "__main__":
    main()
