"""resnet20 on digits in every format this machine can run: ONNX fp32 (ONNX Runtime) and TFLite fp32 / fp16 /
int8 (LiteRT), each measured on the local device with its runtime (1 thread, interleaved rounds), with its
test top-1 and file size.

Trains resnet20 on digits (20 epochs, as the demo does) unless --checkpoint is given, exports the four artifacts
with `host export`, measures them side by side with `host bench`, and writes bench/results/formats.json and
bench/results/formats.png.

    python bench/formats.py [--checkpoint runs/demo/base/model.pt]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgeshrink.device.provenance import utc_now

ROOT = Path(__file__).resolve().parents[1]

ARTIFACTS = (("onnx", "fp32", "ort"), ("tflite", "fp32", "litert"), ("tflite", "fp16", "litert"),
             ("tflite", "int8", "litert"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=500)
    args = ap.parse_args()

    from edgeshrink.host.bench import bench_on_device
    from edgeshrink.host.export.artifact import export_artifact
    from edgeshrink.host.io import write_json

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if not ckpt:
            subprocess.run([sys.executable, "-m", "edgeshrink.host.cli", "train", "--model", "resnet20", "--dataset", "digits",
                            "--epochs", "20", "--out", f"{tmp}/base"], check=True)
            ckpt = f"{tmp}/base/model.pt"
        docs = {}
        for fmt, prec, _ in ARTIFACTS:
            docs[(fmt, prec)] = export_artifact({"checkpoint": ckpt, "format": fmt, "precision": prec,
                                                 "input": "1x3x32x32", "out": f"{tmp}/{fmt}_{prec}",
                                                 "dataset": "digits", "calib_samples": 128, "force": True})
        rows = []
        for backend in ("ort", "litert"):
            paths = [f"{tmp}/{f}_{p}/{docs[(f, p)]['file']}" for f, p, b in ARTIFACTS if b == backend]
            res = bench_on_device(paths, device="local", backend=backend, threads=1, iters=args.iters,
                                  rounds=args.rounds)
            for (f, p, b) in [a for a in ARTIFACTS if a[2] == backend]:
                path = f"{tmp}/{f}_{p}/{docs[(f, p)]['file']}"
                m = res["models"][path]
                chk = docs[(f, p)]["check"]
                rows.append({"format": f, "precision": p, "runtime": res["device"]["runtime"], "backend": backend,
                             "median_ms": m["median_ms"], "p90_ms": m["latency_ms"]["p90"],
                             "round_medians_ms": m["round_medians_ms"], "bytes": Path(path).stat().st_size,
                             "test_top1": chk.get("top1"), "check": chk})
        # test top-1 for ONNX / TFLite fp32, which check only against torch: evaluate them on the test split
        import numpy as np
        import onnxruntime as ort

        from edgeshrink.host.data import load_digits
        from edgeshrink.host.export.tflite import TFLiteModel

        data = load_digits(seed=0)
        x, y = data.normalize(data.test.images).numpy(), data.test.labels.numpy()
        for r in rows:
            if r["test_top1"] is None:
                path = f"{tmp}/{r['format']}_{r['precision']}/{docs[(r['format'], r['precision'])]['file']}"
                if r["format"] == "onnx":
                    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
                    logits = np.concatenate([s.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
                else:
                    logits = TFLiteModel(path)(x)
                r["test_top1"] = float((logits.argmax(1) == y).mean() * 100)
        dev = res["device"]
    base = next(r for r in rows if r["format"] == "onnx")
    for r in rows:
        r["latency_vs_onnx_fp32"] = r["median_ms"] / base["median_ms"]
    doc = {"created_utc": utc_now(),
           "device": {k: dev.get(k) for k in ("spec", "hostname", "cpu", "threads")}, "model": "resnet20",
           "dataset": "digits", "rounds": args.rounds, "iters": args.iters, "artifacts": rows,
           "int8_top1_drop_vs_fp32": next(r for r in rows if r["precision"] == "int8")["check"]["top1_drop"],
           "wall_s": round(time.monotonic() - t0, 1)}
    write_json(ROOT / "bench" / "results" / "formats.json", doc)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = [f"{r['format']} {r['precision']}" for r in rows]
    ax.bar(labels, [r["median_ms"] for r in rows], color=["#4c72b0", "#55a868", "#c44e52", "#8172b2"])
    for i, r in enumerate(rows):
        ax.text(i, r["median_ms"], f"{r['test_top1']:.1f}%\n{r['bytes'] / 1024:.0f} KiB", ha="center", va="bottom",
                fontsize=8)
    ax.set_ylabel("median latency (ms), 1 thread")
    ax.set_title(f"resnet20 on digits | {dev.get('cpu')}", fontsize=9)
    ax.set_ylim(0, max(r["median_ms"] for r in rows) * 1.3)
    fig.tight_layout()
    fig.savefig(ROOT / "bench" / "results" / "formats.png", dpi=120)
    print(json.dumps([{k: r[k] for k in ("format", "precision", "median_ms", "test_top1", "bytes")} for r in rows],
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
