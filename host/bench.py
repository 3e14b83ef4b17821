"""Measure whole models on a device, side by side.

Latency on a shared CPU drifts by several percent between runs, so models that are compared are measured
in one device session, interleaved in rounds (A B A B ...), and each model's latency is the median of its
round medians.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Dict, List, Optional, Sequence

from host.errors import DeviceError
from host.remote import open_device


def bench_on_device(paths: Sequence[str], device: str = "local", backend: str = "ort", threads: int = 1,
                    warmup: int = 50, iters: int = 300, rounds: int = 3,
                    on_line: Optional[Callable[[str], None]] = None) -> Dict[str, object]:
    """Benchmark model files on ``device`` in ``rounds`` interleaved rounds.

    Returns:
        ``{"device": metadata, "backend", "threads", "rounds", "models": {path: {"latency_ms": stats of the
        round with the median median, "round_medians_ms": [...], "median_ms": float, "init_ms",
        "first_inference_ms", "sha256"}}}``.

    Raises:
        DeviceError: the device side failed or a file is missing.
    """
    for p in paths:
        if not os.path.isfile(p):
            raise DeviceError(f"model file not found: {p}")
    names = [f"m{i}_{os.path.basename(p)}" for i, p in enumerate(paths)]
    order = [n for _ in range(rounds) for n in names]
    with open_device(device) as dev:
        for p, n in zip(paths, names):
            dev.put(p, f"artifacts/{n}")
        res = dev.run_device(["bench", *[f"artifacts/{n}" for n in order], "--backend", backend, "--threads",
                              str(threads), "--warmup", str(warmup), "--iters", str(iters), "--json"],
                             on_stderr_line=on_line)
    doc = json.loads(res.stdout)
    per: Dict[str, List[dict]] = {n: [] for n in names}
    for rec in doc["results"]:
        per[rec["model"]].append(rec)
    out = {}
    for p, n in zip(paths, names):
        recs = sorted(per[n], key=lambda r: r["latency_ms"]["median"])
        mid = recs[len(recs) // 2]
        out[p] = {"median_ms": mid["latency_ms"]["median"], "latency_ms": mid["latency_ms"],
                  "round_medians_ms": [r["latency_ms"]["median"] for r in per[n]],
                  "init_ms": mid["init_ms"], "first_inference_ms": mid["first_inference_ms"], "sha256": mid["sha256"]}
    dev_meta = dict(doc["device"])
    dev_meta["spec"] = device
    return {"device": dev_meta, "backend": backend, "threads": threads, "rounds": rounds, "warmup": warmup,
            "iters": iters, "models": out}
