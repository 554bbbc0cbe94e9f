"""A report that opens at any dataset size: a sample index with thumbnails, figures linked.

Snakemake's self-contained ``report.html`` embeds every figure (base64): 23.5 MB for 12
samples, gigabytes for thousands, which no browser opens. ``results/index.html`` instead
holds one table row per sample (status, network, columns, the raw and restored position errors
the precision gain and verdict rest on, and that basis, ``gain_basis``, from ``summary.csv``) with a small JPEG thumbnail (``results/thumbs/``) that links
the full figure (``results/figures/``); the browser loads thumbnails as they scroll into
view and a full figure only when clicked. ``results/report.zip`` packs the index with
everything it links, for sending; unpack it and open ``index.html``.
"""

from __future__ import annotations

import html
import math
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

#: Dataset-level files the index links when they exist (relative to results/).
DATASET_FILES = [("summary table", "summary.html"), ("summary (CSV)", "summary.csv"),
                 ("precision gain per sample", "figures/precision_gain.png"),
                 ("synthetic benchmark: precision vs dose", "figures/precision_vs_dose.png"),
                 ("synthetic benchmark (CSV)", "benchmark/precision_vs_dose.csv")]


def write_thumbnail(figure: str | os.PathLike[str], target: str | os.PathLike[str], *, width_px: int = 360,
                    quality: int = 80) -> None:
    """A JPEG of ``figure`` at most ``width_px`` wide (aspect kept), for the index."""
    from PIL import Image

    with Image.open(figure) as image:
        image = image.convert("RGB")
        image.thumbnail((width_px, width_px * 4))
        image.save(target, format="JPEG", quality=quality, optimize=True)


def _number(value: Any, digits: int = 3) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(number) else f"{number:.{digits}g}"


def _interval(row: pd.Series, name: str) -> str:
    value = _number(row.get(name))
    low, high = _number(row.get(f"{name}_ci_low")), _number(row.get(f"{name}_ci_high"))
    return f"{value} [{low}, {high}]" if value and low and high else value


#: Per gain basis (remflow.precision.basis.GAIN_BASES), the summary field of the position
#: error it divides ({kind}: raw, restored), so the index shows the errors behind the gain.
BASIS_ERRORS: dict[str, str] = {"truth": "truth_rmse_{kind}_px", "twin": "twin_error_{kind}_px",
                                "series": "series_precision_{kind}_px", "local": "local_precision_{kind}_px",
                                "lattice": "global_lattice_rms_{kind}_px"}


def _basis_error(row: pd.Series, kind: str) -> str:
    field = BASIS_ERRORS.get(str(row.get("gain_basis")))
    return _interval(row, field.format(kind=kind)) if field else ""


def _text(row: pd.Series, name: str) -> str:
    value = row.get(name)
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else html.escape(str(value))


def index_html(summary: pd.DataFrame, root: str | os.PathLike[str], title: str = "remflow: samples") -> str:
    """The sample index page for the run under ``root`` (results/); links are relative to it."""
    root = Path(root)
    links = "".join(f'<li><a href="{html.escape(path)}">{html.escape(label)}</a></li>'
                    for label, path in DATASET_FILES if (root / path).exists())
    rows = []
    for _, row in summary.iterrows():
        sample = str(row["sample"])
        status = str(row.get("status", ""))
        figure, thumb = f"figures/{sample}.png", f"thumbs/{sample}.jpg"
        if (root / thumb).exists() and (root / figure).exists():
            picture = (f'<a class="figure" href="{html.escape(figure)}"><img src="{html.escape(thumb)}" '
                       f'loading="lazy" alt="figure of {html.escape(sample)}" width="180"></a>')
        else:
            picture = '<span class="none">no figure</span>'
        kind = "rejected" if status.startswith("rejected") else "failed" if status.startswith("failed") else "ok"
        rows.append(
            f'<tr class="{kind}" data-sample="{html.escape(sample)}"><td>{picture}</td>'
            f"<td>{html.escape(sample)}</td><td>{html.escape(status)}</td>"
            f"<td>{html.escape(str(row.get('network', '') or ''))}</td><td>{_number(row.get('n_columns'), 6)}</td>"
            f"<td>{_basis_error(row, 'raw')}</td><td>{_basis_error(row, 'restored')}</td>"
            f"<td>{_interval(row, 'precision_gain')}</td><td>{_text(row, 'verdict')}</td>"
            f"<td>{_text(row, 'gain_basis')}</td></tr>")
    counts = summary["status"].astype(str)
    accepted = int((~counts.str.startswith(("rejected", "failed"))).sum())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1em 2em; }}
table {{ border-collapse: collapse; }} th, td {{ border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: middle; }}
tr.rejected td, tr.failed td {{ color: #a33; }} img {{ display: block; }} .none {{ color: #999; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(summary)} samples: {accepted} measured, {len(summary) - accepted} rejected or failed (status says why).
Click a thumbnail for the full figure; its caption is in the README ("What you get"). Position errors
(RMS, px) with 95% intervals; precision gain = position error raw / restored, with its interval, on the basis
named: truth (true positions given), twin (an image-matched simulation with known positions: it sees
the network's prior), series (repeated frames), local or lattice (truth-free figures: they cannot see
the network's prior and may overstate the restored precision). summary.csv's twin_note and crlb_note
say why a twin is not the basis. A lattice RMS also holds scan distortion and real structure: it
bounds imprecision from above. summary.html holds every figure.</p>
<ul>{links}</ul>
<table id="samples"><thead><tr><th>figure</th><th>sample</th><th>status</th><th>network</th><th>columns</th>
<th>error raw (px)</th><th>error restored (px)</th><th>precision gain</th><th>verdict</th>
<th>basis</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""


def report_files(root: str | os.PathLike[str]) -> Iterable[Path]:
    """What the zip report holds: the index and every file it links (relative to ``root``)."""
    root = Path(root)
    yield root / "index.html"
    for _, path in DATASET_FILES:
        if (root / path).exists():
            yield root / path
    for folder in ("thumbs", "figures"):
        if (root / folder).is_dir():
            yield from sorted(p for p in (root / folder).iterdir() if p.is_file() and not p.name.startswith("."))


def write_report_zip(root: str | os.PathLike[str], target: str | os.PathLike[str]) -> int:
    """Zip the index with what it links, paths relative to ``root``; return the zip's size in bytes.
    PNG and JPEG are stored (already compressed), text is deflated."""
    root, target = Path(root), Path(target)
    tmp = target.with_name(f".{target.name}.partial")
    seen = set()
    with zipfile.ZipFile(tmp, "w") as archive:
        for path in report_files(root):
            name = path.relative_to(root).as_posix()
            if name in seen:
                continue
            seen.add(name)
            stored = path.suffix.lower() in (".png", ".jpg", ".jpeg")
            archive.write(path, name, compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
    os.replace(tmp, target)
    return target.stat().st_size
