"""GPU backends: run where the hardware is (CUDA + TensorRT + pycuda), skipped with the reason elsewhere."""

import numpy as np
import pytest

from edgeshrink.device import runners
from tests.device.test_cli import tiny_onnx


def _skip_unless(backend):
    info = runners.backends()[backend]
    if not info["available"]:
        pytest.skip(f"{backend} unavailable here: {info['reason']}")


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_matches_onnxruntime(tmp_path, monkeypatch, precision):
    _skip_unless("tensorrt")
    monkeypatch.setenv("EDGESHRINK_ENGINE_CACHE", str(tmp_path / "engines"))
    model = str(tiny_onnx(tmp_path / "m.onnx"))
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with runners.get_runner("ort")(model) as ref:
        want = ref.infer({"x": x})["y"]
    with runners.get_runner("tensorrt")(model, precision=precision) as r:
        assert r.input_specs()["x"].shape == (1, 3, 8, 8) and not r.engine_cached
        got = r.infer({"x": x})["y"]
    np.testing.assert_allclose(got, want, atol=1e-4 if precision == "fp32" else 2e-2)
    with runners.get_runner("tensorrt")(model, precision=precision) as r:
        assert r.engine_cached  # second time from the cache


@pytest.mark.gpu
def test_ort_cuda_matches_cpu(tmp_path):
    _skip_unless("ort-cuda")
    model = str(tiny_onnx(tmp_path / "m.onnx"))
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with runners.get_runner("ort")(model) as ref, runners.get_runner("ort-cuda")(model) as r:
        np.testing.assert_allclose(r.infer({"x": x})["y"], ref.infer({"x": x})["y"], atol=1e-4)


def test_each_missing_backend_says_what_is_missing(monkeypatch, tmp_path):
    """With the runtimes and tools made absent, each backend's reason names the missing piece and how to get it."""
    import sys

    import onnxruntime

    for env in ("EDGESHRINK_TRTEXEC", "EDGESHRINK_BENCHMARK_MODEL"):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no trtexec, no benchmark_model
    for mod in ("tensorrt", "pycuda", "ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime",
                "tflite_runtime.interpreter"):
        monkeypatch.setitem(sys.modules, mod, None)  # import fails as when not installed
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    info = runners.backends()
    assert set(info) == {"ort", "ort-cuda", "ort-tensorrt", "litert", "tensorrt", "trtexec", "benchmark_model"}
    assert info["ort"]["available"] and info["ort"]["version"].startswith("onnxruntime ")
    want = {"ort-cuda": "has no CUDAExecutionProvider", "ort-tensorrt": "has no TensorrtExecutionProvider",
            "tensorrt": "tensorrt is not importable", "litert": "no LiteRT interpreter",
            "trtexec": "trtexec not found", "benchmark_model": "benchmark_model not found"}
    for name, needle in want.items():
        assert not info[name]["available"] and needle in info[name]["reason"], (name, info[name])
    assert "install" in info["tensorrt"]["reason"] and "onnxruntime-gpu" in info["ort-cuda"]["reason"]
