"""``host bench``: interleaved rounds on the local device, with power from a FAKE tegrastats (this machine is
not a Jetson) and the logs pulled back into --out."""

import json

from tests.conftest import ROOT, SHARED_DATA, error_line, one_line_error
from tests.device.test_cli import tiny_onnx


def test_host_bench_with_power_pulls_the_logs_back(tmp_path, host_cli, monkeypatch):
    a = tiny_onnx(tmp_path / "a.onnx")
    monkeypatch.setenv("EDGESHRINK_TEGRASTATS", str(ROOT / "tests" / "fakes" / "fake_tegrastats"))
    monkeypatch.setenv("FAKE_TEGRASTATS_CAPTURE", str(SHARED_DATA / "tegrastats" / "orin-nano_beszel_test.txt"))
    out = tmp_path / "res"
    r = host_cli("bench", str(a), "--iters", "40000", "--rounds", "2", "--power", "tegrastats", "--power-interval-ms",
                 "20", "--idle-s", "0.3", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    m = doc["models"][str(a)]
    p = m["power"]
    # The replayed Orin Nano capture alternates VDD_IN 12479 mW and 4824 mW, one line per interval: n consecutive
    # samples average (12479 + 4824) / 2 within (12479 - 4824) / 2 / n, whichever line they start on.
    for mean, n in ((p["idle_power_mw"], p["idle_samples"]), (p["mean_power_mw"], p["samples"])):
        assert n >= 4 and abs(mean - 8651.5) <= 3827.5 / n + 1e-6, (mean, n)
    assert p["energy_per_inference_mj"] > 0 and p["total_rails"] == ["VDD_IN"]
    assert "--power" in doc["device_args"] and len(m["round_medians_ms"]) == 2
    pulled = sorted(f.name for f in out.iterdir())
    assert pulled == ["m0_a.onnx.power.csv", "m0_a.onnx.tegrastats.log", "results.json"]
    assert (out / "m0_a.onnx.power.csv").read_text().startswith("t_ms,total_mw,vdd_in_mw")
    one_line_error(host_cli("bench", str(a), "--rounds", "0"), "--rounds")


def test_a_trt_int8_artifact_ships_with_its_calibration_cache(tmp_path, host_cli, monkeypatch, untrained_ckpt):
    """`host export --format trt --precision int8` then `host bench --backend trtexec --calib-cache`: the cache reaches
    the tool (trtexec is a FAKE replaying the real capture, which refuses int8 without a valid cache and says how
    many scales it read: no TensorRT here)."""
    r = host_cli("export", "--checkpoint", str(untrained_ckpt), "--format", "trt", "--precision", "int8", "--calib-samples", "8", "-o",
                 str(tmp_path / "trt"))
    assert r.returncode == 0, r.stderr
    for k, v in {"EDGESHRINK_TRTEXEC": str(ROOT / "tests" / "fakes" / "fake_trtexec"),
                 "FAKE_TRTEXEC_CAPTURE": str(SHARED_DATA / "trtexec" / "h100-pcie_trt8.6.1_mvsacmp.txt"),
                 "EDGESHRINK_ENGINE_CACHE": str(tmp_path / "engines")}.items():
        monkeypatch.setenv(k, v)
    model, cache = tmp_path / "trt" / "model.onnx", tmp_path / "trt" / "calib.cache"
    r = host_cli("bench", str(model), "--backend", "trtexec", "--precision", "int8", "--calib-cache", str(cache),
                 "--out", str(tmp_path / "res"), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["device_args"][-2:] == ["--calib-cache", "artifacts/calib.cache"]
    m = next(iter(doc["models"].values()))
    assert m["median_ms"] == 3.09521 and m["min_ms"] == 2.74048  # the replayed capture's median and minimum
    scales = len(cache.read_text().splitlines()) - 1
    log = (tmp_path / "res" / "m0_model.onnx.trtexec.log").read_text()
    assert f"read: {scales} tensor scales" in log and scales > 20  # the host's cache, all of it, reached the tool
    bad = tmp_path / "bad.cache"
    bad.write_text("not a cache\n")
    error_line(host_cli("bench", str(model), "--backend", "trtexec", "--precision", "int8", "--calib-cache", str(bad)),
               "is not a TensorRT calibration cache")
    error_line(host_cli("bench", str(model), "--backend", "trtexec", "--precision", "int8"),
               "int8 without a calibration cache")
