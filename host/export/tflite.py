"""TFLite export, directly from PyTorch with litert-torch, in fp32, fp16 and int8, checked in LiteRT.

* fp32: ``litert_torch.convert(model, (x,))`` (the graph is lowered to TFLite ops; litert-torch inserts the
  NCHW -> NHWC transposes).
* fp16: float16 weights, float compute (ai-edge-quantizer's FLOAT_CASTING weight-only recipe).
* int8: full-integer post-training quantisation with int8 inputs and outputs (ai-edge-quantizer's
  ``static_wi8_ai8`` recipe: int8 per-channel weights, int8 activations), calibrated on a representative set
  drawn from the training split.

Needs the ``[tflite]`` extra (litert-torch, which pulls about 1 GB: jax, transformers); a missing extra gives a
one-line error naming it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from edgeshrink.host.errors import UserError

PRECISIONS = ("fp32", "fp16", "int8")


def require_tflite_tools():
    """Import litert_torch and ai_edge_quantizer, or raise UserError naming the extra."""
    try:
        with _quiet():
            import ai_edge_quantizer  # noqa: F401
            import litert_torch
    except ImportError as e:
        raise UserError(f"TFLite export needs the [tflite] extra ({e.name} is missing): "
                        "pip install -e '.[tflite]'  (litert-torch, about 1 GB)") from None
    return litert_torch


@contextlib.contextmanager
def _quiet():
    logging.getLogger("absl").setLevel(logging.ERROR)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def export_tflite(model: nn.Module, input_shape: Sequence[int], path: str, precision: str = "fp32",
                  calibration: Optional[np.ndarray] = None) -> Dict[str, object]:
    """Convert ``model`` to a ``.tflite`` file at ``path`` (written atomically).

    Args:
        model: the network, input ``(N, C, H, W)`` float32.
        input_shape: ``(N, C, H, W)``, fixed.
        path: output ``.tflite``.
        precision: ``fp32``, ``fp16`` or ``int8``.
        calibration: int8 only: representative inputs ``(S, C, H, W)`` float32 (from the training split).

    Returns:
        ``{"precision", "signature_input", "calibration_samples", "bytes"}``.

    Raises:
        UserError: the [tflite] extra is missing, an unknown precision, int8 without calibration data.
    """
    if precision not in PRECISIONS:
        raise UserError(f"unknown TFLite precision {precision!r}; one of {', '.join(PRECISIONS)}")
    if precision == "int8" and (calibration is None or len(calibration) == 0):
        raise UserError("int8 TFLite export needs representative inputs from the training split")
    litert_torch = require_tflite_tools()
    from edgeshrink.host.io import atomic_path

    model = model.eval()
    x = torch.zeros(*input_shape)
    with tempfile.TemporaryDirectory(prefix="edgeshrink-tflite-") as tmp:
        fp32 = os.path.join(tmp, "fp32.tflite")
        with _quiet(), contextlib.redirect_stderr(io.StringIO()):
            edge = litert_torch.convert(model, (x,))
            edge.export(fp32)
        sig_input = _signature_input(fp32)
        if precision == "fp32":
            out = fp32
        else:
            from ai_edge_quantizer import quantizer, recipe, qtyping

            out = os.path.join(tmp, f"{precision}.tflite")
            with _quiet(), contextlib.redirect_stderr(io.StringIO()):
                if precision == "fp16":
                    qt = quantizer.Quantizer(fp32)
                    qt.update_quantization_recipe(
                        regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                        op_config=qtyping.OpQuantizationConfig(
                            weight_tensor_config=qtyping.TensorQuantizationConfig(
                                num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
                            compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True),
                        algorithm_key=quantizer.algorithm_manager.AlgorithmName.FLOAT_CASTING)
                    qt.quantize().export_model(out, overwrite=True)
                else:
                    qt = quantizer.Quantizer(fp32, recipe.static_wi8_ai8())
                    data = {"serving_default": [{sig_input: calibration[i : i + 1].astype(np.float32)}
                                                for i in range(len(calibration))]}
                    qt.quantize(qt.calibrate(data, num_threads=1)).export_model(out, overwrite=True)
        with atomic_path(path) as dst, open(out, "rb") as src:
            dst.write_bytes(src.read())
    return {"precision": precision, "signature_input": sig_input,
            "calibration_samples": int(len(calibration)) if precision == "int8" else 0,
            "bytes": os.path.getsize(path)}


def _signature_input(path: str) -> str:
    from ai_edge_litert.interpreter import Interpreter

    sigs = Interpreter(model_path=path).get_signature_list()
    return sigs["serving_default"]["inputs"][0] if "serving_default" in sigs else "args_0"


class TFLiteModel:
    """A ``.tflite`` file in the LiteRT interpreter as a function of float ``(N, C, H, W)`` inputs; int8 models
    get their inputs quantised and outputs dequantised with the tensors' own scale and zero point."""

    def __init__(self, path: str, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_path=path, num_threads=threads)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]
        self.out = self.it.get_output_details()[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(x.shape[0]):
            xi = x[i : i + 1].astype(np.float32)
            if self.inp["dtype"] != np.float32:
                scale, zp = self.inp["quantization"]
                info = np.iinfo(self.inp["dtype"])
                xi = np.clip(np.round(xi / scale + zp), info.min, info.max).astype(self.inp["dtype"])
            self.it.set_tensor(self.inp["index"], xi)
            self.it.invoke()
            y = self.it.get_tensor(self.out["index"])
            if self.out["dtype"] != np.float32:
                scale, zp = self.out["quantization"]
                y = (y.astype(np.float32) - zp) * scale
            outs.append(y)
        return np.concatenate(outs)


def check_tflite(model: nn.Module, path: str, input_shape: Sequence[int], precision: str,
                 test: Optional[tuple] = None, samples: int = 4, seed: int = 0) -> Dict[str, object]:
    """Check a TFLite artifact against torch in LiteRT.

    fp32 must match within 1e-4 (max abs difference on ``samples`` random standard-normal inputs). For fp16 and
    int8 the difference is reported, and with ``test = (x (N, C, H, W), labels (N,))`` also the max abs difference
    of the logits on the test split and the top-1 (%) of the artifact and of the torch fp32 model there, side by
    side.

    Raises:
        ExportCheckError: fp32 differs by more than 1e-4.
    """
    from edgeshrink.host.export.onnx import ExportCheckError

    tfl = TFLiteModel(path)
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    model = model.eval()
    with torch.no_grad():
        for _ in range(samples):
            x = torch.randn(*input_shape, generator=g)
            worst = max(worst, float(np.max(np.abs(model(x).numpy() - tfl(x.numpy())))))
    out: Dict[str, object] = {"runtime": "ai_edge_litert", "max_abs_diff": worst, "samples": samples}
    if precision == "fp32":
        out["atol"] = 1e-4
        if not worst <= 1e-4:
            raise ExportCheckError(f"{path}: LiteRT differs from torch by {worst:.3g} > 1e-4")
    if test is not None:
        xs, ys = test
        with torch.no_grad():
            ref = torch.cat([model(torch.as_tensor(xs[i : i + 256])) for i in range(0, len(xs), 256)]).numpy()
        got = tfl(np.asarray(xs, dtype=np.float32))
        out["max_abs_diff_test"] = float(np.max(np.abs(got - ref)))  # on real inputs (random ones may lie
        # outside an int8 model's calibrated range)
        out["top1"] = float((got.argmax(1) == ys).mean() * 100)
        out["top1_fp32_torch"] = float((ref.argmax(1) == ys).mean() * 100)
        out["top1_drop"] = out["top1_fp32_torch"] - out["top1"]
        out["test_samples"] = int(len(ys))
    return out
