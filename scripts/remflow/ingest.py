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
import re
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE_SCHEME = "package://"

#: The one table of length-unit spellings real files use, in picometres per unit. Keys are
#: normalised by :func:`unit_key` (Unicode NFKC, lower case, no spaces, dots or
#: underscores: Berkeley EMD writes ``n_m``), so "µm", "μm", " um " and "u_m" are one entry.
#: A whitelist, because HyperSpy's own conversion reads "A" as ampere and "px" as a length.
LENGTH_UNITS_PM: dict[str, float] = {
    "m": 1e12, "meter": 1e12, "meters": 1e12, "metre": 1e12, "metres": 1e12,
    "cm": 1e10,
    "mm": 1e9,
    "um": 1e6, "μm": 1e6, "micron": 1e6, "microns": 1e6, "micrometer": 1e6, "micrometers": 1e6,
    "micrometre": 1e6, "micrometres": 1e6,
    "nm": 1e3, "nanometer": 1e3, "nanometers": 1e3, "nanometre": 1e3, "nanometres": 1e3,
    "å": 100.0, "a": 100.0, "angstrom": 100.0, "angstroms": 100.0, "ångström": 100.0, "ångströms": 100.0,
    "ang": 100.0,
    "pm": 1.0, "picometer": 1.0, "picometers": 1.0, "picometre": 1.0, "picometres": 1.0,
}
#: Units that say "no length calibration" (same normalisation).
UNCALIBRATED_UNITS = {"", "px", "pixel", "pixels", "points", "<undefined>", "undefined", "none", "[]", "unknown"}

#: Unit strings that every reader takes as lengths (HyperSpy's own conversion included).
_SI_LENGTHS = {"m", "cm", "mm", "µm", "μm", "um", "nm", "pm"}

#: ``frame`` value of the sample sheet that asks for every frame of a stack (a frame series).
FRAME_ALL = "all"
#: Below this size in either direction an image is refused as too small to restore.
MIN_IMAGE_PX = 16

#: STEM detectors, best first, for choosing among the images of a multi-signal file:
#: annular dark field (Z-contrast, bright columns) before anything else. Words of the
#: title or of the detector tags are matched.
PREFERRED_SIGNAL_WORDS: tuple[frozenset[str], ...] = (
    frozenset({"haadf"}),
    frozenset({"adf", "maadf", "laadf"}),
)


def unit_key(units: Any) -> str:
    """The normalised spelling of a unit string (see :data:`LENGTH_UNITS_PM`)."""
    text = "" if units is None else unicodedata.normalize("NFKC", str(units))
    return re.sub(r"[\s_.]", "", text).lower()


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
    #: What ingest chose and changed: signal, other_signals, reader, data_bar_rows,
    #: intensity_offset, n_outlier_pixels, outlier_pixels, ...
    details: dict[str, Any] = field(default_factory=dict)

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
    """Picometres per unit for a length unit of :data:`LENGTH_UNITS_PM`; None when uncalibrated.

    Raises RejectedInput for reciprocal-space units (diffraction patterns, FFTs)
    and for units that are not lengths.
    """
    text = "" if units is None else str(units).strip()
    key = unit_key(text)
    if key in UNCALIBRATED_UNITS:
        return None
    if key.startswith("1/") or key.endswith("^-1") or key.endswith("-1"):
        raise RejectedInput(f"reciprocal-space image (axis units '{text}'), not a real-space image")
    factor = LENGTH_UNITS_PM.get(key)
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


def readers_for(path: Path) -> list[str]:
    """RosettaSciIO readers whose extensions include this file's, in RosettaSciIO's order."""
    from rsciio import IO_PLUGINS

    suffix = path.suffix.lower().lstrip(".")
    return [plugin["name"] for plugin in IO_PLUGINS
            if suffix in [ext.lower() for ext in plugin.get("file_extensions", [])]]


def _load_signals(path: Path, dataset: str | None) -> tuple[list[Any], str | None]:
    """Load every signal in a file, as a list, and the reader used when it had to be chosen.

    An extension several readers claim (``.hdf5``/``.h5``: HSPY, USID, Delmic, ...) makes
    ``hs.load`` refuse; then each of those readers is tried in turn and the first that
    gives data wins. When all fail, the reason lists what each said.
    """
    import hyperspy.api as hs

    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = np.load(path, allow_pickle=False)
        if array.ndim == 3 and array.shape[-1] in (3, 4) and array.shape[0] > 4:
            if array.shape[-1] == 3 and np.array_equal(array[..., 0], array[..., 1]) \
                    and np.array_equal(array[..., 0], array[..., 2]):
                array = np.ascontiguousarray(array[..., 0])  # grey stored as RGB
            else:
                raise RejectedInput("colour (RGB) image, not a single-channel electron-microscopy image")
        return [hs.signals.Signal2D(array) if array.ndim >= 2 else hs.signals.Signal1D(array)], None
    if suffix in {".h5", ".hdf5"} and _is_tk_r_em_layout(path):
        return [_load_tk_r_em_layout(path, dataset or "x")], None
    readers = readers_for(path)
    attempts: list[tuple[str | None, BaseException]] = []
    first_loaded: tuple[list[Any], str | None] | None = None
    for reader in ([None] if len(readers) <= 1 else readers):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loaded = _quiet_load(path, reader)
        except Exception as err:  # readers raise anything from IOError to struct.error on bad files
            attempts.append((reader, err))
            continue
        signals = loaded if isinstance(loaded, list) else [loaded]
        if any(_as_image_candidate(s) is not None or _is_structured(s.data.dtype) for s in signals):
            return signals, reader
        first_loaded = first_loaded or (signals, reader)
    if first_loaded is not None and first_loaded[0]:
        return first_loaded  # read, but no image in it: the caller says what it is
    if len(attempts) == 1:
        err = attempts[0][1]
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RejectedInput(f"unreadable or truncated file ({type(err).__name__}: {reason[:160]})") from err
    tried = "; ".join(f"{reader}: {type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:80]}"
                      for reader, err in attempts)
    raise RejectedInput(f"none of the readers for '{path.suffix}' files gives an image ({tried})")


def _quiet_load(path: Path, reader: str | None) -> Any:
    """hs.load without HyperSpy's error log lines for readers that do not fit."""
    import logging

    import hyperspy.api as hs

    logger = logging.getLogger("hyperspy")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        return hs.load(path, lazy=False) if reader is None else hs.load(path, lazy=False, reader=reader)
    finally:
        logger.setLevel(level)


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


def _title(signal: Any) -> str:
    return str(signal.metadata.get_item("General.title", default="") or "").strip()


def _signal_words(signal: Any) -> set[str]:
    """Lower-case words of the title and of any detector tags (what names the detector)."""
    from remflow.networks import flatten_tree

    detectors = []
    for where in ("Acquisition_instrument.TEM.Detector", "Acquisition_instrument.SEM.Detector"):
        tree = signal.metadata.get_item(where, default=None)
        if tree is not None:
            flat = flatten_tree(tree.as_dictionary() if hasattr(tree, "as_dictionary") else tree)
            detectors += [f"{k} {v}" for k, v in flat.items()]
    return set(re.findall(r"[a-z0-9]+", " ".join([_title(signal), *detectors]).lower()))


def _samples_per_pixel(signal: Any) -> int:
    try:
        return int(signal.original_metadata.get_item("SamplesPerPixel", default=1) or 1)
    except (TypeError, ValueError):
        return 1


def _is_colour_planes(signal: Any) -> bool:
    """A colour image stored as 3 or 4 planes (a TIFF page with 3-4 samples per pixel, or an
    8-bit stack of 3-4 same-size planes), which readers give as a little stack."""
    nav = signal.axes_manager.navigation_shape
    return (signal.axes_manager.signal_dimension == 2 and len(nav) == 1 and nav[0] in (3, 4)
            and (_samples_per_pixel(signal) in (3, 4) or signal.data.dtype == np.uint8))


def _equal_channels(planes: np.ndarray) -> bool:
    return all(np.array_equal(planes[0], planes[k]) for k in range(1, min(3, len(planes))))


def _grey_from_rgb(signal: Any) -> Any | None:
    """A structured-RGB signal whose R, G and B are equal, as a grey Signal2D; else None."""
    data = signal.data
    names = list(data.dtype.names or ())
    if not names or any(n not in names for n in ("R", "G", "B")):
        return None
    if not (np.array_equal(data["R"], data["G"]) and np.array_equal(data["R"], data["B"])):
        return None
    return signal._deepcopy_with_new_data(np.ascontiguousarray(data["R"]))


def _describe_signal(index: int, signal: Any) -> dict[str, Any]:
    return {"index": index, "title": _title(signal), "shape": list(signal.data.shape),
            "dtype": str(signal.data.dtype)}


def _detector_rank(signal: Any) -> int:
    words = _signal_words(signal)
    for rank, preferred in enumerate(PREFERRED_SIGNAL_WORDS):
        if words & preferred:
            return rank
    return len(PREFERRED_SIGNAL_WORDS)


def choose_image(signals: list[Any], wanted: str | int | None = None) -> tuple[Any, dict[str, Any], list[dict[str, Any]], list[str]]:
    """Pick the image to restore among a file's signals.

    Returns (signal, chosen, others, notes): ``chosen`` and each of ``others`` describe a
    signal (index in the file, title, shape, dtype). Rules, in order:

    1. ``wanted`` (the sheet's ``signal``): an index in the file (0-based) or a title
       (case-insensitive); anything else is refused, listing the signals.
    2. Colour pages are never chosen over a single-channel image (a TIFF's RGB preview
       beside its raw page); RGB with equal channels counts as grey.
    3. Annular dark field (HAADF, then ADF/MAADF/LAADF, by title or detector tags) before
       other STEM signals (BF, ABF, DF segments, ...); then the largest; then the first.

    Raises RejectedInput when there is no image.
    """
    entries: list[tuple[int, Any, str]] = []  # (index, image signal, kind)
    for index, signal in enumerate(signals):
        if _is_structured(signal.data.dtype):
            grey = _grey_from_rgb(signal)
            entries.append((index, grey if grey is not None else signal, "grey-rgb" if grey is not None else "colour"))
        elif _is_colour_planes(signal):
            if _equal_channels(np.asarray(signal.data)):
                entries.append((index, signal.inav[0], "grey-rgb"))
            else:
                entries.append((index, signal, "colour-planes"))
        else:
            candidate = _as_image_candidate(signal)
            entries.append((index, candidate if candidate is not None else signal,
                            "image" if candidate is not None else "other"))
    described = {index: _describe_signal(index, signals[index]) for index, _, _ in entries}
    notes: list[str] = []
    if wanted is not None and str(wanted).strip() != "":
        key = str(wanted).strip()
        hits = [e for e in entries if key.isdigit() and e[0] == int(key)] or \
            [e for e in entries if _title(signals[e[0]]).lower() == key.lower()]
        if not hits:
            listing = ", ".join(f"{d['index']} '{d['title']}'" for d in described.values())
            raise RejectedInput(f"signal '{key}' named in the sample sheet is not in the file (it has: {listing})")
        index, chosen, kind = hits[0]
        if kind in ("colour", "colour-planes"):
            raise RejectedInput(f"signal '{key}' is a colour (RGB) image, not a single-channel electron-microscopy image")
        if kind == "other":
            raise RejectedInput(f"signal '{key}' is {_describe_non_image(signals[index])}")
        notes.append(f"signal {index} '{_title(signals[index])}' chosen by the sample sheet")
    else:
        single = [e for e in entries if e[2] == "image"]
        greys = [e for e in entries if e[2] == "grey-rgb"]
        pool = single or greys or [e for e in entries if e[2] == "colour-planes"]
        if not pool:
            colour = [e for e in entries if e[2] == "colour"]
            raise RejectedInput(_describe_non_image(signals[colour[0][0]] if colour else signals[0]))
        if single and (greys or any(e[2].startswith("colour") for e in entries)):
            notes.append("colour/preview page(s) ignored in favour of the single-channel image")
        index, chosen, kind = min(pool, key=lambda e: (_detector_rank(e[1]), -int(np.prod(e[1].axes_manager.signal_shape)), e[0]))
        if kind == "grey-rgb":
            notes.append("RGB image with equal channels, read as grey")
        if kind == "colour-planes" and _samples_per_pixel(signals[index]) in (3, 4):
            raise RejectedInput("colour (RGB) image, not a single-channel electron-microscopy image")
        if len(pool) > 1:
            rank = _detector_rank(chosen)
            why = ("annular dark field preferred" if rank < len(PREFERRED_SIGNAL_WORDS) else "the largest")
            notes.append(f"chose signal {index} '{_title(signals[index])}' of {len(pool)} images in the file ({why}; "
                         "set the sheet's 'signal' column to choose another)")
    chosen_info = described[index]
    others = [{**described[i], "kind": k} for i, _, k in entries if i != index]
    return chosen, chosen_info, others, notes


def _imagej_calibration(path: Path) -> tuple[float, float, str] | None:
    """(x scale, y scale, unit) from a TIFF's ImageJ metadata, which some readers miss; else None."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            meta = tif.imagej_metadata or {}
            unit = meta.get("unit")
            tags = tif.pages[0].tags
            xres, yres = tags.get("XResolution"), tags.get("YResolution")
            if not unit or xres is None:
                return None
            def scale(tag: Any) -> float:
                num, den = tag.value
                return float(den) / float(num) if num else 0.0
            x = scale(xres)
            y = scale(yres) if yres is not None else x
    except Exception:  # a TIFF tifffile cannot parse has no ImageJ calibration to give
        return None
    return x, (meta.get("spacing") and y) or y, str(unit).replace("\\u00B5", "µ")


def _calibration(image: Any, path: Path) -> tuple[float | None, float | None, str, list[str]]:
    """Pixel size in pm along x and y from the image's axes (None: uncalibrated), its source and notes.

    A zero, negative or non-finite scale means "no calibration", not a bad file. Units
    missing in a HyperSpy file with a scale other than 1 are read as nm (HyperSpy's and
    atomap's convention; a note says so). A TIFF whose readers give no unit may keep it in its
    ImageJ metadata.
    """
    x_axis, y_axis = image.axes_manager.signal_axes
    x_factor = length_unit_to_pm(x_axis.units)
    y_factor = length_unit_to_pm(y_axis.units)
    notes: list[str] = []
    scales = (float(x_axis.scale), float(y_axis.scale))
    if x_factor is None and y_factor is None:
        imagej = _imagej_calibration(path)
        plugin = str(image.metadata.get_item("General.FileIO.0.io_plugin", default="") or "")
        if imagej is not None and imagej[0] > 0 and imagej[0] != 1.0:
            factor = length_unit_to_pm(imagej[2])
            if factor is not None:
                return imagej[0] * factor, imagej[1] * factor, f"ImageJ metadata ({imagej[2]})", notes
        if plugin.endswith(("hspy", "zspy")) and all(math.isfinite(v) and v > 0 for v in scales) \
                and scales != (1.0, 1.0):
            notes.append(f"axis units missing; the scale {scales[0]:g} is read as nm (HyperSpy's convention)")
            return scales[0] * 1e3, scales[1] * 1e3, "file axes (unit missing: nm assumed)", notes
        if scales != (1.0, 1.0):
            notes.append(f"the axes have a scale ({scales[0]:g}) but no unit: treated as uncalibrated")
        return None, None, "none: the file has no length calibration", notes
    if x_factor is None or y_factor is None:
        notes.append(f"only one axis has a length unit ('{x_axis.units}', '{y_axis.units}'): treated as uncalibrated")
        return None, None, "none: the file's calibration is incomplete", notes
    size_x, size_y = scales[0] * x_factor, scales[1] * y_factor
    if not (size_x > 0 and size_y > 0 and math.isfinite(size_x) and math.isfinite(size_y)):
        notes.append(f"the file's pixel size is {x_axis.scale:g} {x_axis.units}: no calibration written, "
                     "treated as uncalibrated")
        return None, None, "none: the file's pixel size is zero or invalid", notes
    return size_x, size_y, f"file axes ({x_axis.units})", notes


def _is_sem(image: Any, modality: str | None) -> bool:
    return modality == "sem" or (modality in (None, "auto")
                                 and image.metadata.get_item("Acquisition_instrument.SEM", default=None) is not None)


def read_image(path: str | Path, *, dataset: str | None = None, frame: int | str | None = None,
               pixel_size_pm: float | None = None, min_size_px: int = MIN_IMAGE_PX,
               signal: str | int | None = None, modality: str | None = None) -> RawImage:
    """Read one 2D image from ``path`` or raise RejectedInput with a one-line reason.

    Multi-signal files: see :func:`choose_image` (``signal`` = the sheet's choice). Stacks
    need ``frame``: an index, or ``"all"`` for a frame series, which keeps every frame as a
    (n_frames, rows, cols) stack (see :func:`frame_series`; a single image stays 2D; outlier
    pixels are then not replaced). ``pixel_size_pm`` overrides the file's calibration. SEM images
    (metadata, or ``modality`` "sem") lose their data bar (:func:`remflow.cleaning.data_bar_height`).
    The returned signal is float32 (a constant offset removed when float32 would
    otherwise lose levels: :func:`remflow.cleaning.to_float32_lossless`), isolated hot/dead
    pixels replaced (:func:`remflow.cleaning.replace_outlier_pixels`), and keeps the file's
    axes and metadata. What was done is in ``RawImage.details`` and ``notes``.
    """
    from remflow.cleaning import DataBarUnknown, data_bar_height, replace_outlier_pixels, to_float32_lossless

    path = Path(path)
    if not path.exists():
        raise RejectedInput("file not found")
    if path.is_dir():
        raise RejectedInput("is a directory, not a file")
    if path.stat().st_size == 0:
        raise RejectedInput("file is empty (0 bytes)")
    try:
        signals, reader = _load_signals(path, dataset)
    except RejectedInput:
        raise
    except Exception as err:  # readers raise anything from IOError to struct.error on bad files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RejectedInput(f"unreadable or truncated file ({type(err).__name__}: {reason[:160]})") from err
    if not signals:
        raise RejectedInput("unreadable or truncated file: the reader found no data in it")

    image, chosen, others, notes = choose_image(signals, signal)
    details: dict[str, Any] = {"signal": chosen, "other_signals": others}
    if reader is not None:
        details["reader"] = reader
        notes.append(f"read with the {reader} reader (the extension fits several)")

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
    size_x, size_y, source, calibration_notes = _calibration(image, path)
    notes += calibration_notes

    raw = np.asarray(image.data)
    rows, cols = raw.shape[-2:]  # a frame series is (n_frames, rows, cols)
    if rows < min_size_px or cols < min_size_px:
        raise RejectedInput(f"image of {rows}x{cols} px is too small to restore (need at least {min_size_px}x{min_size_px})")
    if np.issubdtype(raw.dtype, np.floating):
        finite = np.isfinite(raw)
        if not finite.all():
            raise RejectedInput(f"{int((~finite).sum())} pixels are NaN or infinite")

    details["data_bar_rows"] = 0
    if _is_sem(image, modality):
        try:
            bar, how = data_bar_height(raw if raw.ndim == 2 else raw[0], image.original_metadata.as_dictionary())
        except DataBarUnknown as err:
            raise RejectedInput(str(err)) from err
        if bar:
            if rows - bar < min_size_px:
                raise RejectedInput(f"the data bar ({bar} rows) leaves {rows - bar} rows of image")
            image = image.isig[:, 0:rows - bar]
            raw = np.asarray(image.data)
            notes.append(f"cropped the data bar: {bar} bottom rows ({how})")
        details["data_bar_rows"] = bar
        details["data_bar_source"] = how

    converted = to_float32_lossless(raw)
    notes += converted.notes
    details["intensity_offset"] = converted.offset
    details["float32_max_error"] = converted.max_error
    data = converted.data
    cleaned = replace_outlier_pixels(data)
    notes += cleaned.notes
    data = cleaned.data
    details["n_outlier_pixels"] = cleaned.count
    details["outlier_pixels"] = cleaned.pixels
    if float(data.max()) == float(data.min()):
        # Kept, as vendors' placeholder images are valid files; fitting will find no lattice.
        notes.append(f"constant image (every pixel is {float(data.min()) + converted.offset:g})")

    image = image.deepcopy()
    image.data = data
    image.metadata.set_item("Processing.remflow.intensity_offset", converted.offset)
    x_axis, y_axis = image.axes_manager.signal_axes
    if pixel_size_pm is not None:
        for axis in (x_axis, y_axis):
            axis.scale = float(pixel_size_pm)
            axis.units = "pm"
        size_x = size_y = float(pixel_size_pm)
        source = "sample sheet pixel_size_pm"
    elif size_x is not None and size_y is not None:
        if not all(str(axis.units).strip() in _SI_LENGTHS for axis in (x_axis, y_axis)):
            # n_m, Å, a missing unit, ImageJ's: written in pm, which every later reader knows.
            x_axis.scale, x_axis.units = size_x, "pm"
            y_axis.scale, y_axis.units = size_y, "pm"
    elif not all(math.isfinite(axis.scale) and axis.scale > 0 for axis in (x_axis, y_axis)):
        for axis in (x_axis, y_axis):
            axis.scale, axis.units = 1.0, "px"
    return RawImage(signal=image, pixel_size_x_pm=size_x, pixel_size_y_pm=size_y,
                    calibration_source=source, notes=notes, details=details)


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
                      pixel_size_pm=row.get("pixel_size_pm"), min_size_px=min_size_px,
                      signal=row.get("signal"), modality=row.get("modality"))


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
                      dtype=str(image.signal.data.dtype), **image.details)
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
