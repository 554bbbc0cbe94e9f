"""Results in the formats of the next tools: a Fiji/ImageJ TIFF and atomap Atom_Lattice files.

- :func:`write_imagej_tiff`: a float32 TIFF in ImageJ's format (``tifffile``), which Fiji
  opens with its pixel size and unit (``Image > Properties``). ImageJ keeps the pixel size
  as pixels per unit in the XResolution/YResolution tags and the unit in the ImageJ image
  description. HyperSpy (RosettaSciIO 0.15) reads the scale from those tags but takes a
  unit from ImageJ's description only when it is ``micron``; so the file also carries the
  DigitalMicrograph unit/scale tags (65003/65004, 65009/65010) that RosettaSciIO's own TIFF
  writer adds for the same reason. Lengths are written in nm.
- :func:`atom_lattices`: the raw and the restored fit of one sample as two atomap
  ``Atom_Lattice`` objects (one per image: atomap's HDF5 file holds one Atom_Lattice), with
  one ``Sublattice`` per value of the CSV's ``sublattice`` column (``A``, ``B``), columns in
  the CSV's order, positions and widths exactly the CSV's (px). An image without a lattice
  gives an Atom_Lattice without sublattices. :func:`save_atom_lattice` writes one with
  atomap's own ``save``, so ``atomap.api.load_atom_lattice_from_hdf5`` opens it.

Pixel coordinates follow remflow.columns: x = column index, y = row index, pixel centres
at integers (atomap's convention too).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile

from remflow.atomic import atomic_path

#: Unit of the TIFF's pixel size: nm is what Fiji users of (S)TEM images expect.
TIFF_UNIT = "nm"
#: Plot colours of the sublattices in atomap (A, B, then more).
SUBLATTICE_COLOURS = ("red", "blue", "green", "orange")
#: The CSV columns of the positions and widths of each image's fit.
KINDS = ("raw", "restored")

log = logging.getLogger(__name__)


def _dm_tags(unit: str, scale_x: float, scale_y: float) -> list[tuple[int, str, int, Any, bool]]:
    """DigitalMicrograph's private unit and scale tags, as RosettaSciIO writes them:
    65003/65009 are x (columns), 65004/65010 are y (rows)."""
    encoded = unit.encode("latin-1")
    return [(65003, "s", len(encoded) + 1, encoded, False), (65004, "s", len(encoded) + 1, encoded, False),
            (65009, "d", 1, float(scale_x), False), (65010, "d", 1, float(scale_y), False),
            (65006, "d", 1, 0.0, False), (65007, "d", 1, 0.0, False)]


def write_imagej_tiff(path: str | Path, image: np.ndarray, *, pixel_size_x_pm: float | None,
                      pixel_size_y_pm: float | None, info: str = "") -> None:
    """Write a 2D image as float32 ImageJ TIFF with its pixel size, atomically.

    ``image``: (rows, cols); ``pixel_size_x_pm``/``_y_pm``: size of a pixel along x
    (columns) and y (rows) in pm, or None for an uncalibrated image (then ImageJ's
    ``pixel`` unit and scale 1). ``info``: free text for ImageJ's ``Image > Show Info``.
    Raises ValueError for an image that is not 2D or not finite, or a pixel size that is
    not positive and finite.
    """
    data = np.asarray(image, dtype=np.float32)
    if data.ndim != 2:
        raise ValueError(f"a TIFF for ImageJ needs a 2D image, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError("the image contains NaN or infinite pixels")
    if (pixel_size_x_pm is None) != (pixel_size_y_pm is None):
        raise ValueError("give both pixel sizes or neither")
    if pixel_size_x_pm is None:
        unit, scale_x, scale_y = "pixel", 1.0, 1.0
        dm_unit = "px"  # what remflow's ingest (and HyperSpy) read as uncalibrated
    else:
        scale_x, scale_y = float(pixel_size_x_pm) / 1000.0, float(pixel_size_y_pm) / 1000.0
        if not all(math.isfinite(s) and s > 0 for s in (scale_x, scale_y)):
            raise ValueError(f"pixel sizes must be positive and finite, got {pixel_size_x_pm}, {pixel_size_y_pm} pm")
        unit = dm_unit = TIFF_UNIT
    metadata: dict[str, Any] = {"axes": "YX", "unit": unit}
    if info:
        metadata["Info"] = info
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, data, imagej=True, resolution=(1.0 / scale_x, 1.0 / scale_y), metadata=metadata,
                         extratags=_dm_tags(dm_unit, scale_x, scale_y))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """atomap and HyperSpy warn and print on import and per sublattice; keep logs readable."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _atomap() -> Any:
    """atomap.api (always ``atomap.api`` first: an atomap submodule alone hits a circular import)."""
    with _quiet():
        import atomap.api as am
    return am


def read_columns_csv(path: str | Path) -> pd.DataFrame:
    """remflow's columns CSV with every number parsed exactly as Python's ``float`` does."""
    return pd.read_csv(path, float_precision="round_trip")


def atom_lattices(table: pd.DataFrame, images: dict[str, np.ndarray], *, name: str,
                  pixel_size_pm: float | None = None) -> dict[str, Any]:
    """The fits of ``table`` (remflow's columns CSV) as one atomap Atom_Lattice per image.

    ``images``: ``{"raw": (rows, cols), "restored": (rows, cols)}``; ``name``: the
    sample (each lattice is named ``"<name> raw"`` / ``"<name> restored"``);
    ``pixel_size_pm``: one pixel size for both axes, given to atomap in nm (atomap has a
    single pixel size; None = uncalibrated or non-square pixels, atomap's ``pixel``).
    Each Atom_Lattice has one Sublattice per ``sublattice`` value in the order of first
    appearance, with ``x_position``/``y_position`` = ``x_<kind>_px``/``y_<kind>_px`` and
    sigmas = ``sigma_x_<kind>_px``/``sigma_y_<kind>_px`` of its rows, in the table's order.
    Raises KeyError for a table without remflow's columns, ValueError for images of
    different shapes.
    """
    am = _atomap()
    shapes = {np.asarray(image).shape for image in images.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"the images must be 2D and of one shape, got {sorted(shapes)}")
    if pixel_size_pm is not None:
        scale = {"pixel_size": float(pixel_size_pm) / 1000.0, "units": TIFF_UNIT}
    else:
        scale = {"pixel_size": 1.0, "units": "pixel"}
    names = list(dict.fromkeys(table["sublattice"].astype(str))) if len(table) else []
    lattices = {}
    for kind in KINDS:
        image = np.asarray(images[kind], dtype=np.float64)
        sublattices = []
        with _quiet():
            for index, sublattice_name in enumerate(names):
                rows = table[table["sublattice"].astype(str) == sublattice_name]
                xy = rows[[f"x_{kind}_px", f"y_{kind}_px"]].to_numpy(dtype=np.float64)
                sublattice = am.Sublattice(xy, image, name=sublattice_name,
                                           color=SUBLATTICE_COLOURS[index % len(SUBLATTICE_COLOURS)], **scale)
                for atom, sigma_x, sigma_y in zip(sublattice.atom_list, rows[f"sigma_x_{kind}_px"],
                                                  rows[f"sigma_y_{kind}_px"]):
                    atom.sigma_x, atom.sigma_y = float(sigma_x), float(sigma_y)
                sublattices.append(sublattice)
            lattices[kind] = am.Atom_Lattice(image=image, name=f"{name} {kind}", sublattice_list=sublattices)
    return lattices


def save_atom_lattice(path: str | Path, lattice: Any) -> None:
    """Save an Atom_Lattice with atomap's own ``save`` (HDF5), atomically."""
    with atomic_path(path) as tmp, _quiet():
        lattice.save(str(tmp), overwrite=True)


def export_sample(*, sample: str, raw: np.ndarray, restored: np.ndarray, columns_csv: str | Path,
                  info: dict[str, Any], network: str | None, tiff: str | Path,
                  lattice_paths: dict[str, str | Path]) -> dict[str, int]:
    """Write one sample's TIFF (restored image) and atom-lattice files (raw and restored fits).

    ``info``: the sample's ingest JSON (pixel sizes in pm, or None); ``lattice_paths``:
    ``{"raw": path, "restored": path}``. Returns the number of columns per sublattice.
    """
    size_x, size_y = info.get("pixel_size_x_pm"), info.get("pixel_size_y_pm")
    write_imagej_tiff(tiff, restored, pixel_size_x_pm=size_x, pixel_size_y_pm=size_y,
                      info=f"remflow: sample {sample}, restored with {network or 'unknown network'}; "
                           f"calibration: {info.get('calibration_source', 'unknown')}")
    square = size_x is not None and size_y is not None and math.isclose(size_x, size_y, rel_tol=1e-9)
    if size_x is not None and not square:
        log.info("%s: pixels of %g x %g pm are not square; atomap files stay in pixels", sample, size_x, size_y)
    table = read_columns_csv(columns_csv)
    lattices = atom_lattices(table, {"raw": raw, "restored": restored}, name=sample,
                             pixel_size_pm=size_x if square else None)
    for kind, lattice in lattices.items():
        save_atom_lattice(lattice_paths[kind], lattice)
    return {str(k): int(v) for k, v in table["sublattice"].value_counts(sort=False).items()} if len(table) else {}
