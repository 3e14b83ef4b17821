"""The latency lookup table file: its JSON schema (``schema: edgeshrink.latency_table``, version 1; the fields are
listed in docs/latency.md), loading with validation, and atomic saving. Prediction from a table is
:mod:`edgeshrink.host.latency.predict`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from edgeshrink.host.errors import TableError
from edgeshrink.host.io import write_json
from edgeshrink.host.latency.key import LayerKey

SCHEMA = "edgeshrink.latency_table"
SCHEMA_VERSION = 1
# The statistic of each timing the entries hold, and so what the table predicts (``LatencyTable.statistic``):
# "median" of the timed runs, or "min", the fastest run. Timing noise on a shared CPU only ever adds, so the
# minimum is the robust estimate of what a layer costs (Chen & Revels 2016, "Robust benchmarking in noisy
# environments"); docs/latency.md has the measurements behind the default. Tables written before this field
# existed are "median".
STATISTICS = ("median", "min")


@dataclass
class Entry:
    key: LayerKey
    latency_ms: Dict[str, object]  # median, min, mean, p90, std (ms); rounds_median: each round's median
    n: int  # timed runs behind the statistics
    source: str = "measured"  # "measured" (on the device) or "interpolated"

    def ms(self, statistic: str) -> float:
        """The entry's latency in ms by ``statistic`` (the table's :attr:`LatencyTable.statistic`)."""
        return float(self.latency_ms[statistic])

    def to_dict(self) -> Dict[str, object]:
        return {**self.key.to_dict(), "latency_ms": self.latency_ms, "n": self.n, "source": self.source}


@dataclass
class LatencyTable:
    device: Dict[str, object]
    backend: str
    precision: str
    threads: int
    batch_size: int
    input_shape: List[int]
    created_utc: str
    tool_version: str
    calibration: Dict[str, object]
    entries: List[Entry]
    models: List[str] = field(default_factory=list)  # the models whose configurations were enumerated
    build: Dict[str, object] = field(default_factory=dict)  # granularity, counts, wall time
    derived_from: List[str] = field(default_factory=list)
    smoothing: Optional[Dict[str, object]] = None
    statistic: str = "median"  # what every entry's and network's latency is: one of STATISTICS
    _index: Dict[LayerKey, Entry] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self._index = {e.key: e for e in self.entries}

    @property
    def overhead_ms(self) -> float:
        return float(self.calibration.get("overhead_ms", 0.0))

    @property
    def fuse_residual_add(self) -> bool:
        return bool(self.calibration.get("fuse_residual_add", False))

    def lookup(self, key: LayerKey) -> Optional[Entry]:
        return self._index.get(key)

    def to_dict(self) -> Dict[str, object]:
        return {
            "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
            "device": self.device, "backend": self.backend, "precision": self.precision, "threads": self.threads,
            "batch_size": self.batch_size, "input_shape": list(self.input_shape), "statistic": self.statistic,
            "created_utc": self.created_utc,
            "tool_version": self.tool_version, "models": self.models, "build": self.build,
            "calibration": self.calibration, "entries": [e.to_dict() for e in self.entries],
            "derived_from": self.derived_from, "smoothing": self.smoothing,
        }

    def save(self, path: str) -> None:
        """Write the table as JSON, atomically."""
        write_json(path, self.to_dict())


def load_table(path: str) -> LatencyTable:
    """Read and validate a latency table JSON.

    Raises:
        TableError: unreadable or truncated file, wrong schema, unknown major version, an entry without a
            positive finite latency by the table's statistic, an unknown statistic. The message names the file.
    """
    try:
        with open(path, "r", encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise TableError(f"{path}: no such latency table") from None
    except (OSError, ValueError) as e:
        raise TableError(f"{path}: not a readable JSON latency table ({e})") from None
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise TableError(f"{path}: not an edgeshrink latency table (schema {d.get('schema') if isinstance(d, dict) else None!r})")
    if d.get("schema_version") != SCHEMA_VERSION:
        raise TableError(f"{path}: latency table schema version {d.get('schema_version')!r} is not supported "
                         f"(this edgeshrink reads version {SCHEMA_VERSION})")
    stat = d.get("statistic", "median")
    if stat not in STATISTICS:
        raise TableError(f"{path}: unknown latency statistic {stat!r} (known: {', '.join(STATISTICS)})")
    try:
        entries = []
        for i, e in enumerate(d["entries"]):
            lat = e.get("latency_ms") or {}
            med = lat.get(stat)
            # imported tables may hold 0 ms for ops the foreign work folded into others (see importers.py)
            floor_ok = e.get("source") == "imported" and isinstance(med, (int, float)) and med == 0
            if not floor_ok and (not isinstance(med, (int, float)) or not (med > 0) or med == float("inf")):
                raise TableError(f"{path}: entry {i} ({e.get('op')} {e.get('in_channels')}->{e.get('out_channels')}) "
                                 f"has no positive {stat} latency (got {med!r})")
            stats = {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in lat.items()}
            entries.append(Entry(LayerKey.from_dict(e), stats, int(e.get("n", 0)),
                                 e.get("source", "measured")))
        cal = d["calibration"]
        if not isinstance(cal.get("overhead_ms", 0.0), (int, float)) or cal.get("overhead_ms", 0.0) < 0:
            raise TableError(f"{path}: calibration overhead_ms must be a non-negative number")
        return LatencyTable(
            device=d["device"], backend=d["backend"], precision=d["precision"], threads=int(d["threads"]),
            batch_size=int(d["batch_size"]), input_shape=[int(v) for v in d["input_shape"]],
            created_utc=d["created_utc"], tool_version=d["tool_version"], calibration=cal, entries=entries,
            models=list(d.get("models", [])), build=dict(d.get("build", {})),
            derived_from=list(d.get("derived_from", [])), smoothing=d.get("smoothing"), statistic=stat,
        )
    except TableError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise TableError(f"{path}: malformed latency table ({type(e).__name__}: {e})") from None


def check_backend(table: LatencyTable, path: str, backend: Optional[str]) -> None:
    """Raise TableError when the user asked for ``backend`` and the table was measured with another."""
    if backend is not None and backend != table.backend:
        raise TableError(f"{path} was measured with backend {table.backend!r}, not {backend!r}")


def fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in shape)


def parse_shape(text: str) -> List[int]:
    """``"1x3x32x32"`` -> ``[1, 3, 32, 32]``.

    Raises:
        ValueError: not four positive integers separated by ``x``.
    """
    try:
        dims = [int(v) for v in text.lower().split("x")]
    except ValueError:
        dims = []
    if len(dims) != 4 or min(dims) < 1:
        raise ValueError(f"input shape must look like 1x3x32x32 (N x C x H x W), got {text!r}")
    return dims
