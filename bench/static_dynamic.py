"""Static and dynamic pruning together on Fashion-MNIST with resnet32, judged by latency measured on this machine
(ONNX Runtime, 1 thread, batch 1, one input at a time): unpruned / static only (EigenDamage) / static and dynamic
(EigenDamage, then SkipNet gates), with the seed's protocol of at most one point of accuracy lost (judged on val).

Steps (each resumable: rerun the script and finished steps are reused from --work):
  1. `host train resnet32` on a stratified subset of Fashion-MNIST's training images;
  2. `host table build` of a local ONNX Runtime table for resnet32 (granularity 8, calibrated);
  3. `host compare` of eigendamage, magnitude and uniform at the static budgets, the same fine-tuning for all,
     measured side by side; the static operating point is the fastest eigendamage network within one point of the
     unpruned val top-1;
  4. `host train --init STATIC --gates ff` (SkipNet's supervised stage), then `host train --init GATED --rl` at each
     RL weight; the dynamic operating point is the candidate (the supervised stage or an RL weight) with the fewest
     predicted ms at its val execution rates within one point;
  5. `host dynamic` of it (per-block models and one graph with If per block, the test split one input at a time on
     the device in both, the gates' cost measured, the expected latency predicted from the table), then the
     unpruned and the static network one input at a time on the same inputs, right after.

Writes bench/results/static_dynamic.json. Needs Debian's dataset-fashion-mnist. About an hour on a 2-core CPU with
the defaults below.

    python bench/static_dynamic.py [--work DIR] [--train-subset N] [--epochs E]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _steps import Steps, metrics
from edgeshrink.device.provenance import utc_now

ROOT = Path(__file__).resolve().parents[1]
SEED_CIFAR100 = {"note": "the seed's CIFAR-100 ResNet-32 figures (FLOPs counted, not measured)",
                 "unpruned": {"top1": 78.19, "gflops": 2.20}, "static": {"top1": 77.48, "gflops": 0.51,
                                                                         "compression": 0.60},
                 "static_dynamic": {"top1": 77.36, "gflops": 0.40}}



def device_inputs(model: str, inputs: str, iters: int) -> dict:
    """The dynamic runner on this machine (`device bench MODEL --inputs`)."""
    out = subprocess.run([sys.executable, "-m", "edgeshrink.device", "bench", model, "--inputs", inputs, "--iters",
                          str(iters), "--json", "--quiet"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["results"][0]



def main() -> int:
    from edgeshrink.host.io import write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="runs/bench_static_dynamic")
    ap.add_argument("--train-subset", type=int, default=5000, help="training images (stratified; default 5000)")
    ap.add_argument("--epochs", type=int, default=8, help="baseline training epochs (default 8)")
    ap.add_argument("--budgets", default="0.6,0.45", help="static budgets, fractions of the unpruned prediction")
    ap.add_argument("--recover-epochs", type=int, default=3, help="fine-tuning after pruning (default 3)")
    ap.add_argument("--gate-epochs", type=int, default=2, help="supervised epochs with gates (default 2)")
    ap.add_argument("--rl-epochs", type=int, default=2, help="hybrid RL epochs per weight (default 2)")
    ap.add_argument("--rl-weights", default="0.5,2", help="RL weights (alpha) tried (default 0.5,2)")
    ap.add_argument("--inputs", type=int, default=2000, help="test images run one at a time (default 2000)")
    ap.add_argument("--iters", type=int, default=3, help="timed runs per input (default 3)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    data = ["--dataset", "fashion-mnist", "--train-subset", str(args.train_subset)]
    table, base = work / "table.json", work / "base"

    step = Steps()
    times = step.times
    step("train_s", base / "model.pt", "train", "--model", "resnet32", *data, "--epochs", str(args.epochs),
         "--lr", "0.1", "--batch-size", "64", "--out", str(base))
    resume = ["--resume"] if Path(str(table) + ".build").is_dir() else []
    step("table_s", table, "table", "build", "--model", "resnet32", "--granularity", "8", "--jobs", "2", "--iters",
         "100", "--rounds", "2", "--calibrate", "12", *resume, "--out-table", str(table))
    step("compare_s", work / "compare" / "compare.json", "compare", "--methods", "eigendamage,magnitude,uniform",
         "--budgets", args.budgets, "--table", str(table), "--checkpoint", str(base / "model.pt"), *data, "--recover",
         "fine-tune", "--long-term-epochs", str(args.recover_epochs), "--bench-seconds", "30",
         "--out", str(work / "compare"))
    cmp = json.loads((work / "compare" / "compare.json").read_text())
    base_val = metrics(base)["val"]["top1"]
    ed = sorted((r for r in cmp["rows"] if r["method"] == "eigendamage" and not r.get("error")),
                key=lambda r: r["latency_ms_predicted"])
    within = [r for r in ed if r["val_top1"] >= base_val - 1.0]
    static = (within or sorted(ed, key=lambda r: -r["val_top1"]))[0]
    static_dir = work / "compare" / "runs" / f"eigendamage_b{static['budget']:g}"
    static_ckpt = static_dir / "model.pt"

    step("gates_s", work / "gated" / "model.pt", "train", "--init", str(static_ckpt), "--gates", "ff", *data,
         "--epochs", str(args.gate_epochs), "--lr", "0.01", "--batch-size", "64", "--out", str(work / "gated"))
    from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint
    from edgeshrink.host.latency.predict import TablePredictor
    from edgeshrink.host.latency.table import load_table
    from edgeshrink.host.dynamic.skipnet import predict_dynamic

    tab = load_table(str(table))

    def candidate(folder: Path, rl_weight):
        m = model_from_checkpoint(load_checkpoint(str(folder / "model.pt")))
        g = metrics(folder)["gates"]
        # the gates' cost is not known before the device measures it: 0 here, the same for every candidate
        p = predict_dynamic(TablePredictor.for_model(tab, m.base), m, g["val_block_rates"],
                            {b: 0.0 for b in m.gated}, 0.0)
        return {"rl_weight": rl_weight, "folder": str(folder), "val_top1": metrics(folder)["val"]["top1"],
                "predicted_ms_val_rates": p["expected_ms"], "val_block_rates": g["val_block_rates"]}

    candidates = [candidate(work / "gated", None)]  # the supervised stage alone is a candidate too
    for a in [float(v) for v in args.rl_weights.split(",")]:
        folder = work / f"rl_{a:g}"
        step(f"rl_{a:g}_s", folder / "model.pt", "train", "--init", str(work / "gated" / "model.pt"), "--rl",
             "--rl-weight", f"{a:g}", "--table", str(table), *data, "--epochs", str(args.rl_epochs), "--lr",
             "0.01", "--batch-size", "64", "--out", str(folder))
        candidates.append(candidate(folder, a))
    ok = [c for c in candidates if c["val_top1"] >= base_val - 1.0]
    chosen = (sorted(ok, key=lambda c: c["predicted_ms_val_rates"]) or
              sorted(candidates, key=lambda c: -c["val_top1"]))[0]
    dyn_dir = work / f"dynamic_{Path(chosen['folder']).name}"
    step("dynamic_s", dyn_dir / "report.json", "dynamic", "--checkpoint", str(Path(chosen["folder"]) / "model.pt"), "--table",
         str(table), "--dataset", "fashion-mnist", "--limit", str(args.inputs), "--iters", str(args.iters),
         "--out", str(dyn_dir))
    dyn = json.loads((dyn_dir / "report.json").read_text())
    t = time.monotonic()
    inputs = str(dyn_dir / "inputs.npz")
    static_onnx = str(static_dir / "model.onnx")
    base_onnx = str(static_dir / "baseline.onnx")
    per_input = {"unpruned": device_inputs(base_onnx, inputs, args.iters),
                 "static": device_inputs(static_onnx, inputs, args.iters)}
    times["per_input_s"] = round(time.monotonic() - t, 1)

    def row(name, top1, params, macs, predicted, measured, extra=None):
        return {"network": name, "test_top1": top1, "params": params, "macs_per_input": macs,
                "compression_params": 1 - params / cmp["baseline"]["params"], "predicted_mean_ms": predicted,
                "measured_mean_ms": measured["mean"], "measured_p50_ms": measured["median"],
                "measured_p90_ms": measured["p90"], "measured_p99_ms": measured["p99"],
                "measured_max_ms": measured["max"], **(extra or {})}

    b = cmp["baseline"]
    rows = [row("unpruned", b["top1"], b["params"], b["macs"], b["latency_ms_predicted"],
                per_input["unpruned"]["latency_ms"]),
            row("static only (eigendamage)", static["top1"], static["params"], static["macs"],
                static["latency_ms_predicted"], per_input["static"]["latency_ms"], {"budget": static["budget"]}),
            row("static and dynamic (eigendamage, then SkipNet ff gates)", 100 * dyn["top1"], dyn["params"],
                dyn["macs"]["mean"], dyn["predicted"]["expected_ms"], dyn["measured_ms"],
                {"rl_weight": chosen["rl_weight"], "form": dyn["form"], "macs_all_blocks": dyn["macs"]["worst"],
                 "forms": {f: {"measured_mean_ms": v["measured_ms"]["mean"], "measured_p99_ms": v["measured_ms"]["p99"],
                               "predicted_mean_ms": v["predicted"]["expected_ms"],
                               "prediction_error": v["prediction_error"],
                               "every_block_measured_mean_ms": v["worst_case_measured_ms"]["mean"]}
                           for f, v in dyn["forms"].items()},
                 "worst_case_measured_mean_ms": dyn["worst_case_measured_ms"]["mean"],
                 "worst_case_predicted_ms": dyn["predicted"]["worst_case_ms"], "block_rates": dyn["block_rates"],
                 "gate_ms": dyn["gate_ms"], "prediction_error": dyn["prediction_error"],
                 "export_check": dyn["export_check"]})]
    out = {
        "created_utc": utc_now(),
        "settings": {"model": "resnet32", "dataset": "fashion-mnist", "train_subset": args.train_subset,
                     "baseline_epochs": args.epochs, "static_budgets": args.budgets,
                     "recover_epochs": args.recover_epochs,
                     "gate_epochs": args.gate_epochs, "rl_epochs": args.rl_epochs, "rl_weights": args.rl_weights,
                     "inputs": args.inputs, "iters": args.iters, "protocol": "at most 1 point of val top-1 lost",
                     "table": {"granularity": 8, "iters": 100, "rounds": 2, "calibrate": 12}},
        "device": dyn["device"], "baseline_val_top1": base_val, "rows": rows,
        "static_compare": {"rows": cmp["rows"], "baseline": cmp["baseline"], "noise": cmp["noise"]},
        "dynamic_candidates": candidates, "chosen": chosen, "seed": SEED_CIFAR100,
        "per_input_top1": {k: v["top1"] for k, v in per_input.items()},
        "wall_s": {**times, "total": round(time.monotonic() - t0, 1)},
    }
    write_json(ROOT / "bench" / "results" / "static_dynamic.json", out)
    print(json.dumps({"rows": rows, "wall_s": out["wall_s"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
