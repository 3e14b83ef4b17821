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


def test_backends_lists_every_runner_with_a_reason_when_missing():
    info = runners.backends()
    assert set(info) == {"ort", "ort-cuda", "ort-tensorrt", "litert", "tensorrt", "trtexec", "benchmark_model"}
    for name, v in info.items():
        assert v["available"] or v["reason"], name
    assert info["ort"]["available"]
