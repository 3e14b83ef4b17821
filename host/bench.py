"""Measure whole models on a device, side by side.

Latency on a shared CPU drifts by several percent between runs, so models that are compared are measured
in one device session, interleaved in rounds (A B A B ...), and each model's latency is the median of its
round medians.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Dict, List, Optional, Sequence

from edgeshrink.host.errors import DeviceError
from edgeshrink.host.remote import open_device


def _center(rec: Dict[str, object]) -> float:
    """A record's median latency; the mean for tools that report no median (benchmark_model)."""
    lat = rec["latency_ms"]
    return lat["median"] if lat.get("median") is not None else lat["mean"]


def stat_ms(result: Dict[str, object], statistic: str) -> float:
    """One model's latency from :func:`bench_on_device` by ``statistic`` ("median" or "min", see
    :data:`host.latency.table.STATISTICS`).

    Raises:
        DeviceError: the runner reported no such statistic (a self-timed tool without a minimum).
    """
    v = result.get(f"{statistic}_ms")
    if not isinstance(v, (int, float)):
        raise DeviceError(f"the device reported no {statistic} latency for this backend")
    return float(v)


def bench_on_device(paths: Sequence[str], device: str = "local", backend: str = "ort", threads: int = 1,
                    warmup: int = 50, iters: int = 300, rounds: int = 3,
                    on_line: Optional[Callable[[str], None]] = None, trust_new_host: bool = False,
                    device_args: Sequence[str] = (), out_dir: Optional[str] = None,
                    calib_cache: Optional[str] = None, interleave: bool = False, loads: int = 1) -> Dict[str, object]:
    """Benchmark model files on ``device`` in ``rounds`` interleaved rounds.

    Args:
        paths: model files on this machine (copied to the device).
        device: ``local`` or ``ssh://...``.
        device_args: extra ``device bench`` options (``--power tegrastats``, ``--precision fp16``, ...).
        out_dir: where power logs and vendor-tool logs from the device are pulled back to.
        calib_cache: an int8 calibration cache (``host export --format trt --precision int8``) shipped with the
            models and passed to the device's TensorRT runners.
        trust_new_host: see :func:`host.remote.open_device`.
        interleave: load every model once on the device and time the rounds as round-robin bursts
            (``device bench --interleave``; ``median_ms`` is then the median of all samples). Without it each
            round loads each model afresh (what power measurement and self-timed tools need).
        loads: with ``interleave``, the rounds are shared out over this many loadings of the whole list
            (``device bench --loads``): a loaded session keeps its own offset while it is loaded.

    Returns:
        ``{"device": metadata, "backend", "threads", "rounds", "models": {path: {"latency_ms": stats of the
        round with the median median, "round_medians_ms": [...], "round_mins_ms": [...] (each round's fastest run;
        None entries for tools that report no minimum), "load_medians_ms": [...] (interleaved: the median
        of each loading), "median_ms": float, "min_ms": the fastest run
        of all rounds (None for tools that report no minimum), "init_ms",
        "first_inference_ms", "sha256", "power", "throttled", "records"}}, "pulled": [local files]}``.

    Raises:
        DeviceError: the device side failed or a file is missing.
    """
    paths = list(paths)
    for p in paths + ([calib_cache] if calib_cache else []):
        if not os.path.isfile(p):
            raise DeviceError(f"file not found: {p}")
    names = [f"m{i}_{os.path.basename(p)}" for i, p in enumerate(paths)]
    order = names if interleave else [n for _ in range(rounds) for n in names]
    if interleave:
        device_args = [*device_args, "--interleave", str(rounds), *(["--loads", str(loads)] if loads != 1 else [])]
    pulled: List[str] = []
    with open_device(device, trust_new_host=trust_new_host) as dev:
        for p, n in zip(paths, names):
            dev.put(p, f"artifacts/{n}")
        if calib_cache:
            dev.put(calib_cache, "artifacts/calib.cache")
            device_args = [*device_args, "--calib-cache", "artifacts/calib.cache"]
        res = dev.run_device(["bench", *[f"artifacts/{n}" for n in order], "--backend", backend, "--threads",
                              str(threads), "--warmup", str(warmup), "--iters", str(iters), "--log-dir", "logs",
                              *device_args, "--json"], on_stderr_line=on_line)
        doc = json.loads(res.stdout)
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            wanted = set()
            for rec in doc["results"]:
                pw = rec.get("power") or {}
                wanted.update(pw[k] for k in ("log_csv", "log_raw") if pw.get(k))
                if rec.get("tool_command"):
                    wanted.add(f"{rec['model']}.{backend}.log")
            for name in sorted(wanted):
                if dev.exists(f"logs/{name}"):
                    dev.get(f"logs/{name}", os.path.join(out_dir, name))
                    pulled.append(os.path.join(out_dir, name))
    per: Dict[str, List[dict]] = {n: [] for n in names}
    for rec in doc["results"]:
        per[rec["model"]].append(rec)
    out = {}
    for p, n in zip(paths, names):
        recs = sorted(per[n], key=_center)
        mid = recs[len(recs) // 2]
        mins = [r["latency_ms"].get("min") for r in per[n]]
        out[p] = {"median_ms": _center(mid), "latency_ms": mid["latency_ms"],
                  "min_ms": min(mins) if all(isinstance(v, (int, float)) for v in mins) else None,
                  "round_medians_ms": mid.get("round_medians_ms") or [_center(r) for r in per[n]],
                  "round_mins_ms": mid.get("round_mins_ms") or [r["latency_ms"].get("min") for r in per[n]],
                  "load_medians_ms": mid.get("load_medians_ms"),
                  "init_ms": mid["init_ms"], "first_inference_ms": mid["first_inference_ms"], "sha256": mid["sha256"],
                  "power": mid.get("power"), "throttled": any(r.get("throttled") for r in per[n]),
                  "throttle_evidence": sorted({e for r in per[n] for e in r.get("throttle_evidence", [])})}
    dev_meta = dict(doc["device"])
    dev_meta["spec"] = device
    return {"device": dev_meta, "backend": backend, "threads": threads, "rounds": rounds, "interleaved": interleave,
            "loads": loads if interleave else None,
            "warmup": warmup,
            "iters": iters, "device_args": list(device_args), "models": out, "pulled": pulled}
