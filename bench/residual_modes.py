"""Coupled vs independent residual pruning on resnet56 (digits), pruned to the same predicted latency.

1. Train resnet56 on digits; build its latency table on the local device (ONNX Runtime CPU, 1 thread,
   granularity 8).
2. Coupled: each stage's residual group (stem/projection + every conv2) keeps half its channels (8/16/32), by
   group filter L2 norm through Torch-Pruning; predicted with the table.
3. Independent: every residual branch keeps its own k channels per stage (by its own L2 norm) within the stage's
   u channels of largest summed norm (a bound on the stream width); the add becomes an index-add (ScatterND). Its prediction: table entries (conv1 / projection / classifier inputs at the
   union width, off the grid, interpolated linearly between grid widths) + the index-adds, measured as
   ONNX micro-models (Transpose, ScatterND add, Transpose, Relu) in one device session with an overhead graph.
   Of all per-stage (u, k) on the grid (u from one grid step below to two above the coupled width, k <= u),
   the one whose prediction is closest to the coupled one without exceeding it.
4. Both fine-tuned identically (same epochs, schedule, seed), test top-1 before and after.
5. Both exported to ONNX, checked against torch in ONNX Runtime (<= 1e-4), measured side by side on the device
   (interleaved rounds).

Writes bench/results/residual_modes.json.

    python bench/residual_modes.py [--epochs 15] [--finetune-epochs 5]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

from edgeshrink.device.provenance import utc_now

ROOT = Path(__file__).resolve().parents[1]


def index_add_onnx(width: int, ca: int, cb, h: int, w: int, path: str, seed: int = 0) -> None:
    """The ONNX graph torch exports for one IndexAdd, written directly with onnx.helper."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    ia = np.sort(rng.permutation(width)[:ca]).reshape(-1, 1).astype(np.int64)
    inits = [numpy_helper.from_array(ia, "ia"),
             numpy_helper.from_array(np.zeros((width, 1, h, w), np.float32), "zeros")]
    nodes = [helper.make_node("Transpose", ["a"], ["at"], perm=[1, 0, 2, 3]),
             helper.make_node("Transpose", ["b"], ["bt"], perm=[1, 0, 2, 3])]
    if cb is None:
        base = "bt"
    else:
        ib = np.sort(rng.permutation(width)[:cb]).reshape(-1, 1).astype(np.int64)
        inits.append(numpy_helper.from_array(ib, "ib"))
        nodes.append(helper.make_node("ScatterND", ["zeros", "ib", "bt"], ["base"], reduction="add"))
        base = "base"
    nodes += [helper.make_node("ScatterND", [base, "ia", "at"], ["z"], reduction="add"),
              helper.make_node("Transpose", ["z"], ["zt"], perm=[1, 0, 2, 3]),
              helper.make_node("Relu", ["zt"], ["y"])]
    g = helper.make_graph(nodes, "index_add",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, ca, h, w]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, width if cb is None else cb, h, w])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width, h, w])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    onnx.checker.check_model(m)
    onnx.save(m, path)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--finetune-epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import onnx
    import torch

    from edgeshrink import models
    from edgeshrink.host.bench import bench_on_device
    from edgeshrink.host.data import load_digits
    from edgeshrink.host.export.onnx import check_onnx, export_onnx
    from edgeshrink.host.io import write_json
    from edgeshrink.host.latency.build import BuildConfig, build_table
    from edgeshrink.host.latency.micro import overhead_model
    from edgeshrink.host.latency.space import build_space, enumerate_keys
    from edgeshrink.host.latency.predict import TablePredictor
    from edgeshrink.host.prune.residual import interpolated_entry_ms, layer_keys, select_independent_keep
    from edgeshrink.models.residual import branch_names, independent_from_dense
    from edgeshrink.host.prune.surgery import prune_group_
    from edgeshrink.host.remote import open_device
    from edgeshrink.host.train import TrainConfig, evaluate, train

    t_start = time.monotonic()
    shape = (1, 3, 32, 32)
    torch.manual_seed(args.seed)
    data = load_digits(seed=args.seed)
    base = models.create_model("resnet56", 10)
    print(f"training resnet56 on digits for {args.epochs} epochs", flush=True)
    train(base, data, TrainConfig(epochs=args.epochs, lr=0.05, batch_size=64, seed=args.seed))
    base_top1 = evaluate(base, data, "test")["top1"]

    print("building the resnet56 latency table (granularity 8)", flush=True)
    space = build_space(models.create_model("resnet56"), shape)
    table = build_table(BuildConfig("resnet56", shape, granularity=8, jobs=2, warmup=20, iters=200, rounds=3),
                        enumerate_keys(space, 8))
    ovh = table.overhead_ms
    pred = TablePredictor.for_model(table, models.create_model("resnet56"))

    # coupled: half of each stage's residual width
    coupled = copy.deepcopy(base)
    k_coupled = {"layer1": 8, "layer2": 16, "layer3": 32}
    for stage, members in branch_names(base).items():
        prune_group_(coupled, members, k_coupled[stage], shape)
    p_coupled = pred.predict_ms(pred.space.widths_from_spec(models.channel_spec(coupled)))

    # independent candidates: per stage a stream (union) width u and a per-branch width k <= u, on the grid;
    # without the union bound, nine branches per stage choosing freely make the stream almost full width
    cands = []
    opts = {}
    for st, kc in k_coupled.items():
        full = {"layer1": 16, "layer2": 32, "layer3": 64}[st]
        opts[st] = [(u, k) for u in (kc - 8, kc, kc + 8, kc + 16) if 8 <= u <= full for k in range(8, u + 1, 8)]
    for (u1, k1), (u2, k2), (u3, k3) in itertools.product(opts["layer1"], opts["layer2"], opts["layer3"]):
        ks = {"layer1": k1, "layer2": k2, "layer3": k3}
        us = {"layer1": u1, "layer2": u2, "layer3": u3}
        net = independent_from_dense(base, select_independent_keep(base, ks, union=us))
        lk = layer_keys(net)
        conv_ms = sum(interpolated_entry_ms(table, k) - ovh for k in lk["layers"])
        cands.append((ks, us, net, conv_ms, lk["index_adds"]))
    shapes = sorted({a for c in cands for a in c[4]}, key=str)
    print(f"measuring {len(shapes)} index-add micro-models", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        names = {}
        for i, s in enumerate(shapes):
            names[s] = f"ia_{i}.onnx"
            index_add_onnx(*s, f"{tmp}/{names[s]}")
        onnx.save(overhead_model(shape, 10), f"{tmp}/overhead.onnx")
        listing = ["overhead.onnx"] + [names[s] for s in shapes]
        with open(f"{tmp}/list.txt", "w") as f:
            f.write("\n".join(f"m/{n}" for n in listing * 3) + "\n")
        with open_device("local") as dev:
            for n in listing:
                dev.put(f"{tmp}/{n}", f"m/{n}")
            dev.put(f"{tmp}/list.txt", "list.txt")
            res = json.loads(dev.run_device(["bench", "--list", "list.txt", "--warmup", "20", "--iters", "200",
                                             "--json", "--quiet"]).stdout)
    per = {}
    for r in res["results"]:
        per.setdefault(r["model"], []).append(r["latency_ms"]["median"])
    med = {k: sorted(v)[len(v) // 2] for k, v in per.items()}
    ia_ms = {s: med[names[s]] - med["overhead.onnx"] for s in shapes}
    scored = []
    for ks, us, net, conv_ms, adds in cands:
        p = ovh + conv_ms + sum(ia_ms[a] for a in adds)
        scored.append((p, ks, us, net, conv_ms, sum(ia_ms[a] for a in adds)))
    fit = [c for c in scored if c[0] <= p_coupled]
    best = max(fit, key=lambda c: c[0]) if fit else min(scored, key=lambda c: c[0])
    p_ind, ks_ind, us_ind, indep, conv_ms, adds_ms = best

    # the same fine-tuning for both
    before = {"coupled": evaluate(coupled, data, "test")["top1"], "independent": evaluate(indep, data, "test")["top1"]}
    ft = TrainConfig(epochs=args.finetune_epochs, lr=0.02, batch_size=64, seed=args.seed)
    for m in (coupled, indep):
        torch.manual_seed(args.seed)
        train(m, data, ft)
    after = {"coupled": evaluate(coupled, data, "test")["top1"], "independent": evaluate(indep, data, "test")["top1"]}

    with tempfile.TemporaryDirectory() as tmp:
        pc, pi = f"{tmp}/coupled.onnx", f"{tmp}/independent.onnx"
        export_onnx(coupled.eval(), shape, pc, slim=True)
        export_onnx(indep.eval(), shape, pi, slim=True)
        try:
            checks = {"coupled": check_onnx(coupled, pc, shape), "independent": check_onnx(indep, pi, shape)}
        except Exception:
            torch.save({"keep": select_independent_keep(base, ks_ind, union=us_ind), "base": base.state_dict(),
                        "state_dict": indep.state_dict()}, "/tmp/failed_independent.pt")
            raise
        scatter = sum(1 for n in onnx.load(pi).graph.node if n.op_type == "ScatterND")
        meas = bench_on_device([pc, pi], device="local", iters=500, rounds=5)
        m_c, m_i = meas["models"][pc]["median_ms"], meas["models"][pi]["median_ms"]

    def params(m):
        return sum(p.numel() for p in m.parameters())

    doc = {
        "created_utc": utc_now(),
        "device": {k: meas["device"].get(k) for k in ("spec", "cpu", "runtime", "threads")},
        "model": "resnet56", "dataset": "digits", "train_epochs": args.epochs, "finetune_epochs": args.finetune_epochs,
        "base_test_top1": base_top1,
        "coupled": {"stage_widths": k_coupled, "predicted_ms": p_coupled, "measured_ms": m_c,
                    "round_medians_ms": meas["models"][pc]["round_medians_ms"], "params": params(coupled),
                    "test_top1_before_finetune": before["coupled"], "test_top1": after["coupled"],
                    "onnx_check": checks["coupled"]},
        "candidates": {"independent_configurations": len(scored), "within_coupled_prediction": len(fit)},
        "independent": {"branch_keep_per_stage": ks_ind, "union_bound_per_stage": us_ind, "union_widths": {k: len(v) for k, v in indep.union.items()},
                        "predicted_ms": p_ind, "predicted_conv_ms": conv_ms + ovh, "predicted_index_add_ms": adds_ms,
                        "measured_ms": m_i, "round_medians_ms": meas["models"][pi]["round_medians_ms"],
                        "params": params(indep), "scatternd_nodes": scatter,
                        "test_top1_before_finetune": before["independent"], "test_top1": after["independent"],
                        "onnx_check": checks["independent"]},
        "ratios": {"predicted_independent_over_coupled": p_ind / p_coupled,
                   "measured_independent_over_coupled": m_i / m_c},
        "index_add_micro_ms": {str(s): v for s, v in ia_ms.items()},
        "table": {"granularity": 8, "entries": len(table.entries), "overhead_ms": ovh},
        "wall_s": round(time.monotonic() - t_start, 1),
    }
    write_json(ROOT / "bench" / "results" / "residual_modes.json", doc)
    print(json.dumps({k: doc[k] for k in ("coupled", "independent", "ratios")}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
