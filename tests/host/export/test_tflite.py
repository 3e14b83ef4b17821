"""TFLite export with litert-torch, checked in the real LiteRT interpreter (needs the [tflite] extra)."""

import pytest

import importlib.util

from edgeshrink.host.export.artifact import export_artifact
from edgeshrink.host.export.onnx import ExportCheckError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("litert_torch") is None,
                                reason="the [tflite] extra is not installed (pip install -e '.[tflite]')")


def task(ckpt, out, fmt, prec, **kw):
    return {"checkpoint": str(ckpt), "format": fmt, "precision": prec, "input": "1x3x32x32", "out": str(out),
            "dataset": "digits", "calib_samples": 64, "seed": 0, "force": True, **kw}


@pytest.mark.parametrize("which", [pytest.param("full", marks=pytest.mark.slow),
                                   pytest.param("pruned", marks=pytest.mark.slow)])
def test_resnet20_and_a_pruned_resnet20_pass_onnx_and_tflite_fp32(tmp_path, untrained_ckpt, pruned_ckpt, which):
    ckpt = untrained_ckpt if which == "full" else pruned_ckpt
    for fmt in ("onnx", "tflite"):
        doc = export_artifact(task(ckpt, tmp_path / fmt, fmt, "fp32"))
        assert doc["status"] == "built" and doc["check"]["max_abs_diff"] <= 1e-4
        assert (tmp_path / fmt / doc["file"]).stat().st_size > 10_000
        assert doc["tool_versions"]["torch"] and doc["source_checkpoint"]["channels"]
    assert doc["tool_versions"]["litert-torch"]


@pytest.mark.slow
def test_int8_full_integer_top1_within_one_point_of_fp32(tmp_path, trained_ckpt):
    doc = export_artifact(task(trained_ckpt, tmp_path / "i8", "tflite", "int8"))
    chk = doc["check"]
    assert chk["test_samples"] == 360 and chk["top1_drop"] <= 1.0
    assert doc["export"]["calibration_samples"] == 64
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(tmp_path / "i8" / "model.tflite"))
    assert it.get_input_details()[0]["dtype"].__name__ == "int8"  # full-integer: int8 in and out


@pytest.mark.slow
def test_fp16_weights_are_half_size_and_close(tmp_path, trained_ckpt):
    f32 = export_artifact(task(trained_ckpt, tmp_path / "f32", "tflite", "fp32"))
    f16 = export_artifact(task(trained_ckpt, tmp_path / "f16", "tflite", "fp16"))
    s32 = (tmp_path / "f32" / "model.tflite").stat().st_size
    s16 = (tmp_path / "f16" / "model.tflite").stat().st_size
    assert s16 < 0.6 * s32
    assert f16["check"]["max_abs_diff_test"] < 0.1 and abs(f16["check"]["top1_drop"]) <= 0.5
    assert f32["check"]["max_abs_diff"] <= 1e-4


@pytest.mark.slow
def test_a_wrong_tflite_is_caught(tmp_path, untrained_ckpt):
    """The check compares against the checkpoint's own model: a file from other weights fails it."""
    import torch

    from edgeshrink import models
    from edgeshrink.host.export.tflite import check_tflite, export_tflite

    torch.manual_seed(123)  # other weights than the checkpoint's (made with seed 0)
    other = models.create_model("resnet20")
    export_tflite(other, (1, 3, 32, 32), str(tmp_path / "other.tflite"))
    from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint

    mine = model_from_checkpoint(load_checkpoint(str(untrained_ckpt)))
    torch.manual_seed(0)
    with pytest.raises(ExportCheckError, match="differs from torch"):
        check_tflite(mine, str(tmp_path / "other.tflite"), (1, 3, 32, 32), "fp32")
