"""Thermal state, throttle evidence and the cool-down gate (clock and sensors injected)."""

from edgeshrink.device import thermal
from edgeshrink.device.power import rpi


def test_cool_down_waits_until_the_target_temperature():
    temps = iter([60.0, 57.0, 53.0, 49.5, 48.0])
    slept = []
    r = thermal.cool_down(to_c=50.0, read=lambda: next(temps), sleep=slept.append, poll_s=2.0)
    assert r == {"waited_s": 6.0, "start_temp_c": 60.0, "end_temp_c": 49.5, "reached": True}
    assert slept == [2.0, 2.0, 2.0]


def test_cool_down_gives_up_and_a_fixed_pause():
    slept = []
    r = thermal.cool_down(to_c=40.0, wait_s=30.0, max_wait_s=35.0, read=lambda: 70.0, sleep=slept.append, poll_s=1.0)
    assert r["reached"] is False and r["waited_s"] == 35.0 and slept[0] == 30.0
    r = thermal.cool_down(to_c=40.0, read=lambda: None, sleep=slept.append)
    assert r["reached"] is None  # no sensor: the record says the gate could not apply


def test_throttle_evidence_from_counters_trips_and_the_pi_bits():
    calm = {"throttle_counts": {"cpu0": 5}, "passive_trips_hit": [], "rpi": {"throttled": rpi.decode_throttled(0)}}
    assert thermal.throttle_evidence(calm, calm) == []
    hot = {"throttle_counts": {"cpu0": 7}, "passive_trips_hit": ["cpu-thermal"],
           "rpi": {"throttled": rpi.decode_throttled(0x40000)}}
    why = thermal.throttle_evidence(calm, hot)
    assert len(why) == 3 and "cpu0" in why[0] and "cpu-thermal" in why[1] and "0x0 -> 0x40000" in why[2]
    now = {"rpi": {"throttled": rpi.decode_throttled(0x50005)}}
    assert "active now" in thermal.throttle_evidence(calm, now)[0]


def test_thermal_zones_from_a_sysfs_tree(tmp_path):
    for i, (typ, temp, trip) in enumerate((("cpu-thermal", "71000", "70000"), ("gpu", "-256000", None),
                                           ("soc", "45500", "90000"))):
        z = tmp_path / f"thermal_zone{i}"
        z.mkdir()
        (z / "type").write_text(typ)
        (z / "temp").write_text(temp)
        if trip:
            (z / "trip_point_0_type").write_text("passive")
            (z / "trip_point_0_temp").write_text(trip)
    assert thermal.temperatures_c(str(tmp_path)) == {"cpu-thermal": 71.0, "soc": 45.5}
    assert thermal.passive_trips_hit(str(tmp_path)) == ["cpu-thermal"]


def test_a_snapshot_reads_what_sysfs_says_and_evidence_follows_from_two_of_them(tmp_path):
    """A sysfs tree with known values: two zones (one at its passive trip point), two CPUs' clocks (kHz) and x86
    throttle counters; the snapshot reports them in degC, MHz and counts, and a counter that rose is evidence."""
    th, cpu = tmp_path / "thermal", tmp_path / "cpu"
    for i, (kind, temp, trip) in enumerate((("x86_pkg_temp", "91000", "90000"), ("acpitz", "40500", None))):
        z = th / f"thermal_zone{i}"
        z.mkdir(parents=True)
        (z / "type").write_text(kind)
        (z / "temp").write_text(temp)
        if trip:
            (z / "trip_point_0_type").write_text("passive")
            (z / "trip_point_0_temp").write_text(trip)
    for c, khz in ((0, "2400000"), (1, "800000")):
        (cpu / f"cpu{c}" / "cpufreq").mkdir(parents=True)
        (cpu / f"cpu{c}" / "cpufreq" / "scaling_cur_freq").write_text(khz)
        (cpu / f"cpu{c}" / "thermal_throttle").mkdir()
        (cpu / f"cpu{c}" / "thermal_throttle" / "core_throttle_count").write_text("3")
    before = thermal.snapshot([0, 1], str(th), str(cpu))
    assert before["temps_c"] == {"x86_pkg_temp": 91.0, "acpitz": 40.5} and before["max_temp_c"] == 91.0
    assert before["cpu_clocks_mhz"] == {"0": 2400.0, "1": 800.0}
    assert before["passive_trips_hit"] == ["x86_pkg_temp"]
    assert set(before["throttle_counts"].values()) == {3}
    (cpu / "cpu1" / "thermal_throttle" / "core_throttle_count").write_text("5")
    after = thermal.snapshot([0, 1], str(th), str(cpu))
    why = thermal.throttle_evidence(before, after)
    assert len(why) == 2 and "counters increased" in why[0] and "cpu1" in why[0] and "x86_pkg_temp" in why[1]


def test_snapshot_on_this_machine_is_json_shaped():
    import json

    s = thermal.snapshot([0])
    json.dumps(s)
    assert set(s) >= {"temps_c", "max_temp_c", "cpu_clocks_mhz", "throttle_counts", "passive_trips_hit", "rpi"}
    assert list(s["cpu_clocks_mhz"]) == ["0"]
    assert all(-50 < v < 150 for v in s["temps_c"].values())
