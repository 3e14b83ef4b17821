"""Every pruning method at latency budgets 0.5 and 0.3 on Fashion-MNIST with resnet20, judged by latency measured on
this machine (ONNX Runtime, 1 thread): `host compare`, as a user runs it.

Steps (each resumable: rerun the script and finished steps are reused from --work):
  1. `host train resnet20` on a stratified subset of Fashion-MNIST's training images;
  2. `host table build` of a local ONNX Runtime table for resnet20 (granularity 4, calibrated: on a grid of 8 the
     narrowest network is predicted at 32% of the unpruned one, so a 0.3 budget is out of reach);
  3. `host compare` of every method at both budgets, the same recovery (fine-tuning) for all, every network measured
     side by side in one session;
  4. a second `host compare` of uniform, magnitude and taylor with latency-aware ranking (`--rank per-ms`);
  5. a third of uniform and magnitude with as many more fine-tuning epochs as the training-time methods train.

Writes bench/results/methods.json (the settings, the compare.json rows and the wall times) and methods.png (the
Pareto plot). Needs Debian's dataset-fashion-mnist. About an hour on a 2-core CPU with the defaults below.

    python bench/methods.py [--work DIR] [--train-subset N] [--epochs E]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from _steps import host
from edgeshrink.device.provenance import utc_now

ROOT = Path(__file__).resolve().parents[1]
METHODS = "netadapt,uniform,magnitude,taylor,slimming,swd,morphnet"
# NetAdapt in steps of 8% of the unpruned latency, each proposal fine-tuned for 20 steps and judged on 1,000 val
# images: about 20 minutes for both budgets here (a fifth of the steps would leave one group that can reach them)
NETADAPT = ["--init-reduction", "0.08", "--decay", "1.0", "--short-term-steps", "20", "--short-term-val", "1000"]



def main() -> int:
    from edgeshrink.host.io import write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="runs/bench_methods")
    ap.add_argument("--train-subset", type=int, default=5000, help="training images (stratified; default 5000)")
    ap.add_argument("--epochs", type=int, default=15, help="baseline training epochs (default 15)")
    ap.add_argument("--recover-epochs", type=int, default=5, help="fine-tuning epochs after every method (default 5)")
    ap.add_argument("--method-epochs", type=int, default=3,
                    help="the training methods' own epochs (slimming, swd; morphnet per round: a third)")
    ap.add_argument("--bench-seconds", type=float, default=90.0)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    times = {}
    ckpt, table = work / "base" / "model.pt", work / "table.json"
    data = ["--dataset", "fashion-mnist", "--train-subset", str(args.train_subset)]
    if not ckpt.exists():
        t = time.monotonic()
        host("train", "--model", "resnet20", *data, "--epochs", str(args.epochs), "--lr", "0.1", "--batch-size", "64",
             "--out", str(work / "base"))
        times["train_s"] = round(time.monotonic() - t, 1)
    if not table.exists():
        t = time.monotonic()
        resume = ["--resume"] if Path(str(table) + ".build").is_dir() else []
        host("table", "build", "--model", "resnet20", "--granularity", "4", "--jobs", "2", "--iters", "100",
             "--rounds", "2", "--calibrate", "20", *resume, "--out-table", str(table))
        times["table_s"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    me = args.method_epochs
    host("compare", "--methods", METHODS, "--budgets", "0.5,0.3", "--table", str(table), "--checkpoint",
         str(ckpt), *data, "--recover", "fine-tune", "--long-term-epochs", str(args.recover_epochs),
         "--method-epochs", str(me), *NETADAPT,
         "--bench-seconds", str(args.bench_seconds), "--out", str(work / "compare"))
    times["compare_s"] = round(time.monotonic() - t, 1)
    # latency-aware ranking (score per ms of marginal latency) beside uniform, measured side by side in its own session
    t = time.monotonic()
    host("compare", "--methods", "uniform,magnitude,taylor", "--budgets", "0.5,0.3", "--table", str(table),
         "--checkpoint", str(ckpt), *data, "--recover", "fine-tune", "--long-term-epochs", str(args.recover_epochs),
         "--rank", "per-ms", "--bench-seconds", str(args.bench_seconds), "--out", str(work / "compare_per_ms"))
    times["compare_per_ms_s"] = round(time.monotonic() - t, 1)
    per_ms = json.loads((work / "compare_per_ms" / "compare.json").read_text())
    # control: the training-time methods (slimming, swd, morphnet) train method-epochs more than the one-shot ones;
    # uniform and magnitude with that many more fine-tuning epochs say how much of their lead is the extra training
    t = time.monotonic()
    host("compare", "--methods", "uniform,magnitude", "--budgets", "0.5,0.3", "--table", str(table),
         "--checkpoint", str(ckpt), *data, "--recover", "fine-tune",
         "--long-term-epochs", str(args.recover_epochs + me), "--bench-seconds", str(args.bench_seconds),
         "--out", str(work / "compare_control"))
    times["compare_control_s"] = round(time.monotonic() - t, 1)
    control = json.loads((work / "compare_control" / "compare.json").read_text())
    result = json.loads((work / "compare" / "compare.json").read_text())
    base = result["baseline"]
    rows = [r for r in result["rows"] if not r.get("error")]
    uniform = {r["budget"]: r for r in rows if r["method"] == "uniform"}
    verdict = []
    for r in rows:
        u = uniform.get(r["budget"])
        if u is None or r["method"] == "uniform":
            continue
        verdict.append({"method": r["method"], "budget": r["budget"],
                        "top1_minus_uniform": r["top1"] - u["top1"],
                        "latency_ratio_minus_uniform": r["ratio_measured_median"] - u["ratio_measured_median"]})
    out = {
        "created_utc": utc_now(), "settings": {
            "model": "resnet20", "dataset": "fashion-mnist", "train_subset": args.train_subset,
            "baseline_epochs": args.epochs, "recover": "fine-tune", "recover_epochs": args.recover_epochs,
            "method_epochs": me, "netadapt": NETADAPT,
            "table": {"granularity": 4, "iters": 100, "rounds": 2, "calibrate": 20},
            "bench_seconds": args.bench_seconds},
        "device": result["device"], "backend": result["backend"], "threads": result["threads"],
        "baseline": base, "rows": result["rows"], "noise": result["noise"], "against_uniform": verdict,
        "per_ms": {"note": "magnitude and taylor ranked by score per ms of marginal latency (--rank per-ms), beside "
                           "uniform, in a second measuring session", "baseline": per_ms["baseline"],
                   "rows": per_ms["rows"], "noise": per_ms["noise"]},
        "control": {"note": f"uniform and magnitude with {args.recover_epochs + me} fine-tuning epochs (the recovery "
                            f"plus the {me} method epochs swd and slimming train; morphnet trains 2 x {me}), in a "
                            "third measuring session", "baseline": control["baseline"], "rows": control["rows"],
                    "noise": control["noise"]},
        "checks": {"every_method_meets_budget_plus_0.05": all(r["meets_budget"] for r in rows + per_ms["rows"]
                                                                  + control["rows"]),
                   "no_method_failed": len(rows) == len(result["rows"]) and
                   not any(r.get("error") for r in per_ms["rows"])},
        "wall_s": {**times, "total": round(time.monotonic() - t0, 1)},
    }
    write_json(ROOT / "bench" / "results" / "methods.json", out)
    shutil.copyfile(work / "compare" / "pareto.png", ROOT / "bench" / "results" / "methods.png")
    shutil.copyfile(work / "compare_per_ms" / "pareto.png", ROOT / "bench" / "results" / "methods_per_ms.png")
    print(json.dumps({"checks": out["checks"], "wall_s": out["wall_s"], "against_uniform": verdict}, indent=1))
    return 0 if all(out["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
