"""``host table recalibrate``: measure a table's calibration networks again and refit its calibration on them; the
entries stay (no micro-model is measured again).

A device's speed drifts (clocks, thermal state, other load, a runtime update) and not uniformly across networks;
refitting on networks measured now re-anchors the table for about the cost of its calibration networks.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from edgeshrink import models
from edgeshrink.device.provenance import utc_now
from edgeshrink.host.errors import UserError
from edgeshrink.host.io import prepare_file
from edgeshrink.host.latency.fit import calibrate, fit_summary
from edgeshrink.host.latency.networks import NETWORK_ITERS, NETWORK_ROUNDS, measure_for_table, network_loads
from edgeshrink.host.latency.predict import TablePredictor
from edgeshrink.host.latency.table import load_table


def refit_calibration(table, space, measured: List[Dict[str, object]]) -> None:
    """Refit ``table``'s calibration in place on networks measured again (``[{"widths", "measured_ms"}]``, as
    :func:`edgeshrink.host.latency.networks.measure_networks` returns them)."""
    table.calibration["fit"] = calibrate(table, space, [{"widths": m["widths"], "measured_ms": m["measured_ms"]}
                                                        for m in measured])


def recalibrate_table(table_path: str, model_name: str, out: str, device: Optional[str] = None,
                      num_classes: int = 10, rounds: int = NETWORK_ROUNDS, iters: int = NETWORK_ITERS,
                      warmup: int = 10, jobs: int = 1, trust_new_host: bool = False, on_line=None,
                      loads: Optional[int] = None, measure=None) -> Dict[str, object]:
    """Measure the table's calibration networks again, refit, and write the table to ``out`` with
    ``calibration.recalibrated`` (when, where, the median speed ratio now / before). ``measure`` as
    :func:`edgeshrink.host.latency.validate.validate_table` takes it.

    Returns:
        ``{"utc", "device", "networks", "speed_ratio", "ratio_min", "ratio_max", "rounds", "iters", "loads",
        "fit"}`` (the fit's summary).

    Raises:
        UserError: a bad table or model, or a table without calibration networks; DeviceError from the device.
    """
    loads = network_loads(loads, rounds)
    prepare_file(out, "-o")
    table = load_table(table_path)
    pred = TablePredictor.for_model(table, models.create_model(model_name, num_classes))
    nets = pred.calibration_networks
    if not nets:
        raise UserError(f"{table_path}: no calibration networks to measure again (build the table with --calibrate N)")
    wanted = [n["widths"] for n in nets]
    if measure is None:
        meas_device, got = measure_for_table(table, model_name, num_classes, wanted, device, rounds=rounds,
                                             iters=iters, warmup=warmup, jobs=jobs, trust_new_host=trust_new_host,
                                             on_line=on_line, loads=loads)
    else:
        meas_device, got = measure(wanted)
    ratios = np.array([m["measured_ms"] / n["measured_ms"] for m, n in zip(got, nets)])
    refit_calibration(table, pred.space, got)
    info = {"utc": utc_now(), "device": meas_device, "networks": len(nets), "speed_ratio": float(np.median(ratios)),
            "ratio_min": float(ratios.min()), "ratio_max": float(ratios.max()), "rounds": rounds, "iters": iters,
            "loads": loads}
    table.calibration["recalibrated"] = info
    table.save(out)
    return {**info, "fit": fit_summary(table.calibration["fit"])}
