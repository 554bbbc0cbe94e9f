"""Which figure the precision gain and verdict of a sample rest on (``gain_basis``).

One small function, so that every estimator (truth, twin, local, lattice) is ranked in one
place: ground truth when the sheet gives it (the only basis that sees everything); else
the noise twin (truth-based on a model of this image, :mod:`remflow.precision.twin`);
else the truth-free figures. The figures of the other bases stay in the record beside it.
"""

from __future__ import annotations

import math

from typing import Any

from remflow.imagemodel import kernel_symbol_minimum

#: Bases in order of preference: (name, gain key, verdict key). A basis is available when
#: its gain and both ends of its interval are numbers.
GAIN_BASES: tuple[tuple[str, str, str], ...] = (
    ("truth", "truth_gain", "truth_verdict"),
    ("twin", "twin_gain", "twin_verdict"),
    # Repeatability across independent frames sees more than one frame's neighbours can.
    ("series", "series_gain", "series_verdict"),
    ("local", "local_gain", "local_verdict"),
    ("lattice", "lattice_gain", "lattice_verdict"),
)


#: The gain the verdict no longer rests on is kept under its basis' name (summary columns);
#: ``basis_note`` says what a truth-free basis cannot see.
BASIS_FIELDS: list[str] = ["lattice_gain", "lattice_gain_ci_low", "lattice_gain_ci_high", "basis_note"]

#: Bases that see only how regular or repeatable positions are, not how right.
TRUTH_FREE_BASES = ("series", "local", "lattice")
#: ``basis_note`` where the verdict rests on one of them. The numbers: `make run` of
#: 2026-12-01 (summary.csv): the dose sweep's local gain against its truth gain, and the real
#: frames whose twin is the basis, local gain against twin gain.
TRUTH_FREE_NOTE = ("truth-free basis ({}): it sees how regular or repeatable the positions are, not how right, "
                   "and counts the network's prior (columns on a lattice) as precision, so it can overstate the "
                   "gain: on the default dose sweep the local gain was 6.10, 2.92, 1.54, 1.11 where the truth "
                   "said 3.26, 2.35, 1.43, 0.70 (50 to 50000 e/A^2), on the real frames exp_hrstem_0 and 2 "
                   "1.60 and 1.18 where the twin said 0.82 and 0.63")
#: ... followed, where a twin was computed but is not the basis, by what it says.
UNVALIDATED_TWIN_NOTE = "; the twin, not validated for this image (twin_note), says {} ({:.2f} [{:.2f}, {:.2f}])"


#: The twin is a verdict basis only when its image model explains the image: reduced chi-square
#: of the (prewhitened) residual under the fitted noise model at most this. The validation images
#: gave 1.00-1.03 (0.98-1.08 with correlated noise); real default frames (twin model, with the
#: five-tap noise kernel, `make run`) 1.33 (exp_hrstem_0), 1.69, 3.17 (exp_hrstem_1, 2: model error) and 1.05
#: (exp_hrstem_4; 4.07 before its correlated noise was modelled); with scan-line noise modelled
#: 1.17 (exp_hrstem_0) and 1.48 (exp_hrstem_2). Synthetic lattices with line noise half the
#: pixel noise gave 1.34-1.48 before it was modelled (tests/validate_line_noise.py): this gate
#: alone did not catch that twin. Above it the twin's verdict is
#: not validated and must not decide. Noise correlated beyond neighbours passes below it (RC
#: low-pass phi 0.6 along x: chi-square 1.20 with the five-tap kernel, 1.49 with the three-tap
#: one; README, section 'Correlated pixel noise'): MAX_NOISE_KERNEL_MISFIT, not this gate, catches it.
MAX_TWIN_REDUCED_CHI_SQUARE = 1.5
#: ... and when its noise is one the noise model can represent: pixel noise = K * w with a
#: separable kernel K = [b, a, 1, a, b] per axis (remflow.imagemodel); read through the
#: three-tap kernel [a, 1, a] (``noise_correlation_*``) the lag-1 correlation 2a / (1 + 2a^2)
#: reaches 2/3 only at a = 0.5, where that kernel has no inverse. The twin
#: draws this noise and the CRLB whitens by K^-1, so correlation itself no longer refuses the
#: twin; a correlation beyond MAX_NOISE_KERNEL_TAP's does. Why 0.4 (correlation 0.61): the
#: model is validated at taps 0.3 (x) and 0.15 (y) (README, section 'Correlated pixel noise': gain, read noise,
#: chi-square, CRLB against Monte Carlo); near 0.5 the whitening multiplies the Nyquist
#: frequency by 1 / (1 - 2a) (5x at 0.4) and a measured correlation clipped at 2/3 says the
#: kernel does not fit. The default run: real frames along x 0.04 (exp_hrstem_0), 0.09
#: (exp_hrstem_1, 2), 0.45 (exp_hrstem_4, 0.26 along y; taps x (0.269, 0.015), y (0.121, -0.012)):
#: all modelled.
MAX_NOISE_KERNEL_TAP = 0.4
#: The lag-1 correlation of that tap (0.606): above it (either axis) the twin is refused.
MAX_NOISE_CORRELATION = 2.0 * MAX_NOISE_KERNEL_TAP / (1.0 + 2.0 * MAX_NOISE_KERNEL_TAP**2)
#: The same limit for the fitted five-tap kernel [b, a, 1, a, b]: its symbol
#: 1 + 2a cos w + 2b cos 2w (remflow.imagemodel.kernel_symbol_minimum) at least 1 - 2 x 0.4 =
#: 0.2 at every frequency (the three-tap kernel's value at tap 0.4), so that the whitening
#: amplifies no frequency more than 5x. Why: the lag-1 reading above does not bound a five-tap
#: kernel (taps (0.3, -0.15) read 0.59 and have symbol 0.10); the noise model may shrink the
#: taps to symbol 0.02, where it no longer matches lags 1-2.
MIN_NOISE_KERNEL_SYMBOL = 1.0 - 2.0 * MAX_NOISE_KERNEL_TAP
#: ... and when the noise's correlation beyond neighbours follows the kernel: the kernel (taps
#: a, b per axis, fitted to the filtered residual's lags 1 and 2) predicts lag 3; a measured lag
#: 3 more than this many scatters off on either axis (``noise_kernel_misfit_x``/``_y``,
#: remflow.imagemodel.kernel_misfit) refuses the twin and the bound. Measured
#: (tests/validate_correlated_noise.py misfit, RC low-pass along x, 256x256 px): phi 0.3, 0.45,
#: 0.6 give 1.8, 3.8, 7.0 scatters, with bound / exact bound 0.98-0.97, 0.97-0.93, 1.00-0.90
#: (x-y) and gain 4 %, 9 %, 28 % low: only the last is refused. False refusals (``... rates
#: --replicas 200``, 200 images each of 96x96 and 128x128 px, exact mean as the model): 1 of
#: 1600 (one independent 128x128 px image, |misfit| 4.26; 0 of the 1200 three-tap and five-tap
#: ones). Limits: a significance test, so a misfit of a given size is refused sooner on larger
#: images and missed on small ones (128x128 px, phi 0.6: 2.0-3.2 scatters, gain 29-35 % low,
#: not refused); exp_hrstem_4 gives 0.8 (x), 1.6 (y).
MAX_NOISE_KERNEL_MISFIT = 4.0


#: The twin's raw error must not lie clearly below the image's Cramér-Rao bound (radial): no
#: unbiased fit of the raw image can. Where it does, the raw refinement stayed near its starts,
#: and the twin's starts (the sample's own) lie near the twin's true positions (derived from the
#: same fits): the twin then measures its starts, not the data, and its raw error, gain and
#: verdict are too optimistic for the raw image. Refused when the upper end of the raw error's
#: 95 % interval is below this fraction of the bound (the bound itself is known to ~3-10 %:
#: README, section 'Correlated pixel noise'). Measured (default run, 2026-11-30, after the read
#: variance had to be significant): the dose sweep 1.12 (50 e/Å², 2.9 electrons at the brightest
#: pixel), 1.22, 1.42, 1.51; exp_hrstem_0 2.00; exp_hrstem_4 0.79 (2.9 electrons: refused).
MIN_RAW_ERROR_OVER_CRLB = 0.9


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # NaN is no number
        return None
    return float(value)


def _per_axis(record: dict[str, Any], name: str) -> tuple[dict[str, float | None], float]:
    """``{name}_x``/``_y`` of the record (None where not a number) and the larger magnitude (0 without any)."""
    values = {axis: _number(record.get(f"{name}_{axis}")) for axis in ("x", "y")}
    return values, max((abs(value) for value in values.values() if value is not None), default=0.0)


def _twin_model_problems(record: dict[str, Any]) -> list[tuple[str, str]]:
    """(short label, sentence) for each reason the twin's model does not hold for this image."""
    problems = []
    chi2 = _number(record.get("noise_reduced_chi_square"))
    if chi2 is not None and chi2 > MAX_TWIN_REDUCED_CHI_SQUARE:
        problems.append((f"model chi² {chi2:.1f}",
                         f"the image model does not explain this image (reduced chi-square {chi2:.2f} > "
                         f"{MAX_TWIN_REDUCED_CHI_SQUARE})"))
    correlation, worst = _per_axis(record, "noise_correlation")
    if worst > MAX_NOISE_CORRELATION:
        shown = ", ".join(f"{axis} {value:.2f}" for axis, value in correlation.items() if value is not None)
        problems.append((f"noise corr. {worst:.2f}",
                         f"its noise correlation between neighbouring pixels (lag-1 {shown}) is beyond what "
                         f"the noise model's three-tap kernel represents (at most {MAX_NOISE_CORRELATION:.2f}, "
                         f"tap {MAX_NOISE_KERNEL_TAP})"))
    taps = {axis: (_number(record.get(f"noise_kernel_{axis}")) or 0.0,
                   _number(record.get(f"noise_kernel_outer_{axis}")) or 0.0) for axis in ("x", "y")}
    symbol = {axis: kernel_symbol_minimum(value) for axis, value in taps.items()}
    if min(symbol.values()) < MIN_NOISE_KERNEL_SYMBOL:
        shown = ", ".join(f"{axis} ({a:.2f}, {b:.2f})" for axis, (a, b) in taps.items())
        problems.append((f"noise kernel {min(symbol.values()):.2f}",
                         f"its noise kernel (taps {shown}) is beyond the validated range: its symbol falls to "
                         f"{min(symbol.values()):.2f} (at least {MIN_NOISE_KERNEL_SYMBOL:.2f}), so the whitening "
                         f"amplifies some frequencies more than {1 / MIN_NOISE_KERNEL_SYMBOL:.0f}x"))
    misfit, worst = _per_axis(record, "noise_kernel_misfit")
    unmeasured = [axis for axis in ("x", "y") if misfit[axis] is None and any(taps[axis])]
    if unmeasured:
        problems.append(("noise lag-3 not measured",
                         f"its noise is correlated (kernel along {', '.join(unmeasured)}) but whether the kernel "
                         f"represents it was not checked (no lag-3 figure)"))
    if worst > MAX_NOISE_KERNEL_MISFIT:
        shown = ", ".join(f"{axis} {value:+.1f}" for axis, value in misfit.items() if value is not None)
        problems.append((f"noise lag-3 {worst:.1f}σ",
                         f"its noise is correlated beyond what the noise model's kernel represents (the "
                         f"filtered residual's lag-3 correlation is off the kernel's prediction by {shown} "
                         f"scatters, limit {MAX_NOISE_KERNEL_MISFIT:g}): the model's noise, and with it the "
                         f"twin's errors and the bound, would be too small"))
    return problems


def _twin_result_problems(record: dict[str, Any]) -> list[tuple[str, str]]:
    """(short label, sentence) when the twin's own figures contradict its model: the raw error
    below the bound (:data:`MIN_RAW_ERROR_OVER_CRLB`)."""
    bound = _number(record.get("crlb_radial_px"))
    raw, high = _number(record.get("twin_error_raw_px")), _number(record.get("twin_error_raw_px_ci_high"))
    high = raw if high is None else high  # without its interval, the point estimate
    if not bound or raw is None or high >= MIN_RAW_ERROR_OVER_CRLB * bound:
        return []
    electrons = _number(record.get("electrons_peak"))
    counts = f", {electrons:.2g} electrons at the brightest model pixel" if electrons is not None else ""
    return [(f"raw {raw / bound:.2f}x bound",
             f"the twin's raw error ({raw:.3g} px, 95 % interval up to {high:.3g} px) lies below this image's "
             f"Cramér-Rao bound ({bound:.3g} px radial{counts}), which no unbiased fit can: the raw "
             f"refinement stays near its starts, which in the twin lie near its true positions, so the twin "
             f"measures its starts, not the data")]


def _twin_problems(record: dict[str, Any]) -> list[tuple[str, str]]:
    return _twin_model_problems(record) + _twin_result_problems(record)


def raw_below_bound(record: dict[str, Any]) -> bool:
    """True when the twin's raw error lies clearly below the image's bound (:data:`MIN_RAW_ERROR_OVER_CRLB`)."""
    return bool(_twin_result_problems(record))


def twin_model_problem(record: dict[str, Any]) -> str | None:
    """Why the twin's image and noise model do not hold for this image, or None when they do
    (or when the record has no twin figures). The image's CRLB rests on that model, so a record
    with a problem has none (remflow.precision.twin.efficiency); nor a twin verdict
    (:func:`twin_problem`)."""
    return "; ".join(sentence for _, sentence in _twin_model_problems(record)) or None


def twin_problem(record: dict[str, Any]) -> str | None:
    """Why the twin is not the verdict basis: :func:`twin_model_problem`, or its raw error below
    the image's bound (:data:`MIN_RAW_ERROR_OVER_CRLB`); None when neither."""
    return "; ".join(sentence for _, sentence in _twin_problems(record)) or None


def twin_model_flags(record: dict[str, Any]) -> str | None:
    """:func:`twin_problem` in a few words for a figure label (``model chi² 4.1, noise corr. 0.65,
    noise lag-3 7.0σ, raw 0.74x bound``)."""
    return ", ".join(short for short, _ in _twin_problems(record)) or None


def _available(record: dict[str, Any], gain_key: str) -> bool:
    values = [record.get(gain_key), record.get(f"{gain_key}_ci_low"), record.get(f"{gain_key}_ci_high")]
    if gain_key == "twin_gain" and twin_problem(record):
        return False
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def choose_gain_basis(record: dict[str, Any]) -> str | None:
    """The first basis of GAIN_BASES whose gain the record holds, or None."""
    for name, gain_key, _ in GAIN_BASES:
        if _available(record, gain_key):
            return name
    return None


#: twin_note where the deconvolved truth's displacement spread is within two errors of 0
#: (remflow.precision.twin.deconvolved_positions: D^2 - S_0, the raw fit's irregularity about
#: its local lattice less that of replicas with every column on it).
UNRESOLVED_SPREAD_NOTE = ("the real columns' displacement from their local lattice is not resolved from the raw "
                          "fit's noise (D^2 - S_0 = {:.3g} +- {:.2g} px^2): the twin's restored error is uncertain "
                          "with it{} (validation lattices at 50 e/A^2 so flagged: twin / truth restored 0.62-1.28, "
                          "the twin's interval holding the truth in 11 of 14)")
#: ... where the replicas' truths differ (remflow.precision.twin.replica_shrinks; all clip to
#: the least displaced truth where D^2 - S_0 lies far below 0, as on a perfect lattice).
SPREAD_REPLICAS_NOTE = "; the twin's replicas keep spreads over that range, which widens its interval"


#: The twin draws the image's scan-line noise (remflow.imagemodel.fit_line_noise); its
#: validation with line noise (tests/validate_line_noise.py twin, AR(1) of half the pixel noise,
#: length 50 px, seeds 1-3 at 300, 3000 and 30000 e/A^2): twin / truth raw 0.78-1.07, restored
#: 0.73-1.27; verdicts 5 of 9 agree, the other 4 one step more pessimistic than the truth
#: ("inconclusive" for "helps", "hurts" for "inconclusive"), none opposite. Before the line noise
#: was modelled the same images passed the chi-square gate (1.34-1.48) with a twin that missed it:
#: restored 0.09-0.82 of the truth and one verdict opposite ("helps" for "hurts").
LINE_NOISE_NOTE = ("the image carries scan-line noise (sigma {:.3g}, correlation length {:.0f} px along x), which "
                   "the twin draws; on validation lattices with line noise its verdict agreed with the truth in 5 "
                   "of 9 and was one step more pessimistic in the other 4 (twin / truth restored error 0.73-1.27)")


def line_noise(record: dict[str, Any]) -> bool:
    """True where the twin's noise model carries scan-line noise (``noise_line_sigma`` > 0)."""
    sigma = _number(record.get("noise_line_sigma"))
    return sigma is not None and sigma > 0


def spread_unresolved(record: dict[str, Any]) -> bool:
    """True where the twin's ``twin_displacement_sq_px2`` lies within two of its standard errors
    of 0 (:func:`remflow.precision.twin.deconvolved_positions`); False where not given."""
    value, error = _number(record.get("twin_displacement_sq_px2")), _number(record.get("twin_displacement_sq_error_px2"))
    if value is None or error is None or not math.isfinite(error):
        return False
    return value - 2.0 * error <= 0.0


def apply_gain_basis(record: dict[str, Any]) -> dict[str, Any]:
    """The record with ``precision_gain`` (+ interval), ``verdict`` and ``gain_basis`` set from
    the chosen basis. The gain precision_summary computed (truth or lattice, named by its
    ``gain_basis``) is first kept under ``{basis}_gain`` so that no figure is lost."""
    from remflow.precision import verdict

    out = dict(record)
    previous = out.get("gain_basis")
    if previous and out.get("precision_gain") is not None and f"{previous}_gain" not in out:
        out[f"{previous}_gain"] = out["precision_gain"]
        out[f"{previous}_gain_ci_low"] = out.get("precision_gain_ci_low")
        out[f"{previous}_gain_ci_high"] = out.get("precision_gain_ci_high")
    basis = choose_gain_basis(out)
    problem = twin_problem(out)
    if out.get("twin_gain") is not None and problem:
        out["twin_note"] = f"not the verdict basis: {problem}"
    elif out.get("twin_gain") is not None:
        notes = []
        if spread_unresolved(out):
            shrinks = out.get("twin_replica_shrinks") or []
            notes.append(UNRESOLVED_SPREAD_NOTE.format(
                out["twin_displacement_sq_px2"], out["twin_displacement_sq_error_px2"],
                SPREAD_REPLICAS_NOTE if len(set(shrinks)) > 1 else ""))
        if line_noise(out):
            length = _number(out.get("noise_line_length_px"))
            notes.append(LINE_NOISE_NOTE.format(out["noise_line_sigma"], length if length is not None else float("nan")))
        if notes:
            out["twin_note"] = "; ".join(notes)
    if basis is None:
        return out
    gain_key = next(g for n, g, _ in GAIN_BASES if n == basis)
    out["gain_basis"] = basis
    out["precision_gain"] = out[gain_key]
    out["precision_gain_ci_low"] = out[f"{gain_key}_ci_low"]
    out["precision_gain_ci_high"] = out[f"{gain_key}_ci_high"]
    out["verdict"] = verdict(out["precision_gain_ci_low"], out["precision_gain_ci_high"])
    if basis in TRUTH_FREE_BASES:
        note = TRUTH_FREE_NOTE.format(basis)
        twin = [_number(out.get(f"twin_gain{suffix}")) for suffix in ("", "_ci_low", "_ci_high")]
        if None not in twin:
            note += UNVALIDATED_TWIN_NOTE.format(verdict(twin[1], twin[2]), *twin)
        out["basis_note"] = note
    else:
        out.pop("basis_note", None)
    return out
