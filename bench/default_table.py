"""A table built with the defaults only, as a new user would (``host table build --model M --input ... --device
local --backend ort``), then ``host table validate`` on 12 random networks of the same model (by default resnet44,
a registry model no other bench uses). Target (any-model issue): mean |error| <= 1.5%, max <= 4%.

Writes bench/results/default_table.json (the validation's JSON and plot in bench/results/default_table/, the table
in latency_tables/default/: bench/calibration_transfer.py takes it to other models).

    python bench/default_table.py [--model resnet44] [--input 1x3x32x32] [--samples 12]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEAN_TARGET, MAX_TARGET = 0.015, 0.04


def main() -> int:
    from edgeshrink.device.provenance import utc_now
    from edgeshrink.host.io import write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet44")
    ap.add_argument("--input", default="1x3x32x32")
    ap.add_argument("--samples", type=int, default=12)
    args = ap.parse_args()
    out_dir = ROOT / "bench" / "results" / "default_table"
    tables = ROOT / "latency_tables" / "default"
    tables.mkdir(parents=True, exist_ok=True)
    table = tables / f"{args.model}_{args.input.split('x', 1)[1]}_ort_local_1t.json"
    if table.exists():
        table.unlink()
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "edgeshrink", "table", "build", "--model", args.model, "--input",
                    args.input, "--device", "local", "--backend", "ort", "--out-table", str(table)], check=True)
    build_s = time.monotonic() - t0
    t1 = time.monotonic()
    subprocess.run([sys.executable, "-m", "edgeshrink", "table", "validate", str(table), "--model", args.model,
                    "--samples", str(args.samples), "--out", str(out_dir)], check=True)
    doc = json.loads((out_dir / "validate.json").read_text())
    t = json.loads(table.read_text())
    fit = t["calibration"].get("fit") or {}
    result = {"created_utc": utc_now(), "model": args.model, "table": str(table.relative_to(ROOT)), "input": args.input, "cpu": t["device"].get("cpu"),
              "command": f"host table build --model {args.model} --input {args.input} --device local --backend ort",
              "build": {k: t["build"].get(k) for k in ("granularity", "measured", "measurements", "rounds", "iters",
                                                       "calibration_networks", "calibration_wall_s", "wall_s")},
              "build_wall_s": round(build_s, 1), "validate_wall_s": round(time.monotonic() - t1, 1),
              "fusion": t["calibration"].get("fusion", {}).get("rules"),
              "fit": {k: fit.get(k) for k in ("fit_mean_abs_rel_error", "uncorrected_mean_abs_rel_error",
                                              "cv_mean_abs_rel_error", "cv_max_abs_rel_error")},
              "samples": doc["samples"], "mean_abs_rel_error": doc["mean_abs_rel_error"],
              "max_abs_rel_error": doc["max_abs_rel_error"], "mean_rel_error": doc["mean_rel_error"],
              "pearson_r": doc["pearson_r"], "measurement_noise": doc.get("measurement_noise"), "drift": doc.get("drift"),
              "target": {"mean_abs_rel_error": MEAN_TARGET, "max_abs_rel_error": MAX_TARGET},
              "meets_target": doc["mean_abs_rel_error"] <= MEAN_TARGET and doc["max_abs_rel_error"] <= MAX_TARGET}
    write_json(ROOT / "bench" / "results" / "default_table.json", result)
    print(f"{args.model}: default build {build_s:.0f} s ({result['build']['calibration_networks']} calibration networks, "
          f"{result['build']['calibration_wall_s']} s of them); validate on {doc['samples']}: mean "
          f"{doc['mean_abs_rel_error']:.2%}, max {doc['max_abs_rel_error']:.2%} -> bench/results/default_table.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
