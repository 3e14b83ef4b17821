"""Benchmark model files with a runner: the ``device bench`` command's engine.

One record per model file: init time (load + session build), first inference, and the steady-state
latency statistics over ``iters`` timed runs after ``warmup`` untimed ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Callable, Dict, Iterable, List, Optional

import numpy as np

from device import runners
from device.stats import benchmark


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bench_model(path: str, backend: str = "ort", threads: int = 1, warmup: int = 50, iters: int = 300,
                seed: int = 0) -> Dict[str, object]:
    """Benchmark one model file.

    Args:
        path: model file for the backend (``.onnx`` for ``ort``).
        backend: runner name (see ``device backends``).
        threads: intra-op threads.
        warmup: untimed inferences before timing.
        iters: timed inferences.
        seed: seed of the random input feeds (standard normal, shapes from the model).

    Returns:
        ``{"model", "sha256", "backend", "threads", "warmup", "iters", "init_ms", "first_inference_ms",
        "latency_ms": LatencyStats dict, "throughput_ips"}``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        runners.BackendUnavailable: the backend's runtime is missing.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path}")
    cls = runners.get_runner(backend)
    t0 = time.perf_counter_ns()
    with cls(path, threads=threads) as runner:
        init_ms = (time.perf_counter_ns() - t0) / 1e6
        rng = np.random.default_rng(seed)
        feeds = {k: s.random(rng) for k, s in runner.input_specs().items()}
        t0 = time.perf_counter_ns()
        runner.infer(feeds)
        first_ms = (time.perf_counter_ns() - t0) / 1e6
        stats = benchmark(lambda: runner.infer(feeds), warmup=warmup, iters=iters)
    return {
        "model": os.path.basename(path),
        "sha256": sha256_file(path),
        "backend": backend,
        "threads": threads,
        "warmup": warmup,
        "iters": iters,
        "init_ms": init_ms,
        "first_inference_ms": first_ms,
        "latency_ms": stats.to_dict(),
        "throughput_ips": 1000.0 / stats.mean,
    }


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
    recorded there are not measured again, so an interrupted run resumes where it stopped.
    """
    paths = list(paths)
    done = done_in_jsonl(jsonl)
    out = []
    sink = open(jsonl, "a", encoding="utf-8") if jsonl else None
    try:
        for i, p in enumerate(paths):
            rec = done.get(os.path.basename(p))
            if rec is None:
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
