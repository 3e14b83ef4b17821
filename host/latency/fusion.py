"""Which ops the runtime fuses, read from ONNX Runtime itself: the optimised graph of the whole network
(``SessionOptions.optimized_model_filepath`` at ``ORT_ENABLE_ALL``, the level ``device bench`` runs at).

The convolution nodes of that graph (``Conv``, ``FusedConv``, ``com.microsoft.nchwc.Conv``) say what they absorbed:
an ``activation`` attribute (Relu, Clip for ReLU6, HardSwish, HardSigmoid, Sigmoid, ...) and, for NCHWc convs, a
``Sum`` input (a residual add run as the conv's epilogue, the activation then applying after the sum). Counting
them against the candidate patterns of the torch model (a conv followed by each activation, by an add, ...) gives
the :class:`~edgeshrink.host.latency.space.FusionRules` the pruning space and the micro-models follow, so a new
model's fusions are right without rules written per architecture. The counts are kept in the table's
``calibration.fusion``.
"""

from __future__ import annotations

import collections
import os
import tempfile
from typing import Dict, Sequence, Tuple

from edgeshrink.host.latency.key import ACTIVATION_OPS
from edgeshrink.host.latency.space import ONNX_ACTIVATION, FusionRules, build_space

_FROM_ONNX = {v: k for k, v in ONNX_ACTIVATION.items() if v}
CONV_OPS = ("Conv", "FusedConv")


def optimized_graph_patterns(onnx_path: str, threads: int = 1) -> Tuple[Dict[str, int], Dict[str, int], str]:
    """Run ONNX Runtime's optimiser (CPU, ``ORT_ENABLE_ALL``) on ``onnx_path``.

    Returns:
        ``(fused, standalone, version)``: counts of the optimised graph's conv nodes by what they absorbed
        (``"conv"``, ``"conv+relu6"``, ``"conv+add"``, ``"conv+add+relu"``, ...), counts of its other nodes by
        op type, and the onnxruntime version.
    """
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgeshrink-fusion-") as tmp:
        out = os.path.join(tmp, "optimized.onnx")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = out
        so.intra_op_num_threads = max(1, threads)
        so.log_severity_level = 3  # the "hardware specific optimisations" warning of saving an NCHWc graph
        ort.InferenceSession(onnx_path, sess_options=so, providers=["CPUExecutionProvider"])
        graph = onnx.load(out).graph
    fused: Dict[str, int] = collections.Counter()
    other: Dict[str, int] = collections.Counter()
    for node in graph.node:
        if node.op_type in CONV_OPS:
            act = next((a.s.decode() for a in node.attribute if a.name == "activation"), "")
            has_sum = len(node.input) > 3 and bool(node.input[3])
            name = "conv" + ("+add" if has_sum else "") + (f"+{_FROM_ONNX.get(act, act.lower())}" if act else "")
            fused[name] += 1
        else:
            other[node.op_type] += 1
    return dict(fused), dict(other), ort.__version__


def candidate_patterns(model, input_shape: Sequence[int]) -> Dict[str, int]:
    """The torch model's candidate fusions: its conv sites if the runtime fused everything it could, counted by
    pattern (``"conv+hardswish"``, ``"conv+add+relu"``, ``"conv"``) as :func:`optimized_graph_patterns` names them."""
    every = FusionRules(frozenset(ACTIVATION_OPS), True, frozenset(ACTIVATION_OPS))
    space = build_space(model, input_shape, fusion=every)
    out: Dict[str, int] = collections.Counter()
    for s in space.sites:
        if s.op in ("conv2d", "dwconv2d"):
            rest = [f for f in s.fused if f != "bn"]
            out["+".join(["conv"] + rest)] += 1
    return dict(out)


def detect_fusion(model, input_shape: Sequence[int], threads: int = 1) -> Tuple[FusionRules, Dict[str, object]]:
    """Export ``model`` (unpruned) at ``input_shape``, optimise it with ONNX Runtime and derive the fusion rules.

    An activation is fused into a conv when the runtime's graph holds convs carrying it; an add when it holds convs
    with a ``Sum`` input. The record lists both counts per pattern, so a partial fusion (the runtime fusing fewer
    than the model offers) shows.

    Returns:
        ``(rules, record)``; the record is what ``calibration.fusion`` stores: ``rules``, ``runtime`` (counts in the
        optimised graph), ``candidates`` (the torch model's), ``unfused_ops`` (other node types and counts),
        ``source``.
    """
    from edgeshrink.host.export.onnx import export_onnx

    with tempfile.TemporaryDirectory(prefix="edgeshrink-fusion-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        export_onnx(model.eval(), input_shape, path)
        fused, other, version = optimized_graph_patterns(path, threads)
    acts, add_acts, add = set(), set(), False
    for pattern in fused:
        parts = pattern.split("+")[1:]
        if parts[:1] == ["add"]:
            add = True
            add_acts.update(p for p in parts[1:] if p in ACTIVATION_OPS)
        else:
            acts.update(p for p in parts if p in ACTIVATION_OPS)
    rules = FusionRules(frozenset(acts), add, frozenset(add_acts))
    record = {"rules": rules.to_dict(), "runtime": dict(sorted(fused.items())),
              "candidates": dict(sorted(candidate_patterns(model, input_shape).items())),
              "unfused_ops": dict(sorted(other.items())),
              "source": f"onnxruntime {version} optimised graph (ORT_ENABLE_ALL, CPU, {max(1, threads)} thread(s)) of "
                        "the unpruned network, on the host"}
    return rules, record
