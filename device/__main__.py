"""``python3 -m device`` / ``device``: the device-side command line (argparse, no third-party CLI libs).

Commands:
  bench MODEL [MODEL ...]   latency statistics of model files with one backend
  backends                  which backends are available here, and why not
  info                      this device's metadata
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

import device
from device import bench, runners, sysinfo


class UsageError(Exception):
    """A user error: printed as one line, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="device", description="edgeshrink device side: benchmarks on this device.")
    p.add_argument("--version", action="version", version=f"edgeshrink-device {device.__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("bench", help="measure inference latency of model files")
    b.add_argument("models", nargs="*", help="model files (.onnx for --backend ort)")
    b.add_argument("--list", metavar="FILE", help="a file with one model path per line (in addition to MODELS)")
    b.add_argument("--backend", default="ort", help="runner (see `device backends`); default ort")
    b.add_argument("--threads", type=int, default=1, help="intra-op threads; default 1")
    b.add_argument("--warmup", type=int, default=50, help="untimed inferences before timing; default 50")
    b.add_argument("--iters", type=int, default=300, help="timed inferences; default 300")
    b.add_argument("--seed", type=int, default=0, help="seed of the random input feeds")
    b.add_argument("--json", action="store_true", help="print JSON results on stdout (logs go to stderr)")
    b.add_argument("--jsonl", metavar="FILE",
                   help="append one JSON line per model as it is measured; models already there are skipped (resume)")
    b.add_argument("--quiet", action="store_true", help="no per-model progress on stderr")

    k = sub.add_parser("backends", help="list backends, available or not and why")
    k.add_argument("--json", action="store_true")
    i = sub.add_parser("info", help="print this device's metadata")
    i.add_argument("--json", action="store_true")
    return p


def _bench(args: argparse.Namespace) -> int:
    if args.iters < 1 or args.warmup < 0 or args.threads < 0:
        raise UsageError("--iters must be >= 1, --warmup >= 0 and --threads >= 0")
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

    def progress(i: int, n: int, rec: dict) -> None:
        if not args.quiet:
            print(f"[{i}/{n}] {rec['model']}: median {rec['latency_ms']['median']:.4f} ms", file=sys.stderr, flush=True)

    try:
        results = bench.bench_many(models, jsonl=args.jsonl, progress=progress, backend=args.backend,
                                   threads=args.threads, warmup=args.warmup, iters=args.iters, seed=args.seed)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    doc = {
        "schema": device.BENCH_SCHEMA,
        "schema_version": device.BENCH_SCHEMA_VERSION,
        "tool_version": device.__version__,
        "device": sysinfo.collect(runtime=runtime["version"], threads=args.threads),
        "results": results,
    }
    if args.json:
        json.dump(doc, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(f"{'model':40s} {'median':>10s} {'mean':>10s} {'p90':>10s} {'p99':>10s} {'cv':>6s}   (ms)")
        for r in results:
            s = r["latency_ms"]
            print(f"{r['model'][:40]:40s} {s['median']:10.4f} {s['mean']:10.4f} {s['p90']:10.4f} {s['p99']:10.4f} {s['cv']:6.3f}")
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
                    print(f"{name:10s} " + (f"available  {v['version']}" if v["available"] else f"missing    {v['reason']}"))
            return 0
        if args.cmd == "info":
            info = sysinfo.collect()
            print(json.dumps(info, indent=1) if args.json else "\n".join(f"{k}: {v}" for k, v in info.items()))
            return 0
    except UsageError as e:
        print(f"device: error: {e}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
