"""TensorRT artifacts: engines are specific to the GPU and the TensorRT version, so the host ships the ONNX file
and the device builds the plan (``device bench --backend tensorrt|trtexec --precision P``, see
:mod:`device.runners.tensorrt`). For int8 the host computes the calibration cache from representative batches.

The cache is computed here with ONNX Runtime, without TensorRT: every tensor of the graph is exposed as an
output, the representative batches are run, and each tensor's scale is its largest absolute value / 127
(max calibration). It is written in TensorRT's calibration-cache text format
(``TRT-<version>-MinMaxCalibration`` then ``tensor: <big-endian float32 scale in hex>`` per line); the device
runner replays it through ``IInt8MinMaxCalibrator`` and puts its own TensorRT version into the header.
"""

from __future__ import annotations

import struct
from typing import Dict, Sequence

import numpy as np

CACHE_HEADER = "TRT-0-MinMaxCalibration"  # version 0: the device writes its own before building


def calibration_cache(onnx_path: str, batches: Sequence[np.ndarray], out_path: str) -> Dict[str, object]:
    """Compute an int8 calibration cache for ``onnx_path`` from representative inputs.

    Args:
        onnx_path: the fp32 ONNX model (one float input).
        batches: inputs ``(B, C, H, W)`` float32 drawn from the training split.
        out_path: the cache file to write (atomically).

    Returns:
        ``{"tensors", "batches", "samples", "method"}``.
    """
    import onnx
    import onnxruntime as ort

    from edgeshrink.host.io import atomic_path

    model = onnx.shape_inference.infer_shapes(onnx.load(onnx_path))
    g = model.graph
    known = {o.name for o in g.output}
    float_types = {onnx.TensorProto.FLOAT}
    for vi in g.value_info:
        if vi.name not in known and vi.type.tensor_type.elem_type in float_types:
            g.output.append(vi)
    names = [o.name for o in g.output]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor of the ONNX graph
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    amax = {inp: 0.0}
    samples = 0
    for x in batches:
        x = np.asarray(x, dtype=np.float32)
        amax[inp] = max(amax[inp], float(np.abs(x).max()))
        for name, v in zip(names, sess.run(names, {inp: x})):
            amax[name] = max(amax.get(name, 0.0), float(np.abs(v).max()))
        samples += x.shape[0]
    lines = [CACHE_HEADER]
    for name, a in amax.items():
        scale = max(a, 1e-8) / 127.0
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    with atomic_path(out_path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return {"tensors": len(amax), "batches": len(batches), "samples": samples, "method": "max abs / 127 (ONNX Runtime)"}


def read_calibration_cache(path: str) -> Dict[str, float]:
    """Parse a calibration cache back into ``{tensor: scale}`` (the header line is skipped)."""
    out = {}
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for line in lines[1:]:
        name, _, hexval = line.rpartition(": ")
        out[name] = struct.unpack(">f", bytes.fromhex(hexval))[0]
    return out
