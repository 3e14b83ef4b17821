"""trtexec (TensorRT's benchmark tool): run it on an ONNX file and parse its performance summary.

trtexec times itself, so this runner is ``self_timed``: :meth:`TrtexecRunner.measure` runs
``trtexec --onnx=F [--fp16|--int8 --calib=C] --warmUp=MS --iterations=N --duration=0 --percentile=90,95,99``,
saving the engine to the cache of :mod:`device.runners.tensorrt` (and loading it next time), and
:func:`parse_trtexec` reads the output. "Latency" is trtexec's host latency (H2D + compute + D2H), reported as
``latency_ms``; "GPU Compute Time" is kept beside it.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Dict, Optional

from .base import BackendUnavailable, ToolRunner, run_tool

_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\)) = (-?\d+(?:\.\d+)?(?:e[-+]?\d+)?) ms")
_SECTIONS = {"Latency": "latency_ms", "Enqueue Time": "enqueue_ms", "H2D Latency": "h2d_ms",
             "GPU Compute Time": "gpu_compute_ms", "D2H Latency": "d2h_ms"}


class TrtexecParseError(ValueError):
    """trtexec output without a performance summary (the message says what was missing)."""


def trtexec_binary() -> Optional[str]:
    """``$EDGESHRINK_TRTEXEC`` (tests: a replaying fake), ``trtexec`` on PATH, or JetPack's /usr/src/tensorrt/bin."""
    env = os.environ.get("EDGESHRINK_TRTEXEC")
    if env:
        return env
    found = shutil.which("trtexec")
    if found:
        return found
    jp = "/usr/src/tensorrt/bin/trtexec"
    return jp if os.path.exists(jp) else None


def tool_identity() -> str:
    """A short id of the trtexec binary (path, size, mtime): a TensorRT upgrade replaces the binary, so cached
    engines of the old version, which the new one cannot load, are not reused. Its version is only known after a
    run, from the output."""
    import hashlib

    exe = os.path.realpath(trtexec_binary())
    st = os.stat(exe)
    return "exec-" + hashlib.sha256(f"{exe}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:10]


def check_available() -> str:
    exe = trtexec_binary()
    if exe is None:
        raise BackendUnavailable("trtexec not found (JetPack: /usr/src/tensorrt/bin/trtexec; x86: TensorRT tarball)")
    return f"trtexec ({exe})"


def _stats(line: str) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for m in _STAT.finditer(line):
        key = m.group(1)
        if m.group(2):
            key = "p" + m.group(2).rstrip("0").rstrip(".") if "." in m.group(2) else "p" + m.group(2)
        out[key] = float(m.group(3))
    return out


def parse_trtexec(text: str) -> Dict[str, object]:
    """Parse trtexec's output (TensorRT 8.x/10.x).

    Returns:
        ``{"passed": bool, "trt_version", "device_name", "precision", "throughput_qps", "n" (timed queries),
        "timed_s", "warmup_queries", "warmup_ms", "engine_build_s", "engine_deserialize_s",
        "latency_ms": {"n", "mean", "median", "p90", "p95", "p99", "min", "max", "std": None, "cv": None},
        "gpu_compute_ms": {...}, "enqueue_ms", "h2d_ms", "d2h_ms"}``. trtexec reports no standard deviation.

    Raises:
        TrtexecParseError: no "Latency:" line in the performance summary (the run failed or was cut).
    """
    out: Dict[str, object] = {"passed": "&&&& PASSED" in text, "trt_version": None, "device_name": None,
                              "precision": None, "throughput_qps": None, "n": None, "timed_s": None,
                              "warmup_queries": None, "warmup_ms": None, "engine_build_s": None,
                              "engine_deserialize_s": None}
    for raw in text.splitlines():
        line = re.sub(r"^\[[^\]]*\] \[[A-Z]\] ", "", raw.strip())
        if m := re.match(r"TensorRT version: (\S+)", line):
            out["trt_version"] = m.group(1)
        elif m := re.match(r"Selected Device: (.+)$", line):
            out["device_name"] = m.group(1).strip()
        elif m := re.match(r"Precision: (.+)$", line):
            out["precision"] = m.group(1).strip()
        elif m := re.match(r"Throughput: (\S+) qps", line):
            out["throughput_qps"] = float(m.group(1))
        elif m := re.match(r"Timing trace has (\d+) queries over (\S+) s", line):
            out["n"], out["timed_s"] = int(m.group(1)), float(m.group(2))
        elif m := re.match(r"Warmup completed (\d+) queries over (\S+) ms", line):
            out["warmup_queries"], out["warmup_ms"] = int(m.group(1)), float(m.group(2))
        elif m := re.match(r"Engine built in (\S+) sec", line):
            out["engine_build_s"] = float(m.group(1))
        elif m := re.match(r"Engine deserialized in (\S+) sec", line):
            out["engine_deserialize_s"] = float(m.group(1))
        elif m := re.search(r"GPU compute time is unstable, with coefficient of variance = (\S+)%", line):
            out["gpu_compute_cv"] = float(m.group(1)) / 100.0
        else:
            for title, key in _SECTIONS.items():
                if line.startswith(title + ": "):
                    s = _stats(line)
                    out[key] = {"n": out["n"], "mean": s.get("mean"), "median": s.get("median"), "p90": s.get("p90"),
                                "p95": s.get("p95"), "p99": s.get("p99"), "min": s.get("min"), "max": s.get("max"),
                                "std": None, "cv": None}
    if "latency_ms" not in out or out["latency_ms"].get("mean") is None:
        raise TrtexecParseError("trtexec output has no 'Latency:' line in a performance summary "
                                f"({'PASSED' if out['passed'] else 'no PASSED marker'})")
    for key in _SECTIONS.values():
        if key in out:
            out[key]["n"] = out["n"]
    if "gpu_compute_cv" in out and "gpu_compute_ms" in out:
        out["gpu_compute_ms"]["cv"] = out.pop("gpu_compute_cv")
    return out


class TrtexecRunner(ToolRunner):
    """Benchmark an ONNX file with trtexec (self-timed: trtexec's own loop and statistics).

    Args:
        path: the ``.onnx`` file.
        precision: ``fp32``, ``fp16`` or ``int8``.
        calib_cache: int8 calibration cache (``--calib``).
        log_path: where trtexec's full output is kept (the host pulls it back).
    """

    name = "trtexec"

    def command(self, warmup_ms: float, iters: int, engine: str, engine_exists: bool) -> list:
        cmd = [trtexec_binary(), f"--onnx={self.path}", f"--warmUp={int(round(warmup_ms))}", f"--iterations={iters}",
               "--duration=0", "--percentile=90,95,99", "--avgRuns=10"]
        cmd.append(f"--loadEngine={engine}" if engine_exists else f"--saveEngine={engine}")
        if self.precision == "fp16":
            cmd.append("--fp16")
        elif self.precision == "int8":
            cmd += ["--int8", "--fp16"] + ([f"--calib={self.calib_cache}"] if self.calib_cache else [])
        return cmd

    def measure(self, warmup: int, iters: int, warmup_s: Optional[float] = None,
                timeout_s: float = 3600.0) -> Dict[str, object]:
        """Run trtexec; warm-up is by time in trtexec (``warmup_s``, default 0.2 s; ``warmup`` counts are not
        supported by the tool). Returns the bench record's timing fields.

        Raises:
            RuntimeError: trtexec failed (its last line is in the message).
        """
        from .tensorrt import engine_cache_path

        engine = engine_cache_path(self.path, tool_identity(), self.precision, self.calib_cache)
        os.makedirs(os.path.dirname(engine), exist_ok=True)
        exists = os.path.exists(engine)
        cmd = self.command((warmup_s if warmup_s is not None else 0.2) * 1000.0, iters, engine, exists)
        p = run_tool("trtexec", cmd, parse_trtexec, self.log_path, timeout_s)
        init_s = (p["engine_build_s"] or 0.0) + (p["engine_deserialize_s"] or 0.0)
        return {"latency_ms": p["latency_ms"], "init_ms": init_s * 1000.0, "first_inference_ms": None,
                "throughput_ips": p["throughput_qps"], "tool": {k: v for k, v in p.items() if k != "latency_ms"},
                "engine_cached": exists, "command": cmd}
