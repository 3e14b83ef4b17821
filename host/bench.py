"""Measure whole models on a device, side by side.

Latency on a shared CPU drifts by several percent between runs, so models that are compared are measured
in one device session, interleaved in rounds (A B A B ...), and each model's latency is the median of its
round medians.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Dict, List, Optional, Sequence

from edgeshrink.host.checks import mapping, number, sequence, text
from edgeshrink.host.errors import DeviceError
from edgeshrink.host.io import prepare_dir
from edgeshrink.host.remote import open_device


LATENCY_KEYS = ("n", "mean", "median", "p90", "p95", "p99", "min", "max", "std", "cv")


def check_bench_reply(stdout: str, device: str, expected: Sequence[str]) -> Dict[str, object]:
    """Parse and check what ``device bench --json`` printed on ``device`` before anything reads it: a JSON object
    with ``device`` metadata and one ``results`` record per model in ``expected`` (file names), each with its
    latency statistics (finite non-negative numbers or null), timings, throttle verdict and power block.

    Raises:
        DeviceError: not JSON, a missing or wrong-typed field, or a model that was not asked for (the message
            names the device and the field).
    """
    where = f"device {device} replied"
    try:
        doc = json.loads(stdout)
    except ValueError:
        first = (stdout.strip().splitlines() or ["nothing"])[0][:120]
        raise DeviceError(f"{where} with something that is not JSON: {first!r}") from None
    mapping(doc, where, DeviceError)
    mapping(doc.get("device"), f"{where}: device", DeviceError)
    results = sequence(doc.get("results"), f"{where}: results", DeviceError)
    names = set(expected)
    for i, rec in enumerate(results):
        w = f"{where}: result {i}"
        mapping(rec, w, DeviceError)
        model = text(rec.get("model"), f"{w} model", DeviceError)
        if model not in names:
            raise DeviceError(f"{w} is for {model!r}, which was not asked for")
        lat = mapping(rec.get("latency_ms"), f"{w} latency_ms", DeviceError)
        for k in LATENCY_KEYS:
            number(lat.get(k), f"{w} latency_ms {k}", DeviceError, non_negative=True, allow_none=True)
        if lat.get("median") is None and lat.get("mean") is None:
            raise DeviceError(f"{w} latency_ms has neither a median nor a mean")
        for k in ("init_ms", "first_inference_ms"):
            number(rec.get(k), f"{w} {k}", DeviceError, non_negative=True, allow_none=True)
        for k in ("round_medians_ms", "round_mins_ms", "load_medians_ms"):
            if rec.get(k) is not None:
                for v in sequence(rec[k], f"{w} {k}", DeviceError):
                    number(v, f"{w} {k}", DeviceError, non_negative=True, allow_none=True)
        if not isinstance(rec.get("throttled", False), bool):
            raise DeviceError(f"{w} throttled must be true or false")
        for e in sequence(rec.get("throttle_evidence", []), f"{w} throttle_evidence", DeviceError):
            text(e, f"{w} throttle_evidence", DeviceError)
        text(rec.get("sha256", ""), f"{w} sha256", DeviceError)
        if rec.get("power") is not None:
            pw = mapping(rec["power"], f"{w} power", DeviceError)
            for k in ("log_csv", "log_raw"):
                if pw.get(k) is not None:
                    text(pw[k], f"{w} power {k}", DeviceError)
    got = sorted({r["model"] for r in results})
    if got != sorted(names):
        raise DeviceError(f"{where} without results for {', '.join(sorted(names - set(got)))}")
    return doc


def log_names(models: Sequence[str], backend: str) -> Dict[str, str]:
    """The log files the device may write for these models (file names in its ``logs/``), and what each is: the
    power CSV and raw tegrastats log of ``device bench --power``, and a vendor tool's output."""
    out = {}
    for m in models:
        out.update({f"{m}.power.csv": "power log", f"{m}.tegrastats.log": "tegrastats log",
                    f"{m}.{backend}.log": f"{backend} output"})
    return out


def safe_output(out_dir: str, name: str, allowed: Dict[str, str]) -> str:
    """The path in ``out_dir`` for a file the device named, when ``name`` is one of the ``allowed`` names
    (:func:`log_names`) and the place is not a link out of ``out_dir``: what a board says is never a path.

    Raises:
        DeviceError: any other name (``../x``, ``/tmp/x``, a name of another model), or a link at that place.
    """
    if not isinstance(name, str) or name not in allowed or os.sep in name or "/" in name:
        raise DeviceError(f"the device named a log file {name!r} that was not asked for; refusing to write it "
                          f"(files go only into {out_dir}, by names the host chose)")
    path = os.path.join(out_dir, name)
    if os.path.islink(path) or os.path.dirname(os.path.realpath(path)) != os.path.realpath(out_dir):
        raise DeviceError(f"refusing to write {path}: it is a link out of {out_dir}")
    return path


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
    if out_dir:
        prepare_dir(out_dir, "--out")  # before measuring, not after
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
        doc = check_bench_reply(res.stdout, device, names)
        if out_dir:
            wanted = set()
            for rec in doc["results"]:
                pw = rec.get("power") or {}
                wanted.update(pw[k] for k in ("log_csv", "log_raw") if pw.get(k))
                if rec.get("tool_command"):
                    wanted.add(f"{rec['model']}.{backend}.log")
            allowed = log_names(names, backend)
            targets = {name: safe_output(out_dir, name, allowed) for name in sorted(wanted)}
            for name, target in targets.items():
                if dev.exists(f"logs/{name}"):
                    dev.get(f"logs/{name}", target)
                    pulled.append(target)
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


def bench_inputs_on_device(model: str, inputs: str, device: str = "local", backend: str = "ort", threads: int = 1,
                           iters: int = 3, limit: Optional[int] = None, trust_new_host: bool = False,
                           on_line: Optional[Callable[[str], None]] = None) -> Dict[str, object]:
    """The dynamic runner on ``device`` (``device bench MODEL --inputs X.npz``): ``model`` is an ``.onnx`` file or a
    staged model's ``.json`` manifest (its step files are copied with it), run one input at a time.

    Returns:
        The device's record (:func:`edgeshrink.device.dynamic.bench_dynamic`) with ``device`` metadata.

    Raises:
        DeviceError: a missing file, the device failed, or a reply without the per-input statistics.
    """
    from edgeshrink.device.dynamic import DynamicError, load_manifest, step_files

    for p in (model, inputs):
        if not os.path.isfile(p):
            raise DeviceError(f"file not found: {p}")
    files = [model]
    if model.endswith(".json"):
        try:
            steps = load_manifest(model)["steps"]
        except DynamicError as e:
            raise DeviceError(str(e)) from None
        files += step_files(steps)
    with open_device(device, trust_new_host=trust_new_host) as dev:
        for f in files:
            dev.put(f, f"staged/{os.path.basename(f)}")
        dev.put(inputs, "staged/inputs.npz")
        res = dev.run_device(["bench", f"staged/{os.path.basename(model)}", "--inputs", "staged/inputs.npz",
                              "--backend", backend, "--threads", str(threads), "--iters", str(iters),
                              *(["--limit", str(limit)] if limit else []), "--json"], on_stderr_line=on_line)
    where = f"device {device} replied"
    try:
        doc = json.loads(res.stdout)
    except ValueError:
        raise DeviceError(f"{where} with something that is not JSON") from None
    recs = sequence(mapping(doc, where, DeviceError).get("results"), f"{where}: results", DeviceError, length=1)
    rec = mapping(recs[0], f"{where}: result", DeviceError)
    for key in ("latency_ms", "worst_case_ms"):
        lat = mapping(rec.get(key), f"{where}: {key}", DeviceError)
        for k in ("mean", "median", "p90", "p99", "max"):
            number(lat.get(k), f"{where}: {key} {k}", DeviceError, non_negative=True)
    for b, v in mapping(rec.get("block_rates"), f"{where}: block_rates", DeviceError).items():
        if not 0 <= number(v, f"{where}: block_rates {b}", DeviceError) <= 1:
            raise DeviceError(f"{where}: block_rates {b} must be in [0, 1], got {v}")
    mapping(rec.get("exit_histogram"), f"{where}: exit_histogram", DeviceError)
    text(rec.get("sha256"), f"{where}: sha256", DeviceError)
    for f, h in mapping(rec.get("files", {}), f"{where}: files", DeviceError).items():
        text(h, f"{where}: files {f}", DeviceError)
    return {**rec, "device": {**mapping(doc.get("device"), f"{where}: device", DeviceError), "spec": device}}
