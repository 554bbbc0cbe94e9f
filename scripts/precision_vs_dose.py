"""Rule precision_vs_dose: truth RMSE of raw and restored fits per dose, next to the Cramér-Rao bound."""

import math

import pandas as pd

from remflow.atomic import atomic_path
from remflow.batch import sample_records, statuses
from remflow.crlb import lattice_position_crlb
from remflow.runlog import setup_logging
from remflow.synthetic_samples import benchmark_models

log = setup_logging(snakemake.log[0])
settings = snakemake.params.settings
rows = []
records = sample_records(snakemake.params.samples, statuses(snakemake.input.ingest),
                         statuses(snakemake.input.precision))
for record, dose in zip(records, settings["doses"]):
    spec, degradation = benchmark_models(settings, dose)
    crlb_per_axis = lattice_position_crlb(spec, degradation)
    rows.append({
        "sample": record["sample"], "dose_e_per_A2": float(dose), "status": record["status"],
        "n_columns": record.get("n_columns"),
        "truth_rmse_raw_px": record.get("truth_rmse_raw_px"),
        "truth_rmse_raw_px_ci_low": record.get("truth_rmse_raw_px_ci_low"),
        "truth_rmse_raw_px_ci_high": record.get("truth_rmse_raw_px_ci_high"),
        "truth_rmse_restored_px": record.get("truth_rmse_restored_px"),
        "truth_rmse_restored_px_ci_low": record.get("truth_rmse_restored_px_ci_low"),
        "truth_rmse_restored_px_ci_high": record.get("truth_rmse_restored_px_ci_high"),
        # Truth RMSE is a radial (x and y) distance: its bound is crlb_radial_px; crlb_px is per axis.
        "crlb_px": crlb_per_axis,
        "crlb_radial_px": math.sqrt(2.0) * crlb_per_axis,  # = lattice_position_crlb(..., radial=True)
        "precision_gain": record.get("precision_gain"), "verdict": record.get("verdict"),
    })
with atomic_path(snakemake.output[0]) as tmp:
    pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")
log.info("%d doses", len(rows))
