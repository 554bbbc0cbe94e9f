"""Whole-image restoration: remflow's Restorer against tk_r_em's own ``predict``, side by side.

Both run in this process on the same 1024 x 1024 image of real detector data (the
experimental frames shipped with tk_r_em), alternately, so that both see the same
machine load; the faster of ``--repeats`` warm calls counts, and the first (cold) call
of each is reported too. Also measures the network's FLOP count from its graph and the
CPU's FP32 matrix-multiply peak through the same library (oneDNN) for comparison.

tk_r_em's loader needs Keras 2: ``pip install tf_keras`` and ``TF_USE_LEGACY_KERAS=1``.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow is imported

import numpy as np  # noqa: E402

from common import emit, machine, mosaic, relative_deviation, timed  # noqa: E402

#: The issue's bounds.
TARGET_SPEEDUP = 1.5
MAX_DEVIATION = 1e-3


def network_flops_per_pixel(keras_model, size: int) -> float:
    """Multiply-adds x 2 of every convolution in the network's graph, per input pixel."""
    import tensorflow as tf

    graph = tf.function(lambda x: keras_model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, size, size, 1], tf.float32)).graph
    total = 0
    for op in graph.get_operations():
        if op.type == "Conv2D":
            out, kernel = op.outputs[0].shape, op.inputs[1].shape
            total += 2 * out[1] * out[2] * kernel[0] * kernel[1] * kernel[2] * kernel[3]
        elif op.type == "Conv2DBackpropInput":  # transposed convolution: work counted on its input
            kernel, source = op.inputs[1].shape, op.inputs[2].shape
            total += 2 * source[1] * source[2] * kernel[0] * kernel[1] * kernel[2] * kernel[3]
    return total / size / size


def matmul_peak_gflops(dtype: str, size: int = 4096, repeats: int = 8) -> float:
    """Best throughput of a square matrix product in TensorFlow (oneDNN on CPU)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = tf.cast(tf.constant(rng.random((size, size), dtype=np.float32)), dtype)
    b = tf.cast(tf.constant(rng.random((size, size), dtype=np.float32)), dtype)
    product = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.matmul(x, y), tf.float32)))
    product(a, b).numpy()
    best = min(timed(lambda: product(a, b).numpy())[0] for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--network", default="sfr_hrstem")
    args = parser.parse_args()

    import tk_r_em

    from remflow.restore import Restorer

    image = mosaic(args.size)
    ours = Restorer(args.network, max_whole_pixels=args.size * args.size)
    theirs = tk_r_em.load_network(args.network)
    flops = network_flops_per_pixel(theirs.base_model, 256) * image.size

    first_ours, restored = timed(lambda: ours.restore(image))
    first_theirs, predicted = timed(lambda: theirs.predict(image))
    deviation = relative_deviation(restored, predicted)
    warm_ours, warm_theirs = [], []
    for _ in range(args.repeats):  # alternate, so that both see the same load
        warm_ours.append(timed(lambda: ours.restore(image))[0])
        warm_theirs.append(timed(lambda: theirs.predict(image))[0])
    best_ours, best_theirs = min(warm_ours), min(warm_theirs)
    speedup = best_theirs / best_ours
    emit({
        "benchmark": "restore_vs_tk_r_em", "network": args.network, "image_px": list(image.shape),
        "restore_speedup_vs_tk_r_em": round(speedup, 3), "target": f">= {TARGET_SPEEDUP}",
        "met": bool(speedup >= TARGET_SPEEDUP and deviation <= MAX_DEVIATION),
        "max_deviation_of_range": deviation, "deviation_bound": MAX_DEVIATION,
        "remflow_s": best_ours, "tk_r_em_predict_s": best_theirs,
        "remflow_warm_s": warm_ours, "tk_r_em_warm_s": warm_theirs,
        "remflow_first_call_s": first_ours, "tk_r_em_first_call_s": first_theirs,
        "first_call_speedup": round(first_theirs / first_ours, 3),
        "note": "speedup = best warm tk_r_em predict / best warm remflow restore (same image, same process, alternated)",
        **machine()})

    fp32_peak = matmul_peak_gflops("float32")
    bf16_peak = matmul_peak_gflops("bfloat16")
    gflops = flops / best_ours / 1e9
    emit({
        "benchmark": "restore_throughput", "network": args.network, "image_px": list(image.shape),
        "restore_gflops": round(gflops, 1), "tk_r_em_gflops": round(flops / best_theirs / 1e9, 1),
        "first_call_gflops": round(flops / first_ours / 1e9, 1),
        "mflop_per_pixel": round(flops / image.size / 1e6, 4),
        "fp32_peak_gflops": round(fp32_peak, 1), "fraction_of_fp32_peak": round(gflops / fp32_peak, 3),
        "bf16_peak_gflops": round(bf16_peak, 1),
        "peak_note": "peak = best 4096^2 matrix product through TensorFlow/oneDNN on all cores, measured now",
        **machine()})


if __name__ == "__main__":
    main()
