"""The main job's acceptance, as a user runs it: `host demo --fresh` into a temporary folder, timed.

Writes bench/results/demo.json: wall time, baseline and pruned test top-1, predicted and measured latency,
and the demo's acceptance checks (measured pruned <= 0.55 x measured baseline for the 0.5 budget, top-1 drop <= 2
points, the baseline's prediction within 3% of the measured statistic, wall time <= 5 minutes on a 2-core CPU).

    python bench/demo.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgeshrink.device.provenance import utc_now

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    from edgeshrink.host.io import write_json

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "edgeshrink", "demo", "--out", tmp, "--fresh"], check=True)
        wall = time.monotonic() - t0
        report = json.loads((Path(tmp) / "pruned" / "report.json").read_text())
    b, p = report["baseline"], report["pruned"]
    ratio = p["latency_ms_measured"] / b["latency_ms_measured"]
    result = {
        "created_utc": utc_now(),
        "device": report["device"], "backend": report["backend"], "threads": report["threads"],
        "wall_s": round(wall, 1), "budget_fraction": report["budget_fraction"], "budget_ms": report["budget_ms"],
        "iterations": len(report["iterations"]),
        "baseline": {k: b[k] for k in ("top1", "params", "macs", "latency_ms_predicted", "latency_ms_measured",
                                       "prediction_error")},
        "pruned": {k: p[k] for k in ("top1", "params", "macs", "latency_ms_predicted", "latency_ms_measured",
                                     "prediction_error", "channels")},
        "measured_latency_ratio": ratio, "top1_drop": report["top1_drop"],
        "checks": {"measured_ratio_le_0.55": ratio <= 0.55, "top1_drop_le_2": report["top1_drop"] <= 2.0,
                   "baseline_prediction_within_3pct": abs(b["prediction_error"]) <= 0.03, "wall_le_5min": wall <= 300},
    }
    write_json(ROOT / "bench" / "results" / "demo.json", result)
    print(json.dumps({k: result[k] for k in ("wall_s", "measured_latency_ratio", "top1_drop", "checks")}, indent=1))
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
