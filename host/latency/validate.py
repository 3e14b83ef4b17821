"""How well a latency table predicts whole networks: ``host table validate``.

Random pruned architectures of the model are drawn (for every prunable channel group, a channel count on the
table's grid, uniformly), exported to ONNX and measured on the device side by side
(:mod:`edgeshrink.host.latency.networks`), and compared with the table's prediction: mean and max absolute
relative error, Pearson r, and a scatter plot. This is how the earlier NetAdapt work judged its Raspberry Pi table
(60 pruned WRN-40-2 networks, mean error 1.35%, max 6.3%, r 0.9993). Beside the errors it reports the
measurement's own noise (:func:`split_half_noise`): the error floor no table can beat.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgeshrink import models
from edgeshrink.host.errors import UserError
from edgeshrink.host.io import prepare_dir, write_json
from edgeshrink.host.latency.fit import fit_summary
from edgeshrink.host.latency.networks import NETWORK_ITERS, NETWORK_ROUNDS, measure_for_table, network_loads, \
    sample_widths
from edgeshrink.host.latency.predict import TablePredictor
from edgeshrink.host.latency.recalibrate import refit_calibration
from edgeshrink.host.latency.table import load_table

Measure = Callable[[List[Dict[str, int]]], Tuple[Dict[str, object], List[Dict[str, object]]]]


def validate_table(table_path: str, model_name: str, samples: int = 30, device: Optional[str] = None, seed: int = 0,
                   out_dir: Optional[str] = None, rounds: int = NETWORK_ROUNDS, iters: int = NETWORK_ITERS,
                   warmup: int = 10, num_classes: int = 10, trust_new_host: bool = False, on_line=None,
                   anchors: int = 6, jobs: int = 1, interleave: bool = True, recalibrate: bool = False,
                   loads: Optional[int] = None, compare: Sequence[str] = (),
                   measure: Optional[Measure] = None, transfer: bool = True) -> Dict[str, object]:
    """Predicted vs measured latency of ``samples`` random pruned architectures of ``model_name``.

    Args:
        table_path: the latency table.
        model_name: registry name; the table must hold its configurations.
        samples: architectures drawn (>= 3).
        device: where to measure (default: the table's device).
        seed: seed of the draw.
        out_dir: where ``validate.json`` and ``validate.png`` go (nothing written when None).
        rounds, iters, warmup, loads: the measurement (:func:`edgeshrink.host.latency.networks.measure_networks`).
        anchors: calibration networks of the table (``calibration.fit.networks``) measured again among the
            architectures. The median of (latency now / latency when the table was built) is the device's
            speed drift since the build; errors are reported raw and with the prediction scaled by it.
        jobs: processes exporting the architectures.
        recalibrate: measure all of the table's calibration networks among the architectures (as anchors) and
            also report the errors of the table refitted on them (``recalibrated``): what ``host table
            recalibrate`` right before use gives, with calibration and validation in one device session.
        interleave: every architecture loaded once and timed in round-robin bursts; off for backends that time
            themselves.
        compare: more tables of the same model, backend and statistic judged on the same measured networks,
            side by side (e.g. the exhaustive table of the grid beside an interpolated one). The drift and the
            refit apply to a compared table whose calibration networks are the first table's.
        measure: ``measure(archs) -> (device metadata, [{"widths", "measured_ms", "median_ms", "round_mins_ms",
            "round_medians_ms"}])`` in place of measuring on the device with the settings above (another way to
            time networks; the tests' device whose answer is known).
        transfer: apply a fit of another model's networks (the default; False: the plain sum of the entries;
            ``fit_scope`` and ``intercept_rule`` in the result say which).

    Returns:
        ``{"model", "table", "device", "samples", "mean_abs_rel_error", "max_abs_rel_error", "mean_rel_error",
        "pearson_r", "drift": {"speed_ratio", "anchors", "mean_abs_rel_error", ...} or None, "recalibrated":
        {"networks", "mean_abs_rel_error", "max_abs_rel_error", "pearson_r", "fit", ...} or None,
        "measurement_noise": :func:`split_half_noise` of the architectures (None with fewer than 2 rounds),
        "architectures": [{"widths", "predicted_ms", "measured_ms", "rel_error", ...}], "compared": [...]}``;
        errors are fractions, latencies ms.

    Raises:
        UserError: a bad table, model or sample count, or a compared table of another backend or statistic;
            DeviceError from the device.
    """
    if samples < 3:
        raise UserError("--samples must be >= 3 (a correlation needs points)")
    if out_dir:
        prepare_dir(out_dir, "--out")
    loads = network_loads(loads, rounds) if interleave else None
    table = load_table(table_path)
    gran = int(table.build.get("granularity", 0) or 0)
    if gran < 1:
        raise UserError(f"{table_path}: the table records no channel grid (build.granularity)")
    pred = TablePredictor.for_model(table, models.create_model(model_name, num_classes), transfer=transfer)
    fit_nets = pred.calibration_networks
    taken = {tuple(sorted(n["widths"].items())) for n in fit_nets}
    archs = [w for w in sample_widths(pred.space, gran, samples + len(taken), seed)
             if tuple(sorted(w.items())) not in taken][:samples]
    if recalibrate and not fit_nets:
        raise UserError(f"{table_path}: --recalibrate needs a table built with --calibrate N (it has no calibration "
                        "networks)")
    anchor_nets = fit_nets if recalibrate else fit_nets[:max(0, anchors)]
    others = [(c, load_table(c)) for c in compare]
    for c, t in others:
        if (t.backend, t.statistic, tuple(t.input_shape)) != (table.backend, table.statistic, tuple(table.input_shape)):
            raise UserError(f"{c}: cannot be compared with {table_path}: backend, statistic or input shape differs")
    wanted = archs + [n["widths"] for n in anchor_nets]
    if measure is None:
        meas_device, got = measure_for_table(table, model_name, num_classes, wanted, device, rounds=rounds,
                                             iters=iters, warmup=warmup, jobs=jobs, trust_new_host=trust_new_host,
                                             on_line=on_line, interleave=interleave, loads=loads)
    else:
        meas_device, got = measure(wanted)
    now, anchor_now = got[:len(archs)], got[len(archs):]
    rows = []
    for w, m in zip(archs, now):
        pm = pred.predict_ms(w)
        rows.append({"widths": w, "predicted_ms": pm, "measured_ms": m["measured_ms"],
                     "rel_error": pm / m["measured_ms"] - 1, "measured_median_ms": m["median_ms"],
                     "round_medians_ms": m["round_medians_ms"], "round_mins_ms": m["round_mins_ms"]})
    drift = None
    if anchor_nets:
        ratios = [m["measured_ms"] / n["measured_ms"] for m, n in zip(anchor_now, anchor_nets)]
        k = float(np.median(ratios))
        drift = {"speed_ratio": k, "anchors": len(ratios), "anchor_ratios": ratios,
                 "what": "median over the table's calibration networks of (latency now / latency at build); "
                         "errors below scale every prediction by it",
                 **prediction_errors([r["predicted_ms"] * k for r in rows], rows)}
    recal = None
    if recalibrate:
        refit_calibration(table, pred.space, anchor_now)
        pred_now = TablePredictor.for_model(table, models.create_model(model_name, num_classes))
        for r in rows:
            r["recalibrated_predicted_ms"] = pred_now.predict_ms(r["widths"])
        refitted = [r["recalibrated_predicted_ms"] for r in rows]
        recal = {"what": "the table refitted on its calibration networks measured in this session (host table "
                         "recalibrate), errors of its predictions",
                 "networks": len(anchor_nets), **prediction_errors(refitted, rows),
                 "pearson_r": _pearson(rows, refitted), "fit": fit_summary(table.calibration["fit"])}
    compared = [_judge_other(c, t, model_name, num_classes, rows, fit_nets, anchor_now, drift, recalibrate)
                for c, t in others]
    predicted = [r["predicted_ms"] for r in rows]
    doc = {"schema": "edgeshrink.table_validation", "schema_version": 1, "model": model_name, "table": table_path,
           "table_device": table.device, "device": meas_device, "backend": table.backend, "threads": table.threads,
           "granularity": gran, "statistic": table.statistic, "samples": len(rows), "seed": seed, "rounds": rounds,
           "iters": iters, "interleaved": interleave, "loads": loads,
           **prediction_errors(predicted, rows),
           "pearson_r": _pearson(rows, predicted), "drift": drift, "recalibrated": recal,
           "measurement_noise": split_half_noise(rows, table.statistic),
           "calibration": {k: v for k, v in table.calibration.items() if k != "fit"},
           "fit": fit_summary(pred.fit) if pred.fit else None,
           "fit_scope": pred.fit_scope(), "fit_model": (pred.fit or {}).get("model"),
           "intercept_rule": pred.intercept_rule,
           "architectures": rows, "compared": compared}
    if out_dir:
        from edgeshrink.host.latency.plots import plot_validation

        write_json(Path(out_dir) / "validate.json", doc)
        plot_validation(doc, str(Path(out_dir) / "validate.png"))
    return doc


def split_half_noise(rows: Sequence[Dict[str, object]], statistic: str) -> Optional[Dict[str, object]]:
    """How far the measured latencies themselves can be trusted: the error floor no table can beat.

    Each network's rounds (bursts, in the order taken) are split into the even-numbered and the odd-numbered
    ones, which span the same loadings and the same stretch of time, and the network's latency is taken from
    each half by the table's statistic (``min``: the fastest run of the half's rounds; ``median``: the median of
    its round medians). ``d = ln(a / b)`` per network; its root mean square ``s`` over the networks says how
    far two half-length measurements of one network disagree. One measurement from all the rounds is noisy by
    a standard deviation between ``s / 2`` (were the noise to fall as 1/sqrt(runs), as a median's does) and
    ``s / sqrt(2)`` (that of a half; a minimum improves more slowly than 1/sqrt(runs)). A prediction that were
    exact would then show a mean absolute error of sqrt(2/pi) times that (half-normal), which is reported as
    ``mean_abs_rel_error_floor``. docs/latency.md has the check of these bounds against independent loadings.

    Args:
        rows: ``{"round_mins_ms": [ms per round] or None, "round_medians_ms": [ms per round]}`` per network.
        statistic: "min" or "median", the table's.

    Returns:
        ``{"what", "networks", "rounds", "split_half_rms_rel_diff", "noise_std": [low, high],
        "mean_abs_rel_error_floor": [low, high]}`` (fractions), or None when fewer than 2 networks have two
        rounds with the statistic (a tool that reports no per-round minimum, or a single round).
    """
    key = "round_mins_ms" if statistic == "min" else "round_medians_ms"
    take = np.min if statistic == "min" else np.median
    d = []
    for r in rows:
        v = r.get(key)
        if v and len(v) >= 2 and all(isinstance(x, (int, float)) and x > 0 for x in v):
            d.append(math.log(float(take(v[0::2])) / float(take(v[1::2]))))
    if len(d) < 2:
        return None
    s = float(np.sqrt(np.mean(np.square(d))))
    std = [s / 2, s / math.sqrt(2)]
    return {"what": f"each network's {statistic} latency from its even-numbered vs its odd-numbered rounds: "
                    "root mean square of ln(a / b); one whole measurement is noisy by a std in noise_std, and an "
                    "exact prediction would show a mean |error| in mean_abs_rel_error_floor",
            "networks": len(d), "rounds": int(np.median([len(r.get(key) or ()) for r in rows])),
            "split_half_rms_rel_diff": s, "noise_std": std,
            "mean_abs_rel_error_floor": [x * math.sqrt(2 / math.pi) for x in std]}


def prediction_errors(pred_ms: Sequence[float], rows: Sequence[Dict[str, object]]) -> Dict[str, float]:
    """``{"mean_abs_rel_error", "max_abs_rel_error", "mean_rel_error"}`` of predictions (ms) against the rows'
    ``measured_ms``: the relative error is ``predicted / measured - 1``."""
    e = np.array([p / r["measured_ms"] - 1 for p, r in zip(pred_ms, rows)])
    return {"mean_abs_rel_error": float(np.abs(e).mean()), "max_abs_rel_error": float(np.abs(e).max()),
            "mean_rel_error": float(e.mean())}


def _pearson(rows: Sequence[Dict[str, object]], pred_ms: Sequence[float]) -> float:
    from scipy.stats import pearsonr

    return float(pearsonr([r["measured_ms"] for r in rows], list(pred_ms))[0])


def _judge_other(path: str, table, model_name: str, num_classes: int, rows: List[Dict[str, object]],
                 fit_nets, anchor_now, drift, recalibrate: bool) -> Dict[str, object]:
    """A compared table's errors on the measured networks ``rows`` (see :func:`validate_table`)."""
    pred = TablePredictor.for_model(table, models.create_model(model_name, num_classes))
    p = [pred.predict_ms(r["widths"]) for r in rows]
    out = {"table": path, **prediction_errors(p, rows), "pearson_r": _pearson(rows, p),
           "entries": len(table.entries), "build": {k: table.build.get(k) for k in ("measured", "interpolated")},
           "drift": None, "recalibrated": None, "predicted_ms": p}
    mine = (pred.fit or {}).get("networks", [])
    same_nets = [n["widths"] for n in mine] == [n["widths"] for n in fit_nets]
    if drift and same_nets and [n["measured_ms"] for n in mine] == [n["measured_ms"] for n in fit_nets]:
        out["drift"] = {"speed_ratio": drift["speed_ratio"],
                        **prediction_errors([v * drift["speed_ratio"] for v in p], rows)}
    if recalibrate and same_nets:
        refit_calibration(table, pred.space, anchor_now)
        now = TablePredictor.for_model(table, models.create_model(model_name, num_classes))
        out["recalibrated"] = prediction_errors([now.predict_ms(r["widths"]) for r in rows], rows)
    return out
