"""ONNX Runtime runner (CPU execution provider; session options as a benchmark needs them)."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from .base import BackendUnavailable, TensorSpec, load_error, require

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8"}


PROVIDERS = {
    "ort": ["CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def check_available(backend: str = "ort") -> str:
    """The onnxruntime version; raises BackendUnavailable when it, or the backend's execution provider, is missing.

    Args:
        backend: ``ort`` (CPU), ``ort-cuda`` or ``ort-tensorrt`` (needs onnxruntime-gpu with that provider).
    """
    ort = require("onnxruntime", "pip install onnxruntime (onnxruntime-gpu on CUDA boards)")
    want = PROVIDERS[backend][0]
    have = ort.get_available_providers()
    if want not in have:
        raise BackendUnavailable(f"onnxruntime {ort.__version__} has no {want} (has {', '.join(have)}); "
                                 "install onnxruntime-gpu built for this CUDA/JetPack")
    return "onnxruntime " + ort.__version__


def save_optimized(path: str, out: str, threads: int = 1) -> str:
    """Optimise ``path`` as :class:`OrtRunner` loads it (CPU provider, ``ORT_ENABLE_ALL``) and write the optimised
    graph to ``out`` (``SessionOptions.optimized_model_filepath``): what this board's runtime fuses, read by the host.

    Returns:
        the onnxruntime version.

    Raises:
        ModelLoadError: the runtime could not load ``path``; BackendUnavailable: no onnxruntime.
    """
    ort = require("onnxruntime", "pip install onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, threads)
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(out)
    so.log_severity_level = 3  # the "hardware specific optimisations" warning of saving an NCHWc graph
    try:
        ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's errors derive from Exception only
        raise load_error(str(path), "ONNX Runtime", e) from None
    return ort.__version__


class OrtRunner:
    """Runs an ONNX file in an ``onnxruntime.InferenceSession``.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (``0`` lets ORT choose); inter-op is 1, execution sequential.
        providers: execution providers, default CPU only.
    """

    name = "ort"

    def __init__(self, path: str, threads: int = 1, providers: Optional[Sequence[str]] = None, **_: object):
        self.path = str(path)
        self.threads = threads
        self.providers = list(providers or PROVIDERS[self.name])
        self.session = None

    def __enter__(self) -> "OrtRunner":
        ort = require("onnxruntime", "pip install onnxruntime")
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(self.path, sess_options=so, providers=self.providers)
        except Exception as e:  # onnxruntime's InvalidProtobuf, InvalidArgument, Fail... derive from Exception only
            raise load_error(self.path, "ONNX Runtime", e) from None
        used = self.session.get_providers()
        if used[0] != self.providers[0]:
            raise BackendUnavailable(f"onnxruntime could not use {self.providers[0]} for {self.path} (fell back to "
                                     f"{used[0]})")
        self._outputs = [o.name for o in self.session.get_outputs()]
        return self

    def __exit__(self, *exc) -> None:
        self.session = None

    def input_specs(self) -> Dict[str, TensorSpec]:
        specs = {}
        for i in self.session.get_inputs():
            shape = tuple(d if isinstance(d, int) else 1 for d in i.shape)
            specs[i.name] = TensorSpec(shape, _ORT_TYPES.get(i.type, "float32"))
        return specs

    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return dict(zip(self._outputs, self.session.run(self._outputs, feeds)))


class OrtCudaRunner(OrtRunner):
    """ONNX Runtime with the CUDA execution provider (``infer`` returns host arrays, so it has synchronised)."""

    name = "ort-cuda"


class OrtTensorrtRunner(OrtRunner):
    """ONNX Runtime with the TensorRT execution provider (CUDA, then CPU, for unsupported nodes)."""

    name = "ort-tensorrt"
