"""Early exit (Shallow-Deep Networks, Kaya et al., ICML 2019): a network with internal classifiers deployed as a
staged model, one ONNX model per stage (the cells up to a classifier, and that classifier), run at batch 1 by the
device's dynamic runner (:mod:`edgeshrink.device.dynamic`), which stops at the first classifier whose confidence
(the maximum of its softmax) reaches that classifier's threshold q.

Why stages rather than one model per exit sharing the prefix: an input that goes past an exit would run the prefix
again in the next exit's model, so its cost grows with the square of its depth; stages run every layer once and pay
one runtime call per stage instead (measured: ``bench/results/grow_snip.json``, docs/results.md).

``host exits`` (:func:`choose_exits`) measures what exiting at each classifier costs on the device, one input at a
time (the chain cut after that stage), picks per-classifier thresholds that meet a mean latency budget with the
least val accuracy lost under a p99 cap (:func:`choose_thresholds`), deploys them, checks the export against torch
input by input, and measures the deployed network on the test split; the table's prediction (the prefix and the
classifiers passed, one runtime call per stage) is reported beside the measurement.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from dataclasses import replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from edgeshrink.device.dynamic import STAGED_SCHEMA, STAGED_SCHEMA_VERSION, _Chain, load_manifest
from edgeshrink.host.bench import bench_inputs_on_device
from edgeshrink.host.data import Dataset, export_inputs
from edgeshrink.host.errors import UserError
from edgeshrink.host.export.artifact import ship_staged
from edgeshrink.host.export.onnx import ExportCheckError, export_module, export_onnx
from edgeshrink.host.io import prepare_dir, write_json
from edgeshrink.host.job_inputs import resolve_inputs
from edgeshrink.host.latency.plots import _pyplot, _save
from edgeshrink.host.latency.predict import TablePredictor, space_for_table
from edgeshrink.host.latency.table import Entry
from edgeshrink.models.cells import CellNet, has_exits

# thresholds tried per classifier; None: the classifier never lets an input leave
GRID: Tuple[Optional[float], ...] = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98,
                                     0.99, 0.995, 0.999, None)
TIE = 1e-5  # a confidence this close to its threshold may round either way between torch and the runtime


@torch.no_grad()
def exit_outputs(model: nn.Module, data: Dataset, split: str = "val", batch_size: int = 512
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every classifier's softmax confidence and prediction on ``split``.

    Returns:
        ``(conf (N, E) float64: the softmax maximum, pred (N, E) int, y (N,) int)``, the final classifier last.
    """
    model.eval()
    confs, preds, ys = [], [], []
    for x, y in data.batches(split, batch_size):
        outs = model.forward_exits(x)
        p = torch.stack([torch.softmax(o.double(), 1) for o in outs], 1)  # (B, E, C)
        c, k = p.max(2)
        confs.append(c.numpy())
        preds.append(k.numpy())
        ys.append(y.numpy())
    return np.concatenate(confs), np.concatenate(preds), np.concatenate(ys)


def evaluate_exits(model: nn.Module, data: Dataset, split: str = "val") -> List[float]:
    """Each classifier's top-1 (%) on ``split``, the final last."""
    _, pred, y = exit_outputs(model, data, split)
    return [float(100.0 * (pred[:, k] == y).mean()) for k in range(pred.shape[1])]


def exit_index(conf: np.ndarray, thresholds: Sequence[Optional[float]]) -> np.ndarray:
    """Where each input leaves: the first internal classifier ``k`` with ``conf[:, k] >= thresholds[k]`` (None never
    lets an input leave), else the final one. ``conf`` ``(N, E)``, ``thresholds`` ``E - 1`` -> ``(N,)`` int."""
    n, e = conf.shape
    out = np.full(n, e - 1, dtype=np.int64)
    left = np.ones(n, dtype=bool)
    for k, q in enumerate(thresholds[:e - 1]):
        if q is None:
            continue
        hit = left & (conf[:, k] >= q)
        out[hit] = k
        left &= ~hit
    return out


def outcome(conf: np.ndarray, pred: np.ndarray, y: np.ndarray, thresholds: Sequence[Optional[float]],
            cost_ms: Sequence[float]) -> Dict[str, object]:
    """Accuracy and latency of early exit at ``thresholds`` when leaving at classifier ``k`` costs ``cost_ms[k]``.

    Returns:
        ``{"top1" (fraction), "mean_ms", "p99_ms" (of the inputs' costs), "histogram": inputs per exit}``.
    """
    k = exit_index(conf, thresholds)
    lat = np.asarray(cost_ms, dtype=np.float64)[k]
    ok = pred[np.arange(len(k)), k] == y
    return {"top1": float(ok.mean()), "mean_ms": float(lat.mean()), "p99_ms": float(np.percentile(lat, 99)),
            "histogram": np.bincount(k, minlength=conf.shape[1]).tolist()}


def check_budget(cost_ms: Sequence[float], budget_ms: float, p99_ms: Optional[float],
                 label: Optional[str] = None, what: str = "measured") -> None:
    """Raises UserError for a budget (or p99 cap) below what leaving at the first classifier costs; ``label`` names
    the budget as the user gave it (default ``--budget-ms``)."""
    label = label or f"--budget-ms {budget_ms:.4g}"
    if not budget_ms > 0:
        raise UserError(f"{label} must be positive")
    if budget_ms < cost_ms[0]:
        raise UserError(f"{label} is below the first exit's {what} latency {cost_ms[0]:.4g} ms: no thresholds can "
                        "meet it")
    if p99_ms is not None and p99_ms < cost_ms[0]:
        raise UserError(f"--p99-ms {p99_ms:.4g} is below the first exit's measured latency {cost_ms[0]:.4g} ms")


def choose_thresholds(conf: np.ndarray, pred: np.ndarray, y: np.ndarray, cost_ms: Sequence[float],
                      budget_ms: float, p99_ms: Optional[float] = None, grid: Sequence[Optional[float]] = GRID,
                      rounds: int = 5, label: Optional[str] = None) -> Dict[str, object]:
    """Per-classifier thresholds with the best accuracy whose mean latency is within ``budget_ms`` (and p99 within
    ``p99_ms``): the best common threshold on ``grid``, then coordinate descent, one classifier at a time over the
    grid, while it improves (ties: the lower mean latency).

    Returns:
        :func:`outcome` at the thresholds, with ``thresholds`` (E - 1 values, None: never) and ``curve`` (the common
        thresholds' outcomes, each with ``q``).

    Raises:
        UserError: the budget or cap is below the first exit's cost (:func:`check_budget`).
    """
    check_budget(cost_ms, budget_ms, p99_ms, label)
    n_ic = conf.shape[1] - 1

    def feasible(o):
        return o["mean_ms"] <= budget_ms and (p99_ms is None or o["p99_ms"] <= p99_ms)

    def better(a, b):
        return b is None or a["top1"] > b["top1"] + 1e-12 or (abs(a["top1"] - b["top1"]) <= 1e-12
                                                              and a["mean_ms"] < b["mean_ms"])

    curve, best, best_q = [], None, None
    for q in grid:
        th = [q] * n_ic
        o = outcome(conf, pred, y, th, cost_ms)
        curve.append({"q": q, **o})
        if feasible(o) and better(o, best):
            best, best_q = o, th
    if best is None:  # only a mix reaches it: start from leaving at the first classifier
        best_q = [0.0] + [None] * (n_ic - 1)
        best = outcome(conf, pred, y, best_q, cost_ms)
    for _ in range(rounds):
        changed = False
        for k in range(n_ic):
            for q in grid:
                th = list(best_q)
                th[k] = q
                o = outcome(conf, pred, y, th, cost_ms)
                if feasible(o) and better(o, best):
                    best, best_q, changed = o, th, True
        if not changed:
            break
    return {**best, "thresholds": best_q, "curve": curve}


# -- deployment -----------------------------------------------------------------------------------------------------

class _Stage(nn.Module):
    """One early-exit stage: ``h -> (features, logits)`` (the last: ``h -> logits``)."""

    def __init__(self, segment: nn.Module, classifier: nn.Module, last: bool):
        super().__init__()
        self.segment, self.classifier, self.last = segment, classifier, last

    def forward(self, h):
        f = self.segment(h)
        logits = self.classifier(f)
        return logits if self.last else (f, logits)


def export_stages(model: nn.Module, input_shape: Sequence[int], folder: str) -> List[Dict[str, object]]:
    """One ONNX model per stage of ``model.segments()`` into ``folder`` (``stage{k}.onnx``: input ``h``, outputs
    ``features`` and ``logits``, the last ``logits`` only). Returns the staged-model steps without thresholds."""
    os.makedirs(folder, exist_ok=True)
    model.eval()
    segs = model.segments()
    h = torch.zeros(*input_shape)
    steps = []
    for k, (seg, clf) in enumerate(segs):
        last = k == len(segs) - 1
        stage = _Stage(seg, clf, last).eval()
        f = f"stage{k}.onnx"
        export_module(stage, (h,), os.path.join(folder, f), ["h"], ["logits"] if last else ["features", "logits"])
        steps.append({"kind": "stage", "name": model.exit_names[k], "onnx": f,
                      **({} if last else {"features": "features"}), "logits": "logits"})
        with torch.no_grad():
            h = seg(h)
    return steps


class _Prefix(nn.Module):
    """The network from its input to one classifier: ``x -> (x, logits)`` (the input passed on, so the next exit's
    model starts from it again: the one-model-per-exit deployment)."""

    def __init__(self, segments: Sequence[nn.Module], classifier: nn.Module):
        super().__init__()
        self.segments, self.classifier = nn.ModuleList(segments), classifier

    def forward(self, x):
        h = x
        for s in self.segments:
            h = s(h)
        return x + 0.0, self.classifier(h)


def export_per_exit(model: nn.Module, input_shape: Sequence[int], folder: str) -> List[Dict[str, object]]:
    """The alternative to stages: one ONNX model per exit, each the whole prefix from the input to its classifier
    (``exit{k}.onnx``: input ``h`` (the network's input), outputs ``features`` (that input again) and ``logits``),
    as staged-model steps for :func:`write_manifest`. An input leaving at exit ``k`` runs the prefix ``k + 1``
    times; ``bench/grow_snip.py`` measures it against :func:`export_stages`."""
    os.makedirs(folder, exist_ok=True)
    model.eval()
    segs = model.segments()
    steps = []
    for k in range(len(segs)):
        f = f"exit{k}.onnx"
        export_module(_Prefix([s for s, _ in segs[:k + 1]], segs[k][1]).eval(), (torch.zeros(*input_shape),),
                      os.path.join(folder, f), ["h"], ["features", "logits"])
        steps.append({"kind": "stage", "name": model.exit_names[k], "onnx": f, "features": "features",
                      "logits": "logits"})
    return steps


def write_manifest(folder: str, steps: List[Dict[str, object]], thresholds: Sequence[Optional[float]],
                   name: str = "model.json", upto: Optional[int] = None) -> str:
    """The staged-model manifest of ``steps`` with these thresholds (None: that stage has no exit); ``upto``: the
    chain cut after stage ``upto``, which takes every input (what leaving there costs). Returns its path."""
    out = []
    use = steps if upto is None else steps[:upto + 1]
    for k, s in enumerate(use):
        step = {"kind": "stage", "name": s["name"], "onnx": s["onnx"]}
        last = k == len(use) - 1
        if not last:
            step["features"] = "features"
        q = None if (upto is not None and not last) else (0.0 if last else thresholds[k])
        if q is not None:
            step["exit"] = {"logits": s["logits"], "threshold": float(q)}
        out.append(step)
    path = os.path.join(folder, name)
    write_json(path, {"schema": STAGED_SCHEMA, "schema_version": STAGED_SCHEMA_VERSION, "steps": out,
                      "thresholds": list(thresholds)})
    return path


def check_exits(model: nn.Module, manifest: str, x: np.ndarray, thresholds: Sequence[Optional[float]],
                atol: float = 1e-4) -> Dict[str, object]:
    """Run the staged model on ONNX Runtime (the device's chain) and torch on each input of ``x`` ``(N, 3, H, W)``:
    the same exit and the exit's logits within ``atol``. An input whose confidence lies within 1e-5 of a threshold
    it met or missed is a tie (float rounding may decide it either way) and is counted, not failed.

    Returns:
        ``{"inputs", "ties", "max_abs_diff", "exits": torch's exit per input}``.

    Raises:
        ExportCheckError: an input where they differ (its index, both exits or the difference).
    """
    steps = load_manifest(manifest)["steps"]
    model.eval()
    with torch.no_grad():
        outs = [o.double().numpy() for o in model.forward_exits(torch.from_numpy(x))]
    logits = np.stack(outs, 1)  # (N, E, C)
    p = np.exp(logits - logits.max(2, keepdims=True))
    conf = (p / p.sum(2, keepdims=True)).max(2)
    want = exit_index(conf, thresholds)
    ties, worst = 0, 0.0
    with contextlib.ExitStack() as stack:
        chain = _Chain(steps, "ort", 1, stack)
        for i in range(len(x)):
            e, _, _ = chain.run(x[i:i + 1])
            near = any(q is not None and abs(conf[i, k] - q) < TIE for k, q in enumerate(thresholds[:len(steps) - 1]))
            if e != want[i]:
                if near:
                    ties += 1
                    continue
                raise ExportCheckError(f"the exported early exit differs from torch on input {i}: it left at "
                                f"{steps[e]['name']}, torch at {steps[want[i]]['name']}")
            d = float(np.abs(chain.last_logits.reshape(-1) - logits[i, e]).max())
            if d > atol:
                raise ExportCheckError(f"the exported stage {steps[e]['name']} differs from torch on input {i} by "
                                       f"{d:.3g}")
            worst = max(worst, d)
            ties += int(near)
    return {"inputs": int(len(x)), "ties": ties, "max_abs_diff": worst, "exits": want.tolist()}


def segment_of_sites(model: nn.Module, space) -> List[int]:
    """The stage each site of ``space`` (traced with every classifier) belongs to: by its module name where it has
    one, else the stage of the site before it (sites come in graph order, stage by stage)."""
    prefixes: List[Tuple[str, int]] = []
    if isinstance(model, CellNet):
        for b in range(model.active):
            prefixes += [(f"blocks.{b}.", b), (f"exits.{b}.", b)]
    else:
        known = [n for n, _ in model._blocks]
        seg = 0
        prefixes += [("conv1", 0), ("bn1", 0)]
        for n in known:
            prefixes.append((n + ".", seg))
            if n in model.after:
                prefixes.append((f"exits.{n.replace('.', '_')}.", seg))
                seg += 1
        prefixes += [("fc", seg), ("pool", seg)]
    out, cur = [], 0
    for s in space.sites:
        hit = [k for p, k in prefixes if s.name == p.rstrip(".") or s.name.startswith(p)]
        if hit:
            cur = hit[0]
        out.append(cur)
    return out


def predict_exit_costs(table, model: nn.Module, measure=None, log=print) -> Dict[str, object]:
    """What leaving at each classifier costs as the table predicts it: the stages up to it and the classifiers it
    passed (their sites' latency), plus the table's per-call intercept once per stage. Configurations the table
    lacks (a classifier's pooling and linear layer, which a table built for the plain network never needed) are
    measured side by side on the table's device first (``measure(table, keys, model_name)``, default
    :func:`edgeshrink.host.latency.build.measure_keys`).

    Returns:
        ``{"cost_ms": per exit, "stage_ms": per stage, "measured_keys": how many configurations were measured}``.
    """
    view = copy.deepcopy(model).eval()
    view.all_exits = True
    space = space_for_table(table, view)
    full = space.full_widths
    missing = sorted({site.key(full) for site in space.sites if table.lookup(site.key(full)) is None},
                     key=lambda k: json.dumps(k.to_dict(), sort_keys=True))
    if missing:
        if measure is None:
            from edgeshrink.host.latency.build import measure_keys as measure
        got = measure(table, missing, model.model_name, log=log)
        extra = [Entry(k, {table.statistic: float(v) + table.overhead_ms}, 0, "measured") for k, v in got.items()]
        table = replace(table, entries=list(table.entries) + extra)
    pred = TablePredictor(table, space)
    per = pred.layer_ms(full)
    seg = segment_of_sites(model, space)
    n = model.active
    stage = [sum(ms for ms, s in zip(per, seg) if s == k) + pred.intercept_ms for k in range(n)]
    return {"cost_ms": np.cumsum(stage).tolist(), "stage_ms": stage, "measured_keys": len(missing)}


def plot_curve(curve: Sequence[Dict[str, object]], chosen: Dict[str, object], full: Dict[str, float], path: str,
               title: str, measured: Optional[Sequence[Dict[str, float]]] = None) -> None:
    """Val top-1 over mean latency for common thresholds (line), the chosen thresholds and the full network; the
    measured test points when given. Written atomically."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    xs = [c["mean_ms"] for c in curve]
    ys = [100 * c["top1"] for c in curve]
    ax.plot(xs, ys, "o-", ms=3, label="common threshold q (val, expected)")
    ax.plot([chosen["mean_ms"]], [100 * chosen["top1"]], "r*", ms=12, label="chosen thresholds (val, expected)")
    ax.plot([full["mean_ms"]], [full["top1"]], "ks", label="full network, no exit (measured)")
    for m in measured or []:
        ax.plot([m["mean_ms"]], [m["top1"]], "gD", label=m.get("label", "deployed (test, measured)"))
    ax.set_xlabel("mean latency per input (ms)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    seen = {}
    for h, lab in zip(handles, labels):
        seen.setdefault(lab, h)
    ax.legend(seen.values(), seen.keys(), fontsize=8)
    fig.tight_layout()
    _save(fig, path, 120)


class ExitDeployment:
    """What early exit at any thresholds needs, prepared once: the stages and the full network exported, what
    leaving at each classifier costs measured on the device one input at a time, the full network's per-input
    latency measured the same way, the table's prediction, and every classifier's val and test outputs.

    ``budget_ms``, when known before measuring, is refused at once if the table predicts the first exit above it;
    ``test_limit``: the first test inputs only go to the device (every one is still evaluated in torch).

    Raises:
        UserError: a network without internal classifiers, a dataset of another input shape, a budget below the
        table's first exit; DeviceError, TableError as their callers raise them.
    """

    def __init__(self, model: nn.Module, data: Dataset, table, folder: str, device: str, cost_inputs: int = 300,
                 iters: int = 3, trust_new_host: bool = False, log=print, measure_keys=None,
                 budget_ms: Optional[float] = None, test_limit: Optional[int] = None):
        if not has_exits(model):
            raise UserError(f"{model.model_name} has no internal classifiers (train a cells_* network, or a CIFAR "
                            "ResNet with --exits)")
        shape = [1, *data.input_shape[1:]]
        if list(table.input_shape) != shape:
            raise UserError(f"{data.name} images are {'x'.join(map(str, shape))}, the table was built at "
                            f"{'x'.join(map(str, table.input_shape))}")
        self.model, self.data, self.table, self.folder, self.device = model, data, table, folder, device
        self.iters, self.trust, self.log, self.shape = iters, trust_new_host, log, shape
        self.predicted = predict_exit_costs(table, model, measure=measure_keys, log=log)
        if budget_ms is not None:  # refused before any measurement where the table already says it cannot be met
            check_budget(self.predicted["cost_ms"], budget_ms, None, f"--budget-ms {budget_ms:.4g}",
                         "predicted (the table's)")
        os.makedirs(folder, exist_ok=True)
        log(f"exporting {model.model_name} as {model.active} early-exit stages")
        self.steps = export_stages(model, shape, os.path.join(folder, "staged"))
        export_onnx(model, shape, os.path.join(folder, "full.onnx"))
        self.cost_inputs = os.path.join(folder, "val_inputs.npz")
        export_inputs(data, "val", self.cost_inputs, cost_inputs)
        self.test_inputs = os.path.join(folder, "test_inputs.npz")
        self.n_test = export_inputs(data, "test", self.test_inputs, test_limit)  # what the device runs
        self.val = exit_outputs(model, data, "val")
        self.test = exit_outputs(model, data, "test")
        log(f"measuring what leaving at each of the {model.active} classifiers costs on {device}, one input at a time "
            f"({min(cost_inputs, len(data.val))} val inputs, {iters} runs each), and the full network")
        self.costs = []
        for k in range(model.active):
            m = write_manifest(os.path.join(folder, "staged"), self.steps, [None] * (model.active - 1),
                               f"upto{k}.json", upto=k)
            r = bench_inputs_on_device(m, self.cost_inputs, device=device, backend=table.backend,
                                       threads=table.threads, iters=iters, trust_new_host=trust_new_host)
            self.costs.append(r["latency_ms"])
        r = bench_inputs_on_device(os.path.join(folder, "full.onnx"), self.cost_inputs, device=device,
                                   backend=table.backend, threads=table.threads, iters=iters,
                                   trust_new_host=trust_new_host)
        self.full_ms = r["latency_ms"]
        self.device_meta = r["device"]
        self.cost_ms = [c["mean"] for c in self.costs]
        log("leaving at each classifier costs (ms, measured mean): " + ", ".join(
            f"{n} {c:.4f} (table {p:.4f})" for n, c, p in zip(model.exit_names, self.cost_ms,
                                                             self.predicted["cost_ms"]))
            + f"; the full network {self.full_ms['mean']:.4f}")

    def choose(self, budget_ms: float, p99_ms: Optional[float] = None, label: Optional[str] = None) -> Dict[str, object]:
        """Thresholds on the val outputs with the measured costs (:func:`choose_thresholds`), with the table's
        expectation at them (``predicted_mean_ms``)."""
        conf, pred, y = self.val
        r = choose_thresholds(conf, pred, y, self.cost_ms, budget_ms, p99_ms, label=label)
        r["predicted_mean_ms"] = outcome(conf, pred, y, r["thresholds"], self.predicted["cost_ms"])["mean_ms"]
        return r

    def deploy(self, thresholds: Sequence[Optional[float]], name: str = "model.json", check: int = 200,
               limit: Optional[int] = None) -> Dict[str, object]:
        """Write the manifest, check it against torch on the first ``check`` test inputs, and run the test split
        (the first ``limit`` inputs) on the device one input at a time.

        Returns:
            ``{"manifest", "check", "measured": the device's record (latency_ms, exit_histogram, exit_top1, top1,
            per_input), "expected": the test outcome at the measured costs, "predicted_mean_ms": the table's}``.
        """
        folder = os.path.join(self.folder, "staged")
        path = write_manifest(folder, self.steps, thresholds, name)
        with np.load(self.test_inputs) as z:
            xs = z["x"][:check]
        chk = check_exits(self.model, path, xs, thresholds)
        rec = bench_inputs_on_device(path, self.test_inputs, device=self.device, backend=self.table.backend,
                                     threads=self.table.threads, iters=self.iters, limit=limit,
                                     trust_new_host=self.trust)
        n = min(limit or self.n_test, self.n_test)  # the inputs the device ran
        conf, pred, y = (a[:n] for a in self.test)
        return {"manifest": path, "check": chk, "measured": rec,
                "expected": outcome(conf, pred, y, thresholds, self.cost_ms),
                "predicted_mean_ms": outcome(conf, pred, y, thresholds, self.predicted["cost_ms"])["mean_ms"]}


def parse_thresholds(text: str, n: int) -> List[float]:
    """``"0.9,0.8"`` -> ``[0.9, 0.8]``: one confidence threshold in [0, 1] per internal classifier (``n``).

    Raises:
        UserError: not numbers, one outside [0, 1], or another count than ``n``.
    """
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--thresholds must be comma-separated numbers such as 0.9,0.8, got {text!r}") from None
    if any(not 0 <= v <= 1 for v in vals):
        raise UserError(f"--thresholds must be confidences in [0, 1] (a softmax maximum), got {text!r}")
    if len(vals) != n:
        raise UserError(f"--thresholds gives {len(vals)} values; the network has {n} internal classifiers")
    return vals


def choose_exits(checkpoint: str, table_path: str, dataset: str, out: str, budget_ms: Optional[float] = None,
                 budget: Optional[float] = None, p99_ms: Optional[float] = None, thresholds: Optional[str] = None,
                 data_dir: Optional[str] = None,
                 device: Optional[str] = None, limit: Optional[int] = None, iters: int = 3, check: int = 200,
                 cost_inputs: int = 300, seed: int = 0, trust_new_host: bool = False, log=print) -> Dict[str, object]:
    """``host exits``: pick thresholds for a mean latency budget (``budget_ms``, or ``budget`` times the full
    network's measured per-input latency) under a p99 cap, or take ``thresholds`` as given ("0.9,0.8", one per
    internal classifier), deploy them and measure them (module docstring).

    Writes ``out/report.json``, ``out/exits.png`` (val top-1 over mean latency), ``out/staged/model.json``.

    Raises:
        UserError: no internal classifiers, neither or both budgets, a budget below the first exit's cost, bad
        counts; CheckpointError, TableError, DeviceError as their loaders raise them.
    """
    if sum(v is not None for v in (budget_ms, budget, thresholds)) != 1:
        raise UserError("give one of --budget-ms (ms), --budget (a fraction of the full network's latency) or "
                        "--thresholds")
    if budget is not None and not 0 < budget <= 1:
        raise UserError(f"--budget must be a fraction in (0, 1], got {budget:g}")
    if budget_ms is not None and not budget_ms > 0:
        raise UserError(f"--budget-ms must be positive, got {budget_ms:g}")
    for name, v in (("--limit", limit), ("--iters", iters), ("--check", check), ("--cost-inputs", cost_inputs)):
        if v is not None and v < 1:
            raise UserError(f"{name} must be >= 1, got {v}")
    inputs = resolve_inputs(checkpoint, table_path, device)
    ck, model, table, device = inputs.checkpoint, inputs.model, inputs.table, inputs.device

    if not has_exits(model):
        raise UserError(f"{checkpoint} has no internal classifiers (train a cells_* network, or a CIFAR ResNet with "
                        "--exits)")
    given = parse_thresholds(thresholds, model.active - 1) if thresholds is not None else None
    data = inputs.load_data(dataset, data_dir, seed, image_size=(ck.get("input_shape") or [0, 0, 0, None])[-1])
    prepare_dir(out, "--out")
    dep = ExitDeployment(model, data, table, out, device, cost_inputs, iters, trust_new_host, log, budget_ms=budget_ms,
                         test_limit=limit)
    if given is not None:
        conf, pred, y = dep.val
        chosen = {**outcome(conf, pred, y, given, dep.cost_ms), "thresholds": given,
                  "curve": choose_thresholds(conf, pred, y, dep.cost_ms, float("inf"))["curve"]}
        target = None
    else:
        target = budget_ms if budget_ms is not None else budget * dep.full_ms["mean"]
        chosen = dep.choose(target, p99_ms, None if budget is None else
                            f"--budget {budget:g} ({target:.4g} ms of the full network's {dep.full_ms['mean']:.4g})")
    log(f"thresholds {', '.join('never' if q is None else f'{q:g}' for q in chosen['thresholds'])}: val top-1 "
        f"{100 * chosen['top1']:.2f}% (final classifier {100 * float((dep.val[1][:, -1] == dep.val[2]).mean()):.2f}%), "
        f"expected mean {chosen['mean_ms']:.4f} ms, p99 {chosen['p99_ms']:.4f} ms"
        + (f" (budget {target:.4f} ms)" if target is not None else " (thresholds as given)"))
    d = dep.deploy(chosen["thresholds"], check=check, limit=limit)
    m = d["measured"]
    lat = m["latency_ms"]
    full_top1 = 100 * float((dep.test[1][:, -1] == dep.test[2]).mean())

    shipped = ship_staged(d["manifest"], dep.shape, checkpoint, d["check"])
    report = {"schema": "edgeshrink.exits_report", "schema_version": 1,
              "checkpoint": checkpoint, "model": model.model_name, "table": table_path, "device": m["device"],
              "artifact": {"file": f"staged/{shipped['file']}", "sha256": shipped["sha256"]},
              "sha256": m["sha256"],
              "budget_ms": target, "budget_fraction": budget, "p99_cap_ms": p99_ms,
              "exits": model.exit_names, "thresholds": chosen["thresholds"],
              "val": {k: chosen[k] for k in ("top1", "mean_ms", "p99_ms", "histogram")},
              "val_final_top1": float((dep.val[1][:, -1] == dep.val[2]).mean()),
              "exit_cost_ms": {"measured_mean": dep.cost_ms, "measured": dep.costs,
                               "predicted": dep.predicted["cost_ms"], "predicted_measured_keys":
                                   dep.predicted["measured_keys"]},
              "full_network_ms": dep.full_ms, "test_full_top1": full_top1,
              "measured_ms": lat, "top1": m["top1"], "exit_histogram": m["exit_histogram"],
              "exit_top1": m["exit_top1"], "inputs": m["inputs"],
              "expected_mean_ms": d["expected"]["mean_ms"], "predicted_mean_ms": d["predicted_mean_ms"],
              "prediction_error": d["predicted_mean_ms"] / lat["mean"] - 1,
              "ratio_to_full": lat["mean"] / dep.full_ms["mean"], "export_check": d["check"],
              "curve": chosen["curve"], "per_input": m["per_input"]}
    write_json(os.path.join(out, "report.json"), report)
    plot_curve(chosen["curve"], chosen, {"mean_ms": dep.full_ms["mean"], "top1": full_top1},
               os.path.join(out, "exits.png"),
               f"{model.model_name} on {data.name}: early exit, measured on {device} ({table.backend})",
               [{"mean_ms": lat["mean"], "top1": 100 * (m["top1"] or 0.0)}])
    log(f"deployed on {device}: {m['inputs']} test inputs one at a time: mean {lat['mean']:.4f} ms (table "
        f"{d['predicted_mean_ms']:.4f}, {report['prediction_error']:+.1%}), p50 {lat['median']:.4f}, p99 "
        f"{lat['p99']:.4f}, max {lat['max']:.4f}; full network {dep.full_ms['mean']:.4f} ms (x"
        f"{report['ratio_to_full']:.3f}); test top-1 {100 * (m['top1'] or 0):.2f}% (full network {full_top1:.2f}%); "
        "exits " + ", ".join(f"{n} {c}" for n, c in m["exit_histogram"].items()))
    return report
