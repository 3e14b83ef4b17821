"""Thermal and clock state around a benchmark: temperatures, CPU clocks, throttling, and a cool-down gate.

Sources: Linux thermal zones (``/sys/class/thermal/thermal_zone*/temp``, millidegrees C) and their passive trip
points, cpufreq's ``scaling_cur_freq`` (kHz), x86's ``thermal_throttle/*_throttle_count`` and, on a Raspberry
Pi, ``vcgencmd get_throttled`` (:mod:`device.power.rpi`). A run is flagged ``throttled`` when any of them shows
throttling that began or was active during it.
"""

from __future__ import annotations

import glob
import os
import time
from typing import Callable, Dict, List, Optional

from .power import rpi

THERMAL_ROOT = "/sys/class/thermal"
CPU_ROOT = "/sys/devices/system/cpu"


def _read(path: str) -> Optional[str]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def temperatures_c(root: str = THERMAL_ROOT) -> Dict[str, float]:
    """Thermal zone temperatures, ``{type or zone name: degC}`` (absent/negative-sentinel zones skipped)."""
    out: Dict[str, float] = {}
    for zone in sorted(glob.glob(os.path.join(root, "thermal_zone*"))):
        raw = _read(os.path.join(zone, "temp"))
        if raw is None:
            continue
        try:
            c = int(raw) / 1000.0
        except ValueError:
            continue
        if c <= -200:  # Jetson reports absent sensors as -256 C
            continue
        name = _read(os.path.join(zone, "type")) or os.path.basename(zone)
        if name in out:
            name = f"{name}:{os.path.basename(zone)}"
        out[name] = c
    return out


def passive_trips_hit(root: str = THERMAL_ROOT) -> List[str]:
    """Zones at or above one of their passive trip points (where the kernel starts cooling by slowing clocks)."""
    hit = []
    for zone in sorted(glob.glob(os.path.join(root, "thermal_zone*"))):
        raw = _read(os.path.join(zone, "temp"))
        if raw is None or not raw.lstrip("-").isdigit():
            continue
        t = int(raw)
        for tp in glob.glob(os.path.join(zone, "trip_point_*_type")):
            if _read(tp) == "passive":
                limit = _read(tp[: -len("_type")] + "_temp")
                if limit and limit.lstrip("-").isdigit() and int(limit) > 0 and t >= int(limit):
                    hit.append(_read(os.path.join(zone, "type")) or os.path.basename(zone))
    return hit


def cpu_clocks_mhz(cpus: Optional[List[int]] = None, root: str = CPU_ROOT) -> Dict[str, Optional[float]]:
    """Current clock of each CPU in ``cpus`` (default all), MHz; None where cpufreq is absent."""
    ids = cpus if cpus is not None else list(range(os.cpu_count() or 1))
    out: Dict[str, Optional[float]] = {}
    for c in ids:
        raw = _read(os.path.join(root, f"cpu{c}", "cpufreq", "scaling_cur_freq"))
        out[str(c)] = int(raw) / 1000.0 if raw and raw.isdigit() else None
    return out


def throttle_counts(root: str = CPU_ROOT) -> Dict[str, int]:
    """x86 thermal throttle event counters per CPU (``core_throttle_count`` + ``package_throttle_count``)."""
    out: Dict[str, int] = {}
    for d in sorted(glob.glob(os.path.join(root, "cpu[0-9]*", "thermal_throttle"))):
        total = 0
        for f in ("core_throttle_count", "package_throttle_count"):
            raw = _read(os.path.join(d, f))
            total += int(raw) if raw and raw.isdigit() else 0
        out[os.path.basename(os.path.dirname(d))] = total
    return out


def snapshot(cpus: Optional[List[int]] = None, thermal_root: str = THERMAL_ROOT,
             cpu_root: str = CPU_ROOT) -> Dict[str, object]:
    """Temperatures (degC), CPU clocks (MHz), throttle counters, passive trips reached, and the Raspberry Pi's
    vcgencmd state, read from sysfs under ``thermal_root`` and ``cpu_root``."""
    temps = temperatures_c(thermal_root)
    pi = rpi.state()
    if pi and pi.get("temp_c") is not None:
        temps.setdefault("vcgencmd", pi["temp_c"])
    return {
        "t_s": time.monotonic(),
        "temps_c": temps,
        "max_temp_c": max(temps.values()) if temps else None,
        "cpu_clocks_mhz": cpu_clocks_mhz(cpus, cpu_root),
        "throttle_counts": throttle_counts(cpu_root),
        "passive_trips_hit": passive_trips_hit(thermal_root),
        "rpi": pi,
    }


def throttle_evidence(before: Dict[str, object], after: Dict[str, object]) -> List[str]:
    """Why a run counts as throttled (empty when nothing says so).

    Evidence: x86 throttle counters that increased, a zone at a passive trip point after the run, a Raspberry
    Pi whose throttle bits are set now or whose since-boot bits appeared during the run.
    """
    why = []
    b, a = before.get("throttle_counts") or {}, after.get("throttle_counts") or {}
    inc = [c for c in a if a[c] > b.get(c, 0)]
    if inc:
        why.append(f"thermal throttle counters increased on {', '.join(inc)}")
    if after.get("passive_trips_hit"):
        why.append(f"passive trip point reached: {', '.join(after['passive_trips_hit'])}")
    pa, pb = (after.get("rpi") or {}).get("throttled"), (before.get("rpi") or {}).get("throttled")
    if pa:
        if pa["any_now"]:
            why.append(f"vcgencmd get_throttled={pa['raw']} (active now)")
        elif pb and any(v and not pb["since_boot"][k] for k, v in pa["since_boot"].items()):
            why.append(f"vcgencmd get_throttled went {pb['raw']} -> {pa['raw']} during the run")
    return why


def cool_down(to_c: Optional[float] = None, wait_s: Optional[float] = None, max_wait_s: float = 600.0,
              poll_s: float = 1.0, read: Callable[[], Optional[float]] = None,
              sleep: Callable[[float], None] = time.sleep) -> Dict[str, object]:
    """Wait before a benchmark: ``wait_s`` seconds, then until the hottest sensor is at or below ``to_c``.

    Args:
        to_c: target temperature in degC (None: no temperature gate).
        wait_s: a fixed pause in seconds first (None: none).
        max_wait_s: give up on the temperature gate after this long; the result says so.
        poll_s: how often the temperature is read.
        read: hottest temperature now (default: thermal zones / vcgencmd); injectable for tests.
        sleep: injectable for tests.

    Returns:
        ``{"waited_s", "start_temp_c", "end_temp_c", "reached": bool or None}``.
    """
    if read is None:
        def read() -> Optional[float]:
            return snapshot()["max_temp_c"]
    t0 = time.monotonic()
    waited = 0.0
    if wait_s:
        sleep(wait_s)
        waited += wait_s
    start = read()
    temp = start
    reached = None
    if to_c is not None:
        if temp is None:
            reached = None  # no sensor: the gate cannot be applied, and the record says so
        else:
            while temp > to_c and waited < max_wait_s:
                sleep(poll_s)
                waited += poll_s
                temp = read()
            reached = temp <= to_c
    return {"waited_s": max(waited, time.monotonic() - t0) if sleep is time.sleep else waited,
            "start_temp_c": start, "end_temp_c": temp, "reached": reached}
