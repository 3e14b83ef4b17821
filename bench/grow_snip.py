"""Growing networks with internal classifiers, SNIP and early exit on Fashion-MNIST, judged by latency measured on this
machine (ONNX Runtime, 1 thread, batch 1).

Steps (each resumable: rerun the script and finished steps are reused from --work):
  1. `host train cells_iterative` (11 cells of 16 channels, internal classifiers after cells 3, 6 and 9, grown block
     by block at --grow-epochs, the SDN loss) on a stratified subset of the training images: unpruned, and with SNIP
     (skip_layer: each block pruned when it is added) at each keep ratio, unstructured (masks) and structured
     (channels removed);
  2. `host table build` of a local table for cells_iterative (granularity 4, calibrated);
  3. one measuring session: every network's ONNX model timed side by side in round-robin bursts, then each run one
     input at a time on the same test inputs;
  4. early exit on the unpruned network: what leaving at each classifier costs (measured one input at a time), then
     common thresholds q deployed and measured on the test inputs (the curve), the thresholds `host exits` picks at
     each budget, and stages against one model per exit at the same thresholds;
  5. `host compare` of snip (structured, to a latency budget), magnitude and uniform at --budgets with the same
     fine-tuning, which adds the early-exit network at the same budgets (one input at a time, mean and p99).

Writes bench/results/grow_snip.json and bench/results/grow_snip.png. Needs Debian's dataset-fashion-mnist. About an
hour on a 2-core CPU with the defaults below (each epoch also evaluates the 5,000 val images).

    python bench/grow_snip.py [--work DIR] [--train-subset N] [--epochs E]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from _steps import Steps, metrics
from edgeshrink.device.provenance import utc_now

ROOT = Path(__file__).resolve().parents[1]
SEED_CIFAR10 = {"note": "the seed's CIFAR-10 figures: an 11-cell network of 16 channels (169,392 parameters), "
                        "final-exit accuracy (unstructured SNIP masks; FLOPs and latency not reported)",
                "unpruned": 81.97, "keep_0.9": 81.74, "keep_0.5": 78.63, "keep_0.1": 46.43}
MODEL = "cells_iterative"




def main() -> int:
    from edgeshrink.host.io import write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="runs/bench_grow_snip")
    ap.add_argument("--train-subset", type=int, default=4000, help="training images (stratified; default 4000)")
    ap.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    ap.add_argument("--grow-epochs", default="2,4,6", help="epochs after which a block is added (default 2,4,6)")
    ap.add_argument("--keeps", default="0.9,0.5,0.1", help="SNIP keep ratios, each for every block")
    ap.add_argument("--budgets", default="0.75,0.5", help="host compare's budgets and early exit's")
    ap.add_argument("--recover-epochs", type=int, default=2, help="fine-tuning after pruning in host compare "
                                                                  "(default 2)")
    ap.add_argument("--inputs", type=int, default=2000, help="test images run one at a time (default 2000)")
    ap.add_argument("--iters", type=int, default=3, help="timed runs per input (default 3)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    data = ["--dataset", "fashion-mnist", "--train-subset", str(args.train_subset)]
    train = [*data, "--epochs", str(args.epochs), "--lr", "0.1", "--batch-size", "64", "--grow-epochs",
             args.grow_epochs]
    table = work / "table.json"

    step = Steps()
    times = step.times
    keeps = [float(v) for v in args.keeps.split(",")]
    runs = {"unpruned": work / "unpruned"}
    step("train_unpruned_s", runs["unpruned"] / "model.pt", "train", "--model", MODEL, *train, "--out",
         str(runs["unpruned"]))
    for form in ("unstructured", "structured"):
        for k in keeps:
            name = f"{form}_keep{k:g}"
            runs[name] = work / name
            step(f"train_{name}_s", runs[name] / "model.pt", "train", "--model", MODEL, *train, "--keep",
                 ",".join([f"{k:g}"] * 4), "--prune-policy", "skip_layer", "--snip-form", form, "--out",
                 str(runs[name]))
    resume = ["--resume"] if Path(str(table) + ".build").is_dir() else []
    step("table_s", table, "table", "build", "--model", MODEL, "--granularity", "4", "--jobs", "2", "--iters", "100",
         "--rounds", "2", "--calibrate", "12", *resume, "--out-table", str(table))

    # 3. one measuring session
    from edgeshrink.host.bench import bench_inputs_on_device, bench_on_device
    from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint
    from edgeshrink.host.data import export_inputs, load_dataset
    from edgeshrink.host.export.onnx import export_onnx
    from edgeshrink.host.latency.table import load_table

    tab = load_table(str(table))
    fm = load_dataset("fashion-mnist", train_subset=args.train_subset)
    inputs = str(work / "test_inputs.npz")
    export_inputs(fm, "test", inputs, args.inputs)
    nets = {}
    for name, folder in runs.items():
        m = model_from_checkpoint(load_checkpoint(str(folder / "model.pt")))
        onnx = str(folder / "full.onnx")
        export_onnx(m, (1, 3, 32, 32), onnx)
        nets[name] = {"model": m, "onnx": onnx}
    t = time.monotonic()
    burst = bench_on_device([v["onnx"] for v in nets.values()], backend=tab.backend, threads=tab.threads, iters=4,
                            rounds=300, interleave=True, loads=5)
    per_input = {n: bench_inputs_on_device(v["onnx"], inputs, backend=tab.backend, threads=tab.threads,
                                           iters=args.iters) for n, v in nets.items()}
    times["measure_s"] = round(time.monotonic() - t, 1)
    rows = []
    for name, v in nets.items():
        m, mt = v["model"], metrics(runs[name])
        b = burst["models"][v["onnx"]]
        pi = per_input[name]["latency_ms"]
        import torch

        convs = [mod.weight for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
        params = sum(p.numel() for p in m.parameters())
        nonzero = params - sum(int((w == 0).sum()) for w in convs)
        ex = mt["exits"]
        rows.append({"network": name, "form": None if name == "unpruned" else name.split("_")[0],
                     "keep": None if name == "unpruned" else float(name.split("keep")[1]),
                     "final_exit_test_top1": ex["test_top1"][-1], "test_top1_per_exit": ex["test_top1"],
                     "val_top1_per_exit": ex["val_top1"], "params": params, "nonzero_params": nonzero,
                     "sparsity_conv": ex.get("sparsity", {}).get("total"), "channels": ex.get("widths"),
                     "burst_median_ms": b["median_ms"], "burst_min_ms": b.get("min_ms"),
                     "per_input_mean_ms": pi["mean"], "per_input_p99_ms": pi["p99"],
                     "ratio_burst_median": b["median_ms"] / burst["models"][nets["unpruned"]["onnx"]]["median_ms"],
                     "grown_at": ex.get("grown_at"), "train_wall_s": mt["wall_s"]})

    # 4. early exit on the unpruned network
    from edgeshrink.host.dynamic.exits import ExitDeployment, export_per_exit, outcome, write_manifest

    t = time.monotonic()
    ee_dir = work / "early_exit"
    shutil.rmtree(ee_dir, ignore_errors=True)
    base = nets["unpruned"]["model"]
    dep = ExitDeployment(base, fm, tab, str(ee_dir), "local", cost_inputs=300, iters=args.iters)
    curve = []
    for q in (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999):
        d = dep.deploy([q] * (base.active - 1), name=f"q{q:g}.json", limit=args.inputs)
        m = d["measured"]
        curve.append({"q": q, "test_top1": 100 * m["top1"], "measured_mean_ms": m["latency_ms"]["mean"],
                      "measured_p99_ms": m["latency_ms"]["p99"], "expected_mean_ms": d["expected"]["mean_ms"],
                      "predicted_mean_ms": d["predicted_mean_ms"], "exit_histogram": m["exit_histogram"],
                      "exit_top1": m["exit_top1"], "ties": d["check"]["ties"]})
    full = dep.full_ms["mean"]
    chosen = []
    for b in [float(v) for v in args.budgets.split(",")]:
        c = dep.choose(b * full)
        d = dep.deploy(c["thresholds"], name=f"b{b:g}.json", limit=args.inputs)
        m = d["measured"]
        chosen.append({"budget": b, "budget_ms": b * full, "thresholds": c["thresholds"], "val_top1": 100 * c["top1"],
                       "val_expected_mean_ms": c["mean_ms"], "test_top1": 100 * m["top1"],
                       "measured_mean_ms": m["latency_ms"]["mean"], "measured_p99_ms": m["latency_ms"]["p99"],
                       "ratio_to_full": m["latency_ms"]["mean"] / full, "predicted_mean_ms": d["predicted_mean_ms"],
                       "exit_histogram": m["exit_histogram"]})
    # the alternative deployment: one model per exit from the input (the prefix recomputed), same thresholds
    alt_dir = ee_dir / "per_exit"
    steps = export_per_exit(base, (1, 3, 32, 32), str(alt_dir))
    th = chosen[0]["thresholds"]
    man = write_manifest(str(alt_dir), steps, th)
    alt = bench_inputs_on_device(man, inputs, backend=tab.backend, threads=tab.threads, iters=args.iters)
    stages = bench_inputs_on_device(str(ee_dir / "staged" / f"b{chosen[0]['budget']:g}.json"), inputs,
                                    backend=tab.backend, threads=tab.threads, iters=args.iters)
    forms = {"stages": {"mean_ms": stages["latency_ms"]["mean"], "p99_ms": stages["latency_ms"]["p99"],
                        "worst_case_mean_ms": stages["worst_case_ms"]["mean"]},
             "one_model_per_exit": {"mean_ms": alt["latency_ms"]["mean"], "p99_ms": alt["latency_ms"]["p99"],
                                    "worst_case_mean_ms": alt["worst_case_ms"]["mean"]},
             "thresholds": th, "note": "the same thresholds and inputs, measured one after the other"}
    conf, pred, y = dep.test
    times["early_exit_s"] = round(time.monotonic() - t, 1)

    # 5. host compare with the early-exit network beside the methods
    step("compare_s", work / "compare" / "compare.json", "compare", "--methods", "snip,magnitude,uniform", "--budgets",
         args.budgets, "--table", str(table), "--checkpoint", str(runs["unpruned"] / "model.pt"), *data,
         "--recover", "fine-tune", "--long-term-epochs", str(args.recover_epochs), "--bench-seconds", "30",
         "--out", str(work / "compare"))
    cmp = json.loads((work / "compare" / "compare.json").read_text())

    unpruned = next(r for r in rows if r["network"] == "unpruned")
    plot(rows, curve, chosen, unpruned["per_input_mean_ms"], unpruned["final_exit_test_top1"],
         ROOT / "bench" / "results" / "grow_snip.png")
    out = {
        "created_utc": utc_now(),
        "settings": {"model": MODEL, "dataset": "fashion-mnist", "train_subset": args.train_subset,
                     "epochs": args.epochs, "grow_epochs": args.grow_epochs, "keeps": keeps,
                     "snip": {"policy": "skip_layer", "prune_batch": 128, "same keep ratio for every block": True},
                     "budgets": args.budgets, "recover_epochs": args.recover_epochs, "inputs": args.inputs,
                     "iters": args.iters, "table": {"granularity": 4, "iters": 100, "rounds": 2, "calibrate": 12}},
        "device": burst["device"], "rows": rows,
        "measurement": {"burst": "round-robin bursts of 4 runs, 300 rounds over 5 loadings, side by side",
                        "per_input": f"{args.inputs} test inputs one at a time, median of {args.iters} runs each"},
        "early_exit": {"exits": base.exit_names, "exit_cost_ms_measured": dep.cost_ms,
                       "exit_cost_ms_predicted": dep.predicted["cost_ms"], "full_network_per_input_ms": dep.full_ms,
                       "curve": curve, "chosen": chosen, "deployment_forms": forms,
                       "test_final_exit_top1": 100 * float((pred[:, -1] == y).mean()),
                       "test_oracle_any_exit_top1": 100 * float((pred == y[:, None]).any(1).mean()),
                       "test_at_q0.9_expected": outcome(conf, pred, y, [0.9] * (base.active - 1), dep.cost_ms)},
        "compare": {"baseline": cmp["baseline"], "rows": cmp["rows"], "early_exit": cmp.get("early_exit"),
                    "noise": cmp["noise"]},
        "seed": SEED_CIFAR10,
        "wall_s": {**times, "total": round(time.monotonic() - t0, 1)},
    }
    write_json(ROOT / "bench" / "results" / "grow_snip.json", out)
    print(json.dumps({"rows": rows, "early_exit": out["early_exit"]["chosen"], "forms": forms,
                      "wall_s": out["wall_s"]}, indent=1))
    return 0


def plot(rows, curve, chosen, full_ms, full_top1, path: Path) -> None:
    """Test top-1 over mean latency per input (one at a time): early exit's curve and chosen points, the SNIP
    networks (final exit) and the unpruned one."""
    from edgeshrink.host.latency.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ax.plot([c["measured_mean_ms"] for c in curve], [c["test_top1"] for c in curve], "o-", color="C3",
            label="early exit, common threshold q (measured)")
    for c in curve:
        ax.annotate(f"q={c['q']:g}", (c["measured_mean_ms"], c["test_top1"]), fontsize=6, xytext=(3, -8),
                    textcoords="offset points")
    ax.scatter([c["measured_mean_ms"] for c in chosen], [c["test_top1"] for c in chosen], marker="P", s=90,
               color="C3", label="early exit, host exits at a budget")
    for form, marker, color in (("unstructured", "x", "C0"), ("structured", "D", "C2")):
        pts = [r for r in rows if r["form"] == form]
        ax.scatter([r["per_input_mean_ms"] for r in pts], [r["final_exit_test_top1"] for r in pts], marker=marker,
                   s=50, color=color, label=f"SNIP {form} (final exit)")
        for r in pts:
            ax.annotate(f"{r['keep']:g}", (r["per_input_mean_ms"], r["final_exit_test_top1"]), fontsize=7,
                        xytext=(4, 2), textcoords="offset points")
    ax.scatter([full_ms], [full_top1], marker="*", s=160, color="k", label="unpruned (final exit)")
    ax.set_xlabel("mean latency per input, one at a time (ms)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("cells_iterative on Fashion-MNIST: early exit and SNIP, measured (ONNX Runtime, 1 thread)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    _save(fig, str(path), 120)


if __name__ == "__main__":
    sys.exit(main())
