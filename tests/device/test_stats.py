import numpy as np
import pytest

from edgeshrink.device.stats import LatencyStats, benchmark, summarize


def test_summarize_matches_numpy_on_known_samples():
    samples = [1.0, 2.0, 3.0, 4.0, 10.0]
    s = summarize(samples)
    assert s.n == 5 and s.min == 1.0 and s.max == 10.0
    assert s.mean == pytest.approx(4.0)
    assert s.median == pytest.approx(3.0)
    assert s.p90 == pytest.approx(np.percentile(samples, 90))
    assert s.std == pytest.approx(np.std(samples))
    assert s.cv == pytest.approx(np.std(samples) / 4.0)
    assert LatencyStats.from_dict(s.to_dict()) == s


def test_summarize_refuses_no_samples():
    with pytest.raises(ValueError, match="no latency samples"):
        summarize([])


def test_benchmark_excludes_warmup_and_times_with_the_injected_clock():
    # The fake clock is read twice per timed call: 2 ms per call, 6 ms for every 4th.
    durations_ms = [6.0 if k % 4 == 3 else 2.0 for k in range(8)]
    readings = []
    t = 0
    for d in durations_ms:
        readings += [t, t + int(d * 1e6)]
        t += int(d * 1e6) + 500_000  # time between calls is not counted
    clock = iter(readings).__next__
    calls = []
    s = benchmark(lambda: calls.append(1), warmup=7, iters=8, clock=clock)
    assert len(calls) == 15  # warm-up runs happen but are not timed
    assert s.n == 8
    assert s.median == pytest.approx(2.0) and s.max == pytest.approx(6.0) and s.min == pytest.approx(2.0)
    assert s.mean == pytest.approx(sum(durations_ms) / 8)


def test_benchmark_rejects_bad_counts():
    with pytest.raises(ValueError):
        benchmark(lambda: None, warmup=0, iters=0)
