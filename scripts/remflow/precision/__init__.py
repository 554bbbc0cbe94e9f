"""How precise are the fitted column positions, raw vs restored, and is the difference real?

One module per estimator, each docstring giving its formula, assumptions, what it cannot see
and how it was validated:

- :mod:`remflow.precision.local`: local precision, each column against the midpoint of its
  opposite neighbours (the default figure without ground truth);
- :mod:`remflow.precision.lattice`: global lattice RMS, distance from one ideal lattice;
- :mod:`remflow.precision.truth`: truth RMSE, distance from the true positions (simulations);
- :mod:`remflow.precision.stats`: paired bootstrap intervals, gain and verdict;
- :mod:`remflow.precision.selection`: which columns enter (fit ok, away from the border);
- :mod:`remflow.precision.summary`: all figures of a sample, ``gain_basis`` and verdict.

This package re-exports the public API, so ``from remflow.precision import X`` keeps working.
"""

from remflow.precision.lattice import (IdealLattice, basis_vectors, fit_ideal_lattice, lattice_fraction,
                                       lattice_residual_vectors, lattice_residuals)
from remflow.precision.local import (LocalErrors, column_roles, local_errors, local_residuals, opposite_pairs,
                                     periodic_columns, periodic_regions)
from remflow.precision.selection import away_from_border, usable_columns
from remflow.precision.stats import KINDS, bootstrap_ci, paired_figures, verdict
from remflow.precision.summary import SUMMARY_FIELDS, precision_summary
from remflow.precision.truth import (MISSED_BORDER_SPACINGS, detection_counts, match_nearest, truth_error_vectors,
                                     truth_errors, with_truth_columns)

__all__ = [
    "KINDS", "MISSED_BORDER_SPACINGS", "SUMMARY_FIELDS", "IdealLattice", "LocalErrors", "away_from_border",
    "basis_vectors", "bootstrap_ci", "column_roles", "detection_counts", "fit_ideal_lattice", "lattice_fraction",
    "lattice_residual_vectors", "lattice_residuals", "local_errors", "local_residuals", "match_nearest",
    "opposite_pairs", "paired_figures", "periodic_columns", "periodic_regions", "precision_summary",
    "truth_error_vectors", "truth_errors", "usable_columns", "verdict", "with_truth_columns",
]

# The frame-series estimator lives in its own module (formula, assumptions, validation there);
# imported last because it builds on the single-image figures above.
from remflow.precision.series import SERIES_FIELDS, series_precision, series_summary  # noqa: E402,F401
