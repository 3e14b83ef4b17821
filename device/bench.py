"""Benchmark model files with a runner: the ``device bench`` command's engine.

One record per model file: init time (load + session build), first inference, and the steady-state
latency statistics over ``iters`` timed runs after ``warmup`` untimed ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np

from . import runners, thermal
from .provenance import sha256_file
from .stats import benchmark, summarize


def parse_cpus(text: Optional[str]) -> Optional[List[int]]:
    """``"0-3,6"`` -> ``[0, 1, 2, 3, 6]``; None for None/empty.

    Raises:
        ValueError: malformed text.
    """
    if not text:
        return None
    out: List[int] = []
    for part in text.split(","):
        a, _, b = part.strip().partition("-")
        if not a.isdigit() or (b and not b.isdigit()):
            raise ValueError(f"malformed CPU list {text!r} (expected e.g. 0-3,6)")
        out.extend(range(int(a), int(b or a) + 1))
    return sorted(set(out))


def _first_inference(runner, seed: int):
    """Random feeds for the runner's inputs (seeded) and the time of its first inference in ms."""
    rng = np.random.default_rng(seed)
    feeds = {k: s.random(rng) for k, s in runner.input_specs().items()}
    t0 = time.perf_counter_ns()
    runner.infer(feeds)
    return feeds, (time.perf_counter_ns() - t0) / 1e6


def _record(path: str, backend: str, precision: str, threads: int, affinity, warmup: int, warmup_s, iters: int,
            init_ms, first_ms, latency_ms: Dict[str, object], throughput_ips, cool_down, before: Dict[str, object],
            after: Dict[str, object], power, **extra: object) -> Dict[str, object]:
    """One model's bench record (the ``results`` items of ``device bench --json``), the same for every mode; the
    thermal snapshots lose their clock stamp and the throttle verdict is taken from them."""
    evidence = thermal.throttle_evidence(before, after)
    return {"model": os.path.basename(path), "sha256": sha256_file(path), "backend": backend, "precision": precision,
            "threads": threads, "affinity": affinity, "warmup": warmup, "warmup_s": warmup_s, "iters": iters,
            "init_ms": init_ms, "first_inference_ms": first_ms, "latency_ms": latency_ms,
            "throughput_ips": throughput_ips, "cool_down": cool_down,
            "thermal_before": {k: v for k, v in before.items() if k != "t_s"},
            "thermal_after": {k: v for k, v in after.items() if k != "t_s"},
            "throttled": bool(evidence), "throttle_evidence": evidence, "power": power, **extra}


def bench_model(path: str, backend: str = "ort", threads: int = 1, warmup: int = 50, iters: int = 300,
                seed: int = 0, warmup_s: Optional[float] = None, precision: str = "fp32",
                calib_cache: Optional[str] = None, power: Optional[str] = None, power_interval_ms: int = 100,
                idle_s: float = 2.0, log_dir: Optional[str] = None, cool_down_to: Optional[float] = None,
                cool_down_s: Optional[float] = None, cpus: Optional[List[int]] = None) -> Dict[str, object]:
    """Benchmark one model file, with the device's thermal state before and after, and optionally its power.

    Args:
        path: model file for the backend (``.onnx`` for ort*/tensorrt/trtexec, ``.tflite`` for litert and
            benchmark_model).
        backend: runner name (see ``device backends``).
        threads: intra-op threads.
        warmup: untimed inferences before timing.
        iters: timed inferences.
        seed: seed of the random input feeds (standard normal; full range for integer inputs).
        warmup_s: also warm up for at least this many seconds.
        precision: ``fp32``/``fp16``/``int8`` for the TensorRT backends (others run the file as it is).
        calib_cache: int8 calibration cache for TensorRT.
        power: power meter (``auto``, ``tegrastats``, ``pmic``, ``hwmon``) or None for none.
        power_interval_ms: meter sampling interval.
        idle_s: seconds of idle power measured before the timed loop (with ``power``).
        log_dir: where power logs (``<model>.power.csv``, ``<model>.tegrastats.log``) and tool output go.
        cool_down_to: wait until the hottest sensor is at or below this (degC) before starting.
        cool_down_s: wait this many seconds before starting.
        cpus: pin this process to these CPUs (``os.sched_setaffinity``).

    Returns:
        ``{"model", "sha256", "backend", "precision", "threads", "affinity", "warmup", "warmup_s", "iters",
        "init_ms", "first_inference_ms", "latency_ms": LatencyStats dict, "throughput_ips", "cool_down",
        "thermal_before", "thermal_after", "throttled", "throttle_evidence", "power" (or None)}``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        runners.BackendUnavailable: the backend's runtime is missing.
        RuntimeError: the power meter is not usable, or a vendor tool failed.
    """
    from .power import energy
    from .power.meters import open_meter

    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path}")
    cls = runners.get_runner(backend)
    if cpus:
        os.sched_setaffinity(0, cpus)
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    base = os.path.basename(path)
    logs = log_dir or os.path.dirname(os.path.abspath(path))
    cooled = None
    if cool_down_to is not None or cool_down_s:
        cooled = thermal.cool_down(to_c=cool_down_to, wait_s=cool_down_s)
    before = thermal.snapshot(affinity)
    meter = None
    if power:
        meter = open_meter(power, os.path.join(logs, base + ".tegrastats.log"), power_interval_ms)
    window: Dict[str, float] = {}
    extra: Dict[str, object] = {}
    kwargs = {"threads": threads, "precision": precision, "calib_cache": calib_cache,
              "log_path": os.path.join(logs, f"{base}.{backend}.log")}
    with meter if meter is not None else contextlib.nullcontext():
        idle = (time.monotonic(), time.monotonic())
        if meter is not None:
            time.sleep(idle_s)
            idle = (idle[0], time.monotonic())
        t0 = time.perf_counter_ns()
        with cls(path, **kwargs) as runner:
            if getattr(runner, "self_timed", False):
                window["start_s"] = time.monotonic()
                res = runner.measure(warmup=warmup, iters=iters, warmup_s=warmup_s)
                window["end_s"] = time.monotonic()
                lat, init_ms, first_ms = res["latency_ms"], res["init_ms"], res["first_inference_ms"]
                throughput = res["throughput_ips"]
                extra = {"tool": res["tool"], "tool_command": res["command"]}
                timed_n = int(lat["n"] or iters)
            else:
                init_ms = (time.perf_counter_ns() - t0) / 1e6
                feeds, first_ms = _first_inference(runner, seed)
                stats = benchmark(lambda: runner.infer(feeds), warmup=warmup, iters=iters, warmup_s=warmup_s,
                                  window=window)
                lat, throughput, timed_n = stats.to_dict(), 1000.0 / stats.mean, iters
                extra = {"warmup_calls": window["warmup_calls"]}
            if getattr(runner, "engine_path", None):
                extra["engine"] = {"path": runner.engine_path, "cached": runner.engine_cached}
    after = thermal.snapshot(affinity)
    pw = None
    if meter is not None:
        samples = meter.samples()
        csv_path = os.path.join(logs, base + ".power.csv")
        energy.to_csv(samples, csv_path)
        pw = energy.summarize_power([(s["t_s"], s["total_power_mw"]) for s in samples], idle,
                                    (window["start_s"], window["end_s"]), timed_n, meter.name)
        pw["interval_ms"] = power_interval_ms
        pw["idle_s"] = idle_s
        pw["log_csv"] = os.path.basename(csv_path)
        if meter.name == "tegrastats":
            pw["log_raw"] = os.path.basename(meter.logfile)
            pw["total_rails"] = samples[0]["total_rails"] if samples else []
            temps = [max(s["temps_c"].values()) for s in samples if s["temps_c"]]
            pw["max_temp_c"] = max(temps) if temps else None
    return _record(path, backend, precision, threads, affinity, warmup, warmup_s, iters, init_ms, first_ms, lat,
                   throughput, cooled, before, after, pw, **extra)


def bench_interleaved(paths: List[str], rounds: int, backend: str = "ort", threads: int = 1, warmup: int = 50,
                      iters: int = 300, seed: int = 0, precision: str = "fp32", calib_cache: Optional[str] = None,
                      log_dir: Optional[str] = None, cpus: Optional[List[int]] = None,
                      progress: Optional[Callable[[int, int, Dict[str, object]], None]] = None,
                      loads: int = 1, keep_samples: bool = False) -> List[Dict[str, object]]:
    """Benchmark several models side by side: every model is loaded and kept loaded, warmed up, then timed in
    round-robin bursts of ``iters`` inferences, each round in a new random order (A C B, B A C, ...); the
    ``rounds`` are split over ``loads`` loadings of the whole list (each in a new random order).

    A device whose speed wanders (a shared or throttling CPU) then slows every model alike, and nothing is
    re-created between bursts. Why many short bursts over several loadings: the speed wanders on a scale of
    0.1-1 s, which many short bursts follow better than a few long ones, and a loaded session keeps its own
    offset (memory placement) for as long as it is loaded, which no number of rounds within one loading removes
    (the measurements are in the project's docs/latency.md, "Measuring whole networks").

    Args:
        paths: model files, each listed once.
        rounds: bursts per model in all (>= ``loads``); ``iters`` timed inferences each, after ``warmup``
            untimed ones per loading, and one untimed inference before each burst.
        loads: loadings of the whole list (>= 1); the rounds are shared out between them as evenly as they go.
        keep_samples: also return every timed run (``samples_ms``, in the order taken, burst after burst).
        seed: seed of the random input feeds and of the orders.
        Others: as :func:`bench_model`; self-timed runners (trtexec, benchmark_model) and power meters cannot
        interleave.

    Returns:
        One record per model in the order of ``paths``, as :func:`bench_model` (``power`` None), with
        ``latency_ms`` over all ``rounds * iters`` samples, ``rounds``, ``loads``, ``round_medians_ms`` and
        ``round_mins_ms`` (each burst's median and fastest run, bursts in the order taken), ``load_medians_ms``,
        ``interleaved: True`` (and ``samples_ms`` with ``keep_samples``); ``init_ms`` and
        ``first_inference_ms`` are of the first loading; the thermal snapshots are of the whole run.

    Raises:
        ValueError: ``loads`` < 1 or more loads than rounds.
        FileNotFoundError: a model file does not exist.
        RuntimeError: a self-timed backend.
        runners.BackendUnavailable: the backend's runtime is missing.
    """
    if not 1 <= loads <= rounds:
        raise ValueError(f"interleaved benchmark needs 1 <= loads <= rounds, got loads {loads}, rounds {rounds}")
    for p in paths:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"model file not found: {p}")
    cls = runners.get_runner(backend)
    if getattr(cls, "self_timed", False):
        raise RuntimeError(f"backend {backend} times itself and cannot interleave models (drop --interleave)")
    if cpus:
        os.sched_setaffinity(0, cpus)
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    logs = log_dir or "."
    rng = np.random.default_rng(seed)
    n = len(paths)
    before = thermal.snapshot(affinity)
    samples: List[List[np.ndarray]] = [[] for _ in paths]
    load_medians: List[List[float]] = [[] for _ in paths]
    first: List[tuple] = [()] * n
    clock = time.perf_counter_ns
    done = 0
    for load in range(loads):
        with contextlib.ExitStack() as stack:
            loaded: Dict[int, tuple] = {}
            for i in (range(n) if load == 0 else rng.permutation(n)):
                t0 = clock()
                runner = stack.enter_context(cls(paths[i], threads=threads, precision=precision,
                                                 calib_cache=calib_cache, log_path=os.path.join(
                                                     logs, f"{os.path.basename(paths[i])}.{backend}.log")))
                init_ms = (clock() - t0) / 1e6
                feeds, first_ms = _first_inference(runner, seed)
                loaded[i] = (runner, feeds)
                if load == 0:
                    first[i] = (init_ms, first_ms)
            for runner, feeds in loaded.values():
                for _ in range(warmup):
                    runner.infer(feeds)
            mine = [[] for _ in paths]
            for _ in range(rounds // loads + (load < rounds % loads)):
                for i in rng.permutation(n):
                    runner, feeds = loaded[i]
                    runner.infer(feeds)  # one untimed call: the previous model's burst left its own state behind
                    ts = np.empty(iters)
                    for k in range(iters):
                        t0 = clock()
                        runner.infer(feeds)
                        ts[k] = clock() - t0
                    mine[i].append(ts / 1e6)
                done += 1
                if progress:
                    progress(done, rounds, {"round": done, "load": load + 1})
            for i in range(n):
                samples[i].extend(mine[i])
                load_medians[i].append(float(np.median(np.concatenate(mine[i]))))
    after = thermal.snapshot(affinity)
    out = []
    for i, p in enumerate(paths):
        sm = samples[i]
        stats = summarize(np.concatenate(sm))
        out.append(_record(
            p, backend, precision, threads, affinity, warmup, None, iters, first[i][0], first[i][1], stats.to_dict(),
            1000.0 / stats.mean, None, before, after, None, rounds=rounds, loads=loads, interleaved=True,
            round_medians_ms=[float(np.median(a)) for a in sm], round_mins_ms=[float(a.min()) for a in sm],
            load_medians_ms=load_medians[i], **({"samples_ms": np.concatenate(sm).tolist()} if keep_samples else {})))
    return out


def done_in_jsonl(path: Optional[str]) -> Dict[str, Dict[str, object]]:
    """Records already in a JSON-lines results file, by model file name (a torn last line is ignored)."""
    out: Dict[str, Dict[str, object]] = {}
    if not path or not os.path.exists(path):
        return out
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash; that model is measured again
            out[rec["model"]] = rec
    return out


def bench_many(paths: Iterable[str], jsonl: Optional[str] = None,
               progress: Optional[Callable[[int, int, Dict[str, object]], None]] = None,
               **kwargs) -> List[Dict[str, object]]:
    """Benchmark several model files one after another (never concurrently: they would share the CPU).

    With ``jsonl``, each record is appended and flushed as soon as it is measured, and models already
    recorded there are not measured again, so an interrupted run resumes where it stopped; their records come
    back with ``"reused": true``.
    """
    paths = list(paths)
    done = done_in_jsonl(jsonl)
    out = []
    sink = None
    if jsonl:
        if os.path.exists(jsonl) and os.path.getsize(jsonl) > 0:
            with open(jsonl, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            if torn:  # end a line cut by a crash, so the next record starts on its own line
                with open(jsonl, "a", encoding="utf-8") as f:
                    f.write("\n")
        sink = open(jsonl, "a", encoding="utf-8")
    try:
        for i, p in enumerate(paths):
            rec = done.get(os.path.basename(p))
            if rec is not None:
                rec = {**rec, "reused": True}  # measured by an earlier run; the file does not say so, the reply does
            else:
                rec = bench_model(p, **kwargs)
                if sink:
                    sink.write(json.dumps(rec) + "\n")
                    sink.flush()
                    os.fsync(sink.fileno())
            out.append(rec)
            if progress:
                progress(i + 1, len(paths), rec)
    finally:
        if sink:
            sink.close()
    return out
