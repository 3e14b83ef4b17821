"""The dynamic runner: a network whose work depends on its input (early exits, gated residual blocks) run one
input at a time at batch 1, as a device runs it, on a real input set (``device bench MODEL --inputs X.npz``).

A dynamic network is a *staged model*: a JSON manifest (``schema: edgeshrink.staged_model``) beside the ONNX
files of its steps, run in order on a feature tensor ``h`` (the input first):

- ``{"kind": "stage", "onnx": F, "features": OUT, "exit": {"logits": OUT, "threshold": q}}``: ``h`` becomes the
  stage's ``features`` output; with ``exit``, the input leaves here when the softmax of its ``logits`` output has
  a maximum >= q (Shallow-Deep Networks' confidence, Kaya et al. 2019). The last step is a stage whose exit takes
  every input that reaches it (its threshold is ignored). ``"decisions": {block: OUT}`` names outputs that are the
  gate probabilities of blocks the stage decides inside itself (a gated network in one graph, ONNX ``If`` per
  block): a block counts as run where its output is >= 0.5.
- ``{"kind": "gated", "gate": G, "block": B, "features": OUT, "decision": OUT, "threshold": 0.5}``: the gate model
  reads ``h`` and gives ``decision`` (a probability, shape (1,) or (1, 1)); the block model runs on ``h`` only when
  it is >= the threshold, else ``h`` passes unchanged (SkipNet, Wang et al. 2018). A gate model with an input
  named ``state`` is recurrent: it gets the state the previous gate call returned (zeros first) and returns its
  new one as output ``state_out`` (the recurrent gate's one LSTM, shared by every gate).

Each input's latency is the whole chain, decisions and softmax included (what a deployment pays), the median of
``iters`` runs of it; beside it the worst case (every step, every block, no exit) is timed on the same input right
after, so the two see the same device state. Every file is checked before it is used: the manifest's fields, its
files inside its folder, the input array's shape against the first model's input.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import runners
from .provenance import sha256_file
from .stats import summarize

STAGED_SCHEMA = "edgeshrink.staged_model"
STAGED_SCHEMA_VERSION = 1
MAX_STEPS = 1000


class DynamicError(ValueError):
    """A manifest, model or input file that cannot be run as given (the message names the file and the field)."""


def _text(d: dict, key: str, where: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v:
        raise DynamicError(f"{where}: {key} must be a non-empty string")
    return v


def _file(folder: str, rel: str, where: str) -> str:
    """A file named by the manifest: relative, inside the manifest's folder, existing."""
    if os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
        raise DynamicError(f"{where}: {rel!r} must be a path inside the manifest's folder")
    path = os.path.join(folder, rel)
    if not os.path.isfile(path):
        raise DynamicError(f"{where}: {rel} not found beside the manifest")
    return path


def _threshold(d: dict, key: str, where: str, default: Optional[float] = None) -> float:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
        raise DynamicError(f"{where}: {key} must be a number in [0, 1], got {v!r}")
    return float(v)


def load_manifest(path: str) -> Dict[str, object]:
    """Read and check a staged-model manifest; file names come back as paths.

    Returns:
        ``{"steps": [...], "folder"}``, each step as in the module docstring with its files resolved.

    Raises:
        DynamicError: not JSON, another schema, or a bad step (kind, files, output names, thresholds).
    """
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise DynamicError(f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise DynamicError(f"{path} is not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict) or doc.get("schema") != STAGED_SCHEMA:
        raise DynamicError(f"{path}: not a staged model (schema must be {STAGED_SCHEMA!r})")
    if doc.get("schema_version") != STAGED_SCHEMA_VERSION:
        raise DynamicError(f"{path}: schema_version {doc.get('schema_version')!r} is not {STAGED_SCHEMA_VERSION}")
    steps = doc.get("steps")
    if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS:
        raise DynamicError(f"{path}: steps must be a list of 1 to {MAX_STEPS} steps")
    folder = os.path.dirname(os.path.abspath(path))
    out = []
    for i, s in enumerate(steps):
        where = f"{path} step {i}"
        if not isinstance(s, dict):
            raise DynamicError(f"{where} must be a JSON object")
        kind = s.get("kind")
        last = i == len(steps) - 1
        if kind == "stage":
            step = {"kind": "stage", "name": str(s.get("name", f"stage{i}")),
                    "onnx": _file(folder, _text(s, "onnx", where), where), "exit": None,
                    "features": None if last else _text(s, "features", where)}
            if s.get("exit") is not None or last:
                ex = s.get("exit")
                if not isinstance(ex, dict):
                    raise DynamicError(f"{where}: the last step must have an exit with its logits output")
                step["exit"] = {"logits": _text(ex, "logits", where + " exit"),
                                "threshold": 0.0 if last else _threshold(ex, "threshold", where + " exit")}
            dec = s.get("decisions") or {}
            if not isinstance(dec, dict) or not all(isinstance(k, str) and isinstance(v, str) and v
                                                    for k, v in dec.items()):
                raise DynamicError(f"{where}: decisions must map block names to output names")
            step["decisions"] = dict(dec)
        elif kind == "gated":
            if last:
                raise DynamicError(f"{where}: the last step must be a stage with an exit, not a gated block")
            step = {"kind": "gated", "name": str(s.get("name", f"block{i}")),
                    "gate": _file(folder, _text(s, "gate", where), where),
                    "block": _file(folder, _text(s, "block", where), where),
                    "features": _text(s, "features", where), "decision": _text(s, "decision", where),
                    "threshold": _threshold(s, "threshold", where, 0.5)}
        else:
            raise DynamicError(f"{where}: kind must be 'stage' or 'gated', got {kind!r}")
        out.append(step)
    return {"steps": out, "folder": folder}


def step_files(steps: List[dict]) -> List[str]:
    """The files a staged model's steps (as :func:`load_manifest` returns them) run, each once, in order."""
    out: List[str] = []
    for s in steps:
        for f in ([s["onnx"]] if s["kind"] == "stage" else [s["gate"], s["block"]]):
            if f not in out:
                out.append(f)
    return out


def load_inputs(path: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """``x`` (N, ...) float32 and the optional labels ``y`` (N,) int of an ``.npz`` input set (no pickles).

    Raises:
        DynamicError: unreadable, no ``x``, no inputs, non-finite values, or labels of another length or type.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files:
                raise DynamicError(f"{path}: no array 'x' (the inputs, N x C x H x W)")
            x = np.asarray(z["x"])
            y = np.asarray(z["y"]) if "y" in z.files else None
    except DynamicError:
        raise
    except (OSError, ValueError) as e:  # not a zip, a pickled array, a torn file
        raise DynamicError(f"cannot read input set {path}: {e}") from None
    if x.ndim < 2 or len(x) == 0:
        raise DynamicError(f"{path}: x must hold at least one input (N x ...), got shape {tuple(x.shape)}")
    if x.dtype.kind != "f" or not np.isfinite(x).all():
        raise DynamicError(f"{path}: x must be finite floating-point values, got {x.dtype}")
    if y is not None and (y.shape != (len(x),) or y.dtype.kind not in "iu"):
        raise DynamicError(f"{path}: y must be {len(x)} integer labels, got {y.dtype} {tuple(y.shape)}")
    return x.astype(np.float32, copy=False), None if y is None else y.astype(np.int64)


def _softmax_max(logits: np.ndarray) -> Tuple[float, int]:
    z = logits.reshape(-1).astype(np.float64)
    e = np.exp(z - z.max())
    p = e / e.sum()
    k = int(p.argmax())
    return float(p[k]), k


class _Chain:
    """The steps' sessions, loaded once (a file used by several steps, such as a shared gate, once)."""

    def __init__(self, steps: List[dict], backend: str, threads: int, stack):
        cls = runners.get_runner(backend)
        if getattr(cls, "self_timed", False):
            raise DynamicError(f"backend {backend} times itself and cannot run a staged model input by input")
        self.sessions: Dict[str, object] = {}
        for s in steps:
            for f in ([s["onnx"]] if s["kind"] == "stage" else [s["gate"], s["block"]]):
                if f not in self.sessions:
                    self.sessions[f] = stack.enter_context(cls(f, threads=threads))
        self.steps = steps
        self.last_logits: Optional[np.ndarray] = None  # the exit's logits of the last run
        self.input_name = {f: list(r.input_specs()) for f, r in self.sessions.items()}
        for s in steps:
            for f in ([s["onnx"]] if s["kind"] == "stage" else [s["block"]]):
                if len(self.input_name[f]) != 1:
                    raise DynamicError(f"{os.path.basename(f)}: a stage or block model takes one input (the "
                                       f"features), it has {len(self.input_name[f])}")
            if s["kind"] == "gated" and len([n for n in self.input_name[s["gate"]] if n != "state"]) != 1:
                raise DynamicError(f"{os.path.basename(s['gate'])}: a gate model takes the features and at most a "
                                   "'state' input")
        # the recurrent gates' first state, built once (not inside the timed loop)
        self.zero_state = {f: np.zeros(spec.shape, dtype=spec.dtype) for f, spec in
                           ((f, r.input_specs()["state"]) for f, r in self.sessions.items()
                            if "state" in self.input_name[f])}

    def first_input_shape(self) -> Tuple[int, ...]:
        s = self.steps[0]
        r = self.sessions[s["onnx"] if s["kind"] == "stage" else s["gate"]]
        return next(v.shape for k, v in r.input_specs().items() if k != "state")

    def _run(self, f: str, h: np.ndarray, state: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        names = self.input_name[f]
        feeds = {n: (state if n == "state" else h) for n in names}
        try:
            return self.sessions[f].infer(feeds)
        except Exception as e:  # the runtime's own errors (onnxruntime's derive from Exception only)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise DynamicError(f"{os.path.basename(f)} failed on its input of shape {tuple(h.shape)}: "
                               f"{first[:200]}") from None

    def run(self, x: np.ndarray, force_all: bool = False) -> Tuple[int, int, List[int]]:
        """One input through the chain: ``(exit step, predicted class, executed flags of the gated blocks)``;
        ``force_all`` runs every step and every block and exits at the last (the worst case)."""
        h, state, executed = x, None, []
        for i, s in enumerate(self.steps):
            if s["kind"] == "gated":
                gate_in = self.input_name[s["gate"]]
                if "state" in gate_in and state is None:
                    state = self.zero_state[s["gate"]]
                g = self._run(s["gate"], h, state)
                if "state" in gate_in:
                    if "state_out" not in g:
                        raise DynamicError(f"{os.path.basename(s['gate'])}: a recurrent gate (input 'state') must "
                                           "return its new state as output 'state_out'")
                    state = g["state_out"]
                if s["decision"] not in g:
                    raise DynamicError(f"{os.path.basename(s['gate'])} has no output {s['decision']!r}")
                on = force_all or float(np.asarray(g[s["decision"]]).reshape(-1)[0]) >= s["threshold"]
                executed.append(int(on))
                if on:
                    out = self._run(s["block"], h)
                    if s["features"] not in out:
                        raise DynamicError(f"{os.path.basename(s['block'])} has no output {s['features']!r}")
                    h = out[s["features"]]
                continue
            out = self._run(s["onnx"], h)
            missing = [n for n in (s["features"], (s["exit"] or {}).get("logits"), *s.get("decisions", {}).values())
                       if n and n not in out]
            if missing:
                raise DynamicError(f"{os.path.basename(s['onnx'])} has no output {missing[0]!r}")
            executed.extend(int(float(np.asarray(out[v]).reshape(-1)[0]) >= 0.5) for v in s.get("decisions", {}).values())
            if s["exit"] is not None:
                conf, k = _softmax_max(out[s["exit"]["logits"]])
                if i == len(self.steps) - 1 or (not force_all and conf >= s["exit"]["threshold"]):
                    self.last_logits = out[s["exit"]["logits"]]
                    return i, k, executed
            h = out[s["features"]]
        raise AssertionError("a checked manifest ends in an exit")  # load_manifest guarantees the last exit


def _timed(chain: _Chain, x: np.ndarray, iters: int, force_all: bool) -> Tuple[float, Tuple[int, int, List[int]]]:
    clock = time.perf_counter_ns
    ts = np.empty(iters)
    res = None
    for k in range(iters):
        t0 = clock()
        res = chain.run(x, force_all)
        ts[k] = clock() - t0
    return float(np.median(ts)) / 1e6, res


def bench_dynamic(path: str, inputs: str, backend: str = "ort", threads: int = 1, iters: int = 3,
                  warmup: int = 10, limit: Optional[int] = None, progress=None) -> Dict[str, object]:
    """Run ``path`` (a staged-model manifest, or a plain ``.onnx`` as a one-stage network whose first output is
    its logits) on every input of ``inputs`` one at a time at batch 1.

    Args:
        iters: timed runs per input (its latency is their median), each followed by as many of the worst case.
        warmup: untimed runs of the first input before timing.
        limit: the first ``limit`` inputs only.
        progress: ``progress(done, total)`` every 100 inputs.

    Returns:
        ``{"model", "inputs", "iters", "latency_ms": per-input statistics (mean, median, p90, p99, max, ...),
        "worst_case_ms": the same for every step run, "exit_histogram": {step name: count}, "block_rates":
        {block name: fraction of inputs that ran it}, "top1": accuracy or None, "exit_top1": {step name: accuracy
        of the inputs that left there}, "per_input": {"exit", "pred", "latency_ms", "executed"}, "sha256": of
        ``path``, "files": {step file name: sha256}}`` (what was run, as the device read it).

    Raises:
        DynamicError: a bad manifest or input set, or inputs of another shape than the first model takes;
        runners.ModelLoadError, runners.BackendUnavailable from the runtime.
    """
    if path.endswith(".json"):
        steps = load_manifest(path)["steps"]
    else:
        if not os.path.isfile(path):
            raise DynamicError(f"model file not found: {path}")
        steps = [{"kind": "stage", "name": "output", "onnx": os.path.abspath(path), "features": None,
                  "exit": {"logits": None, "threshold": 0.0}}]
    x, y = load_inputs(inputs)
    if limit is not None:
        x, y = x[:limit], (None if y is None else y[:limit])
    if iters < 1 or warmup < 0:
        raise DynamicError("--iters must be >= 1 and --warmup >= 0")
    with contextlib.ExitStack() as stack:
        chain = _Chain(steps, backend, threads, stack)
        want = tuple(chain.first_input_shape())
        if (1, *x.shape[1:]) != want:
            raise DynamicError(f"{inputs}: x holds inputs of shape {tuple(x.shape[1:])}, the model takes "
                               f"{want} (batch 1)")
        if steps[0]["kind"] == "stage" and steps[0]["exit"] and steps[0]["exit"]["logits"] is None:
            # a plain model: its first output
            steps[0]["exit"]["logits"] = next(iter(chain._run(steps[0]["onnx"], x[:1])))
        for _ in range(warmup):
            chain.run(x[:1])
            chain.run(x[:1], force_all=True)
        lat, worst, exits, preds, executed = [], [], [], [], []
        for n in range(len(x)):
            xi = x[n:n + 1]
            ms, (e, k, ex) = _timed(chain, xi, iters, False)
            wms, _ = _timed(chain, xi, iters, True)
            lat.append(ms)
            worst.append(wms)
            exits.append(e)
            preds.append(k)
            executed.append(ex)
            if progress and ((n + 1) % 100 == 0 or n + 1 == len(x)):
                progress(n + 1, len(x))
    names = [s["name"] for s in steps]
    gated = [n for s in steps for n in ([s["name"]] if s["kind"] == "gated" else list(s.get("decisions", {})))]
    exit_names = [s["name"] for s in steps if s["kind"] == "stage" and s["exit"] is not None]
    hist = {nm: int(sum(1 for e in exits if names[e] == nm)) for nm in exit_names}
    rates = {nm: float(np.mean([ex[j] for ex in executed])) for j, nm in enumerate(gated)}
    top1 = exit_top1 = None
    if y is not None:
        ok = np.array(preds) == y
        top1 = float(ok.mean())
        exit_top1 = {nm: (float(ok[[names[e] == nm for e in exits]].mean()) if hist[nm] else None)
                     for nm in exit_names}
    return {"model": os.path.basename(path), "sha256": sha256_file(path),
            "files": {os.path.basename(f): sha256_file(f) for f in step_files(steps)},
            "inputs": len(x), "input_file": os.path.basename(inputs),
            "backend": backend, "threads": threads, "iters": iters, "warmup": warmup,
            "latency_ms": summarize(lat).to_dict(), "worst_case_ms": summarize(worst).to_dict(),
            "exit_histogram": hist, "block_rates": rates, "top1": top1, "exit_top1": exit_top1,
            "per_input": {"exit": [names[e] for e in exits], "pred": preds, "latency_ms": lat,
                          "executed": ["".join(map(str, ex)) for ex in executed]}}
