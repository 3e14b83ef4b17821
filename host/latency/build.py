"""Build a latency lookup table by measuring micro-models on a device (``host table build``).

Steps: enumerate every layer configuration reachable by pruning the model on the channel grid (each
distinct configuration once), keep this shard's share (``--shard i/N``), build the ONNX micro-models in
``jobs`` worker processes, ship them to the device, measure them there one after another with
``device bench`` (never in parallel: measurements would share the CPU), and write the table JSON.
The fixed per-inference overhead is measured on a calibration graph (:func:`micro.overhead_model`) and
counted once per prediction (see :mod:`edgeshrink.host.latency.predict`). With ``calibrate`` N, whole
calibration networks are measured after the micro-models and a correction is fitted on them
(:mod:`edgeshrink.host.latency.fit`); with ``coarse`` a coarse grid is measured and the rest interpolated
(:mod:`edgeshrink.host.latency.interpolate`).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import random
import shutil
import tempfile
import time
from statistics import fmean, median
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from edgeshrink import models
from edgeshrink.device.provenance import utc_now
from edgeshrink.host import __version__
from edgeshrink.host.bench import check_bench_reply
from edgeshrink.host.checks import mapping, number, sequence, text
from edgeshrink.host.errors import DeviceError, UserError
from edgeshrink.host.io import prepare_dir, prepare_file, write_json
from edgeshrink.host.latency.fit import calibrate
from edgeshrink.host.latency.fusion import detect_fusion
from edgeshrink.host.latency.predict import space_for_table
from edgeshrink.host.latency.interpolate import build_interpolated
from edgeshrink.host.latency.key import LayerKey
from edgeshrink.host.latency.micro import key_id, overhead_model, save_atomic, write_micro_models
from edgeshrink.host.latency.networks import NETWORK_ITERS, NETWORK_LOADS, NETWORK_ROUNDS, calibration_archs, \
    measure_networks
from edgeshrink.host.latency.space import build_space, enumerate_keys
from edgeshrink.host.latency.table import STATISTICS, Entry, LatencyTable, require_device
from edgeshrink.host.remote import open_device

OVERHEAD_FILE = "overhead.onnx"
NETWORKS_FILE = "calibration_networks.json"
Progress = Optional[Callable[[str, int, int], None]]


def check_calibrate(n: int) -> None:
    """Raise UserError unless ``n`` calibration networks is 0 (none) or enough for a fit (3 or more)."""
    if n < 0 or 0 < n < 3:
        raise UserError(f"--calibrate must be 0 (none) or >= 3 networks, got {n}")


@dataclass(frozen=True)
class BuildConfig:
    """Everything a table build needs, checked when it is made (a bad value raises UserError naming the option).

    Raises:
        UserError: a value out of range (the message names the command-line option).
    """

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
    workdir: Optional[str] = None  # where micro-models and measured results live; a temporary folder by default
    farm: Tuple[str, ...] = ()  # more device specs of identical boards sharing the measurements
    batch: int = 64  # micro-models per device command: results are pulled back after each batch
    resume: bool = False  # continue in ``workdir``: what was measured there is not measured again
    trust_new_host: bool = False  # ssh:// devices: accept and record an unknown host key
    calibrate: int = 0  # whole calibration networks measured with the micro-models to fit a correction (0: none)
    calib_seed: int = 1  # seed of the calibration architectures
    interleave: int = 0  # >0: each device command loads its batch once and times it in this many round-robin bursts
    statistic: str = "min"  # what entries and calibration networks hold: "min" or "median" (table.STATISTICS)
    coarse: Optional[int] = None  # measure a coarse grid of this step and interpolate the rest (None: every entry)
    refine_tol: float = 0.03  # with coarse: refine a cell whose check is off by more than this
    check_fraction: float = 0.25  # with coarse: share of coarse cells checked by a measurement
    refine_rounds: int = 2  # with coarse: refinement rounds at most
    align: int = 0  # with coarse: the runtime's channel block (0: unknown; adds the "block" interpolant)

    def __post_init__(self):
        if len(self.input_shape) != 4 or min(self.input_shape) < 1:
            raise UserError(f"input shape must be N x C x H x W, got {self.input_shape}")
        if min(self.granularity, self.jobs, self.iters, self.rounds, self.batch) < 1 or self.threads < 0 \
                or self.warmup < 0:
            raise UserError("--granularity, --jobs, --iters, --rounds and --batch must be >= 1; --threads and "
                            "--warmup >= 0")
        if self.num_classes < 1:
            raise UserError(f"--num-classes must be >= 1, got {self.num_classes}")
        check_calibrate(self.calibrate)
        if self.interleave < 0:
            raise UserError(f"--interleave must be >= 0, got {self.interleave}")
        if self.statistic not in STATISTICS:
            raise UserError(f"--statistic must be one of {', '.join(STATISTICS)}, got {self.statistic!r}")
        i, n = self.shard
        if not 1 <= i <= n:
            raise UserError(f"--shard must be i/N with 1 <= i <= N, got {i}/{n}")
        if self.coarse is not None:
            if self.refine_tol <= 0 or not 0 < self.check_fraction <= 1 or self.refine_rounds < 0 or self.align < 0:
                raise UserError("--refine-tol must be > 0, --check-fraction in (0, 1], --refine-rounds >= 0 and "
                                "--align >= 0")
            if self.coarse < self.granularity or self.coarse % self.granularity:
                raise UserError(f"--coarse must be a multiple of --granularity ({self.granularity}), got "
                                f"{self.coarse}")
            if self.shard != (1, 1):
                raise UserError("an interpolated build (--coarse) cannot be sharded; shard an exhaustive build "
                                "instead")
        if self.calibrate and self.shard != (1, 1):
            raise UserError("calibration networks are measured by unsharded builds only (drop --calibrate or "
                            "--shard)")

    @property
    def devices(self) -> Tuple[str, ...]:
        return (self.device,) + tuple(d for d in self.farm if d != self.device)


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
    median, p90 and std, the mean of the means, and the minimum of the minima (when the rounds report one);
    ``rounds_median`` keeps every round's median."""
    out = {"median": median(s["median"] for s in stats), "mean": fmean(s["mean"] for s in stats),
           "p90": median(s["p90"] for s in stats), "std": median(s["std"] for s in stats),
           "rounds_median": [s["median"] for s in stats]}
    if all(isinstance(s.get("min"), (int, float)) for s in stats):
        out["min"] = min(s["min"] for s in stats)
    return out


def build_micro_models(keys: Sequence[LayerKey], folder: str, jobs: int = 1) -> List[str]:
    """Write one ONNX micro-model per key into ``folder`` using ``jobs`` processes; returns file names
    in key order."""
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
                progress: Optional[Callable[[str, int, int], None]] = None,
                fusion: Optional[Dict[str, object]] = None) -> LatencyTable:
    """Measure ``keys`` (plus the overhead calibration graph) on ``cfg.device`` (and ``cfg.farm``) and return
    the table.

    Measurement goes in batches of ``cfg.batch`` micro-models per device command. After each batch its results
    are appended to ``<workdir>/results_r<round>.jsonl`` on this machine, so an interrupted build (Ctrl-C, a
    crash, a lost device) continues with ``cfg.resume`` and measures nothing twice. Micro-models are shipped to a
    device with the first batch that needs them. With a farm, each device takes the next batch when it is free.
    The work folder's measurement settings are recorded, or on a resume compared (:func:`check_settings`), before
    any work: the one place every build (exhaustive, interpolated, ``host demo``) passes through.

    Args:
        cfg: build settings.
        keys: the distinct layer configurations to measure (see ``space.enumerate_keys``).
        progress: ``progress(stage, done, total)`` with stage ``"build"`` or ``"measure"``.
        fusion: the fusion record the keys were enumerated with (:func:`edgeshrink.host.latency.fusion.detect_fusion`),
            kept as ``calibration.fusion``; None: the legacy rules (ReLU and add + ReLU fused into convs).

    Raises:
        DeviceError: a device failed (the message says how to resume).
        UserError: a shard of no keys, ``resume`` without a work folder, or a resume with other settings.
    """
    t_start = time.monotonic()
    i, n = cfg.shard
    keys = sorted(keys, key=key_id)[i - 1 :: n]
    if not keys:
        raise UserError(f"shard {i}/{n} has no layer configurations to measure")
    if cfg.resume and not cfg.workdir:
        raise UserError("--resume needs the work folder of the interrupted build (--workdir)")
    tmp = None
    if cfg.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="edgeshrink-table-")
    root = Path(cfg.workdir or tmp.name)
    if cfg.workdir:
        check_settings(cfg, root)
    folder = root / "micro"
    try:
        if progress:
            progress("build", 0, len(keys))
        names = [key_id(k) + ".onnx" for k in keys]
        missing = [k for k, nm in zip(keys, names) if not (folder / nm).exists()]
        if missing:
            build_micro_models(missing, str(folder), cfg.jobs)
        if not (folder / OVERHEAD_FILE).exists():
            save_atomic(overhead_model(cfg.input_shape, cfg.num_classes), str(folder / OVERHEAD_FILE))
        if progress:
            progress("build", len(keys), len(keys))
        t_meas = time.monotonic()
        try:
            by_model, device_doc, measured_now, reused = _measure(cfg, root, [OVERHEAD_FILE] + names, progress)
        except DeviceError as e:
            hint = f"; results so far are kept in {root}: rerun with --resume --workdir {root}" if cfg.workdir else ""
            raise DeviceError(f"{e}{hint}") from None
        ovh = combine_rounds(by_model[OVERHEAD_FILE])
        stat = cfg.statistic
        if stat not in ovh:
            raise DeviceError(f"the device reported no {stat} latency with backend {cfg.backend} (use --statistic median)")
        entries = [Entry(key, combine_rounds(by_model[nm]), sum(int(s["n"]) for s in by_model[nm]))
                   for key, nm in zip(keys, names)]
        dev_meta = dict(device_doc)
        dev_meta["spec"] = cfg.device
        if cfg.farm:
            dev_meta["farm"] = list(cfg.devices)
        table = LatencyTable(
            device=dev_meta, backend=cfg.backend, precision="fp32", threads=cfg.threads, batch_size=cfg.input_shape[0],
            input_shape=list(cfg.input_shape),
            created_utc=utc_now(),
            tool_version=__version__,
            calibration={
                "method": "overhead-once",
                "overhead_ms": ovh[stat],
                "overhead_latency_ms": ovh,
                "overhead_model": "reshape+slice graph with the network's input and output shapes",
                "prediction": f"overhead_ms + sum over layer sites of (entry {stat} - overhead_ms)",
                "not_modelled": "layout reorders and output copies each standalone micro-model pays at its "
                                "boundaries (ONNX Runtime keeps tensors in its NCHWc layout inside a network), and "
                                "the cache misses a layer meets inside a network; a fit on whole calibration "
                                "networks (calibration.fit, --calibrate N) corrects both on average",
                "fuse_residual_add": bool(fusion["rules"]["conv_add"]) if fusion else True,
                **({"fusion": fusion} if fusion else {}),
                "fused": "conv2d entries include the BN and the activations the runtime fuses into them (ONNX Runtime "
                         "folds BN; which activations it fuses is in calibration.fusion). "
                         "A residual add is fused into the conv that produces its first operand, as ONNX Runtime "
                         "runs it (the epilogue of an NCHWc Conv with a Sum input); such entries are measured as "
                         "conv+BN because that fusion does not happen in a standalone graph",
            },
            entries=entries, statistic=stat,
            models=[cfg.model],
            build={"granularity": cfg.granularity, "shard": f"{i}/{n}", "measured": len(entries),
                   "interpolated": 0, "warmup": cfg.warmup, "iters": cfg.iters, "rounds": cfg.rounds, "interleave": cfg.interleave,
                   "jobs": cfg.jobs,
                   "batch": cfg.batch, "devices": list(cfg.devices), "measurements": measured_now,
                   "reused_measurements": reused,
                   "resumed": cfg.resume,
                   "calibration_networks": 0,
                   "measure_wall_s": round(time.monotonic() - t_meas, 2),
                   "wall_s": round(time.monotonic() - t_start, 2)},
        )
        if cfg.calibrate:
            try:
                calibrate_table(cfg, root, table, progress)
            except DeviceError as e:
                hint = f"; results so far are kept in {root}: rerun with --resume --workdir {root}" if cfg.workdir else ""
                raise DeviceError(f"{e}{hint}") from None
            table.build["wall_s"] = round(time.monotonic() - t_start, 2)  # the calibration included
        return table
    finally:
        if tmp is not None:
            tmp.cleanup()


SETTINGS_FILE = "settings.json"
# what a measurement depends on: a resumed build with other values would mix measurements of two kinds
MEASUREMENT_SETTINGS = ("model", "input_shape", "num_classes", "backend", "threads", "granularity", "shard", "warmup",
                        "iters", "rounds", "batch", "interleave", "statistic", "calib_seed", "coarse", "refine_tol",
                        "check_fraction", "refine_rounds", "align")


def _settings(cfg: BuildConfig) -> Dict[str, object]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in
            ((k, getattr(cfg, k)) for k in MEASUREMENT_SETTINGS)}


def check_settings(cfg: BuildConfig, root: Path) -> None:
    """Record the build's measurement settings in ``<workdir>/settings.json``, or, on a resume, refuse settings
    that differ from the recorded ones (naming each), so a table never holds measurements of two settings.

    Raises:
        UserError: a resumed build whose settings changed, or an unreadable settings file.
    """
    path = root / SETTINGS_FILE
    now = _settings(cfg)
    if cfg.resume and path.exists():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(before, dict):
                raise ValueError("not an object")
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: unreadable build settings ({e}); delete the work folder to start again") from None
        changed = [f"{k} {before.get(k)!r} -> {now[k]!r}" for k in now if before.get(k, now[k]) != now[k]]
        if changed:
            raise UserError(f"--resume with other settings than the interrupted build in {root}: {'; '.join(changed)}; "
                            "resume with the same settings, or delete the work folder")
        return
    write_json(path, now)


def _read_results(path: Path, listing: Sequence[str]) -> Dict[str, Dict[str, object]]:
    """The records of ``results_r<round>.jsonl`` by model, each checked; a last line cut by a crash is dropped
    (its batch is measured again).

    Raises:
        UserError: a line that is not a measurement record of this build (naming the file and line).
    """
    out: Dict[str, Dict[str, object]] = {}
    if not path.exists():
        return out
    lines = path.read_text(encoding="utf-8").splitlines()
    names = set(listing)
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            if n == len(lines):
                continue  # a line cut by a crash
            raise UserError(f"{path} line {n} is not JSON; delete the work folder to start again") from None
        try:
            mapping(rec, f"{path} line {n}")
            model = text(rec.get("model"), f"{path} line {n} model")
            lat = mapping(rec.get("latency_ms"), f"{path} line {n} latency_ms")
            number(lat.get("median"), f"{path} line {n} latency_ms median", positive=True)
            for k in ("mean", "p90", "std", "min"):
                number(lat.get(k), f"{path} line {n} latency_ms {k}", non_negative=True, allow_none=True)
        except UserError as e:
            raise UserError(f"{e}; not a measurement record: delete the work folder to start again") from None
        if model in names:
            out[model] = rec
    return out


def _batches(order: List[str], size: int) -> List[List[str]]:
    return [order[b: b + size] for b in range(0, len(order), size)]


def _measure(cfg: BuildConfig, root: Path, listing: List[str],
             progress: Optional[Callable[[str, int, int], None]]) -> Tuple[Dict[str, List[Dict[str, float]]], Dict, int, int]:
    """Measure every file of ``listing`` ``cfg.rounds`` times in batches over the devices; resumable.

    Batches keep their identity across resumes: each round's order and its cut into batches follow from the
    listing and the settings alone, and each batch has its own results file on the device (``--jsonl``), so a
    batch cut off by an interruption continues where it stopped and what it had measured is reused, not measured
    again.

    Returns ``({model: [stats per round]}, device metadata, measurements taken now, measurements reused)``.
    """
    import queue
    import threading

    devices = cfg.devices
    if len(set(devices)) != len(devices) or (len(devices) > 1 and "local" in devices):
        raise UserError("a device farm needs distinct ssh:// boards (local measurements would share this CPU)")
    rng = random.Random(0)
    orders = []
    for _ in range(cfg.rounds):
        # A new random order each round (the same on resume), so slow drift of the device spreads over all
        # entries instead of biasing the ones measured together.
        order = listing[:]
        rng.shuffle(order)
        orders.append(order)
    # one listing's batches (an interpolated build measures several listings in one work folder)
    lid = hashlib.sha256("\n".join(sorted(listing)).encode()).hexdigest()[:8]
    results = {r: root / f"results_r{r}.jsonl" for r in range(cfg.rounds)}
    if not cfg.resume:
        for p in results.values():
            if p.exists():
                p.unlink()
    done = {r: _read_results(results[r], listing) for r in range(cfg.rounds)}
    total = cfg.rounds * len(listing)
    count = [sum(len(d) for d in done.values())]
    reused = [count[0]]
    work: "queue.Queue[Tuple[int, int, List[str]]]" = queue.Queue()
    for r, order in enumerate(orders):
        for b, batch in enumerate(_batches(order, cfg.batch)):
            if any(m not in done[r] for m in batch):
                work.put((r, b, batch))
    measured_now = [0]
    lock = threading.Lock()
    errors: List[BaseException] = []
    stop = threading.Event()
    meta: Dict[str, object] = {}
    # the board-side session folder of this build: stable across resumes of the same work folder
    session = "table-" + hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]
    if progress:
        progress("measure", count[0], total)

    def worker(spec: str) -> None:
        shipped = set()
        workdir = str(root / "device_local") if spec == "local" else session
        try:
            with open_device(spec, workdir=workdir, trust_new_host=cfg.trust_new_host) as dev:
                while not stop.is_set():
                    try:
                        r, b, batch = work.get_nowait()
                    except queue.Empty:
                        return
                    need = [m for m in batch if m not in shipped]
                    for m in need:
                        dev.put(str(root / "micro" / m), f"micro/{m}")
                    shipped.update(need)
                    name = f"r{r}_{lid}_b{b}"
                    lst = root / f"batch_{name}.txt"
                    lst.write_text("".join(f"micro/{m}\n" for m in batch))
                    dev.put(str(lst), lst.name)

                    def on_line(line: str) -> None:
                        if progress and line.startswith("[") and "/" in line and "]" in line:
                            i, k = (int(v) for v in line[1:line.index("]")].split("/"))
                            with lock:
                                progress("measure", count[0] + (i * len(batch) // k if cfg.interleave else i), total)

                    inter = ["--interleave", str(cfg.interleave)] if cfg.interleave else []
                    res = dev.run_device(["bench", "--list", lst.name, "--backend", cfg.backend, "--threads",
                                          str(cfg.threads), "--warmup", str(cfg.warmup), "--iters", str(cfg.iters),
                                          *inter, "--jsonl", f"results_{name}.jsonl", "--json"],
                                         on_stderr_line=on_line)
                    doc = check_bench_reply(res.stdout, spec, batch)
                    with lock:
                        if "device" not in meta:
                            meta["device"] = doc["device"]
                            write_json(root / "device_info.json", doc["device"])
                        fresh = [rec for rec in doc["results"] if rec["model"] not in done[r]]
                        with open(results[r], "a", encoding="utf-8") as f:
                            for rec in fresh:
                                line = {"model": rec["model"], "latency_ms": rec["latency_ms"], "device": spec,
                                        "batch": name}
                                f.write(json.dumps(line) + "\n")
                                done[r][rec["model"]] = line
                            f.flush()
                            os.fsync(f.fileno())
                        count[0] += len(fresh)
                        n_reused = sum(1 for rec in fresh if rec.get("reused"))
                        reused[0] += n_reused
                        measured_now[0] += len(fresh) - n_reused
                        if progress:
                            progress("measure", count[0], total)
        except BaseException as e:  # noqa: BLE001 - reported by the caller after the others stop
            stop.set()
            errors.append(e)

    if work.qsize():
        if len(devices) == 1:
            worker(devices[0])
        else:
            threads = [threading.Thread(target=worker, args=(d,), daemon=True) for d in devices]
            for t in threads:
                t.start()
            try:
                for t in threads:
                    while t.is_alive():
                        t.join(0.2)
            except KeyboardInterrupt:
                stop.set()
                raise
        if errors:
            raise errors[0]
    if "device" not in meta:  # everything was measured before this resume: take the metadata from the results
        meta["device"] = _device_info(root)
    by_model: Dict[str, List[Dict[str, float]]] = {}
    for r in range(cfg.rounds):
        for m in listing:
            by_model.setdefault(m, []).append(done[r][m]["latency_ms"])
    return by_model, meta["device"], measured_now[0], reused[0]


def calibrate_table(cfg: BuildConfig, root: Path, table: LatencyTable, progress: Progress = None) -> None:
    """Export ``cfg.calibrate`` calibration networks of ``cfg.model`` on the table's grid, measure them side by
    side on the device (:mod:`edgeshrink.host.latency.networks`), and store the fitted correction in
    ``table.calibration["fit"]``. Resumable: exports and measurements already in ``root`` are reused."""
    space = space_for_table(table, models.create_model(cfg.model, cfg.num_classes))
    archs = calibration_archs(space, cfg.granularity, cfg.calibrate, cfg.calib_seed)
    kept = (root / NETWORKS_FILE).exists()
    t0 = time.monotonic()
    nets = _measure_networks(cfg, root, archs, progress)
    table.build["calibration_wall_s"] = round(time.monotonic() - t0, 2)  # what the calibration cost (export + timing)
    table.build["measurements"] = int(table.build.get("measurements", 0)) + (0 if kept else len(archs))
    table.build["reused_measurements"] = int(table.build.get("reused_measurements", 0)) + (len(archs) if kept else 0)
    table.build["calibration_networks"] = len(nets)
    table.calibration["method"] = "overhead-once+fitted"
    table.calibration["fit"] = calibrate(table, space, nets)
    table.calibration["prediction"] = table.calibration["fit"]["formula"]


def _measure_networks(cfg: BuildConfig, root: Path, archs: List[Dict[str, int]],
                      progress: Progress) -> List[Dict[str, object]]:
    """Measure the calibration networks side by side in one device command, as every whole network is measured,
    each network's latency by ``cfg.statistic``; kept in ``<workdir>/calibration_networks.json`` (median and
    minimum both) for a resume."""
    done = root / NETWORKS_FILE
    if done.exists():
        try:
            kept = sequence(mapping(json.loads(done.read_text()), str(done))["networks"], f"{done} networks")
            if [n["widths"] for n in kept] != [dict(w) for w in archs]:
                raise UserError(f"{done} holds other calibration networks than --calibrate {len(archs)} draws now; "
                                "resume with the same --calibrate, or delete the file to measure them again")
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{done}: unreadable calibration networks ({e}); delete it to measure them again") from None
        # files written before the statistic was chosen hold the median as measured_ms
        vals = [n.get(f"{cfg.statistic}_ms", n.get("measured_ms") if cfg.statistic == "median" else None) for n in kept]
        if not all(isinstance(v, (int, float)) for v in vals):
            raise UserError(f"{done} holds no {cfg.statistic} latencies of the calibration networks; delete it to "
                            "measure them again")
        return [{"widths": n["widths"], "measured_ms": float(v)} for n, v in zip(kept, vals)]
    if progress:
        progress("networks", 0, len(archs))
    _, got = measure_networks(cfg.model, cfg.num_classes, archs, input_shape=cfg.input_shape, device=cfg.device,
                              backend=cfg.backend, threads=cfg.threads, statistic=cfg.statistic,
                              rounds=NETWORK_ROUNDS, iters=NETWORK_ITERS, loads=NETWORK_LOADS, warmup=cfg.warmup,
                              jobs=cfg.jobs, trust_new_host=cfg.trust_new_host, folder=str(root / "micro"))
    nets = [{"widths": m["widths"], "median_ms": m["median_ms"], "min_ms": m["min_ms"]} for m in got]
    write_json(done, {"networks": nets, "rounds": NETWORK_ROUNDS, "iters": NETWORK_ITERS, "loads": NETWORK_LOADS})
    if progress:
        progress("networks", len(archs), len(archs))
    return [{"widths": m["widths"], "measured_ms": m["measured_ms"]} for m in got]


def _device_info(root: Path) -> Dict[str, object]:
    """The device metadata recorded with the first batch (a resume that had nothing left to measure).

    Raises:
        UserError: the file is missing or not a JSON object.
    """
    path = root / "device_info.json"
    try:
        return mapping(json.loads(path.read_text(encoding="utf-8")), str(path))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable device metadata ({e}); delete the work folder to start again") from None


def build_table_interpolated(cfg: BuildConfig, keys: Sequence[LayerKey], exhaustive: Optional[int] = None,
                             progress: Progress = None, log: Optional[Callable[[str], None]] = None,
                             fusion: Optional[Dict[str, object]] = None) -> LatencyTable:
    """Build the table of ``keys`` from the coarse grid ``cfg.coarse`` with checks and refinement
    (:mod:`edgeshrink.host.latency.interpolate`; ``cfg.refine_tol``, ``check_fraction``, ``refine_rounds`` and
    ``align`` as :func:`edgeshrink.host.latency.interpolate.build_interpolated` takes them).

    Every measuring step is a :func:`build_table` call in one work folder, so an interrupted build resumes
    (``cfg.resume``) without measuring anything twice. Entries that were not measured say
    ``"source": "interpolated"`` and their ``latency_ms.interpolation`` method.

    Args:
        exhaustive: size of the exhaustive per-channel grid, for the report.

    Raises:
        UserError: ``cfg.coarse`` not set.
    """
    if cfg.coarse is None:
        raise UserError("an interpolated build needs --coarse STEP")
    t_start = time.monotonic()
    tmp = None
    if cfg.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="edgeshrink-table-")
    root = Path(cfg.workdir or tmp.name)
    state: Dict[str, object] = {"calls": 0, "measurements": 0, "reused": 0, "last": None}
    entries: Dict[LayerKey, Entry] = {}

    def measure(ks: List[LayerKey]) -> Dict[LayerKey, float]:
        if not ks:
            return {}
        sub = replace(cfg, workdir=str(root), resume=cfg.resume or state["calls"] > 0, calibrate=0)
        t = build_table(sub, ks, progress, fusion=fusion)
        state["calls"] = int(state["calls"]) + 1
        state["measurements"] = int(state["measurements"]) + int(t.build["measurements"])
        state["reused"] = int(state["reused"]) + int(t.build["reused_measurements"])
        state["last"] = t
        for e in t.entries:
            entries[e.key] = e
        return {e.key: e.ms(cfg.statistic) for e in t.entries}

    try:
        values, report = build_interpolated(list(keys), measure, cfg.coarse, cfg.refine_tol, cfg.check_fraction,
                                            cfg.refine_rounds, log=log, align=cfg.align)
        last: LatencyTable = state["last"]  # type: ignore[assignment]
        out_entries = []
        for k in keys:
            v, source = values[k]
            if source == "measured":
                out_entries.append(entries[k])
            else:
                out_entries.append(Entry(k, {cfg.statistic: v, "interpolation": source.split("-", 1)[1]}, 0,
                                         "interpolated"))
        build = dict(last.build)
        build.update({"granularity": cfg.granularity, "measured": report["measured"],
                      "interpolated": report["interpolated"], "measurements": state["measurements"],
                      "reused_measurements": state["reused"],
                      "resumed": cfg.resume, "interpolation": report, "target_grid_entries": len(keys),
                      "exhaustive_per_channel_entries": exhaustive,
                      "reduction_vs_exhaustive_per_channel": (exhaustive / report["measured"]) if exhaustive else None,
                      "reduction_vs_target_grid": len(keys) / report["measured"]})
        table = LatencyTable(device=last.device, backend=last.backend, precision=last.precision, threads=last.threads,
                             batch_size=last.batch_size, input_shape=list(last.input_shape),
                             created_utc=last.created_utc, tool_version=last.tool_version,
                             calibration=dict(last.calibration), entries=out_entries, models=[cfg.model], build=build,
                             statistic=last.statistic)
        if cfg.calibrate:
            calibrate_table(cfg, root, table, progress)
        table.build["wall_s"] = round(time.monotonic() - t_start, 2)
        return table
    finally:
        if tmp is not None:
            tmp.cleanup()


def build_and_save(cfg: BuildConfig, out: str, log: Callable[[str], None] = lambda _m: None,
                   progress: Progress = None) -> LatencyTable:
    """``host table build``: enumerate the configurations of ``cfg.model`` on the grid, build the table (every
    entry, or a coarse grid and interpolation), write it to ``out`` atomically and return it.

    The work folder (``cfg.workdir``, default ``OUT.build/``) keeps what was measured so an interrupted build
    continues with ``cfg.resume``; the default one is removed once the table is written.

    Raises:
        UserError: an interrupted build in the work folder without ``resume``, ``resume`` without one, a bad
            model or shard. DeviceError: the device failed (the message says how to resume).
    """
    prepare_file(out, "table -o")  # before measuring, not after
    own_workdir = cfg.workdir is None
    workdir = cfg.workdir or out + ".build"
    if os.path.exists(workdir) and any(Path(workdir).glob("results_r*.jsonl")) and not cfg.resume:
        raise UserError(f"{workdir} holds an interrupted build: pass --resume to continue it, or delete the folder")
    if cfg.resume and not os.path.isdir(workdir):
        raise UserError(f"--resume: no interrupted build in {workdir}")
    prepare_dir(workdir, "work folder")
    cfg = replace(cfg, workdir=workdir)
    if cfg.resume:  # refused before the log line below: a refusal is one line (build_table checks again, cheaply)
        check_settings(cfg, Path(workdir))
    model = models.create_model(cfg.model, cfg.num_classes)
    fusion = None
    if cfg.backend == "ort":  # read what the runtime fuses from the runtime (other backends: the legacy rules)
        # on the first device: a farm is identical boards (--farm), so they fuse alike
        rules, fusion = detect_fusion(model, cfg.input_shape, cfg.threads, device=cfg.devices[0],
                                      trust_new_host=cfg.trust_new_host)
    space = build_space(model, cfg.input_shape, fusion=rules if fusion else None)
    widest = max(g.width for g in space.groups)
    if cfg.granularity >= widest:
        raise UserError(f"--granularity {cfg.granularity} leaves every channel group of {cfg.model} at its full width "
                        f"(the widest has {widest} channels): nothing could be pruned; use a smaller grid")
    keys = enumerate_keys(space, cfg.granularity)
    i, n = cfg.shard
    log(f"latency table for {cfg.model} at {'x'.join(map(str, cfg.input_shape))}: {len(space.groups)} channel groups, "
        f"{len(space.sites)} layer sites, {len(keys)} distinct configurations on a grid of {cfg.granularity}"
        + (f", shard {i}/{n}" if (i, n) != (1, 1) else "") + f"; device {', '.join(cfg.devices)}, {cfg.backend}, "
        f"{cfg.threads} thread(s)" + (" (resuming)" if cfg.resume else ""))
    if cfg.coarse is None:
        table = build_table(cfg, keys, progress=progress, fusion=fusion)
    else:
        table = build_table_interpolated(cfg, keys, exhaustive=len(enumerate_keys(space, 1)), progress=progress,
                                         log=log, fusion=fusion)
    table.build["model_source"] = models.describe_model(model)
    table.save(out)
    if own_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return table


def measure_keys(table, keys, model: str, log=print) -> Dict[object, float]:
    """Each layer configuration's latency (ms, the table's statistic, less the micro-model overhead) measured side
    by side in one session on the table's device with its backend, threads and timing settings.

    Raises:
        UserError: an imported table (its board is not here). DeviceError: the device failed.
    """
    spec = require_device(table, "the table")
    cfg = BuildConfig(model=model, input_shape=tuple(table.input_shape), device=spec,
                      backend=table.backend, threads=table.threads, statistic=table.statistic)
    log(f"measuring {len(keys)} layer configurations side by side on {spec}")
    t = build_table(cfg, keys)
    return {e.key: max(e.ms(t.statistic) - t.overhead_ms, 0.0) for e in t.entries}
