"""ONNX Runtime runner (CPU execution provider; session options as a benchmark needs them)."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from device.runners.base import TensorSpec, require

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8"}


def check_available() -> str:
    """The onnxruntime version; raises BackendUnavailable when it is not installed."""
    ort = require("onnxruntime", "pip install onnxruntime (onnxruntime-gpu on CUDA boards)")
    return "onnxruntime " + ort.__version__


class OrtRunner:
    """Runs an ONNX file in an ``onnxruntime.InferenceSession``.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (``0`` lets ORT choose); inter-op is 1, execution sequential.
        providers: execution providers, default CPU only.
    """

    name = "ort"

    def __init__(self, path: str, threads: int = 1, providers: Optional[Sequence[str]] = None):
        self.path = str(path)
        self.threads = threads
        self.providers = list(providers or ["CPUExecutionProvider"])
        self.session = None

    def __enter__(self) -> "OrtRunner":
        ort = require("onnxruntime", "pip install onnxruntime")
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(self.path, sess_options=so, providers=self.providers)
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
