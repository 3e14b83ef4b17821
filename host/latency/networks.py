"""Whole networks of a model, measured on the device: the protocol every table uses for its calibration,
validation and recalibration networks, and the prune confirmation too.

All networks are exported to ONNX, loaded side by side and timed in :data:`NETWORK_ROUNDS` round-robin bursts of
:data:`NETWORK_ITERS` inferences, each round in a new random order, the rounds shared out over
:data:`NETWORK_LOADS` loadings of the whole list (``device bench --interleave ROUNDS --loads L``). Why: on a
shared CPU the device's speed wanders within a second, so many short bursts follow it better than a few long
ones, and a loaded session keeps its own offset while it is loaded, which several loadings average out
(:func:`edgeshrink.device.bench.bench_interleaved`; the measurements are in docs/latency.md).

The architectures are drawn as group widths on the table's channel grid (:func:`sample_widths`); calibration
networks are the unpruned model plus random ones (:func:`calibration_archs`).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import random
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from edgeshrink.host.errors import UserError
from edgeshrink.host.latency.table import require_device

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
    """``samples`` random group-width assignments on the grid (distinct where the space allows), seeded."""
    from edgeshrink.host.latency.space import channel_grid  # torch: not at import, so `host --help` stays fast

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


def calibration_archs(space, granularity: int, n: int, seed: int = 1) -> List[Dict[str, int]]:
    """The unpruned model plus ``n - 1`` random architectures on the table's grid (seeded)."""
    full = space.full_widths
    rest = [w for w in sample_widths(space, granularity, n, seed) if w != full]
    return ([full] + rest)[:n]


def arch_id(widths: Dict[str, int]) -> str:
    """A stable file name for an architecture (group widths)."""
    blob = json.dumps(sorted(widths.items())).encode()
    return "net_" + hashlib.sha1(blob).hexdigest()[:12]


def _export_worker(args: Tuple[str, int, List[int], List[Tuple[Dict[str, int], str]]]) -> List[str]:
    model_name, num_classes, shape, jobs = args
    from edgeshrink import models
    from edgeshrink.host.export.onnx import export_onnx
    from edgeshrink.host.latency.space import build_space

    space = build_space(models.create_model(model_name, num_classes), shape)
    done = []
    for widths, path in jobs:
        if not os.path.exists(path):
            export_onnx(models.create_model(model_name, num_classes, space.spec_from_widths(widths), input_shape=shape).eval(), shape,
                        path)
        done.append(path)
    return done


EXPORTS_PER_WORKER = 16  # fewer networks per process are exported here, in this process (see export_archs)


def export_archs(model_name: str, num_classes: int, shape: Sequence[int], archs: Sequence[Dict[str, int]],
                 folder: str, jobs: int = 1) -> List[str]:
    """Export each architecture to ``folder/<arch_id>.onnx`` (each file written atomically; existing files are
    kept, so an interrupted export resumes); returns the file names in order. ``jobs`` > 1 exports in spawned
    processes (spawn, not fork: forking after torch started its thread pools is unsafe) when there are at least
    :data:`EXPORTS_PER_WORKER` networks per process: a spawned process first spends seconds importing torch's ONNX
    exporter (about 9 s of the 35 s a 4-network calibrated resnet20 build took here), which fewer exports do not
    repay."""
    os.makedirs(folder, exist_ok=True)
    names = [arch_id(w) + ".onnx" for w in archs]
    todo = [(w, os.path.join(folder, nm)) for w, nm in zip(archs, names) if not os.path.exists(os.path.join(folder, nm))]
    if todo:
        if jobs <= 1 or len(todo) < EXPORTS_PER_WORKER * jobs:
            _export_worker((model_name, num_classes, list(shape), todo))
        else:
            chunks = [todo[i::jobs] for i in range(jobs)]
            with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
                list(pool.map(_export_worker, [(model_name, num_classes, list(shape), c) for c in chunks]))
    return names


def measure_networks(model_name: str, num_classes: int, archs: Sequence[Dict[str, int]], *, input_shape,
                     device: str, backend: str, threads: int, statistic: str, rounds: int = NETWORK_ROUNDS,
                     iters: int = NETWORK_ITERS, loads: Optional[int] = None, warmup: int = 10, jobs: int = 1,
                     trust_new_host: bool = False, on_line: Optional[Callable[[str], None]] = None,
                     interleave: bool = True, folder: Optional[str] = None) -> Tuple[Dict[str, object], List[Dict]]:
    """Export ``archs`` of ``model_name`` at ``input_shape`` and measure them side by side on ``device``.

    Args:
        statistic: what ``measured_ms`` is: ``min`` (the fastest timed run) or ``median`` (the table's).
        rounds, iters, loads: the protocol above (``loads`` None: ``min(NETWORK_LOADS, rounds)``).
        interleave: off for backends that time themselves (each network loaded afresh per round).
        folder: where the ONNX files go and stay (a resumable build); default a temporary folder.

    Returns:
        ``(device metadata of the measurement, [{"widths", "measured_ms", "median_ms", "min_ms",
        "round_medians_ms", "round_mins_ms"} per architecture])``, times in ms.

    Raises:
        UserError: ``loads`` out of range. DeviceError: the device failed or reported no such statistic.
    """
    from edgeshrink.host.bench import bench_on_device, stat_ms

    loads_n = network_loads(loads, rounds) if interleave else 1
    with tempfile.TemporaryDirectory(prefix="edgeshrink-networks-") as tmp:
        where = folder or tmp
        names = export_archs(model_name, num_classes, input_shape, archs, where, jobs)
        paths = [str(Path(where) / nm) for nm in names]
        meas = bench_on_device(paths, device=device, backend=backend, threads=threads, warmup=warmup, iters=iters,
                               rounds=rounds, trust_new_host=trust_new_host, on_line=on_line, interleave=interleave,
                               loads=loads_n)
    rows = []
    for w, p in zip(archs, paths):
        m = meas["models"][p]
        rows.append({"widths": dict(w), "measured_ms": stat_ms(m, statistic), "median_ms": m["median_ms"],
                     "min_ms": m.get("min_ms"), "round_medians_ms": m["round_medians_ms"],
                     "round_mins_ms": m.get("round_mins_ms")})
    return meas["device"], rows


def measure_for_table(table, model_name: str, num_classes: int, archs: Sequence[Dict[str, int]],
                      device: Optional[str] = None, **kw) -> Tuple[Dict[str, object], List[Dict]]:
    """:func:`measure_networks` with the table's input shape, backend, threads and statistic, on ``device``
    (default: the table's own)."""
    return measure_networks(model_name, num_classes, archs, input_shape=table.input_shape,
                            device=require_device(table, "the table", device), backend=table.backend,
                            threads=table.threads, statistic=table.statistic, **kw)
