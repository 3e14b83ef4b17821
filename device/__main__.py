"""``python3 -m device`` / ``device``: the device-side command line (argparse, no third-party CLI libs).

Commands:
  bench MODEL [MODEL ...]   latency statistics of model files with one backend (optionally power and energy);
                            MODEL --inputs X.npz: the dynamic runner, input by input (device/dynamic.py)
  backends                  which backends are available here, and why not
  info                      this device's metadata and thermal state
  optimize MODEL --out FILE ONNX Runtime's optimised graph of MODEL (what this board's runtime fuses)
  power parse-tegrastats LOG  one JSON record per tegrastats sample
  power meters              which power meters are usable here, and why not
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import List, Optional

from . import BENCH_SCHEMA, BENCH_SCHEMA_VERSION, __version__, bench, runners, sysinfo
from .options import add_measure_options


class UsageError(Exception):
    """A user error: printed as one line, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="device", description="edgeshrink device side: benchmarks on this device.")
    p.add_argument("--version", action="version", version=f"edgeshrink-device {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("bench", help="measure inference latency of model files")
    b.add_argument("models", nargs="*", help="model files (.onnx for --backend ort)")
    b.add_argument("--list", metavar="FILE", help="a file with one model path per line (in addition to MODELS)")
    b.add_argument("--backend", default="ort", help="runner (see `device backends`); default ort")
    b.add_argument("--threads", type=int, default=1, help="intra-op threads; default 1")
    b.add_argument("--warmup", type=int, help="untimed inferences before timing; default 50 (10 with --inputs)")
    b.add_argument("--iters", type=int, help="timed inferences; default 300 (with --inputs: per input, default 3)")
    b.add_argument("--seed", type=int, default=0, help="seed of the random input feeds")
    b.add_argument("--json", action="store_true", help="print JSON results on stdout (logs go to stderr)")
    b.add_argument("--jsonl", metavar="FILE",
                   help="append one JSON line per model as it is measured; models already there are skipped (resume)")
    b.add_argument("--quiet", action="store_true", help="no per-model progress on stderr")
    b.add_argument("--interleave", type=int, default=0, metavar="ROUNDS",
                   help="load every model once and time them side by side in ROUNDS round-robin bursts of --iters "
                        "(A B C A B C ...): what a drifting device needs to compare models; no power or self-timed "
                        "backends. With --jsonl the whole list is one unit of resume")
    b.add_argument("--inputs", metavar="X.npz",
                   help="run MODEL (an .onnx file or a staged model's .json manifest: early exits, gated blocks) on "
                        "every input of this set (x: N x C x H x W float32, optional y: labels) one at a time at "
                        "batch 1: the per-input latency distribution, the worst case, exits and block rates; "
                        "--iters runs per input (default here 3), --limit N the first N inputs")
    b.add_argument("--limit", type=int, metavar="N", help="with --inputs: the first N inputs only")
    b.add_argument("--loads", type=int, default=1, metavar="L",
                   help="with --interleave: share the rounds out over L loadings of the whole list (a loaded session "
                        "keeps its own offset while it is loaded; more loadings average it out); default 1")
    add_measure_options(b)
    b.add_argument("--calib-cache", help="int8 calibration cache computed on the host (tensorrt, trtexec)")
    b.add_argument("--log-dir", help="where power logs and vendor-tool output go (default: next to the model)")

    k = sub.add_parser("backends", help="list backends, available or not and why")
    k.add_argument("--json", action="store_true")
    i = sub.add_parser("info", help="print this device's metadata and thermal state")
    i.add_argument("--json", action="store_true")

    o = sub.add_parser("optimize", help="write ONNX Runtime's optimised graph of an .onnx model (what it fuses)")
    o.add_argument("model", help="the .onnx model")
    o.add_argument("--out", required=True, help="where the optimised .onnx graph goes")
    o.add_argument("--threads", type=int, default=1, help="intra-op threads, as the benchmark runs; default 1")

    pw = sub.add_parser("power", help="power tools: parse tegrastats logs, list meters")
    psub = pw.add_subparsers(dest="power_cmd", required=True)
    pt = psub.add_parser("parse-tegrastats", help="parse a tegrastats log: one record per sample")
    pt.add_argument("log", help="tegrastats log file ('-' for stdin)")
    pt.add_argument("--json", action="store_true", help="JSON lines on stdout (default: a summary)")
    pm = psub.add_parser("meters", help="which power meters are usable here")
    pm.add_argument("--json", action="store_true")
    return p


def _power(args: argparse.Namespace) -> int:
    from .power import meters, tegrastats

    if args.power_cmd == "meters":
        avail = meters.available()
        if args.json:
            print(json.dumps({k: {"available": v is None, "reason": v} for k, v in avail.items()}, indent=1))
        else:
            for k, v in avail.items():
                print(f"{k:11s} " + ("available" if v is None else f"missing    {v}"))
        return 0
    try:
        f = sys.stdin if args.log == "-" else open(args.log, "r", encoding="utf-8", errors="replace")
    except OSError as e:
        raise UsageError(f"cannot read tegrastats log {args.log}: {e.strerror}") from None
    with f:
        try:
            recs = tegrastats.parse_log(f)
        except tegrastats.TegrastatsError as e:
            raise UsageError(f"{args.log}: {e}") from None
    if args.json:
        for r in recs:
            sys.stdout.write(json.dumps(r) + "\n")
        return 0
    power = [r["total_power_mw"] for r in recs if r["total_power_mw"] is not None]
    print(f"{len(recs)} samples; rails: {', '.join(recs[0]['rails_mw']) if recs else '-'}; total from "
          f"{'+'.join(recs[0]['total_rails']) if recs and recs[0]['total_rails'] else '-'}")
    if power:
        print(f"total power mW: mean {sum(power) / len(power):.0f}, min {min(power):.0f}, max {max(power):.0f}")
    return 0


def _optimize(args: argparse.Namespace) -> int:
    from .runners.ort import save_optimized

    if not os.path.isfile(args.model):
        raise UsageError(f"model not found: {args.model}")
    if not 1 <= args.threads <= (os.cpu_count() or 1):
        raise UsageError(f"--threads must be from 1 to {os.cpu_count() or 1} here, got {args.threads}")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise UsageError(f"--out {args.out}: folder {out_dir} does not exist")
    tmp = f"{args.out}.part"
    try:
        version = save_optimized(args.model, tmp, args.threads)
        os.replace(tmp, args.out)  # atomically: a reader never sees half a graph
    except (runners.ModelLoadError, runners.BackendUnavailable) as e:
        raise UsageError(str(e)) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(json.dumps({"model": args.model, "optimized": args.out, "runtime": f"onnxruntime {version}",
                      "threads": args.threads}))
    return 0


def _bench_interleaved(args: argparse.Namespace, models: List[str], cpus) -> List[dict]:
    """``bench --interleave``: the whole list side by side; with ``--jsonl`` the list is measured once."""
    done = bench.done_in_jsonl(args.jsonl)
    if done and all(os.path.basename(m) in done for m in models):
        return [{**done[os.path.basename(m)], "reused": True} for m in models]
    if len(set(map(os.path.basename, models))) != len(models):
        raise UsageError("--interleave lists each model once (file names must differ)")
    if args.cool_down_to is not None or args.cool_down_s:
        from . import thermal

        thermal.cool_down(to_c=args.cool_down_to, wait_s=args.cool_down_s)

    def progress(r: int, n: int, _rec: dict) -> None:
        if not args.quiet:
            print(f"[{r}/{n}] round {r} of {len(models)} models", file=sys.stderr, flush=True)

    recs = bench.bench_interleaved(models, args.interleave, backend=args.backend, threads=args.threads,
                                   warmup=args.warmup, iters=args.iters, seed=args.seed, precision=args.precision,
                                   calib_cache=args.calib_cache, log_dir=args.log_dir, cpus=cpus, progress=progress,
                                   loads=args.loads)
    if args.jsonl:
        with open(args.jsonl, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in recs))
            f.flush()
            os.fsync(f.fileno())
    return recs


MAX_RUNS = 10_000_000


def _check_limits(args: argparse.Namespace) -> None:
    """Every number within what this device can do: threads up to its CPU count, times finite and bounded (``inf``
    parses as a float and would wait forever), counts that finish."""
    cpus = os.cpu_count() or 1

    def whole(name: str, lo: int, hi: int) -> None:
        v = getattr(args, name)
        if not lo <= v <= hi:
            raise UsageError(f"--{name.replace('_', '-')} must be from {lo} to {hi} here, got {v}")

    def seconds(name: str, hi: float, lo: float = 0.0) -> None:
        v = getattr(args, name)
        if v is not None and not (math.isfinite(v) and lo <= v <= hi):
            raise UsageError(f"--{name.replace('_', '-')} must be a finite number from {lo:g} to {hi:g}, got {v}")

    whole("threads", 0, cpus)  # 0: the runtime's own choice
    whole("iters", 1, MAX_RUNS)
    whole("warmup", 0, MAX_RUNS)
    whole("power_interval_ms", 10, 60_000)
    whole("interleave", 0, 1_000_000)
    seconds("warmup_s", 3600.0)
    seconds("idle_s", 3600.0)
    seconds("cool_down_s", 86400.0)
    seconds("cool_down_to", 150.0, -50.0)


def _bench_doc(runtime: dict, threads: int, results: List[dict]) -> dict:
    """``device bench --json``'s reply: the schema, this device's metadata and one record per model."""
    return {"schema": BENCH_SCHEMA, "schema_version": BENCH_SCHEMA_VERSION, "tool_version": __version__,
            "device": sysinfo.collect(runtime=runtime["version"], threads=threads), "results": results}


def _bench_inputs(args: argparse.Namespace, models: List[str], runtime: dict) -> int:
    """``bench MODEL --inputs X.npz``: the dynamic runner (device/dynamic.py)."""
    from . import dynamic

    if len(models) != 1:
        raise UsageError("--inputs runs one model (an .onnx file or a staged model's .json manifest)")
    if args.interleave or args.power or args.jsonl:
        raise UsageError("--inputs cannot be combined with --interleave, --power or --jsonl")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    iters, warmup = args.iters, args.warmup

    def progress(done: int, total: int) -> None:
        if not args.quiet:
            print(f"[{done}/{total}] inputs", file=sys.stderr, flush=True)

    try:
        rec = dynamic.bench_dynamic(models[0], args.inputs, backend=args.backend, threads=args.threads, iters=iters,
                                    warmup=warmup, limit=args.limit, progress=progress)
    except (dynamic.DynamicError, runners.ModelLoadError, runners.BackendUnavailable) as e:
        raise UsageError(str(e)) from None
    doc = _bench_doc(runtime, args.threads, [rec])
    if args.json:
        json.dump(doc, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    s, w = rec["latency_ms"], rec["worst_case_ms"]
    print(f"{rec['model']}: {rec['inputs']} inputs one at a time, per-input latency ms: mean {s['mean']:.4f}, "
          f"median {s['median']:.4f}, p90 {s['p90']:.4f}, p99 {s['p99']:.4f}, max {s['max']:.4f}; worst case "
          f"(every step) mean {w['mean']:.4f}")
    if len(rec["exit_histogram"]) > 1:
        print("exits: " + ", ".join(f"{k} {v}" for k, v in rec["exit_histogram"].items()))
    if rec["block_rates"]:
        print("blocks run: " + ", ".join(f"{k} {v:.1%}" for k, v in rec["block_rates"].items()))
    if rec["top1"] is not None:
        print(f"top-1 {rec['top1']:.2%}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    # --inputs runs a few times per input of a whole input set, a plain bench hundreds of times on one feed
    if args.iters is None:
        args.iters = 3 if args.inputs else 300
    if args.warmup is None:
        args.warmup = 10 if args.inputs else 50
    _check_limits(args)
    if args.calib_cache and not os.path.isfile(args.calib_cache):
        raise UsageError(f"calibration cache not found: {args.calib_cache}")
    models = list(args.models)
    if args.list:
        try:
            with open(args.list, encoding="utf-8") as f:
                models += [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise UsageError(f"cannot read model list {args.list}: {e.strerror}") from None
    if not models:
        raise UsageError("no model files given")
    try:
        runtime = runners.backends().get(args.backend)
        if runtime is None:
            raise KeyError(args.backend)
        if not runtime["available"]:
            raise UsageError(f"backend {args.backend!r} is not available here: {runtime['reason']}")
    except KeyError:
        raise UsageError(f"unknown backend {args.backend!r}; known: {', '.join(runners.names())}") from None
    if args.inputs:
        return _bench_inputs(args, models, runtime)

    def progress(i: int, n: int, rec: dict) -> None:
        if not args.quiet:
            lat = rec["latency_ms"]
            key = "median" if lat.get("median") is not None else "mean"
            msg = f"[{i}/{n}] {rec['model']}: {key} {lat[key]:.4f} ms"
            if rec.get("power") and rec["power"].get("mean_power_mw") is not None:
                msg += f", {rec['power']['mean_power_mw']:.0f} mW"
            if rec.get("throttled"):
                msg += " (THROTTLED: " + "; ".join(rec["throttle_evidence"]) + ")"
            print(msg, file=sys.stderr, flush=True)

    try:
        cpus = bench.parse_cpus(args.cpus)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.power:
        from .power import meters

        why = meters.available().get(args.power)
        if args.power != "auto" and why:
            raise UsageError(f"power meter {args.power} is not usable here: {why}")
    if args.log_dir:
        try:
            os.makedirs(args.log_dir, exist_ok=True)
            if not os.access(args.log_dir, os.W_OK | os.X_OK):
                raise PermissionError(13, "not writable")
        except OSError as e:
            raise UsageError(f"--log-dir {args.log_dir}: cannot write there ({e.strerror or e})") from None
    if args.loads != 1 and not 1 <= args.loads <= args.interleave:
        raise UsageError("--loads needs --interleave ROUNDS and 1 <= L <= ROUNDS")
    if args.interleave and (args.power or args.warmup_s):
        raise UsageError("--interleave cannot be combined with --power or --warmup-s (one model at a time)")
    try:
        if args.interleave:
            results = _bench_interleaved(args, models, cpus)
        else:
            results = bench.bench_many(models, jsonl=args.jsonl, progress=progress, backend=args.backend,
                                       threads=args.threads, warmup=args.warmup, iters=args.iters, seed=args.seed,
                                       warmup_s=args.warmup_s, precision=args.precision,
                                       calib_cache=args.calib_cache, power=args.power,
                                       power_interval_ms=args.power_interval_ms, idle_s=args.idle_s,
                                       log_dir=args.log_dir, cool_down_to=args.cool_down_to,
                                       cool_down_s=args.cool_down_s, cpus=cpus)
    except (FileNotFoundError, runners.ModelLoadError) as e:
        raise UsageError(str(e)) from None
    except MemoryError:
        raise UsageError("the model's inputs or outputs do not fit in this device's memory") from None
    except OSError as e:  # e.g. sched_setaffinity with a CPU this board does not have
        raise UsageError(f"{e.strerror or e}") from None
    except RuntimeError as e:  # a power meter or a vendor tool failed
        raise UsageError(str(e)) from None
    doc = _bench_doc(runtime, args.threads, results)
    if args.json:
        json.dump(doc, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        def f(v: object, w: int = 10, p: int = 4) -> str:
            return f"{v:{w}.{p}f}" if isinstance(v, (int, float)) else f"{'-':>{w}s}"

        print(f"{'model':40s} {'median':>10s} {'mean':>10s} {'p90':>10s} {'p99':>10s} {'cv':>6s}   (ms)"
              f" {'power mW':>9s} {'mJ/inf':>8s} throttled")
        for r in results:
            s, pw = r["latency_ms"], r.get("power") or {}
            print(f"{r['model'][:40]:40s} {f(s['median'])} {f(s['mean'])} {f(s['p90'])} {f(s['p99'])} {f(s['cv'], 6, 3)}"
                  f"      {f(pw.get('mean_power_mw'), 9, 0)} {f(pw.get('energy_per_inference_mj'), 8, 3)} "
                  f"{'yes' if r.get('throttled') else 'no'}")
        d = doc["device"]
        print(f"device: {d['hostname']} | {d['cpu']} | {d['runtime']} | threads {d['threads']} | governor {d['governor']}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "bench":
            return _bench(args)
        if args.cmd == "backends":
            info = runners.backends()
            if args.json:
                print(json.dumps(info, indent=1))
            else:
                for name, v in info.items():
                    print(f"{name:16s} " + (f"available  {v['version']}" if v["available"] else f"missing    {v['reason']}"))
            return 0
        if args.cmd == "power":
            return _power(args)
        if args.cmd == "optimize":
            return _optimize(args)
        if args.cmd == "info":
            from . import thermal

            info = sysinfo.collect()
            info["thermal"] = {k: v for k, v in thermal.snapshot().items() if k != "t_s"}
            print(json.dumps(info, indent=1) if args.json else "\n".join(f"{k}: {v}" for k, v in info.items()))
            return 0
    except UsageError as e:
        print(f"device: error: {e}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
