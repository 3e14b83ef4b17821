"""A tiny real TFLite model written with the flatbuffer schema that ships inside ai_edge_litert (no TensorFlow
needed): y = relu(x @ W.T + b), x (1, 8) float32, W (4, 8), b (4,)."""

from __future__ import annotations

import numpy as np


def write_fc_tflite(path, seed: int = 0):
    """Write the model to ``path``; returns ``(W, b)`` to check outputs against numpy."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 8)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)

    def tensor(shape, buf, name):
        t = s.TensorT()
        t.shape, t.type, t.buffer, t.name = list(shape), s.TensorType.FLOAT32, buf, name
        return t

    def buffer(data=None):
        bt = s.BufferT()
        bt.data = None if data is None else list(data.tobytes())
        return bt

    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType = s.BuiltinOptions.FullyConnectedOptions
    op.builtinOptions = s.FullyConnectedOptionsT()
    op.builtinOptions.fusedActivationFunction = s.ActivationFunctionType.RELU
    sg = s.SubGraphT()
    sg.tensors = [tensor((1, 8), 1, "x"), tensor((4, 8), 2, "w"), tensor((4,), 3, "b"), tensor((1, 4), 4, "y")]
    sg.inputs, sg.outputs, sg.operators, sg.name = [0], [3], [op], "main"
    code = s.OperatorCodeT()
    code.builtinCode = s.BuiltinOperator.FULLY_CONNECTED
    code.deprecatedBuiltinCode = s.BuiltinOperator.FULLY_CONNECTED
    code.version = 1
    m = s.ModelT()
    m.version, m.operatorCodes, m.subgraphs, m.description = 3, [code], [sg], "edgeshrink test"
    m.buffers = [buffer(), buffer(), buffer(w), buffer(b), buffer()]
    fb = flatbuffers.Builder(1024)
    fb.Finish(m.Pack(fb), file_identifier=b"TFL3")
    with open(path, "wb") as f:
        f.write(fb.Output())
    return w, b
