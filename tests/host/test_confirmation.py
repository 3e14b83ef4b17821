"""How `host prune` times its confirmation: like the table's calibration networks, over a span of time."""

import pytest

from edgeshrink.device.runners import is_self_timed
from edgeshrink.host.errors import UserError
from edgeshrink.host.latency.networks import NETWORK_ITERS, NETWORK_ROUNDS
from edgeshrink.host.pipeline.confirm import MAX_CONFIRMATION_ROUNDS, confirmation_rounds


@pytest.mark.parametrize("seconds,predicted,rounds", [
    (20.0, [1.0, 0.5], 3334),  # a burst: 4 runs of 1.5 ms = 6 ms; 20 s / 6 ms = 3333.3, so 3334 bursts
    (40.0, [1.0, 0.5], 6667),  # 40 s / 6 ms = 6666.7
    (5.0, [3.0, 2.5], 228),  # 4 x 5.5 ms = 22 ms; 5 s / 22 ms = 227.3
    (20.0, [0.2, 0.07], 18519),  # 4 x 0.27 ms = 1.08 ms; 20 s / 1.08 ms = 18518.5
    (1.0, [3.0, 2.5], 150),  # 1 s / 22 ms = 45.5, fewer than a calibration network's 150 bursts
])
def test_the_bursts_span_the_time_asked_for_and_no_more(seconds, predicted, rounds):
    """Every burst times each network 4 times (NETWORK_ITERS): enough bursts for the span, counted by hand."""
    assert NETWORK_ITERS == 4 and NETWORK_ROUNDS == 150
    assert confirmation_rounds(seconds, predicted) == rounds


def test_rounds_are_bounded_below_by_a_calibration_network_and_above():
    assert confirmation_rounds(0.01, [1.0, 0.5]) == NETWORK_ROUNDS  # never timed less than a calibration network
    assert confirmation_rounds(20.0, [0.001, 0.001]) == MAX_CONFIRMATION_ROUNDS < 20.0 / (NETWORK_ITERS * 2e-6)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(UserError, match="--bench-seconds must be > 0 and finite"):
            confirmation_rounds(bad, [1.0])


def test_self_timed_backends_are_known_without_their_tools():
    assert is_self_timed("trtexec") and is_self_timed("benchmark_model")
    assert not is_self_timed("ort") and not is_self_timed("tensorrt") and not is_self_timed("nonesuch")
