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
from typing import Dict, List, Optional

from host.errors import UserError


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
                   out_dir: Optional[str] = None, rounds: int = 15, iters: int = 40, warmup: int = 10,
                   num_classes: int = 10, trust_new_host: bool = False, on_line=None, anchors: int = 6,
                   jobs: int = 1, interleave: bool = True) -> Dict[str, object]:
    """Predicted vs measured latency of ``samples`` random pruned architectures of ``model_name``.

    Args:
        table_path: the latency table.
        model_name: registry name; the table must hold its configurations.
        samples: architectures drawn (>= 3).
        device: where to measure (default: the table's device).
        seed: seed of the draw.
        out_dir: where ``validate.json`` and ``validate.png`` go (nothing written when None).
        rounds, iters, warmup: measurement per architecture: with ``interleave`` the median of all
            ``rounds * iters`` samples, otherwise the median of round medians.
            Many short rounds: on a shared CPU the device's speed wanders by several percent within a minute.
        anchors: calibration networks of the table (``calibration.fit.networks``) measured again among the
            architectures. The median of (latency now / latency when the table was built) is the device's
            speed drift since the build; errors are reported raw and with the prediction scaled by it.
        jobs: processes exporting the architectures.
        interleave: every architecture loaded once and timed in round-robin bursts (``device bench
            --interleave``); off for backends that time themselves.

    Returns:
        ``{"model", "table", "device", "samples", "mean_abs_rel_error", "max_abs_rel_error", "pearson_r",
        "drift": {"speed_ratio", "anchors", "mean_abs_rel_error", "max_abs_rel_error", ...} or None,
        "architectures": [{"widths", "predicted_ms", "measured_ms", "rel_error"}], ...}``.

    Raises:
        UserError: a bad table, model or sample count; DeviceError from the device.
    """
    import numpy as np

    import models
    from host.bench import bench_on_device
    from host.latency.calibrate import export_archs, fit_summary
    from host.io import write_json
    from host.latency.table import TablePredictor, load_table

    if samples < 3:
        raise UserError("--samples must be >= 3 (a correlation needs points)")
    table = load_table(table_path)
    gran = int(table.build.get("granularity", 0) or 0)
    if gran < 1:
        raise UserError(f"{table_path}: the table records no channel grid (build.granularity)")
    pred = TablePredictor.for_model(table, models.create(model_name, num_classes))
    fit_nets = (pred.fit or {}).get("networks", [])
    taken = {tuple(sorted(n["widths"].items())) for n in fit_nets}
    archs = [w for w in sample_widths(pred.space, gran, samples + len(taken), seed)
             if tuple(sorted(w.items())) not in taken][:samples]
    anchor_nets = fit_nets[:max(0, anchors)]
    spec = table.device.get("spec") or "local"
    with tempfile.TemporaryDirectory(prefix="edgeshrink-validate-") as tmp:
        names = export_archs(model_name, num_classes, table.input_shape, archs + [n["widths"] for n in anchor_nets],
                             tmp, jobs)
        all_paths = [str(Path(tmp) / nm) for nm in names]
        meas = bench_on_device(all_paths, device=device or spec, backend=table.backend, threads=table.threads,
                               warmup=warmup, iters=iters, rounds=rounds, trust_new_host=trust_new_host, on_line=on_line,
                               interleave=interleave)
    paths, anchor_paths = all_paths[:len(archs)], all_paths[len(archs):]
    rows = []
    for w, p in zip(archs, paths):
        pm, mm = pred.predict_ms(w), meas["models"][p]["median_ms"]
        rows.append({"widths": w, "predicted_ms": pm, "measured_ms": mm, "rel_error": pm / mm - 1,
                     "round_medians_ms": meas["models"][p]["round_medians_ms"]})
    drift = None
    if anchor_nets:
        ratios = [meas["models"][p]["median_ms"] / n["measured_ms"] for p, n in zip(anchor_paths, anchor_nets)]
        k = float(np.median(ratios))
        derr = np.array([r["predicted_ms"] * k / r["measured_ms"] - 1 for r in rows])
        drift = {"speed_ratio": k, "anchors": len(ratios), "anchor_ratios": ratios,
                 "what": "median over the table's calibration networks of (latency now / latency at build); "
                         "errors below scale every prediction by it",
                 "mean_abs_rel_error": float(np.abs(derr).mean()), "max_abs_rel_error": float(np.abs(derr).max()),
                 "mean_rel_error": float(derr.mean())}
    err = np.abs([r["rel_error"] for r in rows])
    x, y = np.array([r["measured_ms"] for r in rows]), np.array([r["predicted_ms"] for r in rows])
    from scipy.stats import pearsonr

    doc = {"schema": "edgeshrink.table_validation", "schema_version": 1, "model": model_name, "table": table_path,
           "table_device": table.device, "device": meas["device"], "backend": table.backend, "threads": table.threads,
           "granularity": gran, "samples": len(rows), "seed": seed, "rounds": rounds, "iters": iters, "interleaved": interleave,
           "mean_abs_rel_error": float(err.mean()), "max_abs_rel_error": float(err.max()),
           "mean_rel_error": float(np.mean([r["rel_error"] for r in rows])),
           "pearson_r": float(pearsonr(x, y)[0]), "drift": drift,
           "calibration": {k: v for k, v in table.calibration.items() if k != "fit"},
           "fit": fit_summary(pred.fit) if pred.fit else None,
           "architectures": rows}
    if out_dir:
        write_json(Path(out_dir) / "validate.json", doc)
        plot_validation(doc, str(Path(out_dir) / "validate.png"))
    return doc


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
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("table prediction (ms)")
    ax.set_title(f"{doc['model']}: {doc['samples']} pruned networks\nmean |err| {doc['mean_abs_rel_error']:.1%}, "
                 f"max {doc['max_abs_rel_error']:.1%}, r {doc['pearson_r']:.4f}", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), format="png", dpi=120)
    plt.close(fig)
