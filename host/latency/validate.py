"""How well a latency table predicts whole networks: ``host table validate``.

Random pruned architectures of the model are drawn (for every prunable channel group, a channel count on the
table's grid, uniformly), each is exported to ONNX and measured on the device, all in one device session in
interleaved rounds, and compared with the table's prediction: mean and max absolute relative error, Pearson r,
and a scatter plot. This is how the earlier NetAdapt work judged its Raspberry Pi table (60 pruned WRN-40-2
networks, mean error 1.35%, max 6.3%, r 0.9993).
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from host.errors import UserError

# How whole networks are measured (validation, calibration, recalibration): many short round-robin bursts in a
# new order each round, the rounds shared out over several loadings. On this project's 2-core VM (150 ResNet-20
# variants, ONNX Runtime, 1 thread) two such runs agree per network to 0.5% (std), against 1.2% for 15 bursts of
# 40 in one loading; see device.bench.bench_interleaved.
NETWORK_ROUNDS, NETWORK_ITERS, NETWORK_LOADS = 150, 4, 5


def network_loads(loads: Optional[int], rounds: int) -> int:
    """The loadings to share ``rounds`` over: ``loads``, or ``min(NETWORK_LOADS, rounds)`` when None.

    Raises:
        UserError: ``loads`` outside 1..``rounds``.
    """
    if loads is None:
        return max(1, min(NETWORK_LOADS, rounds))
    if not 1 <= loads <= rounds:
        raise UserError(f"--loads must be from 1 to --rounds ({rounds}), got {loads}")
    return loads


def sample_widths(space, granularity: int, samples: int, seed: int = 0) -> List[Dict[str, int]]:
    """``samples`` random group-width assignments on the grid (distinct where the space allows)."""
    from host.latency.space import channel_grid

    rng = random.Random(seed)
    grids = {g.name: channel_grid(g.width, granularity) for g in space.groups}
    out, seen = [], set()
    for _ in range(samples * 20):
        w = {name: rng.choice(grid) for name, grid in grids.items()}
        key = tuple(sorted(w.items()))
        if key not in seen:
            seen.add(key)
            out.append(w)
        if len(out) == samples:
            break
    return out


def validate_table(table_path: str, model_name: str, samples: int = 30, device: Optional[str] = None, seed: int = 0,
                   out_dir: Optional[str] = None, rounds: int = NETWORK_ROUNDS, iters: int = NETWORK_ITERS,
                   warmup: int = 10, num_classes: int = 10, trust_new_host: bool = False, on_line=None,
                   anchors: int = 6, jobs: int = 1, interleave: bool = True, recalibrate: bool = False,
                   loads: Optional[int] = None, compare: Sequence[str] = ()) -> Dict[str, object]:
    """Predicted vs measured latency of ``samples`` random pruned architectures of ``model_name``.

    Args:
        table_path: the latency table.
        model_name: registry name; the table must hold its configurations.
        samples: architectures drawn (>= 3).
        device: where to measure (default: the table's device).
        seed: seed of the draw.
        out_dir: where ``validate.json`` and ``validate.png`` go (nothing written when None).
        rounds, iters, warmup, loads: measurement per architecture: with ``interleave`` the median of all
            ``rounds * iters`` samples, the rounds shared out over ``loads`` loadings of the whole list;
            otherwise the median of round medians. Many short rounds: on a shared CPU the device's speed wanders
            by ~3% within a second; several loadings: a loaded session keeps its own offset (~0.5%). ``loads``
            None: ``min(NETWORK_LOADS, rounds)``.
        anchors: calibration networks of the table (``calibration.fit.networks``) measured again among the
            architectures. The median of (latency now / latency when the table was built) is the device's
            speed drift since the build; errors are reported raw and with the prediction scaled by it.
        jobs: processes exporting the architectures.
        recalibrate: measure all of the table's calibration networks among the architectures (as anchors) and
            also report the errors of the table refitted on them (``recalibrated``): what ``host table
            recalibrate`` right before use gives, with calibration and validation in one device session.
        interleave: every architecture loaded once and timed in round-robin bursts (``device bench
            --interleave``); off for backends that time themselves.
        compare: more tables of the same model, backend and statistic judged on the same measured networks,
            side by side (e.g. the exhaustive table of the grid beside an interpolated one). The drift and the
            refit apply to a compared table whose calibration networks are the first table's.

    Returns:
        ``{"model", "table", "device", "samples", "mean_abs_rel_error", "max_abs_rel_error", "pearson_r",
        "drift": {"speed_ratio", "anchors", "mean_abs_rel_error", "max_abs_rel_error", ...} or None,
        "recalibrated": {"networks", "mean_abs_rel_error", "max_abs_rel_error", "pearson_r", "fit", ...} or None,
        "measurement_noise": :func:`split_half_noise` of the architectures (None with fewer than 2 rounds),
        "architectures": [{"widths", "predicted_ms", "measured_ms", "rel_error"}], "compared": [{"table",
        "mean_abs_rel_error", "max_abs_rel_error", "pearson_r", "drift", "recalibrated", "predicted_ms"}], ...}``.

    Raises:
        UserError: a bad table, model or sample count, or a compared table of another backend or statistic;
            DeviceError from the device.
    """
    import numpy as np

    import models
    from host.latency.calibrate import fit_summary
    from host.io import write_json
    from host.latency.table import TablePredictor, load_table

    if samples < 3:
        raise UserError("--samples must be >= 3 (a correlation needs points)")
    loads = network_loads(loads, rounds) if interleave else None
    table = load_table(table_path)
    gran = int(table.build.get("granularity", 0) or 0)
    if gran < 1:
        raise UserError(f"{table_path}: the table records no channel grid (build.granularity)")
    pred = TablePredictor.for_model(table, models.create(model_name, num_classes))
    fit_nets = (pred.fit or {}).get("networks", [])
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
    meas, got = measure_networks(table, model_name, num_classes, archs + [n["widths"] for n in anchor_nets], device,
                                 rounds, iters, warmup, jobs, trust_new_host, on_line, interleave, loads)
    now, anchor_now = got[:len(archs)], got[len(archs):]
    rows = []
    for w, (mm, rm, med, rmin) in zip(archs, now):
        pm = pred.predict_ms(w)
        rows.append({"widths": w, "predicted_ms": pm, "measured_ms": mm, "rel_error": pm / mm - 1,
                     "measured_median_ms": med,
                     "round_medians_ms": rm, "round_mins_ms": rmin})
    drift = None
    if anchor_nets:
        ratios = [m / n["measured_ms"] for (m, *_), n in zip(anchor_now, anchor_nets)]
        k = float(np.median(ratios))
        drift = {"speed_ratio": k, "anchors": len(ratios), "anchor_ratios": ratios,
                 "what": "median over the table's calibration networks of (latency now / latency at build); "
                         "errors below scale every prediction by it",
                 **_errors([r["predicted_ms"] * k for r in rows], rows)}
    from scipy.stats import pearsonr

    recal = None
    if recalibrate:
        _refit(table, pred.space, anchor_nets, anchor_now)
        pred_now = TablePredictor.for_model(table, models.create(model_name, num_classes))
        for r in rows:
            r["recalibrated_predicted_ms"] = pred_now.predict_ms(r["widths"])
        recal = {"what": "the table refitted on its calibration networks measured in this session (host table "
                         "recalibrate), errors of its predictions",
                 "networks": len(anchor_nets), **_errors([r["recalibrated_predicted_ms"] for r in rows], rows),
                 "pearson_r": float(pearsonr([r["measured_ms"] for r in rows],
                                             [r["recalibrated_predicted_ms"] for r in rows])[0]),
                 "fit": fit_summary(table.calibration["fit"])}
    compared = [_judge_other(c, t, model_name, num_classes, rows, fit_nets, anchor_nets, anchor_now, drift, recalibrate)
                for c, t in others]
    x, y = [r["measured_ms"] for r in rows], [r["predicted_ms"] for r in rows]

    doc = {"schema": "edgeshrink.table_validation", "schema_version": 1, "model": model_name, "table": table_path,
           "table_device": table.device, "device": meas["device"], "backend": table.backend, "threads": table.threads,
           "granularity": gran, "statistic": table.statistic, "samples": len(rows), "seed": seed, "rounds": rounds, "iters": iters, "interleaved": interleave,
           "loads": loads,
           **_errors(y, rows),
           "pearson_r": float(pearsonr(x, y)[0]), "drift": drift, "recalibrated": recal,
           "measurement_noise": split_half_noise(rows, table.statistic),
           "calibration": {k: v for k, v in table.calibration.items() if k != "fit"},
           "fit": fit_summary(pred.fit) if pred.fit else None,
           "architectures": rows, "compared": compared}
    if out_dir:
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
    ``mean_abs_rel_error_floor``. Checked on 150 wrn40_2 networks on a 2-core VM timed in 200 bursts of 4
    over 20 loadings, each network's minimum from 10 of the loadings: s = 1.96%, bounds 0.98-1.39%; the
    minima from the other 10 loadings disagreed with them by 1.19% per measurement.

    Args:
        rows: ``{"round_mins_ms": [ms per round] or None, "round_medians_ms": [ms per round]}`` per network.
        statistic: "min" or "median", the table's.

    Returns:
        ``{"what", "networks", "rounds", "split_half_rms_rel_diff", "noise_std": [low, high],
        "mean_abs_rel_error_floor": [low, high]}`` (fractions), or None when fewer than 2 networks have two
        rounds with the statistic (a tool that reports no per-round minimum, or a single round).
    """
    import math

    import numpy as np

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


def _errors(pred_ms: Sequence[float], rows: List[Dict[str, object]]) -> Dict[str, float]:
    import numpy as np

    e = np.array([p / r["measured_ms"] - 1 for p, r in zip(pred_ms, rows)])
    return {"mean_abs_rel_error": float(np.abs(e).mean()), "max_abs_rel_error": float(np.abs(e).max()),
            "mean_rel_error": float(e.mean())}


def _judge_other(path: str, table, model_name: str, num_classes: int, rows: List[Dict[str, object]],
                 fit_nets, anchor_nets, anchor_now, drift, recalibrate: bool) -> Dict[str, object]:
    """A compared table's errors on the measured networks ``rows`` (see :func:`validate_table`)."""
    from scipy.stats import pearsonr

    import models
    from host.latency.table import TablePredictor

    pred = TablePredictor.for_model(table, models.create(model_name, num_classes))
    p = [pred.predict_ms(r["widths"]) for r in rows]
    out = {"table": path, **_errors(p, rows), "pearson_r": float(pearsonr([r["measured_ms"] for r in rows], p)[0]),
           "entries": len(table.entries), "build": {k: table.build.get(k) for k in ("measured", "interpolated")},
           "drift": None, "recalibrated": None, "predicted_ms": p}
    mine = (pred.fit or {}).get("networks", [])
    same_nets = [n["widths"] for n in mine] == [n["widths"] for n in fit_nets]
    if drift and same_nets and [n["measured_ms"] for n in mine] == [n["measured_ms"] for n in fit_nets]:
        out["drift"] = {"speed_ratio": drift["speed_ratio"], **_errors([v * drift["speed_ratio"] for v in p], rows)}
    if recalibrate and same_nets:
        _refit(table, pred.space, anchor_nets, anchor_now)
        now = TablePredictor.for_model(table, models.create(model_name, num_classes))
        out["recalibrated"] = _errors([now.predict_ms(r["widths"]) for r in rows], rows)
    return out


def measure_networks(table, model_name: str, num_classes: int, archs: List[Dict[str, int]], device: Optional[str],
                     rounds: int, iters: int, warmup: int, jobs: int = 1, trust_new_host: bool = False, on_line=None,
                     interleave: bool = True, loads: Optional[int] = None):
    """Export ``archs`` of ``model_name`` at the table's input shape and measure them side by side on ``device``
    (default: the table's) with the table's backend and threads; ``loads`` as :func:`validate_table`.

    Returns:
        ``(bench result, [(latency ms by the table's statistic, [round medians ms], median ms, [round minima ms])
        per architecture])``.
    """
    from host.bench import bench_on_device, stat_ms
    from host.latency.calibrate import export_archs

    spec = table.device.get("spec") or "local"
    with tempfile.TemporaryDirectory(prefix="edgeshrink-networks-") as tmp:
        names = export_archs(model_name, num_classes, table.input_shape, archs, tmp, jobs)
        paths = [str(Path(tmp) / nm) for nm in names]
        meas = bench_on_device(paths, device=device or spec, backend=table.backend, threads=table.threads,
                               warmup=warmup, iters=iters, rounds=rounds, trust_new_host=trust_new_host, on_line=on_line,
                               interleave=interleave, loads=network_loads(loads, rounds) if interleave else 1)
    return meas, [(stat_ms(meas["models"][p], table.statistic), meas["models"][p]["round_medians_ms"],
                   meas["models"][p]["median_ms"], meas["models"][p].get("round_mins_ms")) for p in paths]


def recalibrate_table(table_path: str, model_name: str, out: str, device: Optional[str] = None,
                      num_classes: int = 10, rounds: int = NETWORK_ROUNDS, iters: int = NETWORK_ITERS,
                      warmup: int = 10, jobs: int = 1, trust_new_host: bool = False, on_line=None,
                      loads: Optional[int] = None) -> Dict[str, object]:
    """Measure the table's calibration networks again and refit its calibration on them; the entries stay.

    A device's speed drifts (clocks, thermal state, other load, a runtime update) and not uniformly across
    networks; refitting on networks measured now re-anchors the table for about the cost of its calibration
    networks (no micro-model is measured again). The new table records ``calibration.recalibrated``: when,
    where, and the median speed ratio now / before.

    Returns:
        ``{"networks", "speed_ratio", "ratio_min", "ratio_max", "fit"}`` (the fit's summary).

    Raises:
        UserError: a bad table or model, or a table without calibration networks; DeviceError from the device.
    """
    import datetime as dt

    import numpy as np

    import models
    from host.latency.calibrate import fit_summary
    from host.latency.table import TablePredictor, load_table

    loads = network_loads(loads, rounds)
    table = load_table(table_path)
    pred = TablePredictor.for_model(table, models.create(model_name, num_classes))
    nets = (pred.fit or {}).get("networks", [])
    if not nets:
        raise UserError(f"{table_path}: no calibration networks to measure again (build the table with --calibrate N)")
    meas, got = measure_networks(table, model_name, num_classes, [n["widths"] for n in nets], device, rounds, iters,
                                 warmup, jobs, trust_new_host, on_line, loads=loads)
    ratios = np.array([m / n["measured_ms"] for (m, *_), n in zip(got, nets)])
    _refit(table, pred.space, nets, got)
    info = {"utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "device": meas["device"],
            "networks": len(nets), "speed_ratio": float(np.median(ratios)), "ratio_min": float(ratios.min()),
            "ratio_max": float(ratios.max()), "rounds": rounds, "iters": iters, "loads": loads}
    table.calibration["recalibrated"] = info
    table.save(out)
    return {**info, "fit": fit_summary(table.calibration["fit"])}


def _refit(table, space, nets: List[Dict[str, object]], got) -> None:
    """Refit ``table``'s calibration on its calibration networks ``nets`` measured again (``got``: ``(latency ms,
    round medians)`` per network, from :func:`measure_networks`)."""
    from host.latency.calibrate import calibrate

    table.calibration["fit"] = calibrate(table, space, [{"widths": n["widths"], "measured_ms": m}
                                                        for n, (m, *_) in zip(nets, got)])


def plot_validation(doc: Dict[str, object], path: str) -> None:
    """Scatter of predicted vs measured latency with the y = x line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from host.io import atomic_path

    rows = doc["architectures"]
    x = [r["measured_ms"] for r in rows]
    y = [r["predicted_ms"] for r in rows]
    lo, hi = min(x + y) * 0.95, max(x + y) * 1.05
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, label="predicted = measured")
    ax.scatter(x, y, s=14)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"measured latency, {doc.get('statistic', 'median')} (ms)")
    ax.set_ylabel("table prediction (ms)")
    ax.set_title(f"{doc['model']}: {doc['samples']} pruned networks\nmean |err| {doc['mean_abs_rel_error']:.1%}, "
                 f"max {doc['max_abs_rel_error']:.1%}, r {doc['pearson_r']:.4f}", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), format="png", dpi=120)
    plt.close(fig)
