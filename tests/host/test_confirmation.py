"""How `host prune` times its confirmation: like the table's calibration networks, over a span of time."""

import pytest

from edgeshrink.device.runners import is_self_timed
from edgeshrink.host.errors import UserError
from edgeshrink.host.latency.networks import NETWORK_ITERS, NETWORK_ROUNDS
from edgeshrink.host.pipeline.confirm import MAX_CONFIRMATION_ROUNDS, confirmation_rounds


@pytest.mark.parametrize("seconds,predicted", [(20.0, [1.0, 0.5]), (40.0, [1.0, 0.5]), (5.0, [3.0, 2.5]),
                                                (20.0, [0.2, 0.07])])
def test_the_bursts_span_the_time_asked_for_and_no_more(seconds, predicted):
    """Every burst times each network NETWORK_ITERS times: the rounds chosen cover the span, one fewer would not."""
    rounds = confirmation_rounds(seconds, predicted)
    span = lambda n: n * NETWORK_ITERS * sum(predicted) / 1000.0  # noqa: E731 - seconds of timing in n rounds
    assert span(rounds) >= seconds > span(rounds - 1)


def test_rounds_are_bounded_below_by_a_calibration_network_and_above():
    assert confirmation_rounds(0.01, [1.0, 0.5]) == NETWORK_ROUNDS  # never timed less than a calibration network
    assert confirmation_rounds(20.0, [0.001, 0.001]) == MAX_CONFIRMATION_ROUNDS < 20.0 / (NETWORK_ITERS * 2e-6)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(UserError, match="--bench-seconds must be > 0 and finite"):
            confirmation_rounds(bad, [1.0])


def test_self_timed_backends_are_known_without_their_tools():
    assert is_self_timed("trtexec") and is_self_timed("benchmark_model")
    assert not is_self_timed("ort") and not is_self_timed("tensorrt") and not is_self_timed("nonesuch")
