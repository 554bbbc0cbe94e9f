"""Synthetic STEM lattice images with known column positions: the ground-truth benchmark.

An image is made in three steps, each a function so tests and the Cramér-Rao bound
(:mod:`remflow.crlb`) can use the very same model:

1. :func:`true_positions` places Gaussian columns on a square or perovskite-like lattice,
   optionally with physics in the truth: static random displacements, a strain gradient, a
   smooth bending, two domains rotated against each other, polar shifts of the B sublattice
   that flip sign between two domains, a vacuum region or a particle edge, a rigid shift.
2. :func:`render` draws the noiseless image: a constant background plus one isotropic
   2D Gaussian per column, **evaluated at pixel centres** (not integrated over the
   pixel; for widths of a pixel or more the difference is negligible, and the bound
   and the image then share one exact model).
3. :func:`degrade` applies the S(T)EM distortions of Lobato, Friedrich & Van Aert (2023):
   fast-scan line jitter, slow scan drift, Poisson shot noise at a set electron dose, Gaussian
   detector noise. These are imaging errors: the truth CSV keeps the specimen's positions.

Coordinates: ``x`` is the column (horizontal) pixel index, ``y`` the row index, and
pixel ``i`` is centred at ``i`` (atomap's and HyperSpy's convention).

Dose to counts: a pixel of side ``a`` (Å) receives ``dose * a**2`` electrons. The
brightest pixel of the noiseless image is taken to detect all of them, every other
pixel in proportion to its noiseless intensity::

    expected_counts = dose * a**2 * clean / clean.max()

So at 20 pm pixels (0.04 Å^2) a dose of 1000 e/Å^2 gives 40 counts at the brightest
column. Real annular detectors collect a fraction of the beam; this mapping is the
most favourable one, which makes the dose axis a lower bound on the dose needed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from remflow.atomic import atomic_path

LATTICE_KINDS = ("square", "perovskite")
#: Where the crystal is: everywhere, only left of ``crystal_fraction`` of the width (the rest
#: is vacuum), or a round particle of diameter ``crystal_fraction`` of the shorter side.
REGIONS = ("full", "vacuum", "particle")
#: Columns whose centres lie up to this many widths outside the image are still
#: drawn, so the image looks like a crop of a larger crystal (their tails reach in).
OUTSIDE_MARGIN_SIGMAS = 4.0
#: Units of the calibrated axes in the written file: "pm" with the pixel size as the
#: scale round-trips exactly (0.02 nm would not be exactly 20 pm in binary floats).
AXIS_UNITS = "pm"
#: ``x_ideal_px, y_ideal_px``: the column's site on its domain's ideal lattice (after the domain
#: rotation and rigid shift, before strain, bending, polar shift and static jitter), so that
#: ``x_px - x_ideal_px`` is the true displacement. ``domain``: 0 (left/unrotated) or 1.
TRUTH_COLUMNS = ["x_px", "y_px", "sublattice", "amplitude", "in_image", "x_ideal_px", "y_ideal_px", "domain"]


@dataclass(frozen=True)
class LatticeSpec:
    """A lattice of Gaussian atom columns (all lengths in pixels).

    ``perovskite`` puts A columns at the cell corners and weaker B columns
    (``amplitude * b_ratio``) at the cell centres, like ABO3 along [001] in
    HAADF-STEM (oxygen columns are too faint there and left out).
    ``background`` is relative to ``amplitude``. The seed fixes a random sub-pixel
    phase of the whole lattice (so columns do not sit on pixel centres) and the
    static ``position_jitter_px`` displacements (so the truth is not a perfect lattice).

    Smooth, real structure (each zero by default), with ``dx = x - (cols - 1) / 2`` the
    horizontal distance from the image centre and ``W = cols``:

    - ``strain_gradient``: the local strain along x grows linearly across the image,
      ``e(x) = strain_gradient * dx / W`` (from ``-g/2`` to ``+g/2``), i.e. the displacement
      ``u_x = strain_gradient * dx**2 / (2 W)`` px;
    - ``bend_px``: a smooth bending ``u_y = bend_px * (2 dx / W)**2`` px (``bend_px`` at the
      left and right edges, 0 in the middle);
    - ``domain_angle_deg``: the right half (``dx > 0``) is a second domain whose lattice is
      rotated by this angle about the image centre; its columns closer than 0.6 spacings to
      a column of the left domain are left out (no overlapping columns at the boundary);
    - ``polar_shift_px``: B columns (perovskite) move by ``+polar_shift_px`` along y where
      ``dx < 0`` and by ``-polar_shift_px`` where ``dx >= 0``: two polar domains (180° wall);
    - ``region`` and ``crystal_fraction``: see :data:`REGIONS`; outside the crystal only the
      background remains (vacuum);
    - ``shift_px``: a rigid (x, y) shift of every column (e.g. drift between frames).
    """

    kind: str = "square"
    shape: tuple[int, int] = (128, 128)  # (rows, cols)
    spacing_px: float = 12.0
    sigma_px: float = 2.5
    amplitude: float = 1.0
    b_ratio: float = 0.5
    background: float = 0.1
    position_jitter_px: float = 0.0
    seed: int = 0
    strain_gradient: float = 0.0
    bend_px: float = 0.0
    domain_angle_deg: float = 0.0
    polar_shift_px: float = 0.0
    region: str = "full"
    crystal_fraction: float = 0.5
    shift_px: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if self.region not in REGIONS:
            raise ValueError(f"region '{self.region}' is not one of {', '.join(REGIONS)}")
        if len(self.shift_px) != 2 or not all(math.isfinite(v) for v in self.shift_px):
            raise ValueError(f"shift_px {self.shift_px} is not a finite (x, y) pair")
        smooth = (self.strain_gradient, self.bend_px, self.domain_angle_deg, self.polar_shift_px)
        if not all(math.isfinite(v) for v in smooth) or abs(self.domain_angle_deg) >= 90:
            raise ValueError("strain_gradient, bend_px, polar_shift_px must be finite and |domain_angle_deg| < 90")
        if self.kind not in LATTICE_KINDS:
            raise ValueError(f"lattice kind '{self.kind}' is not one of {', '.join(LATTICE_KINDS)}")
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ValueError(f"shape {self.shape} is not (rows, cols) of at least one pixel")
        checks = {"spacing_px": self.spacing_px > 0, "sigma_px": self.sigma_px > 0, "amplitude": self.amplitude > 0,
                  "b_ratio": self.b_ratio >= 0, "background": self.background >= 0,
                  "position_jitter_px": self.position_jitter_px >= 0,
                  "crystal_fraction": 0 < self.crystal_fraction <= 1}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"LatticeSpec.{name} = {getattr(self, name)} is out of range")


@dataclass(frozen=True)
class Degradation:
    """S(T)EM distortions at one electron dose (see the module docstring for dose to counts).

    ``detector_noise_sigma`` is Gaussian read/PMT noise in counts. ``line_jitter_px``
    is the standard deviation of fast-scan line jitter: each row is displaced along x
    by its own N(0, s) shift. ``drift_px`` is slow scan drift along x over the frame: row
    ``r`` is displaced by ``drift_px * r / (rows - 1)`` (a shear; smooth, unlike jitter). The seed fixes all three random draws; the same seed at
    another dose reuses the same random streams (common random numbers), so two doses
    differ by the dose alone.
    """

    dose_e_per_A2: float
    pixel_size_pm: float = 20.0
    detector_noise_sigma: float = 0.0
    line_jitter_px: float = 0.0
    seed: int = 0
    drift_px: float = 0.0

    def __post_init__(self) -> None:
        checks = {"dose_e_per_A2": self.dose_e_per_A2 > 0, "pixel_size_pm": self.pixel_size_pm > 0,
                  "detector_noise_sigma": self.detector_noise_sigma >= 0, "line_jitter_px": self.line_jitter_px >= 0,
                  "drift_px": True}
        for name, ok in checks.items():
            if not (ok and math.isfinite(getattr(self, name))):
                raise ValueError(f"Degradation.{name} = {getattr(self, name)} is out of range")

    @property
    def electrons_per_pixel(self) -> float:
        """Incident electrons per pixel: dose times pixel area (pm converted to Å)."""
        return self.dose_e_per_A2 * (self.pixel_size_pm / 100.0) ** 2


def _lattice_sites(n: int, spacing: float, phase: float, margin: float) -> np.ndarray:
    """Positions ``centre + phase + k * spacing`` within [-margin, n - 1 + margin]."""
    origin = (n - 1) / 2.0 + phase
    k_low = math.ceil((-margin - origin) / spacing)
    k_high = math.floor((n - 1 + margin - origin) / spacing)
    return origin + spacing * np.arange(k_low, k_high + 1)


def _rotated_sites(spec: LatticeSpec, phase: tuple[float, float], offset: float, angle_deg: float,
                   margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Sites of a square grid rotated by ``angle_deg`` about the image centre, within the
    image plus ``margin``: x, y arrays ordered by grid row, then grid column."""
    rows, cols = spec.shape
    centre_x, centre_y = (cols - 1) / 2.0, (rows - 1) / 2.0
    reach = math.hypot(cols, rows) / 2.0 + margin + spec.spacing_px
    k = np.arange(-math.ceil(reach / spec.spacing_px), math.ceil(reach / spec.spacing_px) + 1)
    grid_v, grid_u = np.meshgrid(phase[1] + offset + spec.spacing_px * k, phase[0] + offset + spec.spacing_px * k,
                                 indexing="ij")
    cos, sin = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    xs = centre_x + cos * grid_u.ravel() - sin * grid_v.ravel()
    ys = centre_y + sin * grid_u.ravel() + cos * grid_v.ravel()
    keep = (xs >= -margin) & (xs <= cols - 1 + margin) & (ys >= -margin) & (ys <= rows - 1 + margin)
    return xs[keep], ys[keep]


def _ideal_sites(spec: LatticeSpec, phase: tuple[float, float], margin: float) -> pd.DataFrame:
    """Every sublattice's ideal sites (one or two domains): x_px, y_px, sublattice, amplitude, domain."""
    rows, cols = spec.shape
    sublattices = [("A", 0.0, spec.amplitude)]
    if spec.kind == "perovskite":
        sublattices.append(("B", 0.5 * spec.spacing_px, spec.amplitude * spec.b_ratio))
    centre_x = (cols - 1) / 2.0
    frames = []
    for name, offset, amplitude in sublattices:
        if spec.domain_angle_deg == 0:
            xs = _lattice_sites(cols, spec.spacing_px, phase[0] + offset, margin)
            ys = _lattice_sites(rows, spec.spacing_px, phase[1] + offset, margin)
            grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
            frames.append(pd.DataFrame({"x_px": grid_x.ravel(), "y_px": grid_y.ravel(), "sublattice": name,
                                        "amplitude": float(amplitude), "domain": 0}))
            continue
        left_x, left_y = _rotated_sites(spec, phase, offset, 0.0, margin)
        right_x, right_y = _rotated_sites(spec, phase, offset, spec.domain_angle_deg, margin)
        left = left_x <= centre_x
        right = right_x > centre_x
        frames.append(pd.DataFrame({"x_px": left_x[left], "y_px": left_y[left], "sublattice": name,
                                    "amplitude": float(amplitude), "domain": 0}))
        frames.append(pd.DataFrame({"x_px": right_x[right], "y_px": right_y[right], "sublattice": name,
                                    "amplitude": float(amplitude), "domain": 1}))
    table = pd.concat(frames, ignore_index=True)
    if spec.domain_angle_deg != 0:
        # At the domain wall the two lattices overlap: keep the left domain's columns there.
        from scipy.spatial import cKDTree

        left = table[table["domain"] == 0]
        distance, _ = cKDTree(left[["x_px", "y_px"]].to_numpy()).query(table[["x_px", "y_px"]].to_numpy())
        table = table[(table["domain"] == 0) | (distance >= 0.6 * spec.spacing_px)]
        table = table.sort_values(["sublattice", "domain", "y_px", "x_px"], kind="stable").reset_index(drop=True)
    return table


def _in_crystal(spec: LatticeSpec, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether ideal sites lie in the crystal of ``spec.region``."""
    rows, cols = spec.shape
    if spec.region == "vacuum":
        return x < spec.crystal_fraction * cols - 0.5
    if spec.region == "particle":
        radius = spec.crystal_fraction * min(rows, cols) / 2.0
        return np.hypot(x - (cols - 1) / 2.0, y - (rows - 1) / 2.0) <= radius
    return np.ones(len(x), dtype=bool)


def true_positions(spec: LatticeSpec) -> pd.DataFrame:
    """All columns drawn in the image, one row each, with the columns of :data:`TRUTH_COLUMNS`.

    The lattice is centred on the image, shifted by a seeded sub-pixel phase, given the
    smooth structure of ``spec`` (domains, strain gradient, bending, polar shifts, see
    :class:`LatticeSpec`), and each column displaced by N(0, ``position_jitter_px``) in x
    and y, then rigidly shifted by ``shift_px``. Columns whose centres lie just outside the
    image (``in_image`` False) are included because their tails are part of the image; columns
    outside the crystal (``region``) are not drawn. Rows are ordered by sublattice, then y, then x
    (two domains: by sublattice, domain, y, x).
    """
    rng = np.random.default_rng(spec.seed)
    phase_x, phase_y = rng.uniform(-0.5, 0.5, size=2)
    rows, cols = spec.shape
    smooth_reach = (abs(spec.bend_px) + abs(spec.strain_gradient) * cols / 8.0 + abs(spec.polar_shift_px)
                    + float(np.hypot(*spec.shift_px)))
    margin = OUTSIDE_MARGIN_SIGMAS * spec.sigma_px + 3.0 * spec.position_jitter_px + smooth_reach
    table = _ideal_sites(spec, (phase_x, phase_y), margin)
    table["x_px"] += spec.shift_px[0]
    table["y_px"] += spec.shift_px[1]
    table["x_ideal_px"] = table["x_px"]
    table["y_ideal_px"] = table["y_px"]
    dx = table["x_ideal_px"].to_numpy() - spec.shift_px[0] - (cols - 1) / 2.0
    if spec.strain_gradient:
        table["x_px"] += spec.strain_gradient * dx**2 / (2.0 * cols)
    if spec.bend_px:
        table["y_px"] += spec.bend_px * (2.0 * dx / cols) ** 2
    if spec.polar_shift_px:
        sign = np.where(dx < 0, 1.0, -1.0)
        table["y_px"] += np.where(table["sublattice"] == "B", spec.polar_shift_px * sign, 0.0)
    if spec.position_jitter_px > 0:
        shifts = rng.normal(0.0, spec.position_jitter_px, size=(len(table), 2))
        table["x_px"] += shifts[:, 0]
        table["y_px"] += shifts[:, 1]
    crystal = _in_crystal(spec, table["x_ideal_px"].to_numpy() - spec.shift_px[0],
                          table["y_ideal_px"].to_numpy() - spec.shift_px[1])
    table = table[crystal].reset_index(drop=True)
    table["in_image"] = ((table["x_px"] >= -0.5) & (table["x_px"] < cols - 0.5)
                         & (table["y_px"] >= -0.5) & (table["y_px"] < rows - 0.5))
    table["domain"] = table["domain"].astype(int)
    return table[TRUTH_COLUMNS]


def gaussian_profiles(coordinates: np.ndarray, centres: np.ndarray, sigma: float) -> np.ndarray:
    """``exp(-(c - centre)^2 / (2 sigma^2))`` for every centre (rows) and pixel coordinate (columns)."""
    return np.exp(-0.5 * ((coordinates[None, :] - centres[:, None]) / sigma) ** 2)


def render(spec: LatticeSpec, positions: pd.DataFrame) -> np.ndarray:
    """Noiseless float64 image: ``background * amplitude`` plus one Gaussian per column.

    Each column is ``amplitude * exp(-r^2 / (2 sigma^2))`` evaluated at pixel centres,
    with ``r`` the distance from the column centre. Exact (no truncation): an isotropic
    Gaussian is separable, so the image is one matrix product of row and column profiles.
    """
    rows, cols = spec.shape
    profile_y = gaussian_profiles(np.arange(rows, dtype=np.float64), positions["y_px"].to_numpy(float), spec.sigma_px)
    profile_x = gaussian_profiles(np.arange(cols, dtype=np.float64), positions["x_px"].to_numpy(float), spec.sigma_px)
    amplitudes = positions["amplitude"].to_numpy(float)
    return spec.background * spec.amplitude + profile_y.T @ (amplitudes[:, None] * profile_x)


def counts_per_unit(clean: np.ndarray, degradation: Degradation) -> float:
    """Expected counts per unit of noiseless intensity: the brightest pixel gets ``dose * a^2``."""
    peak = float(np.max(clean))
    if not (peak > 0 and math.isfinite(peak)) or float(np.min(clean)) < 0:
        raise ValueError("the noiseless image must be finite, non-negative and not all zero")
    return degradation.electrons_per_pixel / peak


def expected_counts(clean: np.ndarray, degradation: Degradation) -> np.ndarray:
    """Poisson mean of every pixel (no jitter): the model the Cramér-Rao bound is about."""
    clean = np.asarray(clean, dtype=np.float64)
    return clean * counts_per_unit(clean, degradation)


def _random_streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent generators for line jitter, shot noise and detector noise."""
    jitter, shot, detector = np.random.SeedSequence(seed).spawn(3)
    return np.random.default_rng(jitter), np.random.default_rng(shot), np.random.default_rng(detector)


def line_jitter_offsets(n_rows: int, degradation: Degradation) -> np.ndarray:
    """The x displacement (px) of every scan line that :func:`degrade` applies for this seed."""
    if degradation.line_jitter_px == 0:
        return np.zeros(n_rows)
    jitter_rng, _, _ = _random_streams(degradation.seed)
    return jitter_rng.normal(0.0, degradation.line_jitter_px, size=n_rows)


def scan_offsets(n_rows: int, degradation: Degradation) -> np.ndarray:
    """The x displacement (px) of every scan line: line jitter plus slow drift (see :class:`Degradation`)."""
    ramp = np.linspace(0.0, degradation.drift_px, n_rows) if n_rows > 1 else np.zeros(n_rows)
    return line_jitter_offsets(n_rows, degradation) + ramp


def shift_rows(image: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Displace row ``r`` by ``offsets[r]`` px along x (content moves to larger x for positive
    offsets), by cubic-spline interpolation; beyond the edge the edge value is repeated."""
    rows, cols = image.shape
    grid_y, grid_x = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64), indexing="ij")
    sample_x = grid_x - np.asarray(offsets, dtype=np.float64)[:, None]
    return ndimage.map_coordinates(image, [grid_y, sample_x], order=3, mode="nearest")


def degrade(clean: np.ndarray, degradation: Degradation) -> np.ndarray:
    """One noisy acquisition of ``clean`` as float32 counts.

    Order follows the physics of a scan: line jitter and drift move the probe, so they act on the
    noiseless image (rows shifted and interpolated); the detected electrons are then
    Poisson-distributed around that mean; the detector adds Gaussian noise last.
    """
    mean = expected_counts(clean, degradation)
    _, shot_rng, detector_rng = _random_streams(degradation.seed)
    if degradation.line_jitter_px > 0 or degradation.drift_px != 0:
        offsets = scan_offsets(mean.shape[0], degradation)
        mean = np.clip(shift_rows(mean, offsets), 0.0, None)  # cubic splines overshoot slightly below 0
    counts = shot_rng.poisson(mean).astype(np.float64)
    if degradation.detector_noise_sigma > 0:
        counts += detector_rng.normal(0.0, degradation.detector_noise_sigma, size=counts.shape)
    return counts.astype(np.float32)


def _image_signal(data: np.ndarray, spec: LatticeSpec, degradation: Degradation, title: str):
    """A calibrated HyperSpy Signal2D whose metadata say it is a synthetic HAADF-STEM image."""
    import hyperspy.api as hs

    signal = hs.signals.Signal2D(np.ascontiguousarray(data))
    for axis, name in zip(signal.axes_manager.signal_axes, ("x", "y")):
        axis.name, axis.scale, axis.offset, axis.units = name, float(degradation.pixel_size_pm), 0.0, AXIS_UNITS
    signal.metadata.General.title = title
    # acquisition_mode is what remflow (and HyperSpy) read to tell STEM from TEM.
    signal.metadata.set_item("Acquisition_instrument.TEM.acquisition_mode", "STEM")
    signal.metadata.set_item("Acquisition_instrument.TEM.microscope", "none: synthetic image (remflow.synthetic)")
    signal.metadata.set_item("Acquisition_instrument.TEM.Detector.name", "HAADF (simulated)")
    signal.metadata.set_item("Signal.quantity", "Intensity (counts)")
    # HyperSpy's noise model: Var = gain_factor * E + gain_offset (the detector noise variance).
    signal.metadata.set_item("Signal.Noise_properties.Variance_linear_model.gain_factor", 1.0)
    signal.metadata.set_item("Signal.Noise_properties.Variance_linear_model.gain_offset",
                             float(degradation.detector_noise_sigma) ** 2)
    signal.metadata.set_item("Signal.Noise_properties.Variance_linear_model.correlation_factor", 1.0)
    signal.metadata.set_item("Sample.description", f"synthetic {spec.kind} lattice of Gaussian columns")
    lattice = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(spec).items()}
    signal.metadata.set_item("Synthetic.lattice", lattice)
    signal.metadata.set_item("Synthetic.degradation", asdict(degradation))
    signal.metadata.set_item("Synthetic.counts_model", "expected = dose * (pixel_size_pm/100)^2 * clean / max(clean)")
    return signal


def write_sample(spec: LatticeSpec, degradation: Degradation, image_path: str | Path, truth_path: str | Path,
                 expected_path: str | Path | None = None) -> None:
    """Write the degraded image (HyperSpy ``.hspy``, axes in pm) and its truth CSV, atomically.

    The truth CSV has one row per drawn column (``TRUTH_COLUMNS``); ``in_image`` marks
    centres inside the image. ``expected_path``, if given, also receives the noiseless
    expected-counts image (before jitter) as a reference.
    """
    positions = true_positions(spec)
    clean = render(spec, positions)
    noisy = degrade(clean, degradation)
    dose = f"{degradation.dose_e_per_A2:g} e/A^2"
    with atomic_path(image_path) as tmp:
        _image_signal(noisy, spec, degradation, f"synthetic {spec.kind} lattice, {dose}").save(tmp)
    if expected_path is not None:
        expected = expected_counts(clean, degradation).astype(np.float32)
        with atomic_path(expected_path) as tmp:
            _image_signal(expected, spec, degradation, f"noiseless synthetic {spec.kind} lattice, {dose}").save(tmp)
    with atomic_path(truth_path) as tmp:
        positions.to_csv(tmp, index=False, float_format="%.6f", lineterminator="\n")


def write_series(spec: LatticeSpec, degradation: Degradation, shifts_px: list[tuple[float, float]],
                 image_path: str | Path, truth_path: str | Path) -> pd.DataFrame:
    """A frame series of one specimen: frame ``f`` is ``spec`` rigidly shifted by ``shifts_px[f]``
    (drift; added to ``spec.shift_px``), degraded with seed ``degradation.seed + f`` (independent
    noise and jitter per frame). Writes a (n_frames, rows, cols) ``.hspy`` stack (axes in pm) and a
    truth CSV with a ``frame`` column (the true positions of every frame); returns that truth.
    """
    from dataclasses import replace

    frames, truths = [], []
    for index, (dx, dy) in enumerate(shifts_px):
        frame_spec = replace(spec, shift_px=(spec.shift_px[0] + float(dx), spec.shift_px[1] + float(dy)))
        positions = true_positions(frame_spec)
        frames.append(degrade(render(frame_spec, positions), replace(degradation, seed=degradation.seed + index)))
        truths.append(positions.assign(frame=index))
    truth = pd.concat(truths, ignore_index=True)[["frame", *TRUTH_COLUMNS]]
    dose = f"{degradation.dose_e_per_A2:g} e/A^2"
    with atomic_path(image_path) as tmp:
        _image_signal(np.stack(frames), spec, degradation,
                      f"synthetic {spec.kind} lattice, {len(frames)} frames, {dose}").save(tmp)
    with atomic_path(truth_path) as tmp:
        truth.to_csv(tmp, index=False, float_format="%.6f", lineterminator="\n")
    return truth
