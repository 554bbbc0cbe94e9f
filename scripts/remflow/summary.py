"""The dataset table: one row per sample."""

from __future__ import annotations

from typing import Any

import pandas as pd

#: Leading columns, in order; every other figure follows in the order precision.py defines.
_LEADING = ["sample", "status", "network", "pixel_size_pm", "n_columns"]
_TRAILING = ["mse_raw_vs_reference", "mse_restored_vs_reference", "mse_reduction"]


def summary_fields() -> list[str]:
    """Column order of results/summary.csv."""
    from remflow.precision import SUMMARY_FIELDS
    from remflow.precision.series import SERIES_FIELDS

    middle = [f for f in SUMMARY_FIELDS + SERIES_FIELDS if f not in _LEADING and f not in _TRAILING]
    return _LEADING + middle + _TRAILING


def summary_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows in the order given (the sample sheet's); missing figures stay empty."""
    fields = summary_fields()
    rows = [{field: record.get(field) for field in fields} for record in records]
    return pd.DataFrame(rows, columns=fields)
