"""Which ops the runtime fuses, read from ONNX Runtime itself: the optimised graph of the whole network
(``SessionOptions.optimized_model_filepath`` at ``ORT_ENABLE_ALL``, the level ``device bench`` runs at), written
by the device the table is built on (``device optimize``), so a board whose onnxruntime fuses otherwise than
the host's is read as it is.

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
import json
import os
import tempfile
from typing import Dict, Optional, Sequence, Tuple

from edgeshrink.host.latency.key import ACTIVATION_OPS
from edgeshrink.host.latency.space import ONNX_ACTIVATION, FusionRules, build_space

_FROM_ONNX = {v: k for k, v in ONNX_ACTIVATION.items() if v}
CONV_OPS = ("Conv", "FusedConv")


def optimize_on(onnx_path: str, out: str, threads: int = 1, device: Optional[str] = None,
                trust_new_host: bool = False) -> str:
    """Have ONNX Runtime write its optimised graph of ``onnx_path`` to ``out``: on ``device`` (a device spec,
    ``local`` or ``ssh://...``, through ``device optimize``) or, with None, in this process.

    Returns:
        where it ran and the runtime, e.g. ``"onnxruntime 1.32.0 on local"``.

    Raises:
        DeviceError: the device failed or replied with something other than the optimise record.
    """
    if device is None:
        from edgeshrink.device.runners.ort import save_optimized

        return f"onnxruntime {save_optimized(onnx_path, out, threads)} on the host"
    from edgeshrink.host.errors import DeviceError
    from edgeshrink.host.remote import open_device

    with open_device(device, trust_new_host=trust_new_host) as dev:
        dev.put(onnx_path, "fusion/model.onnx")
        res = dev.run_device(["optimize", "fusion/model.onnx", "--out", "fusion/optimized.onnx", "--threads",
                              str(max(1, threads))])
        try:
            reply = json.loads(res.stdout.strip().splitlines()[-1])
            runtime = reply["runtime"]
            if not (isinstance(runtime, str) and runtime.startswith("onnxruntime ")):
                raise ValueError(runtime)
        except (ValueError, KeyError, IndexError, TypeError):
            raise DeviceError(f"{device}: `device optimize` replied {res.stdout.strip()[-200:]!r}, not its JSON "
                              "record") from None
        dev.get("fusion/optimized.onnx", out)
    return f"{runtime} on {device}"


def optimized_graph_patterns(onnx_path: str, threads: int = 1, device: Optional[str] = None,
                             trust_new_host: bool = False) -> Tuple[Dict[str, int], Dict[str, int], str]:
    """Run ONNX Runtime's optimiser (CPU, ``ORT_ENABLE_ALL``) on ``onnx_path`` (on ``device``, see
    :func:`optimize_on`) and count what its graph's nodes absorbed.

    Returns:
        ``(fused, standalone, where)``: counts of the optimised graph's conv nodes by what they absorbed
        (``"conv"``, ``"conv+relu6"``, ``"conv+add"``, ``"conv+add+relu"``, ...), counts of its other nodes by
        op type, and the runtime and where it ran.

    Raises:
        DeviceError: from :func:`optimize_on`; UserError: the optimised graph is not a readable ONNX file.
    """
    import onnx

    from edgeshrink.host.errors import UserError

    with tempfile.TemporaryDirectory(prefix="edgeshrink-fusion-") as tmp:
        out = os.path.join(tmp, "optimized.onnx")
        where = optimize_on(onnx_path, out, threads, device, trust_new_host)
        try:
            graph = onnx.load(out).graph
        except Exception as e:  # onnx raises DecodeError and others: a file from a board is checked, not trusted
            raise UserError(f"the optimised graph from {where} is not a readable ONNX file ({type(e).__name__})") \
                from None
    fused: Dict[str, int] = collections.Counter()
    other: Dict[str, int] = collections.Counter()
    for node in graph.node:
        if node.op_type in CONV_OPS:
            act = next((a.s.decode("utf-8", "replace") for a in node.attribute if a.name == "activation"), "")
            has_sum = len(node.input) > 3 and bool(node.input[3])
            name = "conv" + ("+add" if has_sum else "") + (f"+{_FROM_ONNX.get(act, act.lower())}" if act else "")
            fused[name] += 1
        else:
            other[node.op_type] += 1
    return dict(fused), dict(other), where


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


def detect_fusion(model, input_shape: Sequence[int], threads: int = 1, device: Optional[str] = None,
                  trust_new_host: bool = False) -> Tuple[FusionRules, Dict[str, object]]:
    """Export ``model`` (unpruned) at ``input_shape``, optimise it with ONNX Runtime (on ``device`` when given,
    the one the table is measured on; see :func:`optimize_on`) and derive the fusion rules.

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
        fused, other, where = optimized_graph_patterns(path, threads, device, trust_new_host)
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
              "source": f"optimised graph (ORT_ENABLE_ALL, CPU, {max(1, threads)} thread(s)) of the unpruned network, "
                        f"{where}"}
    return rules, record
