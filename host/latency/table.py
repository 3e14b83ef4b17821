"""The latency lookup table: JSON schema (ARCHITECTURE.md, "Latency table"), loading with validation,
atomic saving, and prediction.

Prediction follows the table's ``calibration``: every entry was measured as a standalone micro-model that
pays the fixed per-inference overhead (session run, input binding, output fetch) once, so a network's
latency is predicted as ``overhead_ms + sum over layer sites of (entry_ms - overhead_ms)``: the overhead
counted once, not once per layer (NetAdapt, Yang et al. 2018, Sec. 4.1, builds its latency model from
per-layer lookups the same way). When the calibration holds a ``fit`` (whole calibration networks measured
with the micro-models, :mod:`host.latency.calibrate`), each site's ``entry - overhead`` is scaled by its
fitted coefficient and the fitted intercept replaces the overhead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from host.errors import TableError
from host.io import write_json
from host.latency.key import LayerKey
from host.latency.space import PruningSpace

SCHEMA = "edgeshrink.latency_table"
SCHEMA_VERSION = 1
# The statistic of each timing the entries hold, and so what the table predicts (``LatencyTable.statistic``):
# "median" of the timed runs, or "min", the fastest run. On a host shared with other tenants (a cloud VM) the speed
# flips between an uncontended and a contended state (25% apart on this project's AMD EPYC VM) many times a second,
# and a model's median follows the share of its runs that fell in the contended state: two interleaved runs of 60
# ResNet-20 variants there agree per model to 1.0-1.4% (std) by the median, 0.2-0.3% by the minimum (Chen &
# Revels 2016, "Robust benchmarking in noisy environments": timing noise is additive, the minimum is the robust
# estimate; Python's timeit documents the same). Tables written before this field existed are "median".
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


class TablePredictor:
    """A latency model over one pruning space: ``predict_ms(widths) -> float`` (what NetAdapt needs).

    Args:
        table: the latency table.
        space: the model's pruning space; its input shape must be the table's.

    Raises:
        TableError: input shape differs, or the table lacks the unpruned model's configurations
            (a table built for another model).
    """

    def __init__(self, table: LatencyTable, space: PruningSpace, corrected: bool = True):
        if space.fuse_residual_add != table.fuse_residual_add:
            raise TableError("the pruning space and the table disagree on residual-add fusion; build the space "
                             "with TablePredictor.for_model")
        if list(space.input_shape) != list(table.input_shape):
            raise TableError(f"latency table was measured at input {fmt_shape(table.input_shape)}, "
                             f"not {fmt_shape(space.input_shape)}")
        self.table, self.space = table, space
        fit = table.calibration.get("fit") if corrected else None
        if fit and fit.get("model") not in (None, space.model_name):
            fit = None  # a correction fitted on another model's networks is not transferred
        self.fit = fit
        coef = (fit or {}).get("coefficients", {})
        self._intercept = float(coef.get("intercept_ms", table.overhead_ms))
        self._scale = {"conv": float(coef.get("conv", 1.0)), "other": float(coef.get("other", 1.0))}
        self._per_mparam = float(coef.get("weights_ms_per_mparam", 0.0))
        self._delta: Dict[tuple, float] = {
            (c["kind"], LayerKey.from_dict(c["key"])): float(c["delta"]) for c in (fit or {}).get("corrections", [])}
        self.predict_ms(space.full_widths)  # fails early on a table for another model

    @classmethod
    def for_model(cls, table: LatencyTable, model, corrected: bool = True) -> "TablePredictor":
        """Trace ``model`` at the table's input shape with the table's fusion rules. ``corrected=False``
        ignores a fitted calibration (what the fit itself is computed from)."""
        from host.latency.space import build_space

        return cls(table, build_space(model, table.input_shape, fuse_residual_add=table.fuse_residual_add), corrected)

    def layer_ms(self, widths: Dict[str, int]) -> List[float]:
        """Per-site latency in ms, in site order: entry minus overhead, times the site's fitted coefficient plus
        its corrections (family, input and output channel count, configuration; 0 where the fit has none),
        plus the weights term."""
        from host.latency.calibrate import correction_labels, site_class, site_params

        d = self._delta
        if not d:
            return [self._scale[site_class(key.op)] * ms + self._per_mparam * site_params(key)
                    for key, ms in self.raw_sites(widths)]
        return [(self._scale[site_class(key.op)] + sum(d.get(label, 0.0) for label in correction_labels(key))) * ms
                + self._per_mparam * site_params(key) for key, ms in self.raw_sites(widths)]

    def raw_sites(self, widths: Dict[str, int]) -> List[tuple]:
        """``(layer key, entry latency (the table's statistic) - overhead in ms)`` per site, uncorrected, in site order.

        Raises:
            TableError: the table has no entry for a site's configuration.
        """
        out = []
        ovh = self.table.overhead_ms
        for site in self.space.sites:
            key = site.key(widths)
            e = self.table.lookup(key)
            if e is None:
                built = ", ".join(self.table.models) or "unknown models"
                raise TableError(
                    f"latency table (built for {built}, granularity {self.table.build.get('granularity', '?')}) has no "
                    f"entry for {self.space.model_name} layer {site.name}: {key.op} {key.in_channels}->{key.out_channels} "
                    f"at {key.in_hw[0]}x{key.in_hw[1]}")
            out.append((key, e.ms(self.table.statistic) - ovh))
        return out

    def predict_ms(self, widths: Dict[str, int]) -> float:
        """Predicted latency in ms of the model at these group widths."""
        return self._intercept + sum(self.layer_ms(widths))


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
