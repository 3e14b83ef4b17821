"""The device's confirmation of a prune: baseline and pruned ONNX measured side by side on the table's device.

Without power or a self-timed backend they are timed as the table's calibration networks are
(:mod:`edgeshrink.host.latency.networks`: round-robin bursts of ``NETWORK_ITERS`` runs over ``NETWORK_LOADS``
loadings), for about ``bench_seconds``: a table by the minimum predicts the CPU's fast state, which a few
seconds of timing can miss on a shared machine (docs/results.md). With ``--power`` or a self-timed backend
(trtexec, benchmark_model) each model is loaded afresh in ``bench_rounds`` rounds of ``bench_iters`` runs.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

from edgeshrink.device.runners import is_self_timed
from edgeshrink.host import ui
from edgeshrink.host.bench import bench_on_device
from edgeshrink.host.errors import UserError
from edgeshrink.host.latency.networks import NETWORK_ITERS, NETWORK_LOADS, NETWORK_ROUNDS, network_loads

MAX_CONFIRMATION_ROUNDS = 20000


def check_bench_seconds(seconds: float) -> None:
    """Raises UserError unless ``seconds`` (``--bench-seconds``) is a positive finite number."""
    if not (seconds > 0 and math.isfinite(seconds)):
        raise UserError(f"--bench-seconds must be > 0 and finite, got {seconds:g}")


def confirmation_rounds(seconds: float, predicted_ms: Sequence[float]) -> int:
    """Round-robin bursts for the confirmation: enough bursts of :data:`NETWORK_ITERS` runs of every network for
    about ``seconds`` of timing, judged by the table's predictions (ms), and never fewer than the
    :data:`NETWORK_ROUNDS` a calibration or validation network gets (at most :data:`MAX_CONFIRMATION_ROUNDS`).

    Raises:
        UserError: ``seconds`` not positive and finite.
    """
    check_bench_seconds(seconds)
    per_round_s = NETWORK_ITERS * sum(predicted_ms) / 1000.0
    want = int(-(-seconds // per_round_s)) if per_round_s > 0 else NETWORK_ROUNDS
    return max(NETWORK_ROUNDS, min(MAX_CONFIRMATION_ROUNDS, want))


def confirm_on_device(onnx_base: str, onnx_pruned: str, table, device: str, predicted_ms: Sequence[float],
                      bench_seconds: float = 20.0, bench_iters: int = 300, bench_rounds: int = 3,
                      power: Optional[str] = None, trust_new_host: bool = False,
                      logs_dir: Optional[str] = None) -> Dict[str, object]:
    """Measure ``onnx_base`` and ``onnx_pruned`` side by side on ``device`` with the table's backend and threads.

    Args:
        predicted_ms: the table's predictions of the two (ms), which size the timing to ``bench_seconds``.
        power: a power meter on the device (``--power``), or None.
        logs_dir: where power logs are pulled back to (with ``power``).

    Returns:
        :func:`edgeshrink.host.bench.bench_on_device`'s result.

    Raises:
        UserError: bad timing settings; DeviceError: the device failed.
    """
    if not power and not is_self_timed(table.backend):
        rounds = confirmation_rounds(bench_seconds, predicted_ms)
        ui.log(f"measuring baseline and pruned ONNX on {device} ({table.backend}, {table.threads} thread(s)) as "
               f"the table's calibration networks were: {rounds} round-robin bursts of {NETWORK_ITERS} runs over "
               f"{NETWORK_LOADS} loadings (about {bench_seconds:g} s)")
        return bench_on_device([onnx_base, onnx_pruned], device=device, backend=table.backend, threads=table.threads,
                               iters=NETWORK_ITERS, rounds=rounds, trust_new_host=trust_new_host, interleave=True,
                               loads=network_loads(None, rounds))
    ui.log(f"measuring baseline and pruned ONNX on {device} ({table.backend}, {table.threads} thread(s), "
           f"{bench_rounds} rounds of {bench_iters} runs, each model loaded afresh)")
    return bench_on_device([onnx_base, onnx_pruned], device=device, backend=table.backend, threads=table.threads,
                           iters=bench_iters, rounds=bench_rounds, trust_new_host=trust_new_host,
                           device_args=["--power", power] if power else [], out_dir=logs_dir if power else None)


def not_measured(onnx_base: str, onnx_pruned: str, note: str = "not measured: imported table") -> Dict[str, object]:
    """What stands for the measurement when the table's board is not here (an imported table), or when
    ``host compare`` measures every network together afterwards."""
    return {"device": {"spec": None, "note": note}, "rounds": 0, "warmup": 0, "iters": 0,
            "models": {onnx_base: None, onnx_pruned: None}}
