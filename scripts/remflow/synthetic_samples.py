"""Rows of the sample sheet for the synthetic ground-truth benchmark."""

from __future__ import annotations

import pandas as pd

from remflow.synthetic import Degradation, LatticeSpec

SYNTHETIC_DIR = "results/synthetic"


def benchmark_sample_name(dose: float) -> str:
    """Stable sample name for one dose of the sweep, e.g. ``bench_dose0500``."""
    return f"bench_dose{dose:06.0f}" if float(dose).is_integer() else f"bench_dose{dose:g}".replace(".", "p")


def benchmark_samples(sheet: pd.DataFrame, doses: list[float]) -> pd.DataFrame:
    """Add one synthetic sample per dose; they go through the same pipeline as real ones."""
    rows = []
    for dose in doses:
        name = benchmark_sample_name(dose)
        if name in sheet.index:
            raise ValueError(f"sample name '{name}' is reserved for the synthetic benchmark; rename it")
        rows.append({
            "sample": name,
            "path": f"{SYNTHETIC_DIR}/{name}.hspy",
            "truth": f"{SYNTHETIC_DIR}/{name}_truth.csv",
            "modality": "stem",
            "resolution": "hr",
            "base_dir": ".",
            "benchmark_dose": float(dose),
        })
    sheet = sheet.copy()
    sheet["benchmark_dose"] = None
    if not rows:
        return sheet
    combined = pd.concat([sheet, pd.DataFrame(rows).set_index("sample", drop=False)])
    return combined.astype(object).where(combined.notna(), None)


def benchmark_models(settings: dict, dose: float) -> tuple[LatticeSpec, Degradation]:
    """The lattice and the distortions of one dose of the benchmark, from config ``benchmark``."""
    spec = LatticeSpec(kind=settings["kind"], shape=tuple(settings["shape"]), spacing_px=settings["spacing_px"],
                       sigma_px=settings["sigma_px"], b_ratio=settings.get("b_ratio", 0.5),
                       position_jitter_px=settings.get("position_jitter_px", 0.0), seed=settings["seed"])
    degradation = Degradation(dose_e_per_A2=float(dose), pixel_size_pm=settings["pixel_size_pm"],
                              detector_noise_sigma=settings["detector_noise_sigma"],
                              line_jitter_px=settings["line_jitter_px"], seed=settings["seed"])
    return spec, degradation
