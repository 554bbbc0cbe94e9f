"""Logging and provenance shared by the rule scripts."""

from __future__ import annotations

import importlib.metadata
import logging
import sys
import warnings
from typing import Any

PACKAGES = ("remflow", "tk_r_em", "tensorflow", "hyperspy", "rosettasciio", "atomap", "numpy", "scipy", "pandas",
            "matplotlib", "snakemake")


def setup_logging(log_path: str) -> logging.Logger:
    """Send logging, warnings and stray stderr of a rule script to its log file."""
    stream = open(log_path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives as long as the process
    sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        force=True)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    for noisy in ("hyperspy", "rsciio", "atomap", "matplotlib", "h5py", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logging.getLogger("remflow")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages whose behaviour shapes the numbers."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(config: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """What a result JSON records about how it was made: package versions, config, extras."""
    record: dict[str, Any] = {"packages": package_versions()}
    if config is not None:
        record["config"] = config
    record.update(extra)
    return record
