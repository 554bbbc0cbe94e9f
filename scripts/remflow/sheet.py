"""Read and check the sample sheet, reporting every problem at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import yaml

OPTIONAL_COLUMNS = ("frame", "pixel_size_pm", "truth", "reference", "separation_px", "second_sublattice", "signal")
_INTEGER_COLUMNS = ("frame",)
_FLOAT_COLUMNS = ("pixel_size_pm", "separation_px")
#: ``frame`` value that asks for every frame of a stack (a frame series).
FRAME_ALL = "all"


class SampleSheetError(ValueError):
    """The sample sheet has problems; the message lists all of them, one per line."""


def _cell(value: Any) -> Any:
    """Turn a TSV cell into a JSON value: empty -> None, numbers stay strings for the schema to judge."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


def _coerce(row: dict[str, Any], problems: list[str], where: str) -> dict[str, Any]:
    """Convert numeric and boolean columns, noting values that do not convert."""
    out = dict(row)
    for column in _INTEGER_COLUMNS:
        if column == "frame" and str(out.get(column) or "").lower() == FRAME_ALL:
            out[column] = FRAME_ALL  # every frame of a stack: a frame series
            continue
        if out.get(column) is not None:
            try:
                number = float(out[column])
                if not number.is_integer():
                    raise ValueError
                out[column] = int(number)
            except ValueError:
                problems.append(f"{where}: '{column}' must be a whole number or 'all', got '{row[column]}'")
    for column in _FLOAT_COLUMNS:
        if out.get(column) is not None:
            try:
                out[column] = float(out[column])
            except ValueError:
                problems.append(f"{where}: '{column}' must be a number, got '{row[column]}'")
    if out.get("second_sublattice") is not None:
        flag = str(out["second_sublattice"]).lower()
        if flag not in {"true", "false", "yes", "no", "1", "0"}:
            problems.append(f"{where}: 'second_sublattice' must be true or false, got '{row['second_sublattice']}'")
        out["second_sublattice"] = flag in {"true", "yes", "1"}
    return out


def load_sample_sheet(path: str | Path, schema_path: str | Path) -> pd.DataFrame:
    """Read the TSV sample sheet and check it against the JSON schema.

    Relative paths resolve against the sheet's own folder (``base_dir`` column);
    ``package://`` paths are kept as written. Raises SampleSheetError listing
    every problem found.
    """
    path = Path(path)
    if not path.is_file():
        raise SampleSheetError(f"sample sheet '{path}' not found")
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment=None)
    except Exception as err:  # pandas raises many kinds for malformed TSV
        raise SampleSheetError(f"sample sheet '{path}' is not a readable TSV file: {err}") from err
    table.columns = [str(c).strip() for c in table.columns]
    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    problems: list[str] = []
    missing = [c for c in schema.get("required", []) if c not in table.columns]
    if missing:
        raise SampleSheetError(f"sample sheet '{path}': missing column(s) {', '.join(missing)}")
    rows: list[dict[str, Any]] = []
    for index, raw in enumerate(table.to_dict(orient="records"), start=2):  # line 1 is the header
        name = _cell(raw.get("sample")) or "?"
        where = f"{path.name} line {index} (sample '{name}')"
        row = _coerce({k: _cell(v) for k, v in raw.items()}, problems, where)
        row = {k: v for k, v in row.items() if v is not None}
        for error in sorted(validator.iter_errors(row), key=lambda e: list(e.path)):
            field = ".".join(str(p) for p in error.path) or "row"
            problems.append(f"{where}: {field}: {error.message}")
        rows.append(row)
    names = [r.get("sample") for r in rows]
    duplicates = sorted({n for n in names if n is not None and names.count(n) > 1})
    for name in duplicates:
        problems.append(f"{path.name}: sample name '{name}' is used {names.count(name)} times; names must be unique")
    if not rows:
        problems.append(f"{path.name}: no samples listed")
    if problems:
        raise SampleSheetError("sample sheet problems:\n  " + "\n  ".join(problems))
    sheet = pd.DataFrame(rows)
    for column in OPTIONAL_COLUMNS:
        if column not in sheet.columns:
            sheet[column] = None
    sheet = sheet.astype(object).where(sheet.notna(), None)
    sheet["base_dir"] = str(path.resolve().parent)
    return sheet.set_index("sample", drop=False)
