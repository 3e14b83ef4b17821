"""``host bench``: measure model files on a device (interleaved rounds), with power."""

from __future__ import annotations

import json
from pathlib import Path

from edgeshrink.device.options import add_measure_options
from edgeshrink.device.options import forward as forward_measure_options


def register(sub) -> None:
    bn = sub.add_parser("bench", help="measure model files on a device (interleaved rounds)")
    bn.add_argument("models", nargs="+", help="model files (.onnx, .tflite) on this machine")
    bn.add_argument("--device", default="local", help="local or ssh://[user@]host[:port][?python=PY&root=DIR]")
    bn.add_argument("--trust-new-host", action="store_true", help="ssh://: accept and record an unknown host key")
    bn.add_argument("--backend", default="ort", help="device runner: ort, ort-cuda, ort-tensorrt, litert, tensorrt, "
                                                     "trtexec, benchmark_model (see `device backends` on the board)")
    bn.add_argument("--threads", type=int, default=1)
    bn.add_argument("--warmup", type=int, default=50, help="untimed runs before timing")
    bn.add_argument("--iters", type=int, default=300, help="timed runs per model per round")
    bn.add_argument("--rounds", type=int, default=1, help="interleaved rounds (A B A B ...)")
    add_measure_options(bn)  # the device's own measurement options, forwarded to it
    bn.add_argument("--calib-cache", help="int8 calibration cache for tensorrt/trtexec (from host export --format trt)")
    bn.add_argument("--out", help="folder for results.json and the power / tool logs pulled back from the device")
    bn.add_argument("--json", action="store_true")
    bn.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from edgeshrink.host import ui
    from edgeshrink.host.bench import bench_on_device
    from edgeshrink.host.io import write_json

    extra = forward_measure_options(args)
    res = bench_on_device(args.models, device=args.device, backend=args.backend, threads=args.threads,
                          warmup=args.warmup, iters=args.iters, rounds=args.rounds, device_args=extra,
                          out_dir=args.out, trust_new_host=args.trust_new_host, calib_cache=args.calib_cache,
                          on_line=lambda ln: ui.log(ln) if ln.startswith("[") else None)
    if args.out:
        write_json(Path(args.out) / "results.json", res)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    from rich.table import Table

    def f(v, p=4):
        return "-" if v is None else f"{v:.{p}f}"

    t = Table(title=f"{args.device} | {args.backend} | {args.threads} thread(s) | {res['device']['cpu']}")
    cols = ["model", "median ms", "mean ms", "p90 ms", "p99 ms", "cv", "rounds' medians ms"]
    if args.power:
        cols += ["idle mW", "mean mW", "mJ/inference", "mJ above idle"]
    for c in cols + ["throttled"]:
        t.add_column(c)
    for path, m in res["models"].items():
        s = m["latency_ms"]
        row = [path, f(m["median_ms"]), f(s["mean"]), f(s["p90"]), f(s["p99"]), f(s["cv"], 3),
               ", ".join(f"{v:.4f}" for v in m["round_medians_ms"])]
        if args.power:
            pw = m.get("power") or {}
            row += [f(pw.get("idle_power_mw"), 0), f(pw.get("mean_power_mw"), 0),
                    f(pw.get("energy_per_inference_mj"), 4), f(pw.get("energy_above_idle_per_inference_mj"), 4)]
        t.add_row(*row, "yes: " + "; ".join(m["throttle_evidence"]) if m["throttled"] else "no")
    ui.out.print(t)
    if args.out:
        print(f"results: {Path(args.out) / 'results.json'}" + (f" (+{len(res['pulled'])} log files)" if res["pulled"] else ""))
    return 0
