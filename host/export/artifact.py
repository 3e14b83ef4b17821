"""Deployable artifacts: one export (``host export CKPT --format F --precision P``) or many from a manifest
(``host export --manifest plan.yaml --jobs N [--shard i/N]``), each with its ``artifact.json``.

``artifact.json``: format, precision, input shape, the files and their sha256, the source checkpoint (path,
sha256, model, channels), tool versions, the numerical check's result, ``input_hash`` (what the artifact was
built from) and wall time. A manifest build skips an artifact whose ``artifact.json`` has the same
``input_hash`` and whose files still have their recorded hashes, builds the rest in worker processes, records a
failed artifact and goes on, and writes ``manifest.json`` (or ``manifest.shard-i-of-N.json``).

Manifest (YAML)::

    out: artifacts                # output root (relative to the manifest's folder)
    input: 1x3x32x32
    dataset: digits               # representative set (int8) and test split (int8 top-1)
    calib_samples: 128
    artifacts:
      - checkpoint: runs/demo/base/model.pt
        name: base                # optional; default: the checkpoint's folder name
        formats: [onnx, tflite, trt]
        precisions: [fp32, fp16, int8]   # combinations that do not exist (ONNX fp16/int8) are left out
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from edgeshrink.device.provenance import sha256_file, utc_now
from edgeshrink.host import __version__
from edgeshrink.host.errors import UserError
from edgeshrink.host.io import prepare_dir, write_json

FORMATS = ("onnx", "tflite", "trt")
PRECISIONS = ("fp32", "fp16", "int8")
ARTIFACT_SCHEMA = "edgeshrink.artifact"
MANIFEST_SCHEMA = "edgeshrink.export_manifest"


def valid_combination(fmt: str, precision: str) -> Optional[str]:
    """None when ``fmt``/``precision`` can be built, else why not."""
    if fmt not in FORMATS:
        return f"unknown format {fmt!r}; one of {', '.join(FORMATS)}"
    if precision not in PRECISIONS:
        return f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}"
    if fmt == "onnx" and precision != "fp32":
        return ("ONNX artifacts are fp32: reduced precision is built from the ONNX by TensorRT on the device "
                "(--format trt) or by LiteRT (--format tflite)")
    return None


def tool_versions(fmt: str) -> Dict[str, str]:
    import importlib.metadata as md

    names = ["torch", "onnx", "onnxruntime", "onnxscript", "onnxslim"]
    if fmt == "tflite":
        names += ["litert-torch", "ai-edge-quantizer", "ai-edge-litert"]
    out = {"edgeshrink": __version__}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    return out


def input_hash(task: Dict[str, object], ckpt_sha: str) -> str:
    keys = ("format", "precision", "input", "dynamic_batch", "dataset", "calib_samples", "seed")
    blob = json.dumps({"ckpt": ckpt_sha, "tool": __version__, **{k: task.get(k) for k in keys}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def is_current(out_dir: Path, want_hash: str) -> bool:
    """Whether ``out_dir`` holds an artifact built from the same inputs whose files are unchanged."""
    meta = out_dir / "artifact.json"
    if not meta.exists():
        return False
    try:
        doc = json.loads(meta.read_text())
        return doc.get("input_hash") == want_hash and all(
            (out_dir / f).exists() and sha256_file(str(out_dir / f)) == h for f, h in doc["files"].items())
    except (ValueError, KeyError, OSError):
        return False


def export_artifact(task: Dict[str, object]) -> Dict[str, object]:
    """Build one artifact.

    Args:
        task: ``{"checkpoint", "format", "precision", "input" (e.g. "1x3x32x32"), "out" (folder),
            "dynamic_batch", "dataset", "data_dir", "calib_samples", "seed", "force"}``.

    Returns:
        The ``artifact.json`` document, plus ``"status": "built" | "skipped"``.

    Raises:
        UserError: a bad combination, a missing checkpoint, dataset or extra.
        ExportCheckError: the numerical check failed.
    """
    import numpy as np
    import torch

    from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint
    from edgeshrink.host.latency.table import parse_shape

    t0 = time.monotonic()
    fmt, prec = str(task["format"]), str(task["precision"])
    why = valid_combination(fmt, prec)
    if why:
        raise UserError(why)
    try:
        shape = tuple(parse_shape(str(task["input"])))
    except ValueError as e:
        raise UserError(str(e)) from None
    ckpt_path = str(task["checkpoint"])
    if not os.path.isfile(ckpt_path):
        raise UserError(f"checkpoint not found: {ckpt_path}")
    ckpt_sha = sha256_file(ckpt_path)
    out = Path(str(task["out"]))
    want = input_hash(task, ckpt_sha)
    if not task.get("force") and is_current(out, want):
        doc = json.loads((out / "artifact.json").read_text())
        doc["status"] = "skipped"
        return doc
    ckpt = load_checkpoint(ckpt_path)
    model = model_from_checkpoint(ckpt, path=ckpt_path).eval()
    torch.manual_seed(int(task.get("seed") or 0))
    data = None
    needs_data = prec == "int8" or (fmt == "tflite" and prec != "fp32")
    if needs_data:
        from edgeshrink.host.data import load_dataset

        data = load_dataset(str(task.get("dataset") or "digits"), task.get("data_dir"), seed=int(task.get("seed") or 0))

    def representative() -> np.ndarray:
        n = int(task.get("calib_samples") or 128)
        g = torch.Generator().manual_seed(int(task.get("seed") or 0))
        idx = torch.randperm(len(data.train), generator=g)[:n]
        return data.normalize(data.train.images[idx]).numpy()

    def test_split() -> Tuple[np.ndarray, np.ndarray]:
        return data.normalize(data.test.images).numpy(), data.test.labels.numpy()

    prepare_dir(out, "artifact folder")
    info: Dict[str, object] = {}
    if fmt == "onnx":
        main = "model.onnx"
        info, check = export_checked_onnx(model, shape, str(out / main), bool(task.get("dynamic_batch")))
        files = [main]
    elif fmt == "tflite":
        from edgeshrink.host.export.tflite import check_tflite, export_tflite

        if task.get("dynamic_batch"):
            raise UserError("--dynamic-batch applies to ONNX; TFLite artifacts have a fixed shape")
        main = "model.tflite"
        info = export_tflite(model, shape, str(out / main), prec, representative() if prec == "int8" else None)
        check = check_tflite(model, str(out / main), shape, prec, test_split() if data is not None else None)
        files = [main]
    else:
        from edgeshrink.host.export.tensorrt import calibration_cache

        main = "model.onnx"
        info, check = export_checked_onnx(model, shape, str(out / main), bool(task.get("dynamic_batch")))
        files = [main]
        if prec == "int8":
            rep = representative()
            info["calibration"] = calibration_cache(str(out / main), [rep[i : i + 1] for i in range(len(rep))],
                                                    str(out / "calib.cache"))
            files.append("calib.cache")
        info["device_build"] = ("engines are built on the device: python3 -m device bench model.onnx --backend "
                                f"tensorrt --precision {prec}" + (" --calib-cache calib.cache" if prec == "int8" else ""))
    doc = write_artifact_json(out, fmt, prec, shape, main, files, ckpt_path, info, check,
                              dynamic_batch=bool(task.get("dynamic_batch")), input_hash=want, t0=t0,
                              ckpt=ckpt, ckpt_sha=ckpt_sha)
    doc["status"] = "built"
    return doc


def export_checked_onnx(model, shape, path: str, dynamic_batch: bool = False) -> Tuple[Dict[str, object],
                                                                                         Dict[str, object]]:
    """The one ONNX export of a whole network that is measured or shipped: torch's exporter, onnxslim, then
    ``onnx.checker`` and ONNX Runtime against torch (:func:`edgeshrink.host.export.onnx.check_onnx`).

    Returns:
        ``(export info, check)`` as ``artifact.json`` records them.

    Raises:
        ExportCheckError: the graph is invalid or differs from torch.
    """
    from edgeshrink.host.export.onnx import check_onnx, export_onnx

    info = export_onnx(model, shape, path, dynamic_batch=dynamic_batch, slim=True)
    return info, check_onnx(model, path, shape)


def write_artifact_json(folder, fmt: str, precision: str, shape, main: str, files, source: Optional[str],
                        info: Dict[str, object], check: Dict[str, object], dynamic_batch: bool = False,
                        input_hash: Optional[str] = None, t0: Optional[float] = None, ckpt=None,
                        ckpt_sha: Optional[str] = None) -> Dict[str, object]:
    """Write ``folder/artifact.json`` for the files in ``folder`` (``main`` the one to deploy; ``files`` every file
    it needs, their sha256 taken now) and return it.

    Args:
        source: the checkpoint the artifact was built from (its path, sha256, model and channels are recorded), or
            None.
        fmt: ``onnx``, ``tflite``, ``trt`` (``host export``) or ``staged-onnx`` (a staged model's manifest and its
            step files: ``host dynamic``, ``host exits``).
    """
    from edgeshrink.host.checkpoint import load_checkpoint

    folder = Path(folder)
    src = None
    if source is not None:
        ckpt = ckpt if ckpt is not None else load_checkpoint(source)
        src = {"path": str(source), "sha256": ckpt_sha or sha256_file(str(source)), "model": ckpt["model"],
               "channels": ckpt["channels"]}
    doc = {
        "schema": ARTIFACT_SCHEMA, "schema_version": 1,
        "format": fmt, "precision": precision, "input_shape": list(shape), "dynamic_batch": bool(dynamic_batch),
        "file": main, "sha256": sha256_file(str(folder / main)),
        "files": {f: sha256_file(str(folder / f)) for f in files},
        "source_checkpoint": src,
        "tool_versions": tool_versions("onnx" if fmt == "staged-onnx" else fmt), "export": info, "check": check,
        "input_hash": input_hash,
        "created_utc": utc_now(),
        "wall_s": round(time.monotonic() - t0, 2) if t0 is not None else None,
    }
    write_json(folder / "artifact.json", doc)
    return doc


def ship_onnx(model, shape, folder, source: Optional[str], name: str = "model.onnx") -> Dict[str, object]:
    """Deploy ``model`` as ``host export --format onnx`` does: ``folder/name`` through :func:`export_checked_onnx`
    and its ``artifact.json``; what the pipeline measures and ships (``host prune``, ``host compare``,
    :func:`edgeshrink.shrink`). Returns the ``artifact.json`` document."""
    t0 = time.monotonic()
    info, check = export_checked_onnx(model, shape, str(Path(folder) / name))
    return write_artifact_json(folder, "onnx", "fp32", shape, name, [name], source, info, check, t0=t0)


def ship_staged(manifest: str, shape, source: Optional[str], check: Dict[str, object]) -> Dict[str, object]:
    """The ``artifact.json`` of a staged model (``host dynamic``'s gated network, ``host exits``' early-exit
    stages) beside its manifest: ``file`` the manifest, ``files`` it and every step file it runs. Returns it."""
    from edgeshrink.device.dynamic import load_manifest as load_staged, step_files

    folder = Path(manifest).parent
    steps = load_staged(manifest)["steps"]
    files = [Path(manifest).name] + [os.path.relpath(f, folder) for f in step_files(steps)]
    return write_artifact_json(folder, "staged-onnx", "fp32", shape, Path(manifest).name, files, source, {}, check)


def load_manifest(path: str) -> Tuple[List[Dict[str, object]], Path]:
    """Expand a manifest into artifact tasks (sorted by id) and the output root.

    Raises:
        UserError: unreadable YAML, missing keys, unknown formats or precisions (the message names the entry).
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            plan = yaml.safe_load(f)
    except OSError as e:
        raise UserError(f"cannot read manifest {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(plan, dict) or not isinstance(plan.get("artifacts"), list) or not plan["artifacts"]:
        raise UserError(f"{path}: expected a mapping with a non-empty 'artifacts' list")
    base = Path(path).resolve().parent
    root = base / str(plan.get("out", "artifacts"))
    tasks: Dict[str, Dict[str, object]] = {}
    for i, item in enumerate(plan["artifacts"]):
        if not isinstance(item, dict) or "checkpoint" not in item:
            raise UserError(f"{path}: artifacts[{i}] needs a 'checkpoint'")
        ckpt = (base / str(item["checkpoint"])).resolve()
        name = str(item.get("name") or ckpt.parent.name or ckpt.stem)
        formats = item.get("formats") or [item.get("format", "onnx")]
        precisions = item.get("precisions") or [item.get("precision", "fp32")]
        for fmt in formats:
            for prec in precisions:
                why = valid_combination(str(fmt), str(prec))
                if why and ("unknown" in why):
                    raise UserError(f"{path}: artifacts[{i}]: {why}")
                if why:
                    continue  # ONNX fp16/int8: not a thing; left out
                aid = f"{name}_{fmt}_{prec}"
                tasks[aid] = {"id": aid, "checkpoint": str(ckpt), "format": fmt, "precision": prec,
                              "input": str(item.get("input", plan.get("input", "1x3x32x32"))),
                              "dynamic_batch": bool(item.get("dynamic_batch", plan.get("dynamic_batch", False))),
                              "dataset": item.get("dataset", plan.get("dataset", "digits")),
                              "data_dir": item.get("data_dir", plan.get("data_dir")),
                              "calib_samples": int(item.get("calib_samples", plan.get("calib_samples", 128))),
                              "seed": int(plan.get("seed", 0)), "out": str(root / aid)}
    return [tasks[k] for k in sorted(tasks)], root


def _worker(task: Dict[str, object]) -> Dict[str, object]:
    t0 = time.monotonic()
    try:
        doc = export_artifact(task)
        return {"id": task["id"], "status": doc["status"], "dir": task["out"], "file": doc["file"],
                "sha256": doc["sha256"], "check": doc["check"], "wall_s": round(time.monotonic() - t0, 2)}
    except Exception as e:  # noqa: BLE001 - a failed artifact is reported; the others go on
        last = traceback.format_exception_only(type(e), e)[-1].strip()
        return {"id": task["id"], "status": "failed", "dir": task["out"], "error": last[:500],
                "wall_s": round(time.monotonic() - t0, 2)}


def build_manifest(path: str, jobs: int = 1, shard: Tuple[int, int] = (1, 1),
                   progress=None) -> Dict[str, object]:
    """Build every artifact of the manifest at ``path`` (this shard's share) in ``jobs`` processes.

    Returns:
        The manifest result (also written to ``<out>/manifest.json`` or ``manifest.shard-i-of-N.json``):
        ``{"schema", "manifest", "shard", "jobs", "artifacts": [{"id", "status", "dir", ...}], "counts", "wall_s"}``.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed


    t0 = time.monotonic()
    tasks, root = load_manifest(path)
    prepare_dir(root, "the manifest's out folder")
    i, n = shard
    mine = tasks[i - 1 :: n]
    results: List[Dict[str, object]] = []
    # what is already built from the same inputs is skipped here, without starting a worker
    sha: Dict[str, str] = {}
    todo = []
    for t in mine:
        ck = str(t["checkpoint"])
        if os.path.isfile(ck):
            sha.setdefault(ck, sha256_file(ck))
            if is_current(Path(str(t["out"])), input_hash(t, sha[ck])):
                doc = json.loads((Path(str(t["out"])) / "artifact.json").read_text())
                results.append({"id": t["id"], "status": "skipped", "dir": t["out"], "file": doc["file"],
                                "sha256": doc["sha256"], "check": doc["check"], "wall_s": 0.0})
                continue
        todo.append(t)
    done0 = len(results)
    mine = todo
    if jobs <= 1:
        for k, t in enumerate(mine):
            results.append(_worker(t))
            if progress:
                progress(done0 + k + 1, done0 + len(mine), results[-1])
    else:
        # spawn: forking after torch started its thread pools is unsafe
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futs = [pool.submit(_worker, t) for t in mine]
            for k, f in enumerate(as_completed(futs)):
                results.append(f.result())
                if progress:
                    progress(done0 + k + 1, done0 + len(mine), results[-1])
    results.sort(key=lambda r: r["id"])
    counts = {s: sum(1 for r in results if r["status"] == s) for s in ("built", "skipped", "failed")}
    doc = {"schema": MANIFEST_SCHEMA, "schema_version": 1, "manifest": str(path), "out": str(root),
           "shard": f"{i}/{n}", "jobs": jobs, "artifacts": results, "counts": counts,
           "wall_s": round(time.monotonic() - t0, 2)}
    name = "manifest.json" if (i, n) == (1, 1) else f"manifest.shard-{i}-of-{n}.json"
    write_json(root / name, doc)
    return doc
