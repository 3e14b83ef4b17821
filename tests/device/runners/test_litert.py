"""The LiteRT runner on a real .tflite file in the real ai_edge_litert interpreter."""

import json

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.device.runners.tflite_tiny import write_fc_tflite

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert not installed (pip install ai-edge-litert)")


def test_litert_runner_matches_numpy(tmp_path):
    from edgeshrink.device.runners.litert import LiteRTRunner

    w, b = write_fc_tflite(tmp_path / "fc.tflite")
    with LiteRTRunner(str(tmp_path / "fc.tflite"), threads=1) as r:
        specs = r.input_specs()
        assert specs["x"].shape == (1, 8) and specs["x"].dtype == "float32"
        x = np.random.default_rng(3).standard_normal((1, 8)).astype(np.float32)
        y = r.infer({"x": x})["y"]
    np.testing.assert_allclose(y, np.maximum(x @ w.T + b, 0), atol=1e-5)


def test_device_bench_with_litert(tmp_path):
    write_fc_tflite(tmp_path / "fc.tflite")
    r = run_cli("-m", "edgeshrink.device", "bench", str(tmp_path / "fc.tflite"), "--backend", "litert", "--iters", "50",
                "--warmup", "5", "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)["results"][0]
    assert rec["backend"] == "litert" and rec["latency_ms"]["n"] == 50 and rec["latency_ms"]["median"] > 0
    assert json.loads(r.stdout)["device"]["runtime"].startswith(("ai_edge_litert", "tflite_runtime"))
