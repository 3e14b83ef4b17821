"""``device bench`` with power, thermal state, warm-up by time and CPU pinning. tegrastats and vcgencmd are
FAKES here (tests/fakes) replaying real captures: this machine is neither a Jetson nor a Raspberry Pi. The
benchmark itself is real (ONNX Runtime)."""

import csv
import json

import pytest

from tests.conftest import ROOT, SHARED_DATA, run_cli
from tests.device.test_cli import tiny_onnx

FAKES = ROOT / "tests" / "fakes"


ITERS = 60000  # a few hundred ms of a tiny model: enough power samples in the timed window


def bench(tmp_path, *extra, env=None):
    model = tiny_onnx(tmp_path / "m.onnx")
    r = run_cli("-m", "edgeshrink.device", "bench", str(model), "--iters", str(ITERS), "--warmup", "10", "--json",
                "--log-dir", str(tmp_path / "logs"), *extra, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["results"][0]


def test_tegrastats_power_idle_window_and_energy_per_inference(tmp_path):
    capture = SHARED_DATA / "tegrastats" / "xavier-nx_tegra_burn.txt"
    env = {"EDGESHRINK_TEGRASTATS": str(FAKES / "fake_tegrastats"), "FAKE_TEGRASTATS_CAPTURE": str(capture)}
    rec = bench(tmp_path, "--power", "tegrastats", "--power-interval-ms", "50", "--idle-s", "0.3", env=env)
    p = rec["power"]
    assert p["meter"] == "tegrastats" and p["total_rails"] == ["VDD_IN"]
    assert p["idle_samples"] >= 3 and p["samples"] >= 3
    # The replay starts with the capture's idle phase: its first 8 lines hold VDD_IN 5542-5621 mW, and a 0.3 s idle
    # window at one line per 50 ms sees no later one; the burn that follows draws more.
    assert 5542 <= p["idle_power_mw"] <= 5621
    # every line of the capture holds VDD_IN between 5542 and 13830 mW, so does the timed window's mean; the energy
    # arithmetic has its known answer in tests/device/power/test_energy.py
    assert p["idle_power_mw"] <= p["mean_power_mw"] <= 13830 and p["energy_above_idle_per_inference_mj"] >= 0
    assert 0 < p["energy_per_inference_mj"] <= 13830 * p["timed_s"] / ITERS
    logs = tmp_path / "logs"
    raw = (logs / "m.onnx.tegrastats.log").read_text().splitlines()
    assert raw[0] in capture.read_text()  # the raw log is kept for the host to pull back
    rows = list(csv.DictReader(open(logs / "m.onnx.power.csv")))
    assert rows and {"t_ms", "total_mw", "vdd_in_mw", "vdd_soc_mw"} <= set(rows[0])
    assert len(rows) == len(raw) or len(rows) == len(raw) - 1
    assert p["max_temp_c"] >= 37.0


def test_pi5_pmic_power_and_throttle_state(tmp_path):
    env = {"EDGESHRINK_VCGENCMD": str(FAKES / "fake_vcgencmd"),
           "FAKE_RPI_CAPTURE": str(SHARED_DATA / "rpi" / "raspberry-pi5_power_thermal_samples.txt"),
           "FAKE_THROTTLED": "throttled=0x50005"}
    rec = bench(tmp_path, "--power", "pmic", "--power-interval-ms", "50", "--idle-s", "0.3", env=env)
    assert rec["power"]["meter"] == "pmic"
    assert rec["power"]["mean_power_mw"] == pytest.approx(2282.21, abs=0.01)  # the replayed reading
    assert rec["thermal_before"]["rpi"]["temp_c"] == 47.4
    assert rec["throttled"] and "active now" in rec["throttle_evidence"][-1]


def test_no_meter_here_is_a_one_line_error(tmp_path):
    model = tiny_onnx(tmp_path / "m.onnx")
    r = run_cli("-m", "edgeshrink.device", "bench", str(model), "--power", "tegrastats", env={"EDGESHRINK_TEGRASTATS": ""})
    assert r.returncode == 2 and "tegrastats" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_warmup_by_time_affinity_cool_down_and_thermal_fields(tmp_path):
    rec = bench(tmp_path, "--warmup-s", "0.3", "--cpus", "0", "--cool-down-s", "0.2")
    assert rec["warmup_s"] == 0.3 and rec["warmup_calls"] > 10  # kept going for 0.3 s after the 10 counted
    assert rec["affinity"] == [0]
    assert rec["cool_down"]["waited_s"] >= 0.2
    for k in ("temps_c", "cpu_clocks_mhz", "throttle_counts"):
        assert k in rec["thermal_before"] and k in rec["thermal_after"]
    assert rec["throttled"] is False and rec["throttle_evidence"] == [] and rec["power"] is None
    assert rec["throughput_ips"] == pytest.approx(1000.0 / rec["latency_ms"]["mean"])


def test_bad_cpu_list_is_refused(tmp_path):
    model = tiny_onnx(tmp_path / "m.onnx")
    r = run_cli("-m", "edgeshrink.device", "bench", str(model), "--cpus", "zero")
    assert r.returncode == 2 and "malformed CPU list" in r.stderr
