"""Does bfloat16 restoration move fitted column positions? (restore.dtype: bfloat16)

The dose sweep (the workflow's default synthetic benchmark) and exp_hrstem_4 (low-dose
SrTiO3) are restored in float32 and in bfloat16 (TensorFlow's oneDNN auto-mixed-precision);
columns are refined on both from the same starts (positions.position_shift). The shift is
compared with the width of the 95% interval of the float32 result's own precision figure:
bfloat16 could become the default only if every shift is below a tenth of that width.
float32 runs first, then bfloat16 (the switch is process-wide).
"""

from __future__ import annotations

import argparse
import time

from common import emit, machine
from positions import dose_sweep, low_dose_frame, position_shift, reference_fit

ALLOWED_FRACTION_OF_CI = 0.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--network", default="sfr_hrstem")
    parser.add_argument("--no-frame", action="store_true", help="dose sweep only (quicker)")
    args = parser.parse_args()

    import numpy as np

    from remflow.restore import Restorer, bfloat16_supported

    cases = dose_sweep() + ([] if args.no_frame else [low_dose_frame()])
    fp32 = Restorer(args.network)
    started = time.perf_counter()
    for case in cases:
        case["float32"] = fp32.restore(case["image"])
    seconds_fp32 = time.perf_counter() - started
    if not bfloat16_supported():
        emit({"benchmark": "bfloat16_positions", "bfloat16_supported": False,
              "note": "this CPU has no AVX512-BF16/AMX: TensorFlow's bfloat16 rewrite does nothing here "
                      "(restore.dtype bfloat16 falls back to float32); nothing to measure", **machine()})
        return
    bf16 = Restorer(args.network, dtype="bfloat16")
    started = time.perf_counter()
    for case in cases:
        case["bfloat16"] = bf16.restore(case["image"])
    seconds_bf16 = time.perf_counter() - started

    results, worst = {}, 0.0
    for case in cases:
        reference = reference_fit(case["image"], case["float32"], case["truth"])
        if reference["status"] != "ok":
            results[case["name"]] = {"status": reference["status"]}
            continue
        shift = position_shift(case["float32"], case["bfloat16"], reference["starts"], reference["separation_px"])
        fraction = shift["max_shift_px"] / reference["ci_width_px"]
        worst = max(worst, fraction)
        results[case["name"]] = {**shift, "figure": reference["figure"], "figure_px": reference["value_px"],
                                 "ci_width_px": reference["ci_width_px"], "max_shift_over_ci_width": fraction}
    deviation = max(float(np.abs(c["bfloat16"] - c["float32"]).max() / np.ptp(c["float32"])) for c in cases)
    emit({"benchmark": "bfloat16_positions", "bfloat16_supported": True, "network": args.network, "cases": results,
          "max_image_deviation_of_range": deviation,
          "worst_max_shift_over_ci_width": worst, "allowed": ALLOWED_FRACTION_OF_CI,
          "bfloat16_may_be_default": bool(worst < ALLOWED_FRACTION_OF_CI),
          "restore_float32_s": seconds_fp32, "restore_bfloat16_s": seconds_bf16, **machine()})


if __name__ == "__main__":
    main()
