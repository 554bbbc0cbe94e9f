"""Restore images with tk_r_em's pretrained networks, whole or in blended tiles.

The networks ship as TensorFlow SavedModels inside the ``tk_r_em`` package. Its
own loader needs Keras 2, so they are loaded with ``tf.saved_model.load`` and
called through their ``serving_default`` signature (float32 NHWC, 1 channel,
even sizes), which gives the same output without Keras.

The networks standardise their input by its mean and standard deviation and undo that
on the output, so the output is in the input's intensity units. remflow supplies that
mean and standard deviation itself (see :func:`normalisation`): without the networks'
floor of 0.1 on the standard deviation, the result does not depend on the intensity unit.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from remflow.networks import NETWORKS

log = logging.getLogger(__name__)
# TensorFlow's C++ start-up chatter would bury the rule logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Images with at most this many pixels go through the network in one piece.
DEFAULT_MAX_WHOLE_PIXELS = 1536 * 1536
#: Tiles hold at most this squared many pixels, in any aspect ratio (see plan_tiles).
DEFAULT_TILE_PX = 1536
#: Pixels at a tile's interior edge that are only context (their output is dropped),
#: and the width over which neighbouring tiles cross-fade. The networks see far:
#: 64 px from a tile edge the output still differs by up to 4% of the range, 96 px by 1%.
DEFAULT_CONTEXT_PX = 96
DEFAULT_BLEND_PX = 32
#: Tile offsets are multiples of this, matching the networks' down-sampling grid.
TILE_ALIGN_PX = 32
DEFAULT_TILE_BATCH = 1
#: Arithmetic of the network: float32 (default) or bfloat16 (opt-in; see :func:`use_bfloat16`).
DTYPES = ("float32", "bfloat16")


def network_dir(name: str) -> Path:
    """Folder of the SavedModel of one of tk_r_em's networks."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network '{name}'; expected one of {', '.join(NETWORKS)}")
    spec = importlib.util.find_spec("tk_r_em")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the tk_r_em package is not installed: pip install tk_r_em")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / name


def bfloat16_supported() -> bool:
    """Whether this CPU has bfloat16 arithmetic (AVX512-BF16 or AMX), which TensorFlow's oneDNN
    bfloat16 rewrite needs: without it the option does nothing (measured: identical output)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bfloat16() -> None:
    """Switch TensorFlow's oneDNN auto-mixed-precision to bfloat16 for this process.

    Process-wide (a grappler option; it also reaches functions traced before), so a job
    restores either in float32 or in bfloat16, never both. Faster on CPUs with bfloat16
    arithmetic (2.0-2.6x measured here) but the output moves by up to 1.6% of the range;
    how far that moves fitted positions is measured by tests/benchmarks/bench_bfloat16_positions.py.
    """
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})


def configure_devices() -> str:
    """Let TensorFlow grow GPU memory as needed; return the device that will run."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: growth can no longer be set
            pass
    return f"GPU ({len(gpus)} visible)" if gpus else "CPU"


def plan_axis(length: int, max_tile: int, overlap: int, align: int) -> list[tuple[int, int]]:
    """(start, size) of the fewest tiles of about ``max_tile`` px covering ``length`` with >= ``overlap`` px overlap.

    Starts are multiples of ``align`` so that every tile sees the same
    down-sampling grid as the whole image does; the last tile ends at the image
    edge (it may be up to ``align`` px longer), so no padding is invented.
    """
    if length <= max_tile + align:
        return [(0, length)]
    return plan_axis_in(length, math.ceil((length - overlap) / (max_tile - overlap)), overlap, align)


def plan_axis_in(length: int, count: int, overlap: int, align: int) -> list[tuple[int, int]]:
    """(start, size) of at least ``count`` (as few as possible) equal tiles covering ``length``,
    neighbours overlapping by >= ``overlap`` px, starts aligned as in :func:`plan_axis`."""
    if count <= 1:
        return [(0, length)]
    while True:
        size = _ceil_to(math.ceil((length + (count - 1) * overlap) / count), align)
        last_start = (length - size) // align * align
        starts = sorted({round(i * last_start / (count - 1) / align) * align for i in range(count)})
        sizes = [size] * (len(starts) - 1) + [length - last_start]
        if all(a + sa - b >= overlap for a, sa, b in zip(starts, sizes, starts[1:])):
            return list(zip(starts, sizes))
        count += 1


def plan_tiles(height: int, width: int, max_tile_px: int, overlap: int,
               align: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Row and column plans of the tiling that computes the least area, each tile holding at
    most ``max_tile_px ** 2`` pixels (the last row/column up to ``align`` px more; any aspect ratio: a 2048 px square image with
    ``max_tile_px`` 1536 is cut into two strips, computing 1.13x its area, where 2x2 square
    tiles would compute 1.27x). Memory stays bounded by the pixel budget, not the image."""
    budget = max_tile_px * max_tile_px

    def nominal(plan: list[tuple[int, int]]) -> int:
        # The tiles' common size; the last one may be up to ``align`` px longer (see plan_axis).
        return plan[0][1]

    best: tuple[int, int, list[tuple[int, int]], list[tuple[int, int]]] | None = None
    for row_count in range(1, height // align + 2):  # beyond that, starts would repeat
        rows = plan_axis_in(height, row_count, overlap, align)
        tile_height = nominal(rows)
        if best is not None and sum(size for _, size in rows) * width >= best[0]:
            break  # more rows compute more area whatever the columns
        max_width = budget // tile_height
        if max_width >= min(width, overlap + align):
            count = 1 if width <= max_width else math.ceil((width - overlap) / max(align, max_width - overlap))
            cols = plan_axis_in(width, count, overlap, align)
            while nominal(cols) * tile_height > budget and len(cols) < width // align:
                cols = plan_axis_in(width, len(cols) + 1, overlap, align)
            if nominal(cols) * tile_height <= budget:
                key = (sum(size for _, size in rows) * sum(size for _, size in cols), len(rows) * len(cols))
                if best is None or key < best[:2]:
                    best = (*key, rows, cols)
        if tile_height <= overlap + align:  # tiles cannot get any lower
            break
    if best is None:
        raise ValueError(f"no tiling of {height}x{width} px fits tiles of {max_tile_px}^2 px with {overlap} px overlap")
    return best[2], best[3]


def _ceil_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def blend_weights(size: int, start: int, length: int, context: int, blend: int) -> np.ndarray:
    """1D weight of one tile: 0 over ``context`` px at interior edges, a sin² ramp over ``blend`` px, then 1.

    Pixels near a tile edge see the network's zero padding instead of the image,
    so they get no weight; at the image border the tile edge is the image edge.
    """
    weights = np.ones(size, dtype=np.float64)
    ramp = np.concatenate([np.zeros(context), np.sin(0.5 * np.pi * (np.arange(blend) + 0.5) / blend) ** 2])
    if start > 0:
        weights[:ramp.size] = ramp
    if start + size < length:
        weights[size - ramp.size:] = np.minimum(weights[size - ramp.size:], ramp[::-1])
    return weights


class Restorer:
    """One loaded network, applied to images of any size with bounded memory."""

    def __init__(self, network: str, *, max_whole_pixels: int = DEFAULT_MAX_WHOLE_PIXELS,
                 tile_px: int = DEFAULT_TILE_PX, context_px: int = DEFAULT_CONTEXT_PX,
                 blend_px: int = DEFAULT_BLEND_PX, tile_batch: int = DEFAULT_TILE_BATCH,
                 dtype: str = "float32") -> None:
        import tensorflow as tf

        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if dtype == "bfloat16" and not bfloat16_supported():
            log.warning("restore.dtype bfloat16: this CPU has no bfloat16 arithmetic (AVX512-BF16/AMX); "
                        "restoring in float32")
            dtype = "float32"
        if dtype == "bfloat16":
            use_bfloat16()
        self.dtype = dtype  # what the network really computes in

        overlap = 2 * context_px + blend_px
        if tile_px % TILE_ALIGN_PX or tile_px < overlap + TILE_ALIGN_PX:
            raise ValueError(f"tile_px ({tile_px}) must be a multiple of {TILE_ALIGN_PX} "
                             f"and at least the overlap 2*context_px+blend_px ({overlap}) + {TILE_ALIGN_PX}")
        self.network = network
        self.device = configure_devices()
        self._model = tf.saved_model.load(str(network_dir(network)))  # keep a reference: the functions need it
        self._core = _normalised_core(self._model.signatures["serving_default"])
        self.max_whole_pixels = max_whole_pixels
        self.tile_px = tile_px
        self.context_px = context_px
        self.blend_px = blend_px
        self.tile_batch = tile_batch
        # A GPU gains from batching whole images; a CPU does not (100 images of 128 px ran 9 %
        # slower in one call than one by one: smaller working sets stay in cache).
        self.batch_whole_images = self.device.startswith("GPU")

    def infer(self, batch: np.ndarray, mean: float | np.ndarray, std: float | np.ndarray) -> np.ndarray:
        """Run the network on a float32 batch (N, H, W), even H and W, normalised with ``mean`` and ``std``.

        ``mean`` and ``std`` are one value for the whole batch or one per image (N,).
        """
        import tensorflow as tf

        count = batch.shape[0]
        per_image = [np.broadcast_to(np.asarray(v, dtype=np.float32), (count,)).reshape(count, 1, 1, 1)
                     for v in (mean, std)]
        result = self._core(tf.constant(batch[..., np.newaxis], dtype=tf.float32),
                            tf.constant(per_image[0]), tf.constant(per_image[1]))
        return result.numpy()[..., 0]

    def restore(self, image: np.ndarray) -> np.ndarray:
        """Restore a 2D image; whole when small enough, else in blended tiles.

        A 3D stack (n_frames, rows, cols), a frame series, is restored frame by frame.
        """
        image = np.asarray(image, dtype=np.float32)
        if image.ndim == 3:
            return self.restore_many([image])[0]
        if image.ndim != 2:
            raise ValueError(f"expected a 2D image, got shape {image.shape}")
        if image.size <= self.max_whole_pixels:
            return self.restore_whole(image)
        return self.restore_tiled(image)

    def restore_many(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Restore several 2D images or 3D stacks (n_frames, rows, cols) with this one network.

        Each frame of a stack is restored on its own, exactly as a single image would be
        (its own normalisation: the network never sees the other frames), and the stack
        comes back with its shape. Images restored whole share network calls when their
        shapes match: with ``batch_whole_images`` (on a GPU), images of one shape share
        network calls of at most ``max_whole_pixels``. Same results as :meth:`restore`.
        Raises ValueError for arrays that are neither 2D nor 3D.
        """
        frames: list[np.ndarray] = []
        owners: list[tuple[int, bool]] = []  # (index of the input, is it a stack)
        for index, image in enumerate(images):
            array = np.asarray(image, dtype=np.float32)
            if array.ndim == 3:
                frames.extend(array)
                owners.extend([(index, True)] * len(array))
            elif array.ndim == 2:
                frames.append(array)
                owners.append((index, False))
            else:
                raise ValueError(f"expected 2D images or 3D stacks, image {index} has shape {array.shape}")
        restored = self._restore_images(frames)
        out: list[list[np.ndarray]] = [[] for _ in images]
        for (index, _), frame in zip(owners, restored):
            out[index].append(frame)
        stacks = {index for index, is_stack in owners if is_stack}
        return [np.stack(parts) if index in stacks else parts[0] for index, parts in enumerate(out)]

    def _restore_images(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Restore 2D images (see :meth:`restore_many`)."""
        arrays = [np.asarray(image, dtype=np.float32) for image in images]
        results: list[np.ndarray | None] = [None] * len(arrays)
        by_shape: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(arrays):
            if image.ndim != 2:
                raise ValueError(f"expected 2D images, image {index} has shape {image.shape}")
            if image.size <= self.max_whole_pixels:
                by_shape.setdefault(image.shape, []).append(index)
            else:
                results[index] = self.restore_tiled(image)
        for (rows, cols), members in by_shape.items():
            pixels = (rows + rows % 2) * (cols + cols % 2)
            per_call = max(1, self.max_whole_pixels // pixels) if self.batch_whole_images else 1
            for first in range(0, len(members), per_call):
                chunk = members[first:first + per_call]
                batch = np.stack([np.pad(arrays[i], ((0, rows % 2), (0, cols % 2)), mode="reflect") for i in chunk])
                stats = np.array([normalisation(arrays[i]) for i in chunk])
                for i, out in zip(chunk, self.infer(batch, stats[:, 0], stats[:, 1])):
                    results[i] = out[:rows, :cols]
        return cast(list[np.ndarray], results)  # every index was filled above

    def restore_whole(self, image: np.ndarray) -> np.ndarray:
        """Whole-image inference; odd sizes are padded by reflection, then cropped."""
        rows, cols = image.shape
        padded = np.pad(image, ((0, rows % 2), (0, cols % 2)), mode="reflect")
        return self.infer(padded[np.newaxis], *normalisation(image))[0, :rows, :cols]

    def restore_tiled(self, image: np.ndarray) -> np.ndarray:
        """Overlapping tiles with smooth blending: memory bounded by the tile batch, not the image."""
        rows, cols = image.shape
        mean, std = normalisation(image)  # the whole image's, so that every tile is treated alike
        padded = np.pad(image, ((0, rows % 2), (0, cols % 2)), mode="reflect")  # as restore_whole does
        height, width = padded.shape
        overlap = 2 * self.context_px + self.blend_px
        row_plan, col_plan = plan_tiles(height, width, self.tile_px, overlap, TILE_ALIGN_PX)
        tiles = [(r, h, c, w) for r, h in row_plan for c, w in col_plan]
        total = np.zeros(padded.shape, dtype=np.float64)
        weight_sum = np.zeros(padded.shape, dtype=np.float64)
        log.info("restoring %dx%d px in %d tiles of up to %dx%d px with %s on %s", rows, cols, len(tiles),
                 max(h for _, h in row_plan), max(w for _, w in col_plan), self.network, self.device)
        done = 0
        for chunk in _batches_of_equal_shape(tiles, self.tile_batch):
            batch = np.stack([padded[r:r + h, c:c + w] for r, h, c, w in chunk])
            for (r, h, c, w), out in zip(chunk, self.infer(batch, mean, std)):
                weights = np.outer(blend_weights(h, r, height, self.context_px, self.blend_px),
                                   blend_weights(w, c, width, self.context_px, self.blend_px))
                total[r:r + h, c:c + w] += out * weights
                weight_sum[r:r + h, c:c + w] += weights
            done += len(chunk)
            log.info("tiles %d/%d done", done, len(tiles))
        return (total / weight_sum)[:rows, :cols].astype(np.float32)


def normalisation(image: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation that standardise the network's input: scale-free restoration.

    The networks standardise their input themselves by its mean and max(std, 0.1), and
    undo that on the output. The floor makes them unit-dependent: an image in beam
    fractions (std ~1e-4) is not standardised and is restored differently from the same
    image in counts (by 39% of the range on a 256x256 HAADF lattice). remflow feeds the
    true mean and std instead (a constant image: std 1), so restoring ``k * image + c`` gives
    ``k * restored + c`` for any k > 0 (tested from 1e-6 to 1e6 within 1e-4 of the range).
    For images with std >= 0.1, as in the networks' training, nothing changes.
    """
    values = np.asarray(image, dtype=np.float64)
    std = float(values.std())
    return float(values.mean()), std if std > 0 and math.isfinite(std) else 1.0


def _normalised_core(signature: Any) -> Any:
    """The network with its input normalisation exposed as arguments.

    Each network standardises its input by the input's own mean and standard
    deviation (floored at 0.1) and undoes that on the output. Tiles must share the
    whole image's statistics to match whole-image inference, and the floor must go for
    the result not to depend on the intensity unit, so the SavedModel's graph is
    re-imported with those two tensors fed from outside (:func:`normalisation`).
    """
    import tensorflow as tf
    from tensorflow.python.framework.function_def_to_graph import function_def_to_graph

    outer = signature.graph
    call = next(op for op in outer.get_operations() if op.type == "StatefulPartitionedCall")
    function_name = call.get_attr("f").name
    function_def = next(fn for fn in outer.as_graph_def().library.function if fn.signature.name == function_name)
    arg_names = [arg.name for arg in function_def.signature.input_arg]
    node_names = {node.name for node in function_def.node_def}
    missing = {_MEAN_NODE, _STD_NODE} - node_names
    if missing:
        raise RuntimeError(f"network graph lacks the normalisation nodes {sorted(missing)}; remflow does not know it")
    # Variables are captured by the outer graph; map each function argument to its variable handle.
    external_by_internal = {internal.name: external for external, internal in outer.captures}
    variable_handles = [external_by_internal[tensor.name] for tensor in call.inputs[1:]]
    graph_def = function_def_to_graph(function_def).as_graph_def()
    output_name = next(iter(function_def.ret.values())).split(":")[0] + ":0"

    def core(images: Any, mean: Any, std: Any) -> Any:
        graph = tf.compat.v1.get_default_graph()
        input_map = {f"{arg_names[0]}:0": images, f"{_MEAN_NODE}:0": mean, f"{_STD_NODE}:0": std}
        input_map.update({f"{name}:0": graph.capture(handle) for name, handle in zip(arg_names[1:], variable_handles)})
        (output,) = tf.graph_util.import_graph_def(graph_def, input_map=input_map, return_elements=[output_name], name="net")
        return output

    spec = [tf.TensorSpec([None, None, None, 1], tf.float32), tf.TensorSpec([None, 1, 1, 1], tf.float32),
            tf.TensorSpec([None, 1, 1, 1], tf.float32)]
    return tf.compat.v1.wrap_function(core, spec)


_MEAN_NODE = "gen_/gen_r_em_pp/moments/mean"
_STD_NODE = "gen_/gen_r_em_pp/Maximum"  # max(std, 0.1) inside the network; replaced by normalisation()


def _batches_of_equal_shape(tiles: list[tuple[int, int, int, int]], size: int) -> Iterator[list[tuple[int, int, int, int]]]:
    """Group tiles (row, height, col, width) by shape, in batches of at most ``size``."""
    by_shape: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}
    for tile in tiles:
        by_shape.setdefault((tile[1], tile[3]), []).append(tile)
    for group in by_shape.values():
        for start in range(0, len(group), size):
            yield group[start:start + size]


def batch_restorer(info_paths: list[str]) -> tuple[str, list[dict[str, Any]]]:
    """The one network of a restoration batch and its members' ingest records.

    ``info_paths``: the members' ingest JSON files. Raises ValueError when the members do not
    share one network (a batch loads one network once).
    """
    infos = []
    for path in info_paths:
        with open(path) as handle:
            infos.append(json.load(handle))
    networks = {info["network"] for info in infos}
    if len(networks) != 1:
        raise ValueError(f"a restoration batch must share one network, got {sorted(networks)}")
    return networks.pop(), infos


def restorer_from_settings(network: str, settings: dict[str, Any]) -> Restorer:
    """A :class:`Restorer` with the tiling settings of config ``restore``."""
    return Restorer(network, max_whole_pixels=settings["max_whole_pixels"], tile_px=settings["tile_px"],
                    context_px=settings["context_px"], blend_px=settings["blend_px"],
                    tile_batch=settings["tile_batch"], dtype=settings.get("dtype", "float32"))


def restore_members(restorer: Restorer, members: dict[str, Sequence[np.ndarray]],
                    step: str) -> tuple[dict[str, list[np.ndarray]], dict[str, str]]:
    """Restore the images of a batch's members (sample -> 2D images or 3D stacks) with one network.

    All images go to one :meth:`Restorer.restore_many` call (images of one shape share network
    calls on a GPU); when that call fails, member by member, so that one bad member fails alone.
    Returns (sample -> its restored images, in order; sample -> ``failed in <step>: sample
    '<name>': <error>`` for each member that failed, absent from the first mapping).
    """
    images = [(sample, image) for sample, stack in members.items() for image in stack]
    restored: dict[str, list[np.ndarray]] = {sample: [] for sample in members}
    failures: dict[str, str] = {}
    try:
        for (sample, _), result in zip(images, restorer.restore_many([image for _, image in images])):
            restored[sample].append(result)
    except Exception:  # noqa: BLE001 - find the member that fails, restore the others
        log.exception("batch restoration failed, restoring member by member")
        restored = {}
        for sample, stack in members.items():
            try:
                restored[sample] = restorer.restore_many(list(stack))
            except Exception as err:  # noqa: BLE001
                log.exception("%s", sample)
                failures[sample] = f"failed in {step}: sample '{sample}': {type(err).__name__}: {err}"
    return restored, failures
