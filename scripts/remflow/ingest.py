"""Read raw microscope files into one calibrated 2D image, or refuse them with a reason.

Everything HyperSpy/RosettaSciIO reads is accepted (DM3/DM4, Velox EMD, TIA SER/EMI,
MRC, vendor TIFFs, ELID, HSPY/ZSPY, plain TIFF), plus NumPy ``.npy`` arrays and the
HDF5 layout of the test data that ships inside ``tk_r_em``. Paths may address files
inside an installed Python package as ``package://<package>/<path inside it>``;
``#<dataset>`` after a ``.h5`` path picks a dataset of that layout (default ``x``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE_SCHEME = "package://"

#: Length units HyperSpy files use, in picometres. A whitelist, because HyperSpy's
#: own conversion reads "A" as ampere and turns "px" into a length.
LENGTH_UNITS_PM: dict[str, float] = {
    "m": 1e12,
    "cm": 1e10,
    "mm": 1e9,
    "um": 1e6,
    "µm": 1e6,  # micro sign
    "μm": 1e6,  # Greek mu
    "micron": 1e6,
    "microns": 1e6,
    "nm": 1e3,
    "å": 100.0,
    "a": 100.0,
    "angstrom": 100.0,
    "ang": 100.0,
    "pm": 1.0,
}
#: Units that say "no length calibration".
UNCALIBRATED_UNITS = {"", "px", "pixel", "pixels", "points", "<undefined>", "undefined", "none", "[]"}

#: ``frame`` value of the sample sheet that asks for every frame of a stack (a frame series).
FRAME_ALL = "all"
#: Below this size in either direction an image is refused as too small to restore.
MIN_IMAGE_PX = 16


class RejectedInput(Exception):
    """A raw file that cannot be restored; the message is a one-line reason."""


@dataclass
class RawImage:
    """One 2D image read from a raw file, with what was learned about it."""

    signal: Any  # hyperspy Signal2D, float32, original calibration and metadata
    pixel_size_x_pm: float | None
    pixel_size_y_pm: float | None
    calibration_source: str
    notes: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(n) for n in self.signal.data.shape)  # type: ignore[return-value]

    @property
    def pixel_size_pm(self) -> float | None:
        """One pixel size for square pixels; the geometric mean when x and y differ."""
        if self.pixel_size_x_pm is None or self.pixel_size_y_pm is None:
            return None
        return math.sqrt(self.pixel_size_x_pm * self.pixel_size_y_pm)


def split_dataset(path: str) -> tuple[str, str | None]:
    """Split ``file.h5#y`` into the file and the dataset name."""
    if "#" in path:
        file_part, dataset = path.rsplit("#", 1)
        return file_part, dataset or None
    return path, None


def resolve_path(path: str, base_dir: str | Path = ".") -> Path:
    """Resolve a sample-sheet path: ``package://pkg/rel``, absolute, or relative to ``base_dir``."""
    file_part, _ = split_dataset(path)
    if file_part.startswith(PACKAGE_SCHEME):
        package, _, inner = file_part[len(PACKAGE_SCHEME):].partition("/")
        # find_spec locates the package without importing it (tk_r_em would import TensorFlow).
        spec = importlib.util.find_spec(package) if package.isidentifier() else None
        if spec is None or not spec.submodule_search_locations:
            raise RejectedInput(f"package '{package}' named in '{path}' is not installed")
        return Path(next(iter(spec.submodule_search_locations))) / inner
    resolved = Path(file_part)
    return resolved if resolved.is_absolute() else Path(base_dir) / resolved


def sha256_of(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks so large files need little memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def length_unit_to_pm(units: Any) -> float | None:
    """Picometres per unit for a whitelisted length unit; None when uncalibrated.

    Raises RejectedInput for reciprocal-space units (diffraction patterns, FFTs)
    and for units that are not lengths.
    """
    text = "" if units is None else str(units).strip()
    key = text.lower().replace(" ", "")
    if key in UNCALIBRATED_UNITS or text == "<undefined>":
        return None
    if key.startswith("1/") or key.endswith("^-1") or key.endswith("-1"):
        raise RejectedInput(f"reciprocal-space image (axis units '{text}'), not a real-space image")
    factor = LENGTH_UNITS_PM.get(key) or LENGTH_UNITS_PM.get(text)
    if factor is None:
        raise RejectedInput(f"axis units '{text}' are not a length unit remflow knows (m, um, nm, A, pm)")
    return factor


def _is_structured(dtype: np.dtype) -> bool:
    return dtype.names is not None


def _describe_non_image(signal: Any) -> str:
    """Why a signal is not a restorable 2D image, in a few words."""
    dtype = signal.data.dtype
    sig_dim = signal.axes_manager.signal_dimension
    nav_dim = signal.axes_manager.navigation_dimension
    if _is_structured(dtype):
        return "colour (RGB) image, not a single-channel electron-microscopy image"
    if np.iscomplexobj(signal.data):
        return "complex data (e.g. an FFT), not an intensity image"
    if sig_dim == 1 and nav_dim == 0:
        return "a spectrum, not an image"
    if sig_dim == 1 and nav_dim >= 1:
        return f"a spectrum image ({nav_dim}D map of spectra), not an image"
    if sig_dim == 0 and nav_dim == 1:
        return "a 1D line profile, not an image"
    return f"{sig_dim}D signal with {nav_dim} navigation axes, not a 2D image"


def _as_image_candidate(signal: Any) -> Any | None:
    """Return ``signal`` as a Signal2D when it is a real-valued 2D image (or a stack of them)."""
    dtype = signal.data.dtype
    if _is_structured(dtype) or np.iscomplexobj(signal.data) or not np.issubdtype(dtype, np.number):
        return None
    sig_dim = signal.axes_manager.signal_dimension
    nav_dim = signal.axes_manager.navigation_dimension
    if sig_dim == 2:
        return signal
    if sig_dim == 0 and nav_dim == 2:
        # Some readers (ELID) give images as navigation-only signals.
        return signal.transpose(signal_axes=2)
    return None


def _load_signals(path: Path, dataset: str | None) -> list[Any]:
    """Load every signal in a file, as a list."""
    import hyperspy.api as hs

    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = np.load(path, allow_pickle=False)
        if array.ndim == 3 and array.shape[-1] in (3, 4) and array.shape[0] > 4:
            raise RejectedInput("colour (RGB) image, not a single-channel electron-microscopy image")
        return [hs.signals.Signal2D(array) if array.ndim >= 2 else hs.signals.Signal1D(array)]
    if suffix in {".h5", ".hdf5"} and _is_tk_r_em_layout(path):
        return [_load_tk_r_em_layout(path, dataset or "x")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = hs.load(path, lazy=False)
    return loaded if isinstance(loaded, list) else [loaded]


def _is_tk_r_em_layout(path: Path) -> bool:
    import h5py

    with h5py.File(path, "r") as handle:
        return "x" in handle and isinstance(handle["x"], h5py.Dataset) and "Experiments" not in handle


def _load_tk_r_em_layout(path: Path, dataset: str) -> Any:
    """Images of tk_r_em's test data: stored column-major as (n, 1, W, H) or (W, H[, n])."""
    import h5py
    import hyperspy.api as hs

    with h5py.File(path, "r") as handle:
        if dataset not in handle:
            raise RejectedInput(f"dataset '{dataset}' not in {path.name} (it has {', '.join(sorted(handle))})")
        data = np.asarray(handle[dataset][...])
    if data.ndim == 4:  # (n, 1, W, H) -> (n, H, W), as tk_r_em.load_sim_test_data transposes it
        images = data[:, 0].transpose(0, 2, 1)
    elif data.ndim == 3:  # (W, H, n)
        images = data.transpose(2, 1, 0)
    elif data.ndim == 2:
        images = data.T
    else:
        raise RejectedInput(f"dataset '{dataset}' of {path.name} has {data.ndim} dimensions, not images")
    signal = hs.signals.Signal2D(np.ascontiguousarray(images))
    signal.metadata.General.title = f"{path.stem} {dataset}"
    signal.metadata.General.original_filename = path.name
    return signal


def read_image(path: str | Path, *, dataset: str | None = None, frame: int | str | None = None,
               pixel_size_pm: float | None = None, min_size_px: int = MIN_IMAGE_PX) -> RawImage:
    """Read one 2D image from ``path`` or raise RejectedInput with a one-line reason.

    Multi-signal files give their largest real-valued 2D image. Stacks need
    ``frame``: an index, or ``"all"`` for a frame series, which keeps every frame as a
    (n_frames, rows, cols) stack (see :func:`frame_series`; a single image stays 2D).
    ``pixel_size_pm`` overrides the file's calibration. The returned signal is float32
    and keeps the file's axes and metadata.
    """
    path = Path(path)
    if not path.exists():
        raise RejectedInput("file not found")
    if path.is_dir():
        raise RejectedInput("is a directory, not a file")
    if path.stat().st_size == 0:
        raise RejectedInput("file is empty (0 bytes)")
    try:
        signals = _load_signals(path, dataset)
    except RejectedInput:
        raise
    except Exception as err:  # readers raise anything from IOError to struct.error on bad files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RejectedInput(f"unreadable or truncated file ({type(err).__name__}: {reason[:160]})") from err
    if not signals:
        raise RejectedInput("unreadable or truncated file: the reader found no data in it")

    candidates = [c for c in (_as_image_candidate(s) for s in signals) if c is not None]
    if not candidates:
        raise RejectedInput(_describe_non_image(signals[0]))
    # Largest image first; among equals, the first in the file.
    image = max(candidates, key=lambda s: int(np.prod(s.axes_manager.signal_shape)))
    notes = [f"picked the largest of {len(candidates)} images in the file"] if len(candidates) > 1 else []

    nav_size = int(np.prod(image.axes_manager.navigation_shape)) if image.axes_manager.navigation_dimension else 1
    if frame == FRAME_ALL:
        image = frame_series(image, notes)
    elif image.axes_manager.navigation_dimension:
        if frame is None:
            raise RejectedInput(f"is a stack of {nav_size} frames; set the 'frame' column (0..{nav_size - 1})")
        if not 0 <= frame < nav_size:
            raise RejectedInput(f"frame {frame} does not exist; the stack has {nav_size} frames (0..{nav_size - 1})")
        index = np.unravel_index(frame, image.axes_manager.navigation_shape[::-1])
        image = image.inav[tuple(int(i) for i in index[::-1])]
        notes.append(f"frame {frame} of {nav_size}")
    elif frame not in (None, 0):
        raise RejectedInput(f"frame {frame} requested but the file holds a single image")

    # Reciprocal units must be refused even when the sheet overrides the pixel size.
    x_axis, y_axis = image.axes_manager.signal_axes
    x_factor = length_unit_to_pm(x_axis.units)
    y_factor = length_unit_to_pm(y_axis.units)

    data = np.asarray(image.data)
    rows, cols = data.shape[-2:]  # a frame series is (n_frames, rows, cols)
    if rows < min_size_px or cols < min_size_px:
        raise RejectedInput(f"image of {rows}x{cols} px is too small to restore (need at least {min_size_px}x{min_size_px})")
    data = data.astype(np.float32)
    finite = np.isfinite(data)
    if not finite.all():
        raise RejectedInput(f"{int((~finite).sum())} pixels are NaN or infinite")
    if float(data.max()) == float(data.min()):
        # Kept, as vendors' placeholder images are valid files; fitting will find no lattice.
        notes.append(f"constant image (every pixel is {float(data.min()):g})")

    image = image.deepcopy()
    image.data = data
    if pixel_size_pm is not None:
        for axis in (x_axis, y_axis):
            image.axes_manager[axis.name].scale = float(pixel_size_pm)
            image.axes_manager[axis.name].units = "pm"
        size_x = size_y = float(pixel_size_pm)
        source = "sample sheet pixel_size_pm"
    elif x_factor is not None and y_factor is not None:
        size_x = float(x_axis.scale) * x_factor
        size_y = float(y_axis.scale) * y_factor
        if not (size_x > 0 and size_y > 0 and math.isfinite(size_x) and math.isfinite(size_y)):
            raise RejectedInput(f"invalid pixel size in the file ({x_axis.scale} {x_axis.units})")
        source = f"file axes ({x_axis.units})"
    else:
        size_x = size_y = None
        source = "none: the file has no length calibration"
    return RawImage(signal=image, pixel_size_x_pm=size_x, pixel_size_y_pm=size_y,
                    calibration_source=source, notes=notes)


def frame_series(image: Any, notes: list[str]) -> Any:
    """Every frame of a stack as one Signal2D of shape (n_frames, rows, cols), for ``frame: all``.

    Several navigation axes are flattened into one (frames in C order; the signal axes'
    calibration and the metadata are kept). A single image, or a stack of one frame, is
    returned as a 2D image with a note: it is analysed as one image, with no series figure.
    """
    n_frames = int(np.prod(image.axes_manager.navigation_shape)) if image.axes_manager.navigation_dimension else 1
    if n_frames == 1:
        notes.append("frame 'all' on a single image: analysed as one image (no frame-series figure)")
        return image.inav[(0,) * image.axes_manager.navigation_dimension] if image.axes_manager.navigation_dimension \
            else image
    if image.axes_manager.navigation_dimension > 1:
        nav_shape = tuple(image.axes_manager.navigation_shape)
        flat = image.deepcopy()
        flat.unfold_navigation_space()  # HyperSpy's own flattening (C order)
        # The frames are the data from here on: nothing should ever fold them back.
        flat.metadata.set_item("_HyperSpy.Folding", {"unfolded": False, "original_shape": None,
                                                     "signal_unfolded": False, "original_axes_manager": None})
        notes.append(f"navigation axes {nav_shape} flattened into {n_frames} frames")
        image = flat
    notes.append(f"all {n_frames} frames (a frame series)")
    return image


def read_sample_image(row: dict[str, Any], *, min_size_px: int = MIN_IMAGE_PX) -> RawImage:
    """Read the image a sample-sheet row points at (its path, dataset, frame and pixel size)."""
    path = resolve_path(row["path"], row.get("base_dir") or ".")
    _, dataset = split_dataset(row["path"])
    frame = row.get("frame")
    if frame is not None and str(frame).lower() != FRAME_ALL:
        frame = int(frame)
    return read_image(path, dataset=dataset, frame=None if frame is None else frame,
                      pixel_size_pm=row.get("pixel_size_pm"), min_size_px=min_size_px)


def inspect_sample(row: dict[str, Any], *, min_size_px: int = MIN_IMAGE_PX,
                   hr_max_pixel_pm: float = 100.0) -> dict[str, Any]:
    """Everything the pipeline decides about one sample, as a JSON-ready dict.

    ``status`` is ``ok`` or ``rejected: <one-line reason>``; a rejected sample
    still gets a record, so one bad file never blocks the rest of a dataset.
    """
    from remflow.networks import UndecidableNetwork, choose_network

    sample = row["sample"]
    record: dict[str, Any] = {"sample": sample, "path": row["path"], "frame": row.get("frame"),
                              "status": "ok", "sha256": None, "shape": None, "pixel_size_pm": None,
                              "pixel_size_x_pm": None, "pixel_size_y_pm": None, "modality": None,
                              "resolution": None, "network": None}
    try:
        path = resolve_path(row["path"], row.get("base_dir") or ".")
        record["resolved_path"] = str(path)
        if path.is_file():
            record["sha256"] = sha256_of(path)
        image = read_sample_image(row, min_size_px=min_size_px)
        if image.signal.data.ndim == 3:  # a frame series: shape is that of one frame
            record["n_frames"] = int(image.signal.data.shape[0])
        record.update(shape=list(image.shape)[-2:], pixel_size_pm=image.pixel_size_pm,
                      pixel_size_x_pm=image.pixel_size_x_pm, pixel_size_y_pm=image.pixel_size_y_pm,
                      calibration_source=image.calibration_source, notes=image.notes,
                      dtype=str(image.signal.data.dtype))
        choice = choose_network(sample=sample, modality=row["modality"], resolution=row["resolution"],
                                metadata=image.signal.metadata.as_dictionary(),
                                pixel_size_pm=image.pixel_size_pm, hr_max_pixel_pm=hr_max_pixel_pm)
        record.update(modality=choice.modality, modality_reason=choice.modality_reason,
                      resolution=choice.resolution, resolution_reason=choice.resolution_reason,
                      network=choice.network)
    except UndecidableNetwork as err:
        record["status"] = f"rejected: {err}"
    except RejectedInput as err:
        record["status"] = f"rejected: sample '{sample}' ({row['path']}): {err}"
    return record
