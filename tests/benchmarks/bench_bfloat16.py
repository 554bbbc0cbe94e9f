"""What bfloat16 would give: TensorFlow's oneDNN auto-mixed-precision against float32.

Measured only: remflow does not use it, because its output differs from float32 by
more than the 1e-3 of the image range that the restoration must keep. The grappler
option is process-wide and also reaches functions created before it was switched on,
so all float32 runs come first, then the bfloat16 ones.
"""

from __future__ import annotations

import argparse

import numpy as np

from common import emit, machine, mosaic, relative_deviation, timed

MAX_DEVIATION = 1e-3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--network", default="sfr_hrstem")
    args = parser.parse_args()

    import tensorflow as tf

    from remflow.restore import Restorer

    image = mosaic(args.size)
    fp32 = Restorer(args.network, max_whole_pixels=image.size)
    reference = fp32.restore(image)
    times_fp32 = [timed(lambda: fp32.restore(image))[0] for _ in range(args.repeats)]
    tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
    bf16 = Restorer(args.network, max_whole_pixels=image.size)
    restored = bf16.restore(image)
    times_bf16 = [timed(lambda: bf16.restore(image))[0] for _ in range(args.repeats)]
    deviation = relative_deviation(restored, reference)
    rms = float(np.sqrt(np.mean((restored.astype(np.float64) - reference) ** 2)) / np.ptp(reference))
    emit({
        "benchmark": "restore_bfloat16", "network": args.network, "image_px": list(image.shape),
        "bfloat16_speedup_vs_float32": round(min(times_fp32) / min(times_bf16), 3),
        "max_deviation_of_range": deviation, "rms_deviation_of_range": rms, "deviation_bound": MAX_DEVIATION,
        "usable": bool(deviation <= MAX_DEVIATION),
        "float32_s": times_fp32, "bfloat16_s": times_bf16, **machine()})


if __name__ == "__main__":
    main()
