"""Latency table vs the device: build the resnet20 table on the local device (ONNX Runtime CPU, 1 thread),
predict the unpruned network, and measure its ONNX export on the same device.

Writes bench/results/predict_vs_measured.json and the table to latency_tables/resnet20_ort_local_1t.json.
Target (main-job issue): |predicted / measured - 1| <= 10%. The naive sum (overhead counted once per layer)
is reported beside it.

    python bench/predict_vs_measured.py
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
    from edgeshrink import models
    from edgeshrink.host.export.onnx import export_onnx
    from edgeshrink.host.io import write_json
    from edgeshrink.host.latency.predict import TablePredictor
    from edgeshrink.host.latency.table import load_table

    table_path = ROOT / "latency_tables" / "resnet20_ort_local_1t.json"
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "edgeshrink.host.cli", "table", "build", "--model", "resnet20", "--input", "1x3x32x32",
                    "--device", "local", "--backend", "ort", "--threads", "1", "--granularity", "4", "--jobs", "2",
                    "--out-table", str(table_path)], check=True)
    build_s = time.monotonic() - t0
    table = load_table(str(table_path))
    pred = TablePredictor.for_model(table, models.create_model("resnet20"))
    widths = pred.space.full_widths
    predicted = pred.predict_ms(widths)
    naive = sum(table.lookup(k).ms(table.statistic) for k in pred.space.keys(widths))
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "resnet20.onnx"
        export_onnx(models.create_model("resnet20").eval(), (1, 3, 32, 32), str(onnx_path))
        out = subprocess.run([sys.executable, "-m", "edgeshrink.host.cli", "bench", str(onnx_path), "--device", "local",
                              "--backend", "ort", "--threads", "1", "--rounds", "3", "--json"],
                             check=True, capture_output=True, text=True).stdout
    bench = json.loads(out)
    measured = next(iter(bench["models"].values()))[f"{table.statistic}_ms"]  # what the table predicts
    result = {
        "created_utc": utc_now(),
        "model": "resnet20", "device": bench["device"], "backend": "ort", "threads": 1,
        "table": str(table_path.relative_to(ROOT)), "table_entries": len(table.entries),
        "table_build_s": round(build_s, 1), "overhead_ms": table.overhead_ms,
        "latency_ms_measured": measured,
        "latency_ms_measured_round_medians": next(iter(bench["models"].values()))["round_medians_ms"],
        "latency_ms_predicted": predicted, "error": predicted / measured - 1,
        "latency_ms_naive_sum": naive, "naive_error": naive / measured - 1,
        "target_abs_error": 0.10, "meets_target": abs(predicted / measured - 1) <= 0.10,
    }
    write_json(ROOT / "bench" / "results" / "predict_vs_measured.json", result)
    print(f"resnet20: predicted {predicted:.4f} ms, measured {measured:.4f} ms ({result['error']:+.1%}); "
          f"naive sum {naive:.4f} ms ({result['naive_error']:+.1%}); table {len(table.entries)} entries in {build_s:.0f} s")
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
