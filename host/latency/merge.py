"""Merge latency tables: repeated measurement runs (robustly) and shards (by union), then optional smoothing.

* Runs: every entry takes the median across the tables that hold it. With three or more runs, outliers are
  found by median absolute deviation (MAD, scaled by 1.4826 to a normal sigma): first whole runs (a run whose
  typical deviation from the per-entry medians is an outlier among the runs, e.g. a throttled run), then
  single entries; they are dropped before the median and recorded in ``merge``.
* Shards (``--shard i/N`` outputs) hold disjoint entries and simply combine.
* Smoothing along the channel axes, per family of entries that differ only in channels: ``gaussian``
  (``scipy.ndimage.gaussian_filter`` with ``mode="nearest"``, as the NetAdapt work did; sigma in grid steps)
  or ``monotone`` (isotonic regression making latency non-decreasing in output, then input channels).
* Calibration (:mod:`edgeshrink.host.latency.fit`): a run's fitted correction belongs to that run's entries, so it is
  not carried over. The calibration networks of the runs kept (of the model of the first fit) are pooled, each
  run's measurements scaled by that run's typical ratio to the merged entries (its speed), one median per
  network, and the correction is fitted again on the merged (and smoothed) entries; ``merge["calibration"]``
  says what was done. An entry is ``measured`` when any run kept measured it, else ``interpolated``.

Tables of a different device (CPU, board, runtime), backend, precision, threads or input shape are refused.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgeshrink import models
from edgeshrink.device.provenance import sha256_file, utc_now
from edgeshrink.host import __version__
from edgeshrink.host.errors import TableError, UserError
from edgeshrink.host.latency.fit import calibrate
from edgeshrink.host.latency.key import LayerKey, family
from edgeshrink.host.latency.networks import arch_id
from edgeshrink.host.latency.predict import TablePredictor
from edgeshrink.host.latency.table import Entry, LatencyTable, load_table

MAD_SCALE = 1.4826


def _identity(t) -> Tuple:
    d = t.device
    return (d.get("cpu"), d.get("board"), d.get("runtime"), t.backend, t.precision, int(t.threads),
            tuple(t.input_shape), t.statistic, t.fusion_rules)


def _check_compatible(tables, paths: Sequence[str]) -> None:
    names = ("device CPU", "board", "runtime", "backend", "precision", "threads", "input shape", "latency statistic",
             "fusion rules")
    ref = _identity(tables[0])
    for t, p in zip(tables[1:], paths[1:]):
        for name, a, b in zip(names, ref, _identity(t)):
            if a != b:
                raise TableError(f"{p}: cannot merge with {paths[0]}: {name} differs ({b!r} vs {a!r})")


def _robust_outliers(values: np.ndarray, thresh: float) -> np.ndarray:
    """Boolean mask of values farther than ``thresh`` scaled MADs from their median (none when MAD is 0)."""
    med = np.median(values)
    mad = MAD_SCALE * np.median(np.abs(values - med))
    if mad <= 0:
        return np.zeros(values.shape, dtype=bool)
    return np.abs(values - med) > thresh * mad


def merge_tables(paths: Sequence[str], mad_threshold: float = 3.5, smooth: Optional[str] = None,
                 sigma: float = 3.0, num_classes: int = 10):
    """Merge the tables at ``paths`` into one.

    Args:
        paths: table JSON files (>= 2): repeated runs and/or shards.
        mad_threshold: outlier threshold in scaled MADs (runs and entries).
        smooth: None, ``"gaussian"`` or ``"monotone"``.
        sigma: gaussian sigma in grid steps.
        num_classes: classifier outputs of the calibration networks' model (for the refit).

    Returns:
        The merged :class:`host.latency.table.LatencyTable`; ``build["merge"]`` records the runs and entries
        dropped as outliers and ``calibration``, the refit (``{"refit": bool, ...}``; None without fits).

    Raises:
        TableError: fewer than two tables, an unreadable one, or incompatible ones.
    """
    if len(paths) < 2:
        raise TableError("table merge needs two or more tables")
    if smooth not in (None, "gaussian", "monotone"):
        raise TableError(f"unknown smoothing {smooth!r}; gaussian or monotone")
    tables = [load_table(p) for p in paths]
    _check_compatible(tables, paths)
    sources: Dict[LayerKey, Dict[int, Entry]] = {}
    for i, t in enumerate(tables):
        for e in t.entries:
            sources.setdefault(e.key, {})[i] = e
    stat = tables[0].statistic
    values = {k: {i: e.ms(stat) for i, e in v.items()} for k, v in sources.items()}
    # whole runs: each run's median log-ratio to the per-entry medians, over the entries it shares
    dropped_runs: List[Dict[str, object]] = []
    if len(tables) >= 3:
        shared = {k: v for k, v in values.items() if len(v) >= 3}
        if shared:
            med = {k: float(np.median(list(v.values()))) for k, v in shared.items()}
            dev = np.array([np.median([np.log(v[i] / med[k]) for k, v in shared.items() if i in v] or [0.0])
                            for i in range(len(tables))])
            for i in np.flatnonzero(_robust_outliers(dev, mad_threshold)):
                dropped_runs.append({"table": paths[i], "typical_deviation": float(np.expm1(dev[i]))})
    bad = {paths.index(d["table"]) for d in dropped_runs}
    merged: Dict[LayerKey, float] = {}
    dropped_entries: List[Dict[str, object]] = []
    counts: Dict[LayerKey, int] = {}
    for k, v in values.items():
        runs = {i: x for i, x in v.items() if i not in bad} or v
        arr = np.array(list(runs.values()))
        if len(arr) >= 3:
            mask = _robust_outliers(np.log(arr), mad_threshold)
            for (i, x), out in zip(runs.items(), mask):
                if out:
                    dropped_entries.append({"key": k.to_dict(), "table": paths[i], f"{stat}_ms": x})
            arr = arr[~mask]
        merged[k] = float(np.median(arr))
        counts[k] = len(arr)
    # each run's speed: its typical ratio to the merged entries (1 for a shard)
    speed = np.array([np.exp(np.median([np.log(v[i] / merged[k]) for k, v in values.items() if i in v] or [0.0]))
                      for i in range(len(tables))])
    smoothing = None
    if smooth:
        merged = _smooth(merged, smooth, sigma)
        smoothing = {"method": smooth, "sigma_grid_steps": sigma if smooth == "gaussian" else None}
    keep = [i for i in range(len(tables)) if i not in bad]
    ovh = float(np.median([tables[i].overhead_ms for i in keep]))
    base = tables[keep[0]]
    cal = {k: v for k, v in base.calibration.items() if k not in ("fit", "prediction", "recalibrated")}
    cal["overhead_ms"] = ovh
    entries = []
    for k in values:
        kept = [sources[k][i] for i in keep if i in sources[k]] or list(sources[k].values())
        lat: Dict[str, object] = {stat: merged[k], "runs": counts[k]}
        measured = any(e.source == "measured" for e in kept)
        if not measured and "interpolation" in kept[0].latency_ms:
            lat["interpolation"] = kept[0].latency_ms["interpolation"]
        entries.append(Entry(k, lat, 0, "measured" if measured else "interpolated"))
    n_measured = sum(e.source == "measured" for e in entries)
    table = LatencyTable(
        device=base.device, backend=base.backend, precision=base.precision, threads=base.threads,
        batch_size=base.batch_size, input_shape=list(base.input_shape),
        created_utc=utc_now(), tool_version=__version__,
        calibration=cal, entries=entries, models=sorted({m for t in tables for m in t.models}),
        build={"granularity": base.build.get("granularity"), "measured": n_measured,
               "interpolated": len(entries) - n_measured,
               "merge": {"tables": len(tables), "mad_threshold": mad_threshold, "runs_dropped": dropped_runs,
                         "entries_dropped": len(dropped_entries), "entries_dropped_detail": dropped_entries[:200]}},
        derived_from=[{"file": p, "sha256": sha256_file(p), "created_utc": t.created_utc} for p, t in zip(paths, tables)],
        smoothing=smoothing, statistic=stat,
    )
    table.build["merge"]["calibration"] = _refit_calibration(table, tables, paths, keep, speed, num_classes)
    return table


def _refit_calibration(table, tables, paths: Sequence[str], keep: List[int], speed: np.ndarray,
                       num_classes: int) -> Optional[Dict[str, object]]:
    """Fit ``table``'s (the merged one) calibration again on the pooled calibration networks of the runs
    ``keep`` (see the module notes); ``speed[i]``: run i's typical entry ratio to the merged entries.

    Returns:
        None when no run kept has a fit; else ``{"refit": True, "model", "networks", "tables"}`` or
        ``{"refit": False, "reason"}`` (the merged table then has no fit, and says ``overhead-once``).
    """
    fits = [(i, tables[i].calibration["fit"]) for i in keep if tables[i].calibration.get("fit")]
    if not fits:
        return None
    model = fits[0][1].get("model")
    used = [i for i, f in fits if f.get("model") == model]
    pooled: Dict[str, Tuple[Dict[str, int], List[float]]] = {}
    for i in used:
        for n in tables[i].calibration["fit"].get("networks", []):
            pooled.setdefault(arch_id(n["widths"]), (n["widths"], []))[1].append(float(n["measured_ms"]) / speed[i])
    nets = [{"widths": w, "measured_ms": float(np.median(v))} for w, v in pooled.values()]
    try:
        space = TablePredictor.for_model(table, models.create_model(model, num_classes), corrected=False).space
        fit = calibrate(table, space, nets)
    except (UserError, TableError, ValueError) as e:
        table.calibration["method"] = "overhead-once"
        return {"refit": False, "reason": f"calibration of {model} not refitted: {e}"}
    table.calibration.update({"method": "overhead-once+fitted", "fit": fit, "prediction": fit["formula"]})
    return {"refit": True, "model": model, "networks": len(nets), "tables": [paths[i] for i in used],
            "speed_ratios": [float(speed[i]) for i in used]}


def _families(merged: Dict[LayerKey, float]) -> Dict[LayerKey, Dict[Tuple[int, int], LayerKey]]:
    fam: Dict[LayerKey, Dict[Tuple[int, int], LayerKey]] = {}
    for k in merged:
        fam.setdefault(family(k), {})[(k.in_channels, k.out_channels)] = k
    return fam


def _smooth(merged: Dict[LayerKey, float], method: str, sigma: float) -> Dict[LayerKey, float]:
    """Smooth each family on its (in, out) grid; cells missing from the grid are filled from the nearest for
    the filter and not written back."""
    out = dict(merged)
    for cells in _families(merged).values():
        ins = sorted({i for i, _ in cells})
        outs = sorted({o for _, o in cells})
        if len(ins) * len(outs) < 2:
            continue
        grid = np.full((len(ins), len(outs)), np.nan)
        for (i, o), k in cells.items():
            grid[ins.index(i), outs.index(o)] = merged[k]
        filled = _fill_nearest(grid)
        if method == "gaussian":
            from scipy.ndimage import gaussian_filter

            sm = gaussian_filter(filled, sigma=sigma, mode="nearest")
        else:
            sm = _isotonic_2d(filled)
        for (i, o), k in cells.items():
            out[k] = float(sm[ins.index(i), outs.index(o)])
    return out


def _fill_nearest(grid: np.ndarray) -> np.ndarray:
    g = grid.copy()
    if np.isnan(g).any():
        from scipy.ndimage import distance_transform_edt

        idx = distance_transform_edt(np.isnan(g), return_distances=False, return_indices=True)
        g = g[tuple(idx)]
    return g


def _isotonic_2d(grid: np.ndarray) -> np.ndarray:
    """Non-decreasing along output channels (rows), then along input channels (columns)."""
    from sklearn.isotonic import IsotonicRegression

    g = grid.copy()
    for axis in (1, 0):
        g = np.apply_along_axis(lambda v: IsotonicRegression().fit_transform(np.arange(len(v)), v)
                                if len(v) > 1 else v, axis, g)
    return g
