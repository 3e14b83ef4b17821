"""Power meters behind one small interface, picked by name (``--power auto|tegrastats|pmic|hwmon``).

Every meter is a context manager that samples while the benchmark runs; ``samples()`` afterwards returns
dicts with ``t_s`` (``time.monotonic()``), ``total_power_mw`` and ``rails_mw``.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from . import hwmon, rpi, tegrastats


class SamplingMeter:
    """Calls ``read()`` every ``interval_ms`` in a thread; ``read() -> (total_mw, {rail: mw})``."""

    def __init__(self, name: str, read: Callable[[], Tuple[float, Dict[str, float]]], interval_ms: int = 100):
        self.name = name
        self._read = read
        self.interval_ms = int(interval_ms)
        self._samples: List[Dict[str, object]] = []
        self._errors: List[str] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "SamplingMeter":
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        period = self.interval_ms / 1000.0
        nxt = time.monotonic()
        while not self._stop.is_set():
            try:
                total, rails = self._read()
                self._samples.append({"t_s": time.monotonic(), "total_power_mw": total, "rails_mw": rails})
            except Exception as e:  # a failed reading is recorded, the benchmark goes on
                self._errors.append(str(e))
            nxt += period
            self._stop.wait(max(0.0, nxt - time.monotonic()))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def samples(self) -> List[Dict[str, object]]:
        return list(self._samples)

    @property
    def errors(self) -> List[str]:
        return list(self._errors)


def _hwmon_reader(path: str) -> Callable[[], Tuple[float, Dict[str, float]]]:
    def read() -> Tuple[float, Dict[str, float]]:
        mw = hwmon.read_power_mw(path)
        if mw is None:
            raise RuntimeError(f"hwmon meter {path} gave no reading")
        return mw, {}

    return read


@functools.lru_cache(maxsize=None)
def available() -> Dict[str, Optional[str]]:
    """Each meter kind -> None when usable here, else why not (probed once per process: the hardware does not
    change while a benchmark runs)."""
    out: Dict[str, Optional[str]] = {}
    out["tegrastats"] = None if tegrastats.tegrastats_binary() else "tegrastats not found (not a Jetson)"
    if rpi.vcgencmd_binary() is None:
        out["pmic"] = "vcgencmd not found (not a Raspberry Pi)"
    else:
        try:
            rpi.read_pmic_mw()
            out["pmic"] = None
        except (RuntimeError, rpi.VcgencmdError, OSError) as e:
            out["pmic"] = f"pmic_read_adc unusable (a Pi 5 is needed): {e}"
    out["hwmon"] = None if hwmon.find_meters() else "no INA219/INA260 hwmon device"
    return out


def open_meter(kind: str, log_path: str, interval_ms: int = 100):
    """A meter of ``kind`` (``auto`` picks the first usable of tegrastats, pmic, hwmon).

    Args:
        kind: ``auto``, ``tegrastats``, ``pmic`` or ``hwmon``.
        log_path: tegrastats' raw log (tegrastats only; the others' samples go to the CSV the caller writes).
        interval_ms: sampling interval.

    Raises:
        RuntimeError: the meter is not usable here (the message says why).
    """
    avail = available()
    if kind == "auto":
        usable = [k for k, why in avail.items() if why is None]
        if not usable:
            raise RuntimeError("no power meter on this device: " + "; ".join(f"{k}: {v}" for k, v in avail.items()))
        kind = usable[0]
    if kind not in avail:
        raise RuntimeError(f"unknown power meter {kind!r}; known: auto, {', '.join(avail)}")
    if avail[kind] is not None:
        raise RuntimeError(f"power meter {kind} is not usable here: {avail[kind]}")
    if kind == "tegrastats":
        return tegrastats.TegrastatsMeter(log_path, interval_ms)
    if kind == "pmic":
        return SamplingMeter("pmic", rpi.read_pmic_mw, interval_ms)
    return SamplingMeter("hwmon", _hwmon_reader(hwmon.find_meters()[0]["path"]), interval_ms)
