"""Latency tables with a known answer, for tests: every entry is built from a formula instead of measured, so a
network's prediction is known exactly (the formula summed over its layer sites, the overhead counted once).

They are ordinary table files (the same schema and loader); ``source`` says ``measured`` unless given, and the
device spec is ``local`` (or whatever the test asks for).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

from edgeshrink import models
from edgeshrink.host.latency.key import LayerKey
from edgeshrink.host.latency.space import build_space, enumerate_keys
from edgeshrink.host.latency.table import Entry, LatencyTable

OVERHEAD_MS = 0.004


def formula_ms(key: LayerKey) -> float:
    """A latency that grows with the work: 0.02 ns per MAC, 0.1 us per channel, 0.5 ns per activation, plus the
    overhead every micro-model pays once."""
    h, w = key.in_hw
    return OVERHEAD_MS + 2e-8 * key.macs() + 1e-4 * (key.in_channels + key.out_channels) + 5e-7 * h * w * \
        key.in_channels


def synthetic_table(model: str = "resnet20", granularity: int = 8, statistic: str = "min",
                    fn: Callable[[LayerKey], float] = formula_ms, spec: str = "local", num_classes: int = 10,
                    scale: Optional[Dict[str, float]] = None, input_shape=(1, 3, 32, 32)) -> LatencyTable:
    """A table of every configuration of ``model`` on the grid, each entry ``fn(key)`` ms (its ``min`` and, times
    ``scale["median"]`` (default 1.25), its ``median``), overhead ``fn``'s :data:`OVERHEAD_MS`."""
    scale = {"min": 1.0, "median": 1.25, **(scale or {})}
    space = build_space(models.create_model(model, num_classes), tuple(input_shape))
    entries = [Entry(k, {s: fn(k) * f for s, f in scale.items()}, 100, "measured")
               for k in enumerate_keys(space, granularity)]
    ovh = {s: OVERHEAD_MS * f for s, f in scale.items()}
    return LatencyTable(
        device={"spec": spec, "hostname": "formula", "cpu": "formula", "os": "test", "governor": None,
                "runtime": "formula 1", "board": None},
        backend="ort", precision="fp32", threads=1, batch_size=1, input_shape=list(input_shape),
        created_utc="2026-12-01T00:00:00Z", tool_version="test",
        calibration={"method": "overhead-once", "overhead_ms": ovh[statistic], "overhead_latency_ms": ovh,
                     "fuse_residual_add": True},
        entries=entries, models=[model], build={"granularity": granularity, "measured": len(entries),
                                                "interpolated": 0},
        statistic=statistic)


def predicted_by_formula(model: str, widths: Dict[str, int], fn: Callable[[LayerKey], float] = formula_ms,
                         num_classes: int = 10) -> float:
    """The exact prediction of :func:`synthetic_table` for a network: overhead + sum over sites of (fn - overhead)."""
    space = build_space(models.create_model(model, num_classes), (1, 3, 32, 32))
    return OVERHEAD_MS + sum(fn(k) - OVERHEAD_MS for k in space.keys(widths))


def formula_device(factor: float = 1.0, fn: Callable[[LayerKey], float] = formula_ms, model: str = "resnet20",
                   rounds: int = 4, per_site: Optional[Callable[[LayerKey], float]] = None):
    """A measurement whose answer is known, in place of a device (``validate_table(..., measure=)``): each
    network takes ``factor`` times the formula's prediction, with each site's share scaled by ``per_site(key)``
    when given (what a standalone micro-model does not see). Every round measures the same, so the split-half
    noise is 0."""
    space = build_space(models.create_model(model), (1, 3, 32, 32))

    def network_ms(widths: Dict[str, int]) -> float:
        scale = per_site or (lambda k: 1.0)
        return factor * (OVERHEAD_MS + sum((fn(k) - OVERHEAD_MS) * scale(k) for k in space.keys(widths)))

    def measure(archs):
        rows = []
        for w in archs:
            ms = network_ms(w)
            rows.append({"widths": dict(w), "measured_ms": ms, "median_ms": 1.25 * ms, "min_ms": ms,
                         "round_medians_ms": [1.25 * ms] * rounds, "round_mins_ms": [ms] * rounds})
        return {"spec": "formula", "hostname": "formula device"}, rows

    measure.network_ms = network_ms
    return measure
