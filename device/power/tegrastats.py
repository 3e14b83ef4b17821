"""tegrastats: parse every log format in use on Jetson boards, and record a log around a benchmark.

Formats read (one sample per line, fields separated by spaces, any subset of them present):

* JetPack 5 and later prefix each line with ``MM-DD-YYYY HH:MM:SS``; older releases have no timestamp.
* CPU: L4T 28 (TX1/TX2) ``cpu [a%,b%,..]@MHz`` (one shared clock) or ``cpu [x%@MHz,...]``; later
  ``CPU [x%@MHz,...,off]`` (``off`` for an offline core).
* Memory controller and GPU: ``EMC x%@MHz`` / ``EMC_FREQ x%[@MHz]``, ``GR3D x%@MHz`` / ``GR3D_FREQ x%[@MHz]``,
  Orin ``GR3D_FREQ x%@[f0,f1]`` (one clock per GPC), Thor ``GR3D_FREQ @[f,f,f]`` (no utilisation).
* Temperatures ``name@xC`` (upper-case names before Orin, lower-case on JetPack 6), JetPack 7 ``cpu@52.9C/52.9C``;
  ``-256C`` means the sensor is absent; ``PMIC`` is a fixed placeholder (50 or 100 C), not a measurement.
* Power rails ``NAME cur/avg`` in mW without unit (JetPack 4), ``NAME cur mW/avg mW`` (JetPack 5, 6),
  ``NAME a mW/b mW/c mW`` (JetPack 7, Thor).

Total board power is the input rail when the board has one (``VIN``, ``VDD_IN``, ``POM_5V_IN``), otherwise the
sum of every rail except ``NC`` (AGX Xavier, AGX Orin). Fields never seen before are kept as raw text; a
known field with a malformed value raises :class:`TegrastatsError` naming the line, and so does a line without the
``RAM used/totalMB`` field every release prints (arbitrary text is not a log); unknown fields are kept only on lines
that are otherwise tegrastats.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import subprocess
import threading
import time
from typing import Dict, Iterable, List, Optional, Tuple

INPUT_RAILS = ("VIN", "VDD_IN", "POM_5V_IN")  # board input rails, in order of preference
UNCONNECTED_RAIL = "NC"
ABSENT_SENSOR_C = -256.0
PLACEHOLDER_SENSORS = ("PMIC",)


class TegrastatsError(ValueError):
    """A tegrastats line with a malformed value of a known field; the message names the line."""


_TS = re.compile(r"(\d\d)-(\d\d)-(\d{4}) (\d\d):(\d\d):(\d\d)\s+")
_RAM = re.compile(r"RAM (\d+)/(\d+)MB(?: \(lfb [^)]*\))?(?=\s|$)")
_SWAP = re.compile(r"SWAP (\d+)/(\d+)MB(?: \(cached \d+MB\))?(?=\s|$)")
_IRAM = re.compile(r"IRAM (\d+)/(\d+)kB\s*(?:\(lfb [^)]*\))?(?=\s|$)")
_MTS = re.compile(r"MTS fg (\d+)% bg (\d+)%(?=\s|$)")
_CPU = re.compile(r"(?i:cpu) \[([^\]]*)\](?:@(\d+))?(?=\s|$)")
_CPU_CORE = re.compile(r"(?:(\d+)%(?:@(\d+))?|off)$")
_TEMP = re.compile(r"([A-Za-z][\w-]*)@(-?\d+(?:\.\d+)?)C(?:/(-?\d+(?:\.\d+)?)C)?(?=\s|$)")
_RAIL = re.compile(r"([A-Za-z][A-Za-z0-9_]*) (\d+)(?: ?mW)?/(\d+)(?: ?mW)?(?:/(\d+)(?: ?mW)?)?(?=\s|$)")
_UNIT = re.compile(r"([A-Z][A-Z0-9_]*) (off|(\d+)%(?:@(\d+|\[[\d,]*\]))?|@(\[[\d,]*\])|(\d+)(?:@(\d+))?)(?=\s|$)")
_KEYWORDS = ("RAM", "SWAP", "IRAM", "MTS", "CPU", "cpu", "EMC", "EMC_FREQ", "GR3D", "GR3D_FREQ")
_TOKEN = re.compile(r"\S+")


def _freqs(text: Optional[str]) -> Optional[List[int]]:
    if text is None:
        return None
    text = text.strip("[]")
    return [int(v) for v in text.split(",") if v] if text else []


def total_power(rails_mw: Dict[str, float]) -> Tuple[Optional[float], List[str]]:
    """Board power in mW from the rails of one sample, and which rails made it.

    The input rail when the board has one (``VIN``, ``VDD_IN``, ``POM_5V_IN``), otherwise the sum of every rail
    except ``NC``. ``(None, [])`` for a sample without rails.
    """
    for name in INPUT_RAILS:
        if name in rails_mw:
            return float(rails_mw[name]), [name]
    used = [n for n in rails_mw if n != UNCONNECTED_RAIL]
    if not used:
        return None, []
    return float(sum(rails_mw[n] for n in used)), used


def parse_line(line: str, lineno: Optional[int] = None) -> Dict[str, object]:
    """Parse one tegrastats line.

    Returns:
        ``{"timestamp": ISO text or None, "ram_used_mb", "ram_total_mb", "swap_used_mb", "swap_total_mb",
        "cpu_load_pct": [pct or None per core], "cpu_freq_mhz": [MHz or None per core], "emc_load_pct",
        "emc_freq_mhz", "gpu_load_pct", "gpu_freq_mhz": [MHz per GPC] or None, "engines": {name: MHz or "off"},
        "temps_c": {sensor: degC}, "absent_sensors": [...], "rails_mw": {rail: current mW},
        "rails_avg_mw": {rail: average mW}, "rails_values_mw": {rail: [all values]}, "total_power_mw",
        "total_rails": [...], "unknown": [raw text of fields not recognised]}``. Fields a line lacks are
        None (or empty).

    Raises:
        TegrastatsError: a known field with a malformed value, or no RAM field (the message quotes the line).
    """
    where = f"tegrastats line {lineno}" if lineno is not None else "tegrastats line"
    text = line.strip()
    rec: Dict[str, object] = {
        "timestamp": None, "ram_used_mb": None, "ram_total_mb": None, "swap_used_mb": None, "swap_total_mb": None,
        "cpu_load_pct": None, "cpu_freq_mhz": None, "emc_load_pct": None, "emc_freq_mhz": None,
        "gpu_load_pct": None, "gpu_freq_mhz": None, "engines": {}, "temps_c": {}, "absent_sensors": [],
        "rails_mw": {}, "rails_avg_mw": {}, "rails_values_mw": {}, "total_power_mw": None, "total_rails": [],
        "unknown": [],
    }

    def bad(what: str) -> TegrastatsError:
        return TegrastatsError(f"{where}: malformed {what}: {text[:160]!r}")

    pos = 0
    m = _TS.match(text)
    if m:
        mo, d, y, hh, mm, ss = (int(g) for g in m.groups())
        try:
            rec["timestamp"] = _dt.datetime(y, mo, d, hh, mm, ss).isoformat()
        except ValueError:
            raise bad("timestamp") from None
        pos = m.end()
    n = len(text)
    while pos < n:
        if text[pos].isspace():
            pos += 1
            continue
        rest = text[pos:]
        m = _RAM.match(rest)
        if m:
            rec["ram_used_mb"], rec["ram_total_mb"] = int(m.group(1)), int(m.group(2))
        elif (m := _SWAP.match(rest)) is not None:
            rec["swap_used_mb"], rec["swap_total_mb"] = int(m.group(1)), int(m.group(2))
        elif (m := _IRAM.match(rest)) is not None:
            pass  # IRAM usage (kB): of no use for power or latency
        elif (m := _MTS.match(rest)) is not None:
            pass
        elif (m := _CPU.match(rest)) is not None:
            loads: List[Optional[float]] = []
            freqs: List[Optional[int]] = []
            shared = int(m.group(2)) if m.group(2) else None
            for core in m.group(1).split(","):
                c = _CPU_CORE.match(core.strip())
                if c is None:
                    raise bad("CPU field")
                if core.strip() == "off":
                    loads.append(None)
                    freqs.append(None)
                else:
                    loads.append(float(c.group(1)))
                    freqs.append(int(c.group(2)) if c.group(2) else shared)
            rec["cpu_load_pct"], rec["cpu_freq_mhz"] = loads, freqs
        elif (m := _TEMP.match(rest)) is not None:
            name, val = m.group(1), float(m.group(2))
            if val == ABSENT_SENSOR_C:
                rec["absent_sensors"].append(name)
            elif name.upper() not in PLACEHOLDER_SENSORS:
                rec["temps_c"][name] = val
        elif (m := _RAIL.match(rest)) is not None:
            name = m.group(1)
            vals = [float(v) for v in m.groups()[1:] if v is not None]
            rec["rails_mw"][name] = vals[0]
            rec["rails_avg_mw"][name] = vals[1]
            rec["rails_values_mw"][name] = vals
        elif (m := _UNIT.match(rest)) is not None:
            name, val = m.group(1), m.group(2)
            load = float(m.group(3)) if m.group(3) is not None else None
            fr = m.group(4) or m.group(5)
            if name in ("EMC", "EMC_FREQ"):
                rec["emc_load_pct"] = load
                rec["emc_freq_mhz"] = int(fr) if fr and fr.isdigit() else None
            elif name in ("GR3D", "GR3D_FREQ"):
                rec["gpu_load_pct"] = load
                rec["gpu_freq_mhz"] = _freqs(fr)
            elif val == "off":
                rec["engines"][name] = "off"
            else:
                num = m.group(6) or m.group(7) or (fr if fr and fr.isdigit() else None)
                rec["engines"][name] = int(num) if num else val
        else:
            tok = _TOKEN.match(rest).group(0)
            nxt = rest[len(tok):].lstrip().split(" ", 1)[0]
            if tok in _KEYWORDS:
                raise bad(f"{tok} field")
            if "@" in tok and tok[0].isalpha() and tok.endswith("C"):
                raise bad(f"{tok.split('@')[0]} temperature")
            if tok.isupper() and "/" in nxt and nxt[:1].isdigit():
                raise bad(f"{tok} rail")
            rec["unknown"].append(tok)
            pos += len(tok)
            continue
        pos += m.end()
    if rec["ram_used_mb"] is None:
        # every release prints RAM first: a line without it is not a sample (arbitrary text, a binary file)
        raise TegrastatsError(f"{where}: not a tegrastats sample (no RAM field): {text[:160]!r}")
    rec["total_power_mw"], rec["total_rails"] = total_power(rec["rails_mw"])
    return rec


def parse_log(lines: Iterable[str]) -> List[Dict[str, object]]:
    """Parse a tegrastats log: one record per sample line (blank lines and ``#`` comments skipped).

    Raises:
        TegrastatsError: a malformed line (the message gives its line number).
    """
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        out.append(parse_line(line, lineno=i))
    return out


def tegrastats_binary() -> Optional[str]:
    """The tegrastats executable: ``$EDGESHRINK_TEGRASTATS`` when set (tests point it at a replaying fake), else
    ``tegrastats`` on PATH or in /usr/bin; None when absent (not a Jetson)."""
    env = os.environ.get("EDGESHRINK_TEGRASTATS")
    if env:
        return env
    return shutil.which("tegrastats") or (("/usr/bin/tegrastats") if os.path.exists("/usr/bin/tegrastats") else None)


class TegrastatsMeter:
    """Runs ``tegrastats --interval MS --logfile F`` for the duration of a measurement.

    A thread follows the log file and stamps each new line with ``time.monotonic()`` when it appears, so samples
    can be assigned to the idle window and the timed window even on releases whose lines carry no timestamp
    (and JetPack 5's carry whole seconds only). Use as a context manager; :meth:`samples` afterwards.

    Args:
        logfile: where tegrastats writes its log (kept: the host pulls it back).
        interval_ms: tegrastats sampling interval.

    Raises:
        RuntimeError: tegrastats is not on this device.
    """

    name = "tegrastats"

    def __init__(self, logfile: str, interval_ms: int = 100):
        self.binary = tegrastats_binary()
        if self.binary is None:
            raise RuntimeError("tegrastats not found (not a Jetson, or L4T's /usr/bin is not on PATH)")
        self.logfile = logfile
        self.interval_ms = int(interval_ms)
        self._stamped: List[Tuple[float, str]] = []
        self._stop = threading.Event()
        self._proc = None
        self._thread = None

    def __enter__(self) -> "TegrastatsMeter":
        if os.path.exists(self.logfile):
            os.remove(self.logfile)
        self._proc = subprocess.Popen([self.binary, "--interval", str(self.interval_ms), "--logfile", self.logfile],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()
        return self

    def _follow(self) -> None:
        buf = ""
        offset = 0
        poll = max(self.interval_ms / 8000.0, 0.005)
        while True:
            stopping = self._stop.is_set()
            try:
                with open(self.logfile, "r", encoding="utf-8", errors="replace") as f:
                    f.seek(offset)
                    chunk = f.read()
                    offset = f.tell()
            except FileNotFoundError:
                chunk = ""
            if chunk:
                now = time.monotonic()
                buf += chunk
                *lines, buf = buf.split("\n")
                self._stamped.extend((now, ln) for ln in lines if ln.strip())
            if stopping:
                if buf.strip():
                    self._stamped.append((time.monotonic(), buf))
                return
            time.sleep(poll)

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def samples(self) -> List[Dict[str, object]]:
        """Parsed samples, each with ``t_s`` (``time.monotonic()`` when it appeared) and the fields of
        :func:`parse_line`."""
        out = []
        for i, (t, line) in enumerate(self._stamped, 1):
            try:
                rec = parse_line(line, lineno=i)
            except TegrastatsError:
                if i == len(self._stamped):
                    continue  # the line tegrastats was writing when it was stopped
                raise
            rec["t_s"] = t
            out.append(rec)
        return out
