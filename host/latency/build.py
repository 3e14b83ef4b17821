"""Build a latency lookup table by measuring micro-models on a device.

Steps: enumerate every layer configuration reachable by pruning the model on the channel grid (each
distinct configuration once), keep this shard's share (``--shard i/N``), build the ONNX micro-models in
``jobs`` worker processes, ship them to the device, measure them there one after another with
``device bench`` (never in parallel: measurements would share the CPU), and write the table JSON.
The fixed per-inference overhead is measured on a calibration graph (:func:`micro.overhead_model`) and
counted once per prediction (see :mod:`host.latency.table`).
"""

from __future__ import annotations

import datetime as _dt
import json
import multiprocessing as mp
import os
import random
import tempfile
import time
from statistics import fmean, median
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from host import __version__
from host.errors import UserError
from host.latency.key import LayerKey
from host.latency.table import Entry, LatencyTable

OVERHEAD_FILE = "overhead.onnx"


@dataclass(frozen=True)
class BuildConfig:
    model: str  # registry name
    input_shape: Tuple[int, int, int, int]  # (1, C, H, W)
    num_classes: int = 10
    device: str = "local"  # device spec
    backend: str = "ort"
    threads: int = 1
    granularity: int = 4  # channel grid step
    jobs: int = 1  # local processes building micro-models
    shard: Tuple[int, int] = (1, 1)  # (i, N): this host measures the i-th of N shares
    warmup: int = 30  # untimed runs per micro-model
    iters: int = 200  # timed runs per micro-model per round
    rounds: int = 3  # passes over all micro-models, each in a new random order; entries take the median
    workdir: Optional[str] = None  # where micro-models are built; a temporary folder by default


def parse_shard(text: str) -> Tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``; raises ValueError unless ``1 <= i <= N``."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        i = n = 0
    if not (1 <= i <= n):
        raise ValueError(f"--shard must be i/N with 1 <= i <= N, got {text!r}")
    return i, n


def combine_rounds(stats: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """One entry's statistics from several measurement rounds: the median across rounds of each round's
    median, p90 and std, and the mean of the means; ``rounds_median`` keeps every round's median."""
    return {"median": median(s["median"] for s in stats), "mean": fmean(s["mean"] for s in stats),
            "p90": median(s["p90"] for s in stats), "std": median(s["std"] for s in stats),
            "rounds_median": [s["median"] for s in stats]}


def build_micro_models(keys: Sequence[LayerKey], folder: str, jobs: int = 1) -> List[str]:
    """Write one ONNX micro-model per key into ``folder`` using ``jobs`` processes; returns file names
    in key order."""
    from host.latency.micro import key_id, write_micro_models

    os.makedirs(folder, exist_ok=True)
    dicts = [k.to_dict() for k in keys]
    if jobs <= 1 or len(dicts) < 2 * jobs:
        return write_micro_models((dicts, folder))
    chunks = [dicts[i::jobs] for i in range(jobs)]
    # spawn, not fork (forking after torch started its thread pools is unsafe); the worker function lives
    # in the torch-free micro module, so workers import onnx and numpy only
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(write_micro_models, [(c, folder) for c in chunks]))
    return [key_id(k) + ".onnx" for k in keys]


def build_table(cfg: BuildConfig, keys: Sequence[LayerKey],
                progress: Optional[Callable[[str, int, int], None]] = None) -> LatencyTable:
    """Measure ``keys`` (plus the overhead calibration graph) on ``cfg.device`` and return the table.

    Args:
        cfg: build settings.
        keys: the distinct layer configurations to measure (see ``space.enumerate_keys``).
        progress: ``progress(stage, done, total)`` with stage ``"build"`` or ``"measure"``.

    Raises:
        DeviceError: the device side failed.
        UserError: a shard of no keys.
    """
    from host.latency.micro import key_id, overhead_model
    from host.remote import open_device

    import onnx

    t_start = time.monotonic()
    i, n = cfg.shard
    keys = sorted(keys, key=key_id)[i - 1 :: n]
    if not keys:
        raise UserError(f"shard {i}/{n} has no layer configurations to measure")
    tmp = None
    if cfg.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="edgeshrink-table-")
    root = Path(cfg.workdir or tmp.name)
    folder = root / "micro"
    try:
        if progress:
            progress("build", 0, len(keys))
        names = build_micro_models(keys, str(folder), cfg.jobs)
        onnx.save(overhead_model(cfg.input_shape, cfg.num_classes), str(folder / OVERHEAD_FILE))
        if progress:
            progress("build", len(keys), len(keys))
        listing = [f"micro/{OVERHEAD_FILE}"] + [f"micro/{nm}" for nm in names]
        t_meas = time.monotonic()
        rng = random.Random(0)
        by_model: Dict[str, List[Dict[str, object]]] = {}
        with open_device(cfg.device) as dev:
            dev.put(str(folder), "micro")
            for r in range(cfg.rounds):
                # A new random order each round, so slow drift of the device spreads over all entries
                # instead of biasing the ones measured together.
                order = listing[:]
                rng.shuffle(order)
                (root / f"models_r{r}.txt").write_text("\n".join(order) + "\n")
                dev.put(str(root / f"models_r{r}.txt"), f"models_r{r}.txt")

                def on_line(line: str, r: int = r) -> None:
                    if progress and line.startswith("[") and "/" in line:
                        done = int(line[1:line.index("/")])
                        progress("measure", r * len(listing) + done, cfg.rounds * len(listing))

                res = dev.run_device(["bench", "--list", f"models_r{r}.txt", "--backend", cfg.backend, "--threads",
                                      str(cfg.threads), "--warmup", str(cfg.warmup), "--iters", str(cfg.iters),
                                      "--jsonl", f"results_r{r}.jsonl", "--json"], on_stderr_line=on_line)
                doc = json.loads(res.stdout)
                for rec in doc["results"]:
                    by_model.setdefault(rec["model"], []).append(rec["latency_ms"])
        ovh = combine_rounds(by_model[OVERHEAD_FILE])
        entries = [Entry(key, combine_rounds(by_model[nm]), sum(int(s["n"]) for s in by_model[nm]))
                   for key, nm in zip(keys, names)]
        dev_meta = dict(doc["device"])
        dev_meta["spec"] = cfg.device
        return LatencyTable(
            device=dev_meta, backend=cfg.backend, precision="fp32", threads=cfg.threads, batch_size=cfg.input_shape[0],
            input_shape=list(cfg.input_shape),
            created_utc=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            tool_version=__version__,
            calibration={
                "method": "overhead-once",
                "overhead_ms": ovh["median"],
                "overhead_latency_ms": ovh,
                "overhead_model": "reshape+slice graph with the network's input and output shapes",
                "prediction": "overhead_ms + sum over layer sites of (entry median - overhead_ms)",
                "not_modelled": "layout reorders and output copies each standalone micro-model pays at its "
                                "boundaries (ONNX Runtime keeps tensors in its NCHWc layout inside a network)",
                "fuse_residual_add": True,
                "fused": "conv2d entries include the BN/ReLU that follow them (ONNX Runtime folds BN, fuses ReLU). "
                         "A residual add is fused into the conv that produces its first operand, as ONNX Runtime "
                         "runs it (the epilogue of an NCHWc Conv with a Sum input); such entries are measured as "
                         "conv+BN because that fusion does not happen in a standalone graph",
            },
            entries=entries,
            models=[cfg.model],
            build={"granularity": cfg.granularity, "shard": f"{i}/{n}", "measured": len(entries),
                   "interpolated": 0, "warmup": cfg.warmup, "iters": cfg.iters, "rounds": cfg.rounds, "jobs": cfg.jobs,
                   "measure_wall_s": round(time.monotonic() - t_meas, 2),
                   "wall_s": round(time.monotonic() - t_start, 2)},
        )
    finally:
        if tmp is not None:
            tmp.cleanup()
