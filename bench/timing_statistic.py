"""Which statistic of a network's timed runs repeats: the median, the mean, low quantiles or the minimum.

1. A tight loop: the unpruned resnet20 (ONNX Runtime CPU, 1 thread) run back to back for ``--loop-s`` seconds,
   every run timed; the distribution, and per half-second window the median and the share of runs in the fast
   state (below the midpoint between the 5th percentile and the median).
2. Repeatability: ``--networks`` random pruned resnet20 variants (grid 8) timed side by side the way whole
   networks are timed for tables (``device bench --interleave``: 150 round-robin bursts of 4 runs over 5
   loadings), the whole measurement ``--runs`` times. For each statistic and each pair of runs, the per-network
   ratio (run j / run i) around the pair's common ratio: its std and its worst case, and the common ratio (how
   far the machine's speed moved between the runs by that statistic).

Writes bench/results/timing_statistic.json and timing_statistic.png.

    python bench/timing_statistic.py [--networks 60] [--runs 3] [--loop-s 20]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

from edgeshrink.device.provenance import utc_now

ROOT = Path(__file__).resolve().parents[1]

# name -> (function of the samples in ms, what it is)
STATISTICS = {
    "median": (lambda a, np: float(np.median(a)), "median run"),
    "mean": (lambda a, np: float(np.mean(a)), "mean run"),
    "p25": (lambda a, np: float(np.quantile(a, 0.25)), "25th percentile"),
    "p10": (lambda a, np: float(np.quantile(a, 0.10)), "10th percentile"),
    "p05": (lambda a, np: float(np.quantile(a, 0.05)), "5th percentile"),
    "p01": (lambda a, np: float(np.quantile(a, 0.01)), "1st percentile"),
    "min": (lambda a, np: float(np.min(a)), "fastest run"),
}


def tight_loop(onnx_path: str, seconds: float) -> dict:
    import numpy as np

    from edgeshrink.device.bench import _first_inference
    from edgeshrink.device.runners import get_runner

    with get_runner("ort")(onnx_path, threads=1) as r:
        feeds, _ = _first_inference(r, 0)
        for _ in range(50):
            r.infer(feeds)
        t, at = [], []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter_ns()
            r.infer(feeds)
            t.append((time.perf_counter_ns() - t0) / 1e6)
            at.append(t0 / 1e9)
    t, at = np.array(t), np.array(at) - at[0]
    split = (np.quantile(t, 0.05) + np.median(t)) / 2
    win = (at / 0.5).astype(int)
    windows = [(float(np.median(t[win == w])), float(np.mean(t[win == w] < split))) for w in range(win.max())]
    return {"runs": int(t.size), "seconds": seconds,
            "quantiles_ms": {f"p{int(q * 100):02d}": float(np.quantile(t, q)) for q in (0, .01, .05, .1, .25, .5, .75,
                                                                                      .9, .99)},
            "fast_state_below_ms": float(split),
            "half_second_windows": {"median_ms": [w[0] for w in windows], "fast_share": [w[1] for w in windows]},
            "samples_ms": t.round(5).tolist()}


def repeatability(paths, runs: int, rounds: int, iters: int, loads: int, log) -> dict:
    import numpy as np

    from edgeshrink.device.bench import bench_interleaved

    samples = []  # runs x networks
    for i in range(runs):
        t0 = time.monotonic()
        recs = bench_interleaved(paths, rounds, warmup=10, iters=iters, seed=i, loads=loads, keep_samples=True)
        samples.append([np.array(r["samples_ms"]) for r in recs])
        log(f"run {i + 1}/{runs}: {time.monotonic() - t0:.0f} s")
    out = {}
    for name, (f, what) in STATISTICS.items():
        v = np.array([[f(a, np) for a in run] for run in samples])
        pairs = []
        for i in range(runs):
            for j in range(i + 1, runs):
                ratio = v[j] / v[i]
                common = float(np.median(ratio))
                dev = ratio / common - 1
                pairs.append({"runs": [i, j], "std": float(dev.std()), "max_abs": float(np.abs(dev).max()),
                              "common_ratio": common})
        out[name] = {"what": what, "pairs": pairs, "mean_std": float(np.mean([p["std"] for p in pairs])),
                     "worst": float(max(p["max_abs"] for p in pairs)),
                     "largest_speed_move": float(max(abs(p["common_ratio"] - 1) for p in pairs))}
    return out


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from edgeshrink.host.io import atomic_path

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    loop = result["tight_loop"]
    t = np.array(loop["samples_ms"])
    a.hist(t, bins=80, range=(np.quantile(t, 0.001), np.quantile(t, 0.995)), color="#4c72b0")
    a.axvline(loop["fast_state_below_ms"], color="grey", ls="--", lw=1)
    a.set_xlabel("resnet20, one run (ms)")
    a.set_ylabel("runs")
    a.set_title(f"tight loop, {loop['seconds']:.0f} s, {loop['runs']} runs", fontsize=9)
    rep = result["repeatability"]
    names = list(rep)
    x = np.arange(len(names))
    b.bar(x - 0.2, [rep[n]["mean_std"] * 100 for n in names], 0.4, label="per-network std")
    b.bar(x + 0.2, [rep[n]["worst"] * 100 for n in names], 0.4, label="worst network")
    b.set_xticks(x, names)
    b.set_ylabel("run-to-run difference (%)")
    b.set_title(f"{result['networks']} resnet20 variants, {result['runs']} runs of {result['rounds']}x"
                f"{result['iters']} over {result['loads']} loadings", fontsize=9)
    b.legend(fontsize=8)
    fig.suptitle(f"{result['cpu']} | {result['runtime']} | 1 thread", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), format="png", dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=60)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--loop-s", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--loads", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "timing_statistic.json"))
    args = ap.parse_args()
    if args.runs < 2 or args.networks < 3:
        ap.error("--runs must be >= 2 and --networks >= 3")

    from edgeshrink import models
    import onnxruntime
    from edgeshrink.device.sysinfo import cpu_model
    from edgeshrink.host.io import write_json
    from edgeshrink.host.latency.networks import export_archs
    from edgeshrink.host.latency.space import build_space
    from edgeshrink.host.latency.networks import sample_widths

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t0 = time.monotonic()
    shape = (1, 3, 32, 32)
    space = build_space(models.create_model("resnet20"), shape)
    archs = [space.full_widths] + sample_widths(space, 8, args.networks - 1, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="edgeshrink-timing-") as tmp:
        names = export_archs("resnet20", 10, shape, archs, tmp, jobs=2)
        paths = [str(Path(tmp) / n) for n in names]
        log(f"tight loop on the unpruned resnet20, {args.loop_s:.0f} s")
        loop = tight_loop(paths[0], args.loop_s)
        log(f"{args.runs} runs of {len(paths)} networks")
        rep = repeatability(paths, args.runs, args.rounds, args.iters, args.loads, log)
    result = {
        "created_utc": utc_now(),
        "cpu": cpu_model() or platform.processor(), "runtime": f"onnxruntime {onnxruntime.__version__}",
        "threads": 1, "model": "resnet20", "networks": len(paths), "runs": args.runs, "rounds": args.rounds,
        "iters": args.iters, "loads": args.loads, "seed": args.seed,
        "tight_loop": loop, "repeatability": rep, "wall_s": round(time.monotonic() - t0, 1),
    }
    write_json(args.out, result)
    plot(result, str(Path(args.out).with_suffix(".png")))
    for n, r in rep.items():
        print(f"{n:>7}: per-network std {r['mean_std']:.2%}, worst {r['worst']:.2%}, speed moved up to "
              f"{r['largest_speed_move']:.2%}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
