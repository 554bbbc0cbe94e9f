"""The dataset table: one row per sample."""

from __future__ import annotations

from typing import Any

import pandas as pd

#: Leading columns, in order; every other figure follows in the order precision.py defines.
_LEADING = ["sample", "status", "network", "pixel_size_pm", "n_columns"]
_TRAILING = ["mse_raw_vs_reference", "mse_restored_vs_reference", "mse_reduction",
             # images without columns: pixel noise before and after (remflow.cleaning.noise_sigma)
             "noise_sigma_raw", "noise_sigma_restored",
             # what ingest chose and changed (see the ingest JSON for the details)
             "modality", "signal", "n_outlier_pixels", "data_bar_rows", "intensity_offset"]


def summary_fields() -> list[str]:
    """Column order of results/summary.csv."""
    from remflow.precision import SUMMARY_FIELDS
    from remflow.precision.series import SERIES_FIELDS

    middle = [f for f in SUMMARY_FIELDS + SERIES_FIELDS if f not in _LEADING and f not in _TRAILING]
    return _LEADING + middle + _TRAILING


def summary_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows in the order given (the sample sheet's); missing figures stay empty."""
    fields = summary_fields()
    rows = [{field: _flat(record.get(field)) for field in fields} for record in records]
    return pd.DataFrame(rows, columns=fields)


def _flat(value: Any) -> Any:
    """A table cell: the ingest JSON's signal record gives its title."""
    if isinstance(value, dict):
        return value.get("title")
    return value
