"""Latency statistics and the one timing loop shared by every backend.

Timing lives here, outside the runners (one loop for every backend): a runner's ``infer`` returns once the
device has synchronised, and :func:`benchmark` times it with ``time.perf_counter_ns``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Summary of ``n`` timed inferences, warm-up excluded. All times in milliseconds."""

    n: int  # timed iterations
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    min: float
    max: float
    std: float  # population standard deviation
    cv: float  # coefficient of variation, std / mean (dimensionless)

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, float]) -> "LatencyStats":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


# Vendor tools that time themselves report fewer statistics (benchmark_model: no median or percentiles;
# trtexec: no standard deviation); their ``latency_ms`` dicts have the same keys with None where unreported.


def summarize(samples_ms: Sequence[float]) -> LatencyStats:
    """Statistics of per-inference latencies.

    Args:
        samples_ms: latencies in ms, shape ``(n,)``, ``n >= 1``.

    Raises:
        ValueError: no samples.
    """
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no latency samples to summarise")
    mean = float(a.mean())
    std = float(a.std())
    p90, p95, p99, median = (float(v) for v in np.percentile(a, [90, 95, 99, 50]))
    return LatencyStats(
        n=int(a.size), mean=mean, median=median, p90=p90, p95=p95, p99=p99,
        min=float(a.min()), max=float(a.max()), std=std, cv=std / mean if mean > 0 else 0.0,
    )


def benchmark(
    infer: Callable[[], object],
    warmup: int = 50,
    iters: int = 300,
    clock: Callable[[], int] = time.perf_counter_ns,
    warmup_s: Optional[float] = None,
    window: Optional[Dict[str, float]] = None,
) -> LatencyStats:
    """Time ``infer()`` ``iters`` times after an untimed warm-up of ``warmup`` calls and at least ``warmup_s``.

    Args:
        infer: one synchronous inference (the runner's ``infer`` bound to its feeds).
        warmup: untimed calls first (caches, allocator, lazy kernel selection).
        iters: timed calls, ``>= 1``.
        clock: a nanosecond clock; injectable for tests.
        warmup_s: warm up by time as well: after the ``warmup`` calls, keep calling until this many seconds
            (on ``clock``) have passed (a GPU or a DVFS governor needs time, not a count, to settle).
        window: when given, receives ``warmup_calls`` and ``start_s``/``end_s`` of the timed loop on the
            ``time.monotonic()`` clock (what power meters stamp their samples with).

    Returns:
        :class:`LatencyStats` in ms over the ``iters`` timed calls.

    Raises:
        ValueError: ``iters < 1``, ``warmup < 0`` or ``warmup_s < 0``.
    """
    if iters < 1 or warmup < 0 or (warmup_s is not None and warmup_s < 0):
        raise ValueError(f"need iters >= 1, warmup >= 0 and warmup_s >= 0, got iters={iters} warmup={warmup} "
                         f"warmup_s={warmup_s}")
    for _ in range(warmup):
        infer()
    done = warmup
    if warmup_s:
        t_w = clock()
        while (clock() - t_w) < warmup_s * 1e9:
            infer()
            done += 1
    samples = np.empty(iters, dtype=np.float64)
    start = time.monotonic()
    for i in range(iters):
        t0 = clock()
        infer()
        samples[i] = (clock() - t0) / 1e6
    if window is not None:
        window.update(warmup_calls=done, start_s=start, end_s=time.monotonic())
    return summarize(samples)
