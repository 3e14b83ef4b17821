"""Latency statistics and the one timing loop shared by every backend.

Timing lives here, outside the runners (ARCHITECTURE.md, "Runners"): a runner's ``infer`` returns once the
device has synchronised, and :func:`benchmark` times it with ``time.perf_counter_ns``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Sequence

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
) -> LatencyStats:
    """Time ``infer()`` ``iters`` times after ``warmup`` untimed calls.

    Args:
        infer: one synchronous inference (the runner's ``infer`` bound to its feeds).
        warmup: untimed calls first (caches, allocator, lazy kernel selection).
        iters: timed calls, ``>= 1``.
        clock: a nanosecond clock; injectable for tests.

    Returns:
        :class:`LatencyStats` in ms over the ``iters`` timed calls.

    Raises:
        ValueError: ``iters < 1`` or ``warmup < 0``.
    """
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got iters={iters} warmup={warmup}")
    for _ in range(warmup):
        infer()
    samples = np.empty(iters, dtype=np.float64)
    for i in range(iters):
        t0 = clock()
        infer()
        samples[i] = (clock() - t0) / 1e6
    return summarize(samples)
