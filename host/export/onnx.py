"""ONNX export with torch's exporter (``torch.onnx.export(dynamo=True)``), checked by ``onnx.checker``
and numerically against torch in ONNX Runtime."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Dict, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn

from edgeshrink.host.io import atomic_path

OPSET = 18


class ExportCheckError(RuntimeError):
    """The exported graph is invalid or does not match torch within tolerance (a bug, not user input)."""


def export_onnx(model: nn.Module, input_shape: Sequence[int], path: str, opset: int = OPSET,
                dynamic_batch: bool = False, slim: bool = False) -> Dict[str, object]:
    """Export ``model`` (eval mode) at input ``(N, C, H, W)`` to ``path``; input ``"input"``, output ``"logits"``.

    torch's exporter (``dynamo=True``) runs onnxscript's optimizer, which folds constants; with ``slim`` the
    graph is then simplified by onnxslim. Exporter chatter is captured, not printed; the file is written
    atomically.

    Args:
        model: the network.
        input_shape: ``(N, C, H, W)``; fixed unless ``dynamic_batch``.
        path: output ``.onnx``.
        opset: ONNX opset (>= 17).
        dynamic_batch: leave the batch axis free (``N`` symbolic).
        slim: simplify with onnxslim.

    Returns:
        ``{"opset", "dynamic_batch", "slim", "nodes_before_slim", "nodes"}``.
    """
    model = model.eval()
    x = torch.zeros(*input_shape)
    kwargs = {}
    if dynamic_batch:
        kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
        if input_shape[0] == 1:
            x = torch.zeros(2, *input_shape[1:])  # a batch of 1 would be specialised by torch.export
    before, nodes = export_module(model, (x,), path, ["input"], ["logits"], opset=opset, slim=slim, **kwargs)
    return {"opset": opset, "dynamic_batch": dynamic_batch, "slim": slim, "nodes_before_slim": before,
            "nodes": nodes}


def export_module(module: nn.Module, args: Sequence[torch.Tensor], path: str, input_names: Sequence[str],
                  output_names: Sequence[str], opset: int = OPSET, slim: bool = False, **kwargs):
    """Export ``module`` (eval mode) called on ``args`` to ``path`` with these input and output names, atomically,
    exporter chatter captured; ``kwargs`` go to ``torch.onnx.export``. Returns ``(nodes before slim, nodes)``."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(module.eval(), tuple(args), dynamo=True, opset_version=opset,
                                 input_names=list(input_names), output_names=list(output_names),
                                 external_data=False, verbose=False, optimize=True, **kwargs)
    proto = prog.model_proto
    before = len(proto.graph.node)
    if slim:
        import onnxslim

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            proto = onnxslim.slim(proto)
    # write atomically: an interrupted export never leaves a partial .onnx behind

    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return before, len(proto.graph.node)


def check_onnx(model: nn.Module, path: str, input_shape: Sequence[int], atol: float = 1e-4, samples: int = 4,
               seed: int = 0) -> Dict[str, object]:
    """``onnx.checker`` plus the max abs difference between torch and ONNX Runtime (CPU) on ``samples``
    random standard-normal inputs, judged against ``atol`` times the outputs' scale (their max abs value, at least 1):
    float32 sums in another order differ in proportion to the values summed (a segmentation network's logits over
    a large map are in the tens).

    Returns:
        ``{"checker": "ok", "max_abs_diff": float, "output_scale": float, "atol": atol, "samples": samples}``.

    Raises:
        ExportCheckError: the checker fails or the difference exceeds ``atol`` x the output scale.
    """
    try:
        onnx.checker.check_model(onnx.load(path), full_check=True)
    except Exception as e:
        raise ExportCheckError(f"{path}: onnx.checker failed: {e}") from None
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    g = torch.Generator().manual_seed(seed)
    worst, scale = 0.0, 1.0
    model = model.eval()
    dynamic = not isinstance(sess.get_inputs()[0].shape[0], int)
    with torch.no_grad():
        for i in range(samples):
            shape = list(input_shape)
            if dynamic and i % 2:
                shape[0] = 3  # a free batch axis is checked at another batch size too
            x = torch.randn(*shape, generator=g)
            ref = model(x).numpy()
            got = sess.run(None, {name: x.numpy()})[0]
            worst = max(worst, float(np.max(np.abs(ref - got))))
            scale = max(scale, float(np.max(np.abs(ref))))
    if not worst <= atol * scale:
        raise ExportCheckError(f"{path}: ONNX Runtime differs from torch by {worst:.3g} > {atol:g} x the outputs' "
                               f"scale {scale:.3g}")
    return {"checker": "ok", "max_abs_diff": worst, "output_scale": scale, "atol": atol, "samples": samples}
