"""How `host prune` times its confirmation: like the table's calibration networks, over a span of time."""

import pytest

from edgeshrink.device.runners import is_self_timed
from edgeshrink.host.errors import UserError
from edgeshrink.host.latency.networks import NETWORK_ITERS, NETWORK_ROUNDS
from edgeshrink.host.pipeline.confirm import MAX_CONFIRMATION_ROUNDS, confirmation_rounds


def test_rounds_cover_the_span_by_the_predicted_latencies():
    # 1.0 + 0.5 ms per network pair, bursts of 4: 6 ms a round, 20 s -> 3334 rounds (rounded up)
    assert NETWORK_ITERS == 4
    assert confirmation_rounds(20.0, [1.0, 0.5]) == 3334
    assert confirmation_rounds(40.0, [1.0, 0.5]) == 6667


def test_rounds_are_bounded_below_by_a_calibration_network_and_above():
    assert confirmation_rounds(0.01, [1.0, 0.5]) == NETWORK_ROUNDS
    assert confirmation_rounds(20.0, [0.001, 0.001]) == MAX_CONFIRMATION_ROUNDS
    with pytest.raises(UserError, match="--bench-seconds must be > 0"):
        confirmation_rounds(0.0, [1.0])


def test_self_timed_backends_are_known_without_their_tools():
    assert is_self_timed("trtexec") and is_self_timed("benchmark_model")
    assert not is_self_timed("ort") and not is_self_timed("tensorrt") and not is_self_timed("nonesuch")
