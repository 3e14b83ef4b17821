"""HRNet segmentation end to end as a user runs it, on a Cityscapes-format folder this script writes (Cityscapes
itself cannot be downloaded here): `host train` at a small input, `host table build` at the deployment input,
`host prune` (NetAdapt) at `--pruner-input`, exported and confirmed at the deployment input on this machine's ONNX
Runtime. HRNetV2-W18 by default (`--model`); the folder's scenes are tests/cityscapes_data.py's (road, sky, a car,
a pole, ignored pixels).

Writes bench/results/segmentation_<model>.json (the prune report's summary, the table's build, the wall times).
`python bench/segmentation.py [--model hrnet_w18_seg] [--deploy 64x128] [--pruner 32x64]`
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._steps import Steps, metrics  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="hrnet_w18_seg")
    ap.add_argument("--deploy", default="64x128", help="deployment input HxW (the table's)")
    ap.add_argument("--pruner", default="32x64", help="pruner input HxW")
    ap.add_argument("--budget", default="0.8")
    ap.add_argument("--epochs", default="4")
    ap.add_argument("--granularity", default="16")
    ap.add_argument("--work", default="runs/bench_segmentation")
    args = ap.parse_args()
    from tests.cityscapes_data import write_cityscapes

    work = Path(args.work).resolve() / args.model
    work.mkdir(parents=True, exist_ok=True)
    dh, dw = (int(v) for v in args.deploy.split("x"))
    ph, pw = (int(v) for v in args.pruner.split("x"))
    cs = work / "cityscapes"
    if not cs.exists():
        write_cityscapes(cs, n_train=96, n_val=24, h=dh, w=dw)
    steps = Steps()
    data = ["--dataset", "cityscapes", "--data-dir", str(cs)]
    steps("train", work / "train" / "model.pt", "train", "--model", args.model, *data, "--image-size", str(ph),
          "--epochs", args.epochs, "--batch-size", "8", "--lr", "0.05", "--schedule", "poly", "--poly-power", "2",
          "--criterion", "rmi", "--out", str(work / "train"))
    table = work / f"table_{dh}x{dw}.json"
    steps("table", table, "table", "build", "--model", args.model, "--num-classes", "19", "--input", f"1x3x{dh}x{dw}",
          "--granularity", args.granularity, "--iters", "50", "--rounds", "2", "--calibrate", "10", "--out-table", str(table))
    steps("prune", work / "prune" / "report.json", "prune", "--table", str(table), "--checkpoint",
          str(work / "train" / "model.pt"), *data, "--pruner-input", f"1x3x{ph}x{pw}", "--input", f"1x3x{dh}x{dw}",
          "--budget", args.budget, "--short-term-steps", "4", "--short-term-val", "10", "--long-term-epochs", "2",
          "--bench-seconds", "20", "--out", str(work / "prune"))
    rep = json.loads((work / "prune" / "report.json").read_text())
    tab = json.loads(table.read_text())
    keep = ("miou", "top1", "params", "macs", "latency_ms_predicted", "latency_ms_measured", "latency_ms_measured_min",
            "prediction_error")
    out = {"model": args.model, "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
           "train": {k: metrics(work / "train")[k] for k in ("val", "test", "wall_s")},
           "table": {"input_shape": tab["input_shape"], "entries": len(tab["entries"]),
                     **{k: tab["build"].get(k) for k in ("measurements", "wall_s", "calibration_networks")}},
           "prune": {"input_shape": rep["input_shape"], "pruner_input_shape": rep["pruner_input_shape"],
                     "budget_fraction": rep["budget_fraction"], "iterations": len(rep["iterations"]),
                     "candidates_per_iteration": [len(r["candidates"]) for r in rep["iterations"]],
                     "baseline": {k: rep["baseline"].get(k) for k in keep},
                     "pruned": {k: rep["pruned"].get(k) for k in keep}, "ratios": rep["ratios"],
                     "miou_drop": rep.get("miou_drop"), "wall_s": rep["wall_s"]},
           "step_wall_s": steps.times}
    for rec in out["train"]["val"], out["train"]["test"]:
        rec.pop("per_class_iou", None)
    path = ROOT / "bench" / "results" / f"segmentation_{args.model}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
