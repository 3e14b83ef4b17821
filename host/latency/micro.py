"""Micro-models: one ONNX graph per layer configuration, built directly with ``onnx.helper``.

A micro-model holds the ops of one table entry as the exported network has them before the runtime's own
fusions (Conv, BatchNormalization, the activations as torch exports them, Add, Mul, pooling, ReduceMean, Gemm,
Concat, Resize), with random weights;
ONNX Runtime then fuses them as it fuses the whole network. One exception: a conv whose key lists a fused
residual ``add`` is built as conv+BN, because the runtime's add epilogue cannot be reproduced standalone
(see :func:`micro_model`). Building the graph directly
takes about a millisecond, against seconds for a torch export, which matters for tables of thousands of
entries. ``overhead_model`` is the calibration graph: the fixed per-inference cost of one run.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Dict, List, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeshrink.host.latency.key import ACTIVATION_OPS, LayerKey

OPSET = 18


def key_id(key: LayerKey) -> str:
    """A short stable file name for a layer configuration."""
    blob = json.dumps(key.to_dict(), sort_keys=True).encode()
    return f"{key.op}_{key.in_channels}x{key.out_channels}_{key.in_hw[0]}_{hashlib.sha1(blob).hexdigest()[:12]}"


def _init(name: str, a: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(a.astype(np.float32), name)


def _bn(x: str, c: int, y: str, inits: List, nodes: List, rng: np.random.Generator) -> None:
    inits += [_init(f"{y}_s", rng.uniform(0.5, 1.5, c)), _init(f"{y}_b", rng.normal(0, 0.1, c)),
              _init(f"{y}_m", rng.normal(0, 0.1, c)), _init(f"{y}_v", rng.uniform(0.5, 1.5, c))]
    nodes.append(helper.make_node("BatchNormalization", [x, f"{y}_s", f"{y}_b", f"{y}_m", f"{y}_v"], [y], epsilon=1e-5))


def _activation(op: str, x: str, y: str, inits: List, nodes: List) -> str:
    """Append activation ``op`` of ``x`` as torch exports it (ReLU6 as Clip(0, 6), SiLU as x * Sigmoid(x));
    returns the output name."""
    if op == "relu":
        nodes.append(helper.make_node("Relu", [x], [y]))
    elif op == "relu6":
        inits += [numpy_helper.from_array(np.array(0.0, np.float32), f"{y}_lo"),
                  numpy_helper.from_array(np.array(6.0, np.float32), f"{y}_hi")]
        nodes.append(helper.make_node("Clip", [x, f"{y}_lo", f"{y}_hi"], [y]))
    elif op == "hardswish":
        nodes.append(helper.make_node("HardSwish", [x], [y]))
    elif op == "hardsigmoid":
        nodes.append(helper.make_node("HardSigmoid", [x], [y], alpha=1.0 / 6, beta=0.5))
    elif op == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", [x], [y]))
    elif op == "silu":
        nodes += [helper.make_node("Sigmoid", [x], [f"{y}_sig"]), helper.make_node("Mul", [x, f"{y}_sig"], [y])]
    else:
        raise ValueError(f"no activation {op!r}")
    return y


def _global_mean(x: str, inits: List, nodes: List) -> str:
    """Append the global average pool as torch exports ``adaptive_avg_pool2d(x, 1)``: ReduceMean over H and W
    (keepdims); returns the output name."""
    inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "gap_axes"))
    nodes.append(helper.make_node("ReduceMean", [x, "gap_axes"], ["gap"], keepdims=1))
    return "gap"


def _conv_out_hw(key: LayerKey) -> Tuple[int, int]:
    return tuple((key.in_hw[i] + 2 * key.padding[i] - key.kernel[i]) // key.stride[i] + 1 for i in range(2))


def micro_model(key: LayerKey, seed: int = 0) -> onnx.ModelProto:
    """The ONNX micro-model of one layer configuration, input ``(1, in_channels, H, W)``.

    Raises:
        ValueError: an op this builder does not know.
    """
    rng = np.random.default_rng(seed)
    h, w = key.in_hw
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, key.in_channels, h, w])]
    nodes: List = []
    inits: List = []
    cur = "x"
    c = key.in_channels
    if key.op in ("conv2d", "dwconv2d"):
        groups = key.in_channels if key.op == "dwconv2d" else key.groups
        wshape = (key.out_channels, key.in_channels // groups, *key.kernel)
        fan_in = wshape[1] * key.kernel[0] * key.kernel[1]
        inits.append(_init("w", rng.normal(0, (2.0 / fan_in) ** 0.5, wshape)))
        nodes.append(helper.make_node("Conv", ["x", "w"], ["conv"], kernel_shape=list(key.kernel),
                                      strides=list(key.stride), pads=[key.padding[0], key.padding[1]] * 2,
                                      group=groups))
        cur = "conv"
        oh, ow = _conv_out_hw(key)
        out_shape = [1, key.out_channels, oh, ow]
    elif key.op in ("add", "mul"):
        inputs.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, [1, c, h, w]))
        nodes.append(helper.make_node("Add" if key.op == "add" else "Mul", ["x", "x2"], ["sum"]))
        cur, out_shape = "sum", [1, c, h, w]
    elif key.op == "scale":  # a squeeze-and-excitation block's channel scale: (1, C, H, W) * (1, C, 1, 1)
        inputs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, c, 1, 1]))
        nodes.append(helper.make_node("Mul", ["s", "x"], ["scaled"]))
        cur, out_shape = "scaled", [1, c, h, w]
    elif key.op == "bn":
        _bn("x", c, "bn0", inits, nodes, rng)
        cur, out_shape = "bn0", [1, c, h, w]
    elif key.op in ACTIVATION_OPS:
        cur = _activation(key.op, "x", "act0", inits, nodes)
        out_shape = [1, c, h, w]
    elif key.op in ("maxpool", "avgpool"):
        attrs = dict(kernel_shape=list(key.kernel), strides=list(key.stride), pads=[key.padding[0], key.padding[1]] * 2)
        if key.op == "avgpool":
            attrs["count_include_pad"] = 1  # torch's default
        nodes.append(helper.make_node("MaxPool" if key.op == "maxpool" else "AveragePool", ["x"], ["pool"], **attrs))
        cur = "pool"
        out_shape = [1, c, *_conv_out_hw(key)]
    elif key.op == "gap":
        cur, out_shape = _global_mean("x", inits, nodes), [1, c, 1, 1]
    elif key.op == "linear":
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c])]
        inits += [_init("fc_w", rng.normal(0, 0.1, (key.out_channels, c))), _init("fc_b", np.zeros(key.out_channels))]
        nodes.append(helper.make_node("Gemm", ["x", "fc_w", "fc_b"], ["fc"], transB=1))
        cur, out_shape = "fc", [1, key.out_channels]
    elif key.op == "concat":  # key.groups inputs sharing the channels as evenly as they can
        n = max(1, key.groups)
        split = [c // n + (1 if i < c % n else 0) for i in range(n)]
        inputs = [helper.make_tensor_value_info(f"x{i}" if i else "x", TensorProto.FLOAT, [1, k, h, w])
                  for i, k in enumerate(split)]
        nodes.append(helper.make_node("Concat", [i.name for i in inputs], ["cat"], axis=1))
        cur, out_shape = "cat", [1, c, h, w]
    elif key.op in ("resize_nearest", "resize_bilinear"):
        sh, sw = key.stride
        inits.append(numpy_helper.from_array(np.array([1, 1, sh, sw], np.float32), "scales"))
        attrs = {"mode": "nearest", "nearest_mode": "floor", "coordinate_transformation_mode": "asymmetric"} \
            if key.op == "resize_nearest" else {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}
        nodes.append(helper.make_node("Resize", ["x", "", "scales"], ["resized"], **attrs))
        cur, out_shape = "resized", [1, c, h * sh, w * sw]
    elif key.op == "gap_linear":  # as torch exports adaptive_avg_pool2d(x, 1), flatten, linear
        inits += [_init("fc_w", rng.normal(0, 0.1, (key.out_channels, key.in_channels))),
                  _init("fc_b", np.zeros(key.out_channels))]
        gap = _global_mean("x", inits, nodes)
        nodes += [helper.make_node("Flatten", [gap], ["flat"], axis=1),
                  helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["fc"], transB=1)]
        cur, out_shape = "fc", [1, key.out_channels]
    else:
        raise ValueError(f"no micro-model for op {key.op!r}")
    for f in key.fused:
        if f == "bn":
            _bn(cur, out_shape[1], "bn", inits, nodes, rng)
            cur = "bn"
        elif f == "add":
            # Inside the network ONNX Runtime runs the residual Add (and the activation after it) as the epilogue
            # of this conv's fused NCHWc kernel (Conv with a Sum input). It fuses only when the other operand
            # also comes from an NCHWc conv, which a standalone graph input is not: an Add here would run as
            # separate, unfused ops that the network never executes. So the entry is conv+BN; the epilogue's
            # cost is not part of it.
            break
        elif f in ACTIVATION_OPS:
            cur = _activation(f, cur, f"{cur}_{f}", inits, nodes)
        else:
            raise ValueError(f"cannot fuse {f!r} into a micro-model")
    outputs = [helper.make_tensor_value_info(cur, TensorProto.FLOAT, out_shape)]
    graph = helper.make_graph(nodes, key_id(key), inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgeshrink")
    model.ir_version = 8
    return model


def write_micro_models(args: Tuple[List[Dict[str, object]], str]) -> List[str]:
    """Process-pool worker: write the micro-models of ``(key dicts, folder)``; returns their file names.
    Existing files are kept (a resumed build does not rebuild them); each file appears atomically."""
    keys, folder = args
    names = []
    for d in keys:
        key = LayerKey.from_dict(d)
        name = key_id(key) + ".onnx"
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            save_atomic(micro_model(key), path)
        names.append(name)
    return names


def save_atomic(model: onnx.ModelProto, path: str) -> None:
    """Write an ONNX model so that an interrupted write leaves no file under ``path`` (a resumed build takes an
    existing file as built)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    onnx.save(model, tmp)
    os.replace(tmp, path)


def overhead_model(input_shape, num_classes: int = 10) -> onnx.ModelProto:
    """Calibration graph for the fixed per-inference overhead: the network's input ``input_shape`` in,
    a ``(1, num_classes)`` output out, through the cheapest ops that keep both (a slice and a reshape):
    what every inference pays whatever the layers are."""
    n = int(np.prod(input_shape))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))]
    inits = [numpy_helper.from_array(np.array([-1], np.int64), "flat_shape"),
             numpy_helper.from_array(np.array([0], np.int64), "start"),
             numpy_helper.from_array(np.array([num_classes], np.int64), "end"),
             numpy_helper.from_array(np.array([1, num_classes], np.int64), "out_shape")]
    nodes = [helper.make_node("Reshape", ["x", "flat_shape"], ["flat"]),
             helper.make_node("Slice", ["flat", "start", "end"], ["head"]),
             helper.make_node("Reshape", ["head", "out_shape"], ["y"])]
    if n < num_classes:
        raise ValueError(f"input {input_shape} has fewer values than {num_classes} outputs")
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, num_classes])]
    graph = helper.make_graph(nodes, "overhead", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgeshrink")
    model.ir_version = 8
    return model
