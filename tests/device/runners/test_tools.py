"""Vendor tools that time themselves: trtexec and TFLite's benchmark_model. Their parsers run on the real
captures; the wrappers run FAKE binaries (tests/fakes) that replay those captures, because neither tool can be
installed on a machine without CUDA / a TFLite build."""

import json
import os

import pytest

from edgeshrink.device.runners.benchmark_model import (BenchmarkModelParseError, parse_benchmark_model,
                                            parse_benchmark_model_runs)
from edgeshrink.device.runners.trtexec import TrtexecParseError, parse_trtexec
from tests.conftest import ROOT, SHARED_DATA, run_cli
from tests.device.test_cli import tiny_onnx

TRTEXEC = SHARED_DATA / "trtexec" / "h100-pcie_trt8.6.1_mvsacmp.txt"
BM = SHARED_DATA / "tflite_benchmark_model"
FAKES = ROOT / "tests" / "fakes"


def test_parse_trtexec_capture():
    p = parse_trtexec(TRTEXEC.read_text())
    assert p["passed"] and p["trt_version"] == "8.6.1" and p["device_name"] == "NVIDIA H100 PCIe"
    assert p["throughput_qps"] == 484.641 and p["n"] == 1457 and p["timed_s"] == 3.00635
    assert p["warmup_queries"] == 96 and p["engine_build_s"] == 1033.79
    lat = p["latency_ms"]
    assert (lat["min"], lat["mean"], lat["median"], lat["max"]) == (2.74048, 3.18949, 3.09521, 6.60767)
    assert (lat["p90"], lat["p95"], lat["p99"]) == (4.38843, 4.60181, 4.83325) and lat["n"] == 1457
    assert lat["std"] is None  # trtexec prints none
    assert p["gpu_compute_ms"]["median"] == 1.97192 and p["gpu_compute_ms"]["cv"] == pytest.approx(0.256499)
    assert p["h2d_ms"]["mean"] == 0.779499 and p["d2h_ms"]["p99"] == 0.540222


def test_parse_trtexec_refuses_output_without_a_summary():
    text = TRTEXEC.read_text()
    cut = text[: text.index("=== Performance summary ===")]
    with pytest.raises(TrtexecParseError, match="no 'Latency:' line"):
        parse_trtexec(cut)


def test_parse_benchmark_model_captures():
    runs = parse_benchmark_model_runs((BM / "android-qcom_yolov5s_android.txt").read_text())
    assert [r["latency_ms"]["mean"] for r in runs] == pytest.approx([249.684, 156.669, 92.5712, 95.7883])
    first = runs[0]
    assert first["latency_ms"]["n"] == 50 and first["latency_ms"]["min"] == 247.067
    assert first["latency_ms"]["std"] == 1.442 and first["latency_ms"]["median"] is None
    assert first["init_ms"] == 16.242 and first["first_inference_ms"] == 360.262
    assert first["memory_mb"] == {"init": 4.92969, "overall": 138.809}
    q = parse_benchmark_model((BM / "qemuriscv64_meta-tensorflow-lite.txt").read_text())
    # the timed run (count=50), not the one-iteration warm-up line before it; scientific notation read
    assert q["latency_ms"]["n"] == 50 and q["latency_ms"]["mean"] == pytest.approx(2950.34)
    assert q["warmup_avg_ms"] == pytest.approx(3512.39)
    assert len(q["ops"]) == 31 and q["ops"][0] == {"node_type": "CONV_2D", "avg_ms": 60.957,
                                                   "name": "[MobilenetV1/MobilenetV1/Conv2d_0/Relu6]:0"}
    assert sum(o["avg_ms"] for o in q["ops"]) == pytest.approx(2949.9, rel=1e-3)
    with pytest.raises(BenchmarkModelParseError):
        parse_benchmark_model("STARTING!\nLoaded model x.tflite\n")


def tool_env():
    return {"EDGESHRINK_TRTEXEC": str(FAKES / "fake_trtexec"), "FAKE_TRTEXEC_CAPTURE": str(TRTEXEC),
            "EDGESHRINK_BENCHMARK_MODEL": str(FAKES / "fake_benchmark_model"),
            "FAKE_BENCHMARK_MODEL_CAPTURE": str(BM / "qemuriscv64_meta-tensorflow-lite.txt")}


def test_device_bench_trtexec_through_the_fake_tool_caches_the_engine(tmp_path):
    import shutil

    model = tiny_onnx(tmp_path / "m.onnx")
    tool = tmp_path / "trtexec"
    shutil.copy2(FAKES / "fake_trtexec", tool)
    env = dict(tool_env(), EDGESHRINK_ENGINE_CACHE=str(tmp_path / "engines"), EDGESHRINK_TRTEXEC=str(tool))
    runs = []
    for i in range(3):
        if i == 2:  # a TensorRT upgrade replaces trtexec: the old engines are not reused
            os.utime(tool, (1, 1))
        r = run_cli("-m", "edgeshrink.device", "bench", str(model), "--backend", "trtexec", "--precision", "fp16",
                    "--iters", "100", "--json", "--log-dir", str(tmp_path / "logs"), env=env)
        assert r.returncode == 0, r.stderr
        runs.append(json.loads(r.stdout)["results"][0])
    first, second, third = runs
    assert "--saveEngine=" in " ".join(third["tool_command"])
    assert first["latency_ms"]["median"] == 3.09521 and first["throughput_ips"] == 484.641
    assert first["tool"]["gpu_compute_ms"]["mean"] == 2.05867
    cmd = " ".join(first["tool_command"])
    assert "--fp16" in cmd and "--iterations=100" in cmd and "--saveEngine=" in cmd
    assert "--loadEngine=" in " ".join(second["tool_command"])  # built once per (onnx, TensorRT, precision)
    assert (tmp_path / "logs" / "m.onnx.trtexec.log").read_text().startswith("&&&& RUNNING")


def test_device_bench_benchmark_model_through_the_fake_tool(tmp_path):
    from tests.device.runners.tflite_tiny import write_fc_tflite

    pytest.importorskip("flatbuffers")
    pytest.importorskip("ai_edge_litert")
    write_fc_tflite(tmp_path / "fc.tflite")
    r = run_cli("-m", "edgeshrink.device", "bench", str(tmp_path / "fc.tflite"), "--backend", "benchmark_model",
                "--threads", "2", "--iters", "50", "--warmup", "1", "--json", env=tool_env())
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)["results"][0]
    assert rec["latency_ms"]["mean"] == pytest.approx(2950.34) and rec["latency_ms"]["median"] is None
    assert "--num_runs=50" in rec["tool_command"] and "--num_threads=2" in rec["tool_command"]
    assert "mean 2950.3400 ms" in r.stderr  # progress falls back to the mean the tool reports


def test_tool_failure_is_one_line_exit_2(tmp_path):
    r = run_cli("-m", "edgeshrink.device", "bench", str(tmp_path / "missing.onnx"), "--backend", "trtexec", env=tool_env())
    assert r.returncode == 2 and "model file not found" in r.stderr
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"")
    env = dict(tool_env(), FAKE_TRTEXEC_CAPTURE=os.devnull, EDGESHRINK_ENGINE_CACHE=str(tmp_path / "e"))
    r = run_cli("-m", "edgeshrink.device", "bench", str(bad), "--backend", "trtexec", env=env)
    assert r.returncode == 2 and "no 'Latency:' line" in r.stderr and len(r.stderr.strip().splitlines()) == 1
