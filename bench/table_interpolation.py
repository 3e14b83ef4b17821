"""Cheaper tables: wrn40_2 on the local device (ONNX Runtime CPU, 1 thread), target channel grid 4, measured on
a coarse grid of 8 with check measurements and adaptive refinement, interpolants aware of the CPU's channel
block (`host table build --coarse 8 --align 16` on AVX-512, `--align 8` on AVX2), with calibration networks, every
latency the fastest run (`--statistic min`, the default); then validated on random
pruned architectures on the grid of 4 (most of whose layers use interpolated entries), with the table's
calibration networks measured again among them (`host table validate --recalibrate`).

Writes bench/results/table_interpolation.json and the validation under bench/results/table_interpolation/ (with
``--out X.json``: X.json and X/).
Then (unless --no-reference) the exhaustive table of the target grid is completed in the same work folder (only
what the interpolated build did not measure is measured) and calibrated on the same calibration networks, and both
tables are judged on the same validation networks side by side (`host table validate --compare`): the difference
is what interpolation costs.
Target (latency-table issue): >= 10x fewer measurements than the exhaustive per-channel grid, with the fidelity
of bench/table_fidelity.py held.

    python bench/table_interpolation.py [--samples 30] [--statistic min|median] [--out X.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from edgeshrink.device.provenance import utc_now

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="wrn40_2")
    ap.add_argument("--granularity", type=int, default=4)
    ap.add_argument("--coarse", type=int, default=8)
    ap.add_argument("--align", type=int, default=None,
                    help="the CPU's channel block for ONNX Runtime's NCHWc kernels (default: 16 with AVX-512, 8 with "
                         "AVX2, from /proc/cpuinfo)")
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--calibrate", type=int, default=120)
    ap.add_argument("--anchors", type=int, default=12, help="without --no-recalibrate: all calibration networks")
    ap.add_argument("--no-recalibrate", dest="recalibrate", action="store_false",
                    help="validate the table as built only (and with its drift removed)")
    ap.add_argument("--statistic", choices=("min", "median"), default="min",
                    help="what entries and networks are taken by (host table build --statistic; default min)")
    ap.add_argument("--no-reference", dest="reference", action="store_false",
                    help="skip the exhaustive table of the target grid (measured in the same work folder: only the "
                         "entries the interpolated build did not measure, with the same calibration networks), "
                         "judged on the same validation networks side by side")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "table_interpolation.json"))
    args = ap.parse_args()
    if args.align is None:
        args.align = _cpu_channel_block()
    from edgeshrink import models
    from edgeshrink.host import ui
    from edgeshrink.host.io import write_json
    from edgeshrink.host.latency.build import BuildConfig, build_table, build_table_interpolated
    from edgeshrink.host.latency.fit import fit_summary
    from edgeshrink.host.latency.space import build_space, enumerate_keys
    from edgeshrink.host.latency.validate import validate_table

    shape = (1, 3, 32, 32)
    space = build_space(models.create_model(args.model), shape)
    keys = enumerate_keys(space, args.granularity)
    exhaustive = len(enumerate_keys(space, 1))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        cfg = BuildConfig(args.model, shape, granularity=args.granularity, jobs=2, warmup=10, iters=25, rounds=2,
                          interleave=8, batch=300, calibrate=args.calibrate, statistic=args.statistic,
                          workdir=str(Path(tmp) / "work"), coarse=args.coarse, align=args.align)
        table = build_table_interpolated(cfg, keys, exhaustive=exhaustive, log=ui.log)
        build_s = time.monotonic() - t0
        table_path = str(Path(tmp) / "table.json")  # ~1.5 MB: not kept in the repository
        table.save(table_path)
        compare, ref = [], None
        if args.reference:
            # every entry of the target grid: what was measured above is not measured again, the rest is now; the
            # calibration networks are the same measurements, so the comparison is the interpolation alone
            t2 = time.monotonic()
            ref = build_table(replace(cfg, resume=True), keys)
            ref_s = time.monotonic() - t2
            ref_path = str(Path(tmp) / "exhaustive.json")
            ref.save(ref_path)
            compare = [ref_path]
        out_dir = Path(args.out).with_suffix("")  # validate.json and validate.png beside the results
        t1 = time.monotonic()
        doc = validate_table(table_path, args.model, samples=args.samples, seed=0, out_dir=str(out_dir), warmup=10,
                             anchors=args.anchors, jobs=2, recalibrate=args.recalibrate, compare=compare)
    b, it = table.build, table.build["interpolation"]
    drift = doc["drift"] or {}
    recal = doc.get("recalibrated") or {}
    result = {
        "created_utc": utc_now(),
        "model": args.model, "device": doc["device"], "backend": "ort", "threads": 1,
        "granularity": args.granularity, "coarse": args.coarse, "align": args.align, "statistic": table.statistic,
        "entries": len(table.entries), "measured_entries": b["measured"], "interpolated_entries": b["interpolated"],
        "measurements": b["measurements"], "exhaustive_per_channel_entries": exhaustive,
        "reduction_vs_exhaustive_per_channel": exhaustive / b["measured"],
        "reduction_vs_exhaustive_target_grid": len(keys) / b["measured"],
        "interpolation": {k: v for k, v in it.items() if k != "check_detail"},
        "calibration_fit": fit_summary(table.calibration["fit"]),
        "build_wall_s": round(build_s, 1), "validate_wall_s": round(time.monotonic() - t1, 1),
        "validation": {"samples": doc["samples"], "mean_abs_rel_error": doc["mean_abs_rel_error"],
                       "max_abs_rel_error": doc["max_abs_rel_error"], "mean_rel_error": doc["mean_rel_error"],
                       "pearson_r": doc["pearson_r"], "drift": drift or None, "recalibrated": recal or None,
                       "rounds": doc["rounds"], "iters": doc["iters"], "loads": doc["loads"],
                       "measurement_noise": doc.get("measurement_noise"),
                       "interpolated_share_of_sites": _interp_share(table, space, doc)},
        "reference": None if ref is None else _reference(ref, ref_s, doc["compared"][0], table),
        "meets_10x": exhaustive / b["measured"] >= 10,
        "meets_fidelity_raw": doc["mean_abs_rel_error"] <= 0.01 and doc["max_abs_rel_error"] <= 0.03,
        "meets_fidelity_drift_corrected": bool(drift) and drift["mean_abs_rel_error"] <= 0.01
        and drift["max_abs_rel_error"] <= 0.03,
        "meets_fidelity_recalibrated": bool(recal) and recal["mean_abs_rel_error"] <= 0.01
        and recal["max_abs_rel_error"] <= 0.03,
        "plot": os.path.relpath(out_dir / "validate.png", ROOT),
    }
    write_json(args.out, result)
    print(f"{args.model}: {b['measured']} of {len(keys)} entries measured ({exhaustive / b['measured']:.0f}x fewer "
          f"than the {exhaustive} per-channel configurations), {b['measurements']} measurements, build {build_s:.0f} s; "
          f"validation mean |err| {doc['mean_abs_rel_error']:.2%}, max {doc['max_abs_rel_error']:.2%}; drift-corrected "
          f"{drift.get('mean_abs_rel_error', float('nan')):.2%} / {drift.get('max_abs_rel_error', float('nan')):.2%}; "
          f"recalibrated {recal.get('mean_abs_rel_error', float('nan')):.2%} / "
          f"{recal.get('max_abs_rel_error', float('nan')):.2%} -> {args.out}")
    if ref is not None:
        c = doc["compared"][0]
        print(f"exhaustive table of the grid ({len(ref.entries)} entries), same networks: {c['mean_abs_rel_error']:.2%} / "
              f"{c['max_abs_rel_error']:.2%}" + "".join(f"; {lbl} {c[k]['mean_abs_rel_error']:.2%} / "
                                                        f"{c[k]['max_abs_rel_error']:.2%}"
                                                        for k, lbl in (("drift", "drift removed"),
                                                                       ("recalibrated", "recalibrated")) if c[k]))
    return 0


def _reference(ref, wall_s, judged, table) -> dict:
    """The exhaustive table of the target grid, judged on the validation networks beside the interpolated one."""
    from edgeshrink.host.latency.fit import fit_summary

    return {"entries": len(ref.entries), "measurements_after_the_interpolated_build": ref.build["measurements"],
            "build_wall_s": round(wall_s, 1), "calibration_fit": fit_summary(ref.calibration["fit"]),
            "validation": {k: judged[k] for k in ("mean_abs_rel_error", "max_abs_rel_error", "mean_rel_error",
                                                  "pearson_r", "drift", "recalibrated")},
            "interpolated_entries_vs_measured": _entry_errors(table, ref),
            "what": "every configuration of the target grid measured (the interpolated build's measurements reused), "
                    "calibrated on the same calibration networks; the difference to the interpolated table's errors "
                    "is what interpolation costs"}


def _entry_errors(table, ref) -> dict:
    """Interpolated entries against the same configurations measured: relative error of the table's statistic."""
    import numpy as np

    stat = table.statistic
    e = np.array([table.lookup(r.key).ms(stat) / r.ms(stat) - 1 for r in ref.entries
                  if table.lookup(r.key).source == "interpolated"])
    return {"n": int(e.size), "mean_abs_rel_error": float(np.abs(e).mean()) if e.size else None,
            "max_abs_rel_error": float(np.abs(e).max()) if e.size else None,
            "mean_rel_error": float(e.mean()) if e.size else None}


def _cpu_channel_block() -> int:
    """ONNX Runtime's NCHWc block on this CPU: 16 floats with AVX-512, 8 with AVX2, else 0 (no NCHWc kernels)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return 0
    return 16 if "avx512f" in flags else 8 if "avx2" in flags else 0


def _interp_share(table, space, doc) -> float:
    """Share of the validated networks' layer sites whose entry was interpolated."""
    n = k = 0
    for a in doc["architectures"]:
        for key in space.keys(a["widths"]):
            n += 1
            k += table.lookup(key).source == "interpolated"
    return k / n if n else 0.0


if __name__ == "__main__":
    sys.exit(main())
