"""Cost of remflow's restoration around the network, for many small images.

100 crops of 128 x 128 px of real detector data are restored with
``Restorer.restore_many`` and with one ``restore`` call each, against the bare network
on the same 100 images in one batch (normalisation computed beforehand). The overhead
is reported two ways: the difference of best wall times, and the time spent outside
the network calls (normalising, padding, stacking, cropping), measured directly.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import emit, experimental_frames, machine, timed


def crops(count: int, size: int) -> list[np.ndarray]:
    frames = experimental_frames()
    per_frame = (frames[0].shape[0] // size) * (frames[0].shape[1] // size)
    out = []
    for index in range(count):
        frame = frames[(index // per_frame) % len(frames)]
        row, col = divmod(index % per_frame, frame.shape[1] // size)
        out.append(np.ascontiguousarray(frame[row * size:(row + 1) * size, col * size:(col + 1) * size]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--network", default="sfr_hrstem")
    args = parser.parse_args()

    from remflow.restore import Restorer, normalisation

    images = crops(args.count, args.size)
    start = time.perf_counter()
    restorer = Restorer(args.network)  # imports TensorFlow and loads the network: what a job per image would repeat
    startup_s = time.perf_counter() - start
    stats = np.array([normalisation(image) for image in images])
    batch = np.stack(images)

    inside, calls = [0.0], [0]
    network = restorer.infer

    def counted_infer(*call_args):  # time spent in the network itself
        start = time.perf_counter()
        try:
            return network(*call_args)
        finally:
            inside[0] += time.perf_counter() - start
            calls[0] += 1

    def pure() -> np.ndarray:
        return network(batch, stats[:, 0], stats[:, 1])

    def many() -> list[np.ndarray]:
        inside[0], calls[0] = 0.0, 0
        restorer.infer = counted_infer
        try:
            return restorer.restore_many(images)
        finally:
            restorer.infer = network

    def one_by_one() -> list[np.ndarray]:
        return [restorer.restore(image) for image in images]

    bare, together = pure(), many()  # first calls: create the kernels for these shapes
    one_by_one()
    assert max(float(np.abs(a - b).max()) for a, b in zip(bare, together)) <= 1e-4 * float(np.ptp(bare))
    times = {"pure": [], "many": [], "outside": [], "one_by_one": []}
    for _ in range(args.repeats):
        times["pure"].append(timed(pure)[0])
        seconds, _ = timed(many)
        times["many"].append(seconds)
        times["outside"].append(seconds - inside[0])
        times["one_by_one"].append(timed(one_by_one)[0])
    best = {key: min(values) for key, values in times.items()}
    emit({
        "benchmark": "restore_overhead", "network": args.network, "images": args.count,
        "image_px": [args.size, args.size],
        "restore_overhead_per_image_s": (best["many"] - best["pure"]) / args.count,
        "outside_network_per_image_s": best["outside"] / args.count,
        "one_by_one_overhead_per_image_s": (best["one_by_one"] - best["pure"]) / args.count,
        "startup_s": startup_s, "pure_inference_s": best["pure"], "restore_many_s": best["many"], "one_by_one_s": best["one_by_one"],
        "runs_s": times, "restore_many_network_calls": calls[0], "device": restorer.device,
        "note": "pure = the bare network on all images in one call; on a CPU restore_many takes images one by one "
                "(faster than one big call), on a GPU it batches them",
        **machine()})


if __name__ == "__main__":
    main()
