"""TFLite's ``benchmark_model``: run it on a ``.tflite`` file and parse what it prints.

The earlier NetAdapt work timed every latency-table cell with ``benchmark_model --graph=F --num_runs=11``. The
tool reports count, first, curr, min, max, avg and std of the timed runs in microseconds, the init time and
first inference, and (with ``--enable_op_profiling=true``) a per-operator table; it reports no median or
percentiles, so those are None in ``latency_ms``.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Dict, List, Optional

from .base import BackendUnavailable, ToolRunner, run_tool

_NUM = r"(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)"
_COUNT = re.compile(rf"^count=(\d+)(?: first={_NUM})?(?: curr={_NUM})?(?: min={_NUM})?(?: max={_NUM})?"
                    rf"(?: avg={_NUM})?(?: std={_NUM})?")
_TIMINGS = re.compile(rf"Inference timings in us: Init: {_NUM}, First inference: {_NUM}, Warmup \(avg\): {_NUM}, "
                      rf"Inference \(avg\): {_NUM}")
_MEM = re.compile(rf"(Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): "
                  rf"init={_NUM} overall={_NUM}")
_OP_ROW = re.compile(rf"^\s*(\S+)\s+{_NUM}\s+{_NUM}\s+{_NUM}\s+{_NUM}%\s+{_NUM}%\s+{_NUM}\s+(\d+)\s+(.*)$")


class BenchmarkModelParseError(ValueError):
    """benchmark_model output without a timed run (the message says what was missing)."""


def benchmark_model_binary() -> Optional[str]:
    """``$EDGESHRINK_BENCHMARK_MODEL`` (tests: a replaying fake) or ``benchmark_model`` on PATH."""
    return os.environ.get("EDGESHRINK_BENCHMARK_MODEL") or shutil.which("benchmark_model")


def check_available() -> str:
    exe = benchmark_model_binary()
    if exe is None:
        raise BackendUnavailable("benchmark_model not found (build //tensorflow/lite/tools/benchmark:benchmark_model "
                                 "or download the nightly binary for this CPU, and put it on PATH)")
    return f"benchmark_model ({exe})"


def parse_benchmark_model_runs(text: str) -> List[Dict[str, object]]:
    """Every benchmark run in ``text`` (a run ends at its "Inference timings in us" line).

    Returns:
        One dict per run: ``{"latency_ms": {"n", "mean", "min", "max", "std", "cv", "median": None, "p90": None,
        "p95": None, "p99": None}, "first_ms", "curr_ms", "init_ms", "first_inference_ms", "warmup_avg_ms",
        "memory_mb": {"init", "overall"} or None, "ops": [{"node_type", "avg_ms", "name"}] (op profiling)}``.
    """
    runs: List[Dict[str, object]] = []
    last_count = None
    cur: Dict[str, object] = {}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        m = _COUNT.match(line)
        if m:
            last_count = m
            continue
        m = _TIMINGS.search(line)
        if m:
            if last_count is None:
                raise BenchmarkModelParseError("benchmark_model output has timings but no 'count=' line before them")
            c = [None if v is None else float(v) for v in last_count.groups()]
            n = int(c[0])
            mean, std = (c[5] / 1000.0 if c[5] is not None else None), (c[6] / 1000.0 if c[6] is not None else None)
            cur = {
                "latency_ms": {"n": n, "mean": mean, "median": None, "p90": None, "p95": None, "p99": None,
                               "min": c[3] / 1000.0 if c[3] is not None else None,
                               "max": c[4] / 1000.0 if c[4] is not None else None, "std": std,
                               "cv": std / mean if std is not None and mean else None},
                "first_ms": c[1] / 1000.0 if c[1] is not None else None,
                "curr_ms": c[2] / 1000.0 if c[2] is not None else None,
                "init_ms": float(m.group(1)) / 1000.0, "first_inference_ms": float(m.group(2)) / 1000.0,
                "warmup_avg_ms": float(m.group(3)) / 1000.0, "memory_mb": None, "ops": [],
            }
            runs.append(cur)
            last_count = None
            section = None
            continue
        if line.startswith(("STARTING!", "$ ")):
            section = "detached"  # a new invocation (or a shell echo in a log): later tables are not this run's
            continue
        m = _MEM.search(line)
        if m and runs and section != "detached":
            runs[-1]["memory_mb"] = {"init": float(m.group(2)), "overall": float(m.group(3))}
            continue
        if section == "detached":
            continue
        if line.startswith("Operator-wise Profiling Info for Regular Benchmark Runs"):
            section = "ops"
        elif line.startswith("=====") and "Run Order" not in line and section == "ops_rows":
            section = None
        elif section == "ops" and "Run Order" in line:
            section = "ops_rows"
        elif section == "ops_rows" and runs:
            r = _OP_ROW.match(raw)
            if r and not line.startswith("[node type]"):
                runs[-1]["ops"].append({"node_type": r.group(1), "avg_ms": float(r.group(4)), "name": r.group(9)})
    return runs


def parse_benchmark_model(text: str) -> Dict[str, object]:
    """The last run in benchmark_model's output (see :func:`parse_benchmark_model_runs`).

    Raises:
        BenchmarkModelParseError: no complete run in the text.
    """
    runs = parse_benchmark_model_runs(text)
    if not runs:
        raise BenchmarkModelParseError("benchmark_model output has no 'Inference timings in us' line "
                                       "(the run failed or was cut)")
    return runs[-1]


class BenchmarkModelRunner(ToolRunner):
    """Benchmark a ``.tflite`` file with TFLite's benchmark_model (self-timed).

    Args:
        path: the ``.tflite`` file.
        threads: ``--num_threads``.
        log_path: where the tool's full output is kept.
    """

    name = "benchmark_model"

    def command(self, warmup: int, iters: int, warmup_s: Optional[float]) -> List[str]:
        return [benchmark_model_binary(), f"--graph={self.path}", f"--num_threads={self.threads}",
                f"--warmup_runs={warmup}", f"--warmup_min_secs={warmup_s or 0}", f"--num_runs={iters}",
                "--min_secs=0"]

    def measure(self, warmup: int, iters: int, warmup_s: Optional[float] = None,
                timeout_s: float = 3600.0) -> Dict[str, object]:
        """Run benchmark_model with ``--warmup_runs`` / ``--num_runs`` and return the bench record's timing fields.

        Raises:
            RuntimeError: the tool failed (its last line is in the message).
        """
        cmd = self.command(warmup, iters, warmup_s)
        p = run_tool("benchmark_model", cmd, parse_benchmark_model, self.log_path, timeout_s)
        mean = p["latency_ms"]["mean"]
        return {"latency_ms": p["latency_ms"], "init_ms": p["init_ms"], "first_inference_ms": p["first_inference_ms"],
                "throughput_ips": 1000.0 / mean if mean else None,
                "tool": {k: v for k, v in p.items() if k != "latency_ms"}, "command": cmd}
