"""The latency lookup table file: its JSON schema (``schema: edgeshrink.latency_table``, version 1; the fields are
listed in docs/latency.md), loading with validation, and atomic saving. Prediction from a table is
:mod:`edgeshrink.host.latency.predict`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from edgeshrink.host.checks import _is_number, integer, mapping, number, sequence, text
from edgeshrink.host.errors import TableError
from edgeshrink.host.io import write_json
from edgeshrink.host.latency.key import ACTIVATION_OPS, LayerKey

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

    @property
    def fusion_rules(self):
        """What the table's runtime fuses (:class:`edgeshrink.host.latency.space.FusionRules`): the rules read
        from the runtime (``calibration.fusion.rules``), else what tables before that assumed."""
        from edgeshrink.host.latency.space import LEGACY_FUSION, UNFUSED_ADD, FusionRules

        fusion = self.calibration.get("fusion")
        if isinstance(fusion, dict) and isinstance(fusion.get("rules"), dict):
            return FusionRules.from_dict(fusion["rules"])
        return LEGACY_FUSION if self.fuse_residual_add else UNFUSED_ADD

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


OPS = ("conv2d", "dwconv2d", "add", "mul", "scale", "bn", "gap_linear", "gap", "linear", "maxpool", "avgpool", "concat",
       "resize_nearest", "resize_bilinear") + ACTIVATION_OPS
FUSIONS = ("bn", "add") + ACTIVATION_OPS
SOURCES = ("measured", "interpolated", "imported")
CORRECTION_KINDS = ("family", "in", "out", "key")
MAX_DIM = 1 << 16  # channels and pixels per axis: far above any network here, low enough to refuse garbage


def check_key(d: Dict[str, object], where: str, zero_channels: bool = False) -> LayerKey:
    """A layer configuration from a JSON object, every field checked (``zero_channels``: a family's key, whose
    channel counts are 0).

    Raises:
        TableError: a missing or wrong-typed field, naming ``where``.
    """
    mapping(d, where, TableError)
    lo = 0 if zero_channels else 1
    try:
        op = text(d["op"], f"{where} op", TableError, choices=OPS)
        cin = integer(d["in_channels"], f"{where} in_channels", TableError, lo=lo, hi=MAX_DIM)
        cout = integer(d["out_channels"], f"{where} out_channels", TableError, lo=lo, hi=MAX_DIM)
        pairs = {}
        for name, default, low in (("in_hw", None, 1), ("kernel", [1, 1], 1), ("stride", [1, 1], 1),
                                   ("padding", [0, 0], 0)):
            v = sequence(d.get(name, default), f"{where} {name}", TableError, length=2)
            pairs[name] = tuple(integer(x, f"{where} {name}", TableError, lo=low, hi=MAX_DIM) for x in v)
        groups = integer(d.get("groups", 1), f"{where} groups", TableError, lo=1, hi=MAX_DIM)
        fused = tuple(text(x, f"{where} fused", TableError, choices=FUSIONS)
                      for x in sequence(d.get("fused", []), f"{where} fused", TableError))
    except KeyError as e:
        raise TableError(f"{where} has no {e.args[0]!r}") from None
    return LayerKey(op, cin, cout, pairs["in_hw"], pairs["kernel"], pairs["stride"], pairs["padding"], groups, fused)


def _check_fit(fit: object, where: str) -> None:
    """``calibration.fit``: coefficients, corrections and networks, the parts a prediction reads."""
    mapping(fit, where, TableError)
    if fit.get("model") is not None:
        text(fit["model"], f"{where} model", TableError)
    for k, v in mapping(fit.get("coefficients", {}), f"{where} coefficients", TableError).items():
        number(v, f"{where} coefficient {k}", TableError)
    if fit.get("sites") is not None:
        integer(fit["sites"], f"{where} sites", TableError, lo=1, hi=MAX_DIM)
    if fit.get("weight_cache") is not None:
        gate = mapping(fit["weight_cache"], f"{where} weight_cache", TableError)
        for k in ("mparams", "log_width"):
            number(gate.get(k), f"{where} weight_cache {k}", TableError, positive=True)
    for i, c in enumerate(sequence(fit.get("corrections", []), f"{where} corrections", TableError)):
        w = f"{where} correction {i}"
        mapping(c, w, TableError)
        text(c.get("kind"), f"{w} kind", TableError, choices=CORRECTION_KINDS)
        check_key(c.get("key"), f"{w} key", zero_channels=True)
        number(c.get("delta"), f"{w} delta", TableError)
    for i, n in enumerate(sequence(fit.get("networks", []), f"{where} networks", TableError)):
        w = f"{where} network {i}"
        mapping(n, w, TableError)
        for g, c in mapping(n.get("widths"), f"{w} widths", TableError).items():
            integer(c, f"{w} width of {g}", TableError, lo=1, hi=MAX_DIM)
        number(n.get("measured_ms"), f"{w} measured_ms", TableError, positive=True)


def load_table(path: str) -> LatencyTable:
    """Read and validate a latency table JSON: every field a prediction or a merge reads is checked for its type
    and range before it is used.

    Raises:
        TableError: unreadable or truncated file, wrong schema, unknown major version, a missing or wrong-typed
            field (an entry without a positive finite latency by the table's statistic, a boolean or non-finite
            number, a calibration that is not an object, a fit coefficient that is not a number), an unknown
            statistic. The message names the file and the field.
    """
    try:
        with open(path, "r", encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise TableError(f"{path}: no such latency table") from None
    except IsADirectoryError:
        raise TableError(f"{path}: is a folder, not a latency table") from None
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
        for i, e in enumerate(sequence(d["entries"], f"{path}: entries", TableError)):
            where = f"{path}: entry {i}"
            mapping(e, where, TableError)
            lat = mapping(e.get("latency_ms") or {}, f"{where} latency_ms", TableError)
            med = lat.get(stat)
            source = text(e.get("source", "measured"), f"{where} source", TableError, choices=SOURCES)
            # imported tables may hold 0 ms for ops the foreign work folded into others (see importers.py)
            floor_ok = source == "imported" and _is_number(med) and med == 0
            if not floor_ok and (not _is_number(med) or not (med > 0) or not math.isfinite(med)):
                raise TableError(f"{where} ({e.get('op')} {e.get('in_channels')}->{e.get('out_channels')}) has no "
                                 f"positive {stat} latency (got {med!r})")
            stats = {}
            for k, v in lat.items():
                if isinstance(v, bool) or (isinstance(v, float) and not math.isfinite(v)):
                    raise TableError(f"{where} latency_ms {k} must be a finite number, got {v!r}")
                stats[k] = float(v) if isinstance(v, (int, float)) else v
            key = check_key(e, where)
            entries.append(Entry(key, stats, integer(e.get("n", 0), f"{where} n", TableError, lo=0), source))
        cal = mapping(d["calibration"], f"{path}: calibration", TableError)
        number(cal.get("overhead_ms", 0.0), f"{path}: calibration overhead_ms", TableError, non_negative=True)
        if cal.get("fit") is not None:
            _check_fit(cal["fit"], f"{path}: calibration fit")
        if cal.get("fusion") is not None:
            rules = mapping(mapping(cal["fusion"], f"{path}: calibration fusion", TableError).get("rules"),
                            f"{path}: calibration fusion rules", TableError)
            for k in ("conv_acts", "conv_add_acts"):
                for a in sequence(rules.get(k, []), f"{path}: calibration fusion {k}", TableError):
                    text(a, f"{path}: calibration fusion {k}", TableError, choices=ACTIVATION_OPS)
            if not isinstance(rules.get("conv_add", False), bool):
                raise TableError(f"{path}: calibration fusion conv_add must be true or false")
        shape = [integer(v, f"{path}: input_shape", TableError, lo=1, hi=MAX_DIM)
                 for v in sequence(d["input_shape"], f"{path}: input_shape", TableError, length=4)]
        return LatencyTable(
            device=mapping(d["device"], f"{path}: device", TableError),
            backend=text(d["backend"], f"{path}: backend", TableError),
            precision=text(d["precision"], f"{path}: precision", TableError),
            threads=integer(d["threads"], f"{path}: threads", TableError, lo=0),
            batch_size=integer(d["batch_size"], f"{path}: batch_size", TableError, lo=1),
            input_shape=shape, created_utc=text(d["created_utc"], f"{path}: created_utc", TableError),
            tool_version=text(d["tool_version"], f"{path}: tool_version", TableError), calibration=cal,
            entries=entries,
            models=[text(m, f"{path}: models", TableError) for m in sequence(d.get("models", []), f"{path}: models",
                                                                              TableError)],
            build=dict(mapping(d.get("build", {}), f"{path}: build", TableError)),
            derived_from=list(sequence(d.get("derived_from", []), f"{path}: derived_from", TableError)),
            smoothing=d.get("smoothing"), statistic=stat,
        )
    except KeyError as e:
        raise TableError(f"{path}: malformed latency table (no {e.args[0]!r})") from None


def measuring_device(table: LatencyTable, device: Optional[str] = None) -> Optional[str]:
    """Where a command measures what it made with ``table``: ``device`` (``--device``) when given, else the device the
    table was measured on (``local`` for a table that names none); None for an imported table without ``device``
    (its board is not here: the earlier NetAdapt work's Raspberry Pi tables)."""
    if device:
        return device
    spec = table.device.get("spec")
    return None if spec == "imported" else (spec or "local")


def require_device(table: LatencyTable, path: str, device: Optional[str] = None) -> str:
    """:func:`measuring_device` for a command that cannot work without measuring.

    Raises:
        UserError: an imported table and no ``device`` (one line: give --device).
    """
    from edgeshrink.host.errors import UserError

    spec = measuring_device(table, device)
    if spec is None:
        raise UserError(f"{path} was imported ({table.device.get('board') or 'its board'} is not here): give --device "
                        "where to measure")
    return spec


def check_backend(table: LatencyTable, path: str, backend: Optional[str]) -> None:
    """Raise TableError when the user asked for ``backend`` and the table was measured with another."""
    if backend is not None and backend != table.backend:
        raise TableError(f"{path} was measured with backend {table.backend!r}, not {backend!r}")


def fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in shape)


def parse_shape(text: str) -> List[int]:
    """``"1x3x32x32"`` -> ``[1, 3, 32, 32]``, within what a board can hold: N <= 256, C <= 4096, H and W <= 16384
    and at most 2**27 values (a 512 MB fp32 input).

    Raises:
        ValueError: not four positive integers separated by ``x``, or beyond those limits.
    """
    try:
        dims = [int(v) for v in text.lower().split("x")]
    except ValueError:
        dims = []
    if len(dims) != 4 or min(dims) < 1:
        raise ValueError(f"input shape must look like 1x3x32x32 (N x C x H x W), got {text!r}")
    n, c, h, w = dims
    if n > 256 or c > 4096 or h > 16384 or w > 16384 or n * c * h * w > 1 << 27:
        raise ValueError(f"input shape {text} is too large (N <= 256, C <= 4096, H and W <= 16384, at most 2**27 "
                         "values)")
    return dims
