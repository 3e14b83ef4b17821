"""Power over a benchmark's windows, and energy per inference.

The meter runs through an idle window before the timed loop (the Neural Network Shrinking work slept before
its Jetson runs for the same reason: to know what the board draws doing nothing), then through the timed
window. Energy per inference = mean power during the timed window x its duration / inferences; the part above
idle subtracts the idle power first. mW x s = mJ.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np


def window_mean_mw(samples: Sequence[Tuple[float, float]], start_s: float, end_s: float) -> Tuple[Optional[float], int]:
    """Mean power (mW) of the samples stamped in ``[start_s, end_s]``, and how many there were."""
    vals = [p for t, p in samples if start_s <= t <= end_s and p is not None]
    if not vals:
        return None, 0
    return float(np.mean(vals)), len(vals)


def summarize_power(samples: Sequence[Tuple[float, float]], idle: Tuple[float, float], timed: Tuple[float, float],
                    inferences: int, meter: str) -> Dict[str, object]:
    """Idle power, mean power while timing, and energy per inference.

    Args:
        samples: ``(t_s, power_mw)`` with ``t_s`` on the ``time.monotonic()`` clock.
        idle: ``(start_s, end_s)`` of the idle window before the benchmark.
        timed: ``(start_s, end_s)`` of the timed loop.
        inferences: inferences in the timed loop (``>= 1``).
        meter: the meter's name, recorded.

    Returns:
        ``{"meter", "idle_power_mw", "idle_samples", "mean_power_mw", "samples", "timed_s",
        "energy_per_inference_mj", "energy_above_idle_per_inference_mj", "warning"}``; energies are None when
        the timed window holds no sample (too short for the meter's interval: raise --iters).
    """
    idle_mw, n_idle = window_mean_mw(samples, *idle)
    mean_mw, n = window_mean_mw(samples, *timed)
    dur = timed[1] - timed[0]
    out: Dict[str, object] = {"meter": meter, "idle_power_mw": idle_mw, "idle_samples": n_idle,
                              "mean_power_mw": mean_mw, "samples": n, "timed_s": dur,
                              "energy_per_inference_mj": None, "energy_above_idle_per_inference_mj": None,
                              "warning": None}
    if mean_mw is None:
        out["warning"] = "no power sample fell inside the timed window; run more iterations or a shorter interval"
        return out
    out["energy_per_inference_mj"] = mean_mw * dur / inferences
    if idle_mw is not None:
        out["energy_above_idle_per_inference_mj"] = (mean_mw - idle_mw) * dur / inferences
    if n < 3:
        out["warning"] = f"only {n} power sample(s) in the timed window; the mean is rough"
    return out


def to_csv(samples: List[Dict[str, object]], path: str) -> None:
    """Write samples (each with ``t_s``, ``total_power_mw`` and ``rails_mw``) as CSV with units in the column
    names: ``t_ms,total_mw,<rail>_mw...`` (``t_ms`` from the first sample)."""
    rails: List[str] = []
    for s in samples:
        for r in s.get("rails_mw") or {}:
            if r not in rails:
                rails.append(r)
    t0 = samples[0]["t_s"] if samples else 0.0
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(",".join(["t_ms", "total_mw"] + [f"{r.lower()}_mw" for r in rails]) + "\n")
        for s in samples:
            rm = s.get("rails_mw") or {}
            row = [f"{(s['t_s'] - t0) * 1000:.1f}", "" if s.get("total_power_mw") is None else f"{s['total_power_mw']:.1f}"]
            row += ["" if rm.get(r) is None else f"{rm[r]:.1f}" for r in rails]
            f.write(",".join(row) + "\n")
    os.replace(path + ".tmp", path)
