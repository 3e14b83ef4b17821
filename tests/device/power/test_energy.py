"""Energy per inference from power samples and the benchmark's windows."""

import pytest

from edgeshrink.device.power.energy import summarize_power, to_csv, window_mean_mw


def test_idle_and_timed_windows_and_energy_arithmetic():
    # idle 0..2 s at 1000 mW, timed 2.5..4.5 s at 3000 mW, 400 inferences
    samples = [(t / 10, 1000.0) for t in range(0, 21)] + [(t / 10, 3000.0) for t in range(25, 46)]
    p = summarize_power(samples, idle=(0.0, 2.0), timed=(2.5, 4.5), inferences=400, meter="test")
    assert p["idle_power_mw"] == 1000.0 and p["idle_samples"] == 21
    assert p["mean_power_mw"] == 3000.0 and p["samples"] == 21
    # 3000 mW x 2 s / 400 = 15 mJ; above idle 2000 mW x 2 s / 400 = 10 mJ
    assert p["energy_per_inference_mj"] == pytest.approx(15.0)
    assert p["energy_above_idle_per_inference_mj"] == pytest.approx(10.0)
    assert p["warning"] is None


def test_a_window_without_samples_says_so():
    p = summarize_power([(0.0, 1000.0), (5.0, 1000.0)], idle=(0.0, 1.0), timed=(2.0, 2.1), inferences=10, meter="x")
    assert p["energy_per_inference_mj"] is None and "no power sample" in p["warning"]
    assert window_mean_mw([], 0, 1) == (None, 0)


def test_csv_has_units_in_column_names(tmp_path):
    out = tmp_path / "p.csv"
    to_csv([{"t_s": 10.0, "total_power_mw": 5000.0, "rails_mw": {"VDD_IN": 5000.0, "VDD_SOC": 1200.0}},
            {"t_s": 10.1, "total_power_mw": 5100.0, "rails_mw": {"VDD_IN": 5100.0}}], str(out))
    lines = out.read_text().splitlines()
    assert lines[0] == "t_ms,total_mw,vdd_in_mw,vdd_soc_mw"
    assert lines[1] == "0.0,5000.0,5000.0,1200.0" and lines[2] == "100.0,5100.0,5100.0,"
