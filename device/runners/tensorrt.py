"""TensorRT runner: builds the engine on the device from ONNX (engines are specific to the GPU and the TensorRT
version), caches it, and runs it with pycuda buffers.

The engine cache key is (sha256 of the ONNX file, TensorRT version, precision[, sha256 of the int8 calibration
cache]); plans live in ``$EDGESHRINK_ENGINE_CACHE`` (default ``~/.cache/edgeshrink/engines``). int8 needs the
calibration cache the host computed from representative batches (``--calib-cache``): this runner replays it
through an entropy calibrator and never calibrates on random data.

Jetson: TensorRT's Python bindings ship with JetPack (a venv needs ``--system-site-packages``, see
install_jetson.sh); ``pip install pycuda``. Follows the TensorRT Python API (>= 8.5: named I/O tensors,
``execute_async_v3``).
"""

from __future__ import annotations

import os
from typing import Dict, Optional

import numpy as np

from .base import BackendUnavailable, TensorSpec, require

PRECISIONS = ("fp32", "fp16", "int8")


def check_available() -> str:
    """TensorRT and pycuda versions; raises BackendUnavailable naming what is missing."""
    trt = require("tensorrt", "TensorRT's Python bindings (JetPack ships them; pip install tensorrt on x86)")
    require("pycuda", "pip install pycuda (needs the CUDA toolkit)")
    import pycuda.driver as cuda

    try:
        cuda.init()
        if cuda.Device.count() < 1:
            raise BackendUnavailable("no CUDA device visible to pycuda")
    except cuda.Error as e:
        raise BackendUnavailable(f"CUDA driver unusable: {e}") from None
    return f"tensorrt {trt.__version__}"


def engine_cache_path(onnx_path: str, trt_version: str, precision: str, calib_cache: Optional[str] = None) -> str:
    """Where the plan built from ``onnx_path`` for this TensorRT version and precision is cached."""
    from ..provenance import sha256_file as _sha256

    root = os.environ.get("EDGESHRINK_ENGINE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                     "edgeshrink", "engines")
    parts = [_sha256(onnx_path)[:16], f"trt{trt_version}", precision]
    if precision == "int8" and calib_cache:
        parts.append(_sha256(calib_cache)[:12])
    return os.path.join(root, "_".join(parts) + ".plan")


def build_engine(onnx_path: str, precision: str = "fp32", calib_cache: Optional[str] = None,
                 workspace_mib: int = 1024) -> bytes:
    """Build a serialized TensorRT engine from an ONNX file.

    Args:
        onnx_path: the ONNX model (static shapes).
        precision: ``fp32``, ``fp16`` or ``int8`` (int8 also enables fp16 for layers without int8 kernels).
        calib_cache: the int8 calibration cache file (required for int8).
        workspace_mib: builder workspace limit.

    Raises:
        ValueError: unknown precision, or int8 without a calibration cache.
        RuntimeError: the ONNX parser or the builder failed (the parser's errors are in the message).
    """
    trt = require("tensorrt", "TensorRT's Python bindings")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}")
    if precision == "int8" and not calib_cache:
        raise ValueError("int8 needs the calibration cache computed on the host (--calib-cache FILE)")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # implicit in TensorRT 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        if not parser.parse(f.read()):
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT's ONNX parser rejected {onnx_path}: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _cache_calibrator(trt, calib_cache)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT could not build an engine for {onnx_path} ({precision})")
    return bytes(plan)


def trt_version_int(version: str) -> int:
    """TensorRT's integer version as its calibration caches carry it: 8.6.1 -> 8601, 10.3.0 -> 100300."""
    major, minor, patch = (int(v) for v in (version.split(".") + ["0", "0"])[:3])
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def _cache_calibrator(trt, cache_path: str):
    """A calibrator that only replays a calibration cache (no batches on the device). The cache's header names
    the calibrator (MinMax for the host's max calibration, EntropyCalibration2 for one TensorRT wrote); its
    version field is set to this TensorRT's, since the scales do not depend on it."""
    with open(cache_path, "rb") as f:
        text = f.read().decode("ascii")
    header, _, body = text.partition("\n")
    kind = header.split("-", 2)[2] if header.count("-") >= 2 else "EntropyCalibration2"
    cache = f"TRT-{trt_version_int(trt.__version__)}-{kind}\n{body}".encode("ascii")
    base = trt.IInt8MinMaxCalibrator if kind.startswith("MinMax") else trt.IInt8EntropyCalibrator2

    class CacheCalibrator(base):
        def __init__(self) -> None:
            base.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):  # noqa: ANN001 - TensorRT's signature
            return None

        def read_calibration_cache(self) -> bytes:
            return cache

        def write_calibration_cache(self, data) -> None:  # noqa: ANN001
            return None

    return CacheCalibrator()


class TensorRTRunner:
    """Runs an ONNX model as a TensorRT engine built (or loaded from the cache) on this device.

    Args:
        path: the ``.onnx`` file (or a ``.plan`` built on this very device).
        precision: ``fp32``, ``fp16`` or ``int8``.
        calib_cache: int8 calibration cache from the host.

    ``infer`` copies the feeds host->device, runs ``execute_async_v3`` on a stream, copies the outputs back and
    synchronises the stream, so the time measured is the host-visible latency including transfers (what
    trtexec calls "Latency", not "GPU Compute Time").
    """

    name = "tensorrt"

    def __init__(self, path: str, threads: int = 1, precision: str = "fp32", calib_cache: Optional[str] = None,
                 **_: object):
        self.path = str(path)
        self.precision = precision
        self.calib_cache = calib_cache
        self.engine_path: Optional[str] = None
        self.engine_cached = False

    def __enter__(self) -> "TensorRTRunner":
        trt = require("tensorrt", "TensorRT's Python bindings")
        import pycuda.driver as cuda

        cuda.init()
        self._ctx = cuda.Device(0).make_context()
        try:
            if self.path.endswith((".plan", ".engine")):
                self.engine_path = self.path
            else:
                self.engine_path = engine_cache_path(self.path, trt.__version__, self.precision, self.calib_cache)
                self.engine_cached = os.path.exists(self.engine_path)
                if not self.engine_cached:
                    plan = build_engine(self.path, self.precision, self.calib_cache)
                    os.makedirs(os.path.dirname(self.engine_path), exist_ok=True)
                    tmp = self.engine_path + ".tmp"
                    with open(tmp, "wb") as f:
                        f.write(plan)
                    os.replace(tmp, self.engine_path)
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            with open(self.engine_path, "rb") as f:
                self.engine = runtime.deserialize_cuda_engine(f.read())
            if self.engine is None:
                raise BackendUnavailable(f"TensorRT could not deserialize {self.engine_path} (built by another "
                                         "TensorRT version or GPU?)")
            self.context = self.engine.create_execution_context()
            self.stream = cuda.Stream()
            self._io: Dict[str, Dict[str, object]] = {}
            for i in range(self.engine.num_io_tensors):
                name = self.engine.get_tensor_name(i)
                shape = tuple(max(int(d), 1) for d in self.engine.get_tensor_shape(name))
                dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
                host = cuda.pagelocked_empty(shape, dtype)
                dev = cuda.mem_alloc(host.nbytes)
                self.context.set_tensor_address(name, int(dev))
                is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                self._io[name] = {"host": host, "dev": dev, "input": is_input, "shape": shape, "dtype": dtype}
        except BaseException:
            self._ctx.pop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for t in getattr(self, "_io", {}).values():
            t["dev"].free()
        self._io = {}
        self.context = None
        self.engine = None
        self._ctx.pop()

    def input_specs(self) -> Dict[str, TensorSpec]:
        return {n: TensorSpec(t["shape"], t["dtype"].name) for n, t in self._io.items() if t["input"]}

    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        import pycuda.driver as cuda

        for n, t in self._io.items():
            if t["input"]:
                np.copyto(t["host"], feeds[n])
                cuda.memcpy_htod_async(t["dev"], t["host"], self.stream)
        if not self.context.execute_async_v3(self.stream.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        for t in self._io.values():
            if not t["input"]:
                cuda.memcpy_dtoh_async(t["host"], t["dev"], self.stream)
        self.stream.synchronize()
        return {n: t["host"].copy() for n, t in self._io.items() if not t["input"]}
