"""Does a table's calibration transfer? Networks of models the fit never saw (the same layer types, other depths)
measured once on the local device, and predicted by the table three ways: the plain sum of the micro-models (no
fit), with the table's fit transferred (``TablePredictor(..., transfer=True)``: its intercept's excess over the
overhead scaled per site), that scaled by the device's speed drift since the build, read from the table's own
calibration networks measured in the same session, and the transferred fit with its intercept moved unchanged (the
rule before, ``transferred_fit_intercept_as_fitted``). docs/results.md has the runs.

Writes bench/results/calibration_transfer.json (or --out).

    python bench/calibration_transfer.py --table latency_tables/default/resnet44_3x32x32_ort_local_1t.json
        --models resnet32,resnet56,resnet20 [--samples 12]
    python bench/calibration_transfer.py --table latency_tables/edge96_resnet18_gate/resnet18_96x96_ort_local_1t_g32.json
        --models resnet34 --out bench/results/calibration_transfer_edge96.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def errors(pred, meas):
    rel = [p / m - 1 for p, m in zip(pred, meas)]
    return {"mean_abs_rel_error": sum(abs(r) for r in rel) / len(rel), "max_abs_rel_error": max(abs(r) for r in rel),
            "mean_rel_error": sum(rel) / len(rel)}


def main() -> int:
    from statistics import median

    from edgeshrink import models
    from edgeshrink.device.provenance import utc_now
    from edgeshrink.host.io import write_json
    from edgeshrink.host.latency.networks import measure_for_table, sample_widths
    from edgeshrink.host.latency.predict import TablePredictor
    from edgeshrink.host.latency.table import load_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(ROOT / "latency_tables" / "resnet20_ort_local_1t_g8.json"))
    ap.add_argument("--models", default="resnet32,resnet44")
    ap.add_argument("--samples", type=int, default=12)
    ap.add_argument("--anchors", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "calibration_transfer.json"))
    args = ap.parse_args()
    table = load_table(args.table)
    gran = int(table.build["granularity"])
    t0 = time.monotonic()
    own = table.calibration["fit"]["model"]
    anchors = table.calibration["fit"]["networks"][:args.anchors]
    rows = []
    _, got = measure_for_table(table, own, 10, [n["widths"] for n in anchors])
    drift = median(m["measured_ms"] / n["measured_ms"] for m, n in zip(got, anchors))
    for name in args.models.split(","):
        model = models.create_model(name)
        plain = TablePredictor.for_model(table, model, corrected=False)
        moved = TablePredictor.for_model(table, model, transfer=True)
        assert moved.fit_scope() == "transferred"
        archs = sample_widths(plain.space, gran, args.samples, args.seed)
        device, meas = measure_for_table(table, name, 10, archs)
        ms = [m["measured_ms"] for m in meas]
        p_plain = [plain.predict_ms(w) for w in archs]
        p_moved = [moved.predict_ms(w) for w in archs]
        fitted_ic = float(table.calibration["fit"]["coefficients"]["intercept_ms"])
        p_as_fitted = [p - moved.intercept_ms + fitted_ic for p in p_moved]  # the rule before: intercept moved unchanged
        rows.append({"model": name, "samples": len(archs), "fit_model": own,
                     "no_fit": errors(p_plain, ms), "transferred_fit": errors(p_moved, ms),
                     "transferred_fit_drift_corrected": errors([p * drift for p in p_moved], ms),
                     "intercept_rule": moved.intercept_rule,
                     "transferred_fit_intercept_as_fitted": errors(p_as_fitted, ms),
                     "networks": [{"widths": w, "measured_ms": m, "plain_ms": a, "transferred_ms": b}
                                  for w, m, a, b in zip(archs, ms, p_plain, p_moved)]})
        print(f"{name}: no fit {rows[-1]['no_fit']['mean_abs_rel_error']:.2%} mean / "
              f"{rows[-1]['no_fit']['max_abs_rel_error']:.2%} max; {own}'s fit transferred "
              f"{rows[-1]['transferred_fit']['mean_abs_rel_error']:.2%} / {rows[-1]['transferred_fit']['max_abs_rel_error']:.2%}"
              f"; with drift x{drift:.4f} removed {rows[-1]['transferred_fit_drift_corrected']['mean_abs_rel_error']:.2%}"
              f" / {rows[-1]['transferred_fit_drift_corrected']['max_abs_rel_error']:.2%}", flush=True)
    write_json(args.out, {"created_utc": utc_now(), "table": str(Path(args.table).resolve().relative_to(ROOT)),
                          "table_cpu": table.device.get("cpu"), "device": device, "drift_speed_ratio": drift,
                          "anchors": len(anchors), "models": rows, "wall_s": round(time.monotonic() - t0, 1)})
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
