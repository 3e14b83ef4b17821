"""Training, deploying and predicting SkipNet-gated networks (Wang et al., ECCV 2018) with the latency table.

- **Supervised pre-training** (SkipNet Sec. 3.3): the gated network trained on the cross-entropy with hard gates and
  the straight-through estimator (:mod:`edgeshrink.models.gated`); nothing rewards skipping yet.
- **Hybrid reinforcement learning** (SkipNet Sec. 3.2, Eq. 3-5): decisions g_i ~ Bernoulli(p_i); the per-gate reward
  ``r_i = alpha * (1 - g_i) * w_i`` (``w_i``: block i's share of the network's latency as the table predicts it,
  where that work used its share of FLOPs) and the terminal reward ``-CE``; the return
  ``R_i = sum_{j >= i} gamma^(j - i) r_j + gamma^(G - i) (-CE)``; the gates learn by REINFORCE (Williams 1992) on
  ``-sum_i (R_i - b_i) log pi(g_i)`` with the batch mean ``b_i`` as baseline, the network by the cross-entropy
  through the sampled route (the "hybrid" of that work).
- **Deployment**: two forms, both run by :mod:`edgeshrink.device.dynamic` at batch 1 and checked against torch input
  by input (:func:`check_gated`): per-block models (:func:`export_gated`: a stem stage, per gated block a gate model
  and a block model, the always-run blocks as stages, the head last), and one graph with an ONNX ``If`` per gated
  block (:func:`export_gated_if`), which saves a runtime call per step.
- **Expected latency** (:func:`predict_dynamic`): the table's per-layer latency of every step, the gated blocks'
  weighted by their execution rates, plus each gate's measured cost and the runtime's per-call overhead per call.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from edgeshrink.device.dynamic import STAGED_SCHEMA, STAGED_SCHEMA_VERSION, _Chain, load_manifest
from edgeshrink.host.bench import bench_inputs_on_device, bench_on_device
from edgeshrink.host.data import Dataset, export_inputs
from edgeshrink.host.errors import UserError
from edgeshrink.host.export.artifact import ship_staged
from edgeshrink.host.export.onnx import ExportCheckError, export_module
from edgeshrink.host.io import atomic_path, prepare_dir, write_json
from edgeshrink.host.job_inputs import resolve_inputs
from edgeshrink.host.latency.predict import TablePredictor
from edgeshrink.models.gated import GatedResNet


@dataclass(frozen=True)
class RLConfig:
    """Hybrid RL settings: ``alpha`` (``--rl-weight``, reward per unit of latency share skipped), ``gamma``
    (``--rl-gamma``, the discount)."""

    alpha: float = 0.1
    gamma: float = 0.99

    def check(self) -> None:
        """Raises UserError for alpha <= 0 or gamma outside (0, 1]."""
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise UserError(f"--rl-weight must be a positive finite number, got {self.alpha:g}")
        if not 0 < self.gamma <= 1:
            raise UserError(f"--rl-gamma must be in (0, 1], got {self.gamma:g}")

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def block_sites(predictor, names: List[str]) -> Dict[str, List[int]]:
    """The indices of the table predictor's sites inside each block ``name`` (sites named ``{block}.*``)."""
    return {n: [i for i, s in enumerate(predictor.space.sites) if s.name.startswith(n + ".")] for n in names}


def block_weights(predictor, model: GatedResNet) -> Dict[str, float]:
    """Each gated block's share of the network's predicted latency (its sites' ms over the whole prediction).

    Raises:
        TableError: the table lacks an entry for one of the network's layers.
    """
    widths = predictor.space.widths_from_spec(model.dense_channels)
    per = predictor.layer_ms(widths)
    total = predictor.predict_ms(widths)
    return {n: sum(per[i] for i in idx) / total for n, idx in block_sites(predictor, model.gated).items()}


def rl_loss(model: GatedResNet, logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor,
            cfg: RLConfig) -> torch.Tensor:
    """The hybrid loss of one batch: mean cross-entropy plus the REINFORCE term of the gates (module docstring).

    Args:
        model: after a forward with ``policy = "sample"`` in training mode (``last_decisions``, ``last_log_probs``
            ``(N, G)``).
        weights: ``(G,)`` latency shares of the gated blocks.
    """
    ce = F.cross_entropy(logits, y, reduction="none")  # (N,)
    g, logp = model.last_decisions, model.last_log_probs
    n_gates = g.shape[1]
    r = cfg.alpha * (1 - g) * weights[None, :]  # (N, G)
    ret = torch.empty_like(r)
    acc = -ce.detach()  # the terminal reward, one step after the last gate
    for i in reversed(range(n_gates)):
        acc = r[:, i] + cfg.gamma * acc
        ret[:, i] = acc
    adv = ret - ret.mean(0, keepdim=True)
    return ce.mean() - (adv.detach() * logp).sum(1).mean()


@torch.no_grad()
def evaluate_gated(model: GatedResNet, data: Dataset, split: str = "val", batch_size: int = 512) -> Dict[str, object]:
    """Top-1 (%) with hard decisions and each gated block's execution rate (fraction of inputs) on ``split``."""
    model.eval()
    correct, n, runs = 0, 0, None
    for x, y in data.batches(split, batch_size):
        logits = model(x)
        correct += (logits.argmax(1) == y).sum().item()
        n += y.numel()
        s = model.last_decisions.sum(0)
        runs = s if runs is None else runs + s
    return {"top1": 100.0 * correct / n, "block_rates": {b: float(v) / n for b, v in zip(model.gated, runs.tolist())}}


# -- deployment -----------------------------------------------------------------------------------------------------

class _Stem(nn.Module):
    def __init__(self, base):
        super().__init__()
        self.conv1, self.bn1, self.relu = base.conv1, base.bn1, base.relu

    def forward(self, x):
        return self.relu(self.bn1(self.conv1(x)))


class _Head(nn.Module):
    def __init__(self, base):
        super().__init__()
        self.pool, self.fc = base.pool, base.fc

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(x), 1))


class _RNNGateStep(nn.Module):
    def __init__(self, gate, i: int):
        super().__init__()
        self.gate, self.i = gate, i

    def forward(self, x, state):
        return self.gate.step(self.i, x, state)


def _export(module: nn.Module, args, names_in, names_out, path: str) -> None:
    export_module(module.eval(), args, path, names_in, names_out)


def export_gated(model: GatedResNet, input_shape, folder: str) -> str:
    """Write the staged model of a gated network into ``folder``: ``model.json`` (the manifest) and one ONNX file
    per step (``stem``, ``{block}.gate`` and ``{block}.block`` per gated block, ``{block}`` per always-run block,
    ``head``). Returns the manifest's path.

    Feature tensors are ``features``, the gate's probability ``decision`` (and the recurrent gate's ``state`` in,
    ``state_out`` out), the head's output ``logits``.
    """
    os.makedirs(folder, exist_ok=True)
    model = model.eval()
    base = model.base
    x = torch.zeros(*input_shape)
    steps = []
    _export(_Stem(base), (x,), ["input"], ["features"], os.path.join(folder, "stem.onnx"))
    steps.append({"kind": "stage", "name": "stem", "onnx": "stem.onnx", "features": "features"})
    with torch.no_grad():
        h = _Stem(base)(x)
    i = 0
    for name, blk in model.blocks:
        if name in model.gated:
            gate_file, block_file = f"{name}.gate.onnx", f"{name}.block.onnx"
            if model.kind == "ff":
                _export(model.gate[i], (h,), ["features"], ["decision"], os.path.join(folder, gate_file))
            else:
                state = torch.zeros(1, 2 * model.hidden)
                _export(_RNNGateStep(model.gate, i), (h, state), ["features", "state"], ["decision", "state_out"],
                        os.path.join(folder, gate_file))
            _export(blk, (h,), ["features"], ["features_out"], os.path.join(folder, block_file))
            steps.append({"kind": "gated", "name": name, "gate": gate_file, "block": block_file,
                          "features": "features_out", "decision": "decision", "threshold": 0.5})
            i += 1
        else:
            _export(blk, (h,), ["features"], ["features_out"], os.path.join(folder, f"{name}.onnx"))
            steps.append({"kind": "stage", "name": name, "onnx": f"{name}.onnx", "features": "features_out"})
        with torch.no_grad():
            h = blk(h)
    _export(_Head(base), (h,), ["features"], ["logits"], os.path.join(folder, "head.onnx"))
    steps.append({"kind": "stage", "name": "head", "onnx": "head.onnx", "exit": {"logits": "logits", "threshold": 0.0}})

    path = os.path.join(folder, "model.json")
    write_json(path, {"schema": STAGED_SCHEMA, "schema_version": STAGED_SCHEMA_VERSION, "model": model.model_name,
                      "gates": model.gates, "input_shape": list(input_shape), "steps": steps})
    return path


def _inline(proto, prefix: str, inputs: Dict[str, str]):
    """A model's nodes and initializers renamed for a larger graph: its inputs wired to ``inputs`` (outer names),
    every other name prefixed. Returns ``(nodes, initializers, {output: new name})``."""
    def name(n):
        return n if not n else inputs.get(n, prefix + n)

    nodes = []
    for node in proto.graph.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        del new.input[:]
        del new.output[:]
        new.input.extend(name(n) for n in node.input)
        new.output.extend(name(n) for n in node.output)
        new.name = prefix + node.name
        nodes.append(new)
    inits = []
    for t in proto.graph.initializer:
        new = onnx.TensorProto()
        new.CopyFrom(t)
        new.name = prefix + t.name
        inits.append(new)
    return nodes, inits, {o.name: name(o.name) for o in proto.graph.output}


def _like(value_info, name: str):
    """A copy of ``value_info`` (its type and shape) under another name."""
    v = onnx.ValueInfoProto()
    v.CopyFrom(value_info)
    v.name = name
    return v


def export_gated_if(model: GatedResNet, input_shape, path: str, force: bool = False,
                    staged: Optional[str] = None) -> Dict[str, str]:
    """The gated network as one ONNX graph: each gated block an ``If`` on its gate's decision (the block's graph in
    the then-branch, the identity in the else-branch), the gates inline, the recurrent gate's state threaded from
    gate to gate. Outputs ``logits`` and ``decision.{block}`` per gated block. ``force``: every block runs (the worst
    case: the gates still run, their decisions ignored). Built from the per-step ONNX files of
    :func:`export_gated`: those of ``staged`` (its manifest) when given, else exported afresh into a temporary
    folder. Written atomically. Returns ``{block: decision output}``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        manifest = staged or export_gated(model, input_shape, tmp)
        with open(manifest, encoding="utf-8") as f:
            steps = json.load(f)["steps"]
        here = os.path.dirname(os.path.abspath(manifest))
        load = lambda name: onnx.load(os.path.join(here, name))  # noqa: E731
        nodes, inits, h, state, decisions, types = [], [], "input", None, {}, {}
        half = numpy_helper.from_array(np.array(0.5, dtype=np.float32), "gate_threshold")
        inits.append(half)
        if model.kind == "rnn":
            state = "state0"
            inits.append(numpy_helper.from_array(np.zeros((1, 2 * model.hidden), np.float32), state))
        for i, s in enumerate(steps):
            p = f"s{i}_"
            if s["kind"] == "stage":
                proto = load(s["onnx"])
                n, t, outs = _inline(proto, p, {proto.graph.input[0].name: h})
                nodes += n
                inits += t
                h = outs["logits"] if s.get("exit") else outs[s["features"]]
                head_vi = proto.graph.output[0]
                continue
            gate = load(s["gate"])
            wire = {"features": h, **({"state": state} if state else {})}
            n, t, outs = _inline(gate, p + "g_", wire)
            nodes += n
            inits += t
            state = outs.get("state_out", state)
            decisions[s["name"]] = f"decision.{s['name']}"
            types[decisions[s["name"]]] = gate.graph.output[0]
            nodes.append(helper.make_node("Identity", [outs["decision"]], [decisions[s["name"]]]))
            cond = p + "cond"
            if force:
                nodes.append(helper.make_node("Constant", [], [cond], value=helper.make_tensor("t", TensorProto.BOOL,
                                                                                               [], [True])))
            else:
                nodes.append(helper.make_node("GreaterOrEqual", [outs["decision"], "gate_threshold"], [cond]))
            block = load(s["block"])
            bn, bt, bouts = _inline(block, p + "b_", {block.graph.input[0].name: h})
            out_vi = block.graph.output[0]
            then_out = bouts[out_vi.name]
            then_g = helper.make_graph(bn, p + "then", [], [_like(out_vi, then_out)], initializer=bt)
            else_out = p + "skip"
            else_g = helper.make_graph([helper.make_node("Identity", [h], [else_out])], p + "else", [],
                                       [_like(out_vi, else_out)])
            nxt = p + "h"
            nodes.append(helper.make_node("If", [cond], [nxt], then_branch=then_g, else_branch=else_g))
            h = nxt
        x_vi = helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))
        outputs = [_like(head_vi, h)] + [_like(types[v], v) for v in decisions.values()]
        graph = helper.make_graph(nodes, "gated", [x_vi], outputs, initializer=inits)
        opset = load(steps[0]["onnx"]).opset_import
        proto = helper.make_model(graph, opset_imports=list(opset))
        proto.ir_version = load(steps[0]["onnx"]).ir_version
        # the head's output is the graph's first output; name it as every exported network's
        for node in proto.graph.node:
            node.output[:] = ["logits" if o == h else o for o in node.output]
        proto.graph.output[0].name = "logits"
        onnx.checker.check_model(proto)
        with atomic_path(path) as t:
            onnx.save(proto, str(t))
    return decisions


def write_if_manifest(folder: str, onnx_file: str, decisions: Dict[str, str], model: GatedResNet, input_shape,
                      name: str = "model_if.json") -> str:
    """A one-stage staged model around :func:`export_gated_if`'s graph, its decisions named for the runner."""
    path = os.path.join(folder, name)
    write_json(path, {"schema": STAGED_SCHEMA, "schema_version": STAGED_SCHEMA_VERSION, "model": model.model_name,
                      "gates": model.gates, "input_shape": list(input_shape), "form": "if",
                      "steps": [{"kind": "stage", "name": "network", "onnx": onnx_file,
                                 "exit": {"logits": "logits", "threshold": 0.0}, "decisions": decisions}]})
    return path


def check_gated(model: GatedResNet, manifest: str, x: np.ndarray, atol: float = 1e-4,
                tie: float = 1e-5) -> Dict[str, object]:
    """Run every input of ``x`` ``(N, C, H, W)`` through the staged model in ONNX Runtime and through torch at
    batch 1: the same decisions for every input and logits within ``atol``. An input whose torch gate probability
    lies within ``tie`` of the threshold may be decided either way by float rounding; where the decisions then
    differ it is counted in ``ties`` and its logits are not compared.

    Returns:
        ``{"inputs", "decisions_equal", "ties", "max_abs_diff", "atol", "block_rates"}`` (the rates torch's).

    Raises:
        ExportCheckError: a decision differs away from the threshold, or the logits differ by more than ``atol``
        (the first input named).
    """
    steps = load_manifest(manifest)["steps"]
    model = model.eval()
    worst, runs, ties = 0.0, np.zeros(len(model.gated)), 0
    with contextlib.ExitStack() as stack:
        chain = _Chain(steps, "ort", 1, stack)
        for n in range(len(x)):
            xi = x[n:n + 1].astype(np.float32)
            with torch.no_grad():
                ref = model(torch.from_numpy(xi)).numpy()
            want = model.last_decisions[0].int().tolist()
            runs += np.array(want)
            _, _, got = chain.run(xi)
            if got != want:
                if float((model.last_probs[0] - 0.5).abs().min()) < tie:
                    ties += 1
                    continue
                raise ExportCheckError(f"{manifest}: input {n}: the staged model ran blocks {got}, torch {want}")
            worst = max(worst, float(np.abs(chain.last_logits.reshape(ref.shape) - ref).max()))
            if not worst <= atol:
                raise ExportCheckError(f"{manifest}: input {n}: logits differ from torch by {worst:.3g} > {atol:g}")
    return {"inputs": len(x), "decisions_equal": True, "ties": ties, "max_abs_diff": worst, "atol": atol,
            "block_rates": {b: float(r) / len(x) for b, r in zip(model.gated, runs)}}


def predict_dynamic(predictor, model: GatedResNet, rates: Dict[str, float], gate_ms: Dict[str, float],
                    call_ms: float) -> Dict[str, object]:
    """The expected latency (ms) of a gated network at batch 1 from the table.

    ``static_ms``: the table's sites outside the gated blocks plus its intercept; each gated block adds
    ``rate * (its sites' ms + call_ms)``, each gate ``gate_ms`` (measured on the device); every step of the staged
    model pays ``call_ms``, the runtime's per-call overhead (the table's ``overhead_ms``).

    Returns:
        ``{"expected_ms", "worst_case_ms", "static_ms", "blocks": {name: {"ms", "rate", "gate_ms"}}, "calls"}``.

    Raises:
        UserError: a gated block without a rate or a gate cost.
    """
    missing = [b for b in model.gated if b not in rates or b not in gate_ms]
    if missing:
        raise UserError(f"no execution rate or gate cost for block {missing[0]}")
    widths = predictor.space.widths_from_spec(model.dense_channels)
    per = predictor.layer_ms(widths)
    sites = block_sites(predictor, model.gated)
    inside = {i for idx in sites.values() for i in idx}
    static_calls = len(model.blocks) - len(model.gated) + 2  # stem, always-run blocks, head
    static = predictor.predict_ms(widths) - sum(per[i] for i in inside) + (static_calls - 1) * call_ms
    blocks = {b: {"ms": sum(per[i] for i in idx), "rate": float(rates[b]), "gate_ms": float(gate_ms[b])}
              for b, idx in sites.items()}
    expected = static + sum(v["gate_ms"] + v["rate"] * (v["ms"] + call_ms) for v in blocks.values())
    worst = static + sum(v["gate_ms"] + v["ms"] + call_ms for v in blocks.values())
    return {"expected_ms": expected, "worst_case_ms": worst, "static_ms": static, "call_ms": call_ms,
            "calls": static_calls, "blocks": blocks}


def gated_macs(model: GatedResNet, input_shape, rates: Optional[Dict[str, float]] = None) -> Dict[str, float]:
    """Multiply-accumulates per input of the convolutions and linear layers: ``worst`` (every block) and, with
    ``rates``, ``mean`` (gated blocks weighted by their execution rates; the gates' own MACs included in both)."""
    macs: Dict[str, float] = {}
    hooks = []

    def hook(name):
        def f(mod, args, out):
            if isinstance(mod, nn.Conv2d):
                k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
                macs[name] = macs.get(name, 0.0) + out[0].numel() * k
            else:
                macs[name] = macs.get(name, 0.0) + mod.in_features * mod.out_features
        return f

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(hook(name)))
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(*input_shape))  # torch runs every block (and mixes): each layer counts once
    finally:
        for h in hooks:
            h.remove()
    worst = sum(macs.values())
    out = {"worst": worst}
    if rates is not None:
        skipped = sum((1 - rates[b]) * sum(v for k, v in macs.items() if k.startswith(f"{b}."))
                      for b in model.gated)
        out["mean"] = worst - skipped
    return out


def write_manifest_note(folder: str, note: Dict[str, object]) -> None:
    """Add ``note`` (the export check) to the manifest as ``check``, atomically."""
    path = os.path.join(folder, "model.json")
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    doc["check"] = note
    write_json(path, doc)



def measure_gated(checkpoint: str, table_path: str, dataset: str, out: str, data_dir: Optional[str] = None,
                  device: Optional[str] = None, limit: Optional[int] = None, iters: int = 3, check: int = 200,
                  seed: int = 0, trust_new_host: bool = False, log=print) -> Dict[str, object]:
    """``host dynamic``: deploy a gated checkpoint in two forms and measure both on the device, input by input.

    Writes into ``out``: ``staged/`` with the per-block staged model (:func:`export_gated`, ``model.json``) and the
    one-graph form (:func:`export_gated_if`, ``model_if.json``; ``model_if_all.json`` runs every block, its worst
    case), both checked against torch on the first ``check`` test inputs; ``inputs.npz`` (the test split, the first
    ``limit`` images); ``report.json``. The gates' own cost is measured on the device (each gate model at batch 1,
    side by side); each form's expected latency is predicted from the table with the execution rates the device
    measured (:func:`predict_dynamic`) and reported against its measured mean; the faster form is the one reported
    on top (``form``).

    Raises:
        UserError: a checkpoint without gates, a dataset of another input shape, bad counts; TableError, DeviceError,
        CheckpointError as their loaders raise them.
    """
    for name, v in (("--limit", limit), ("--iters", iters), ("--check", check)):
        if v is not None and v < 1:
            raise UserError(f"{name} must be >= 1, got {v}")
    inputs = resolve_inputs(checkpoint, table_path, device)
    ck, model, table, device = inputs.checkpoint, inputs.model, inputs.table, inputs.device
    if not ck.get("gates"):
        raise UserError(f"{checkpoint} has no SkipNet gates (train it with host train --gates ff|rnn)")
    predictor = TablePredictor.for_model(table, model.base)
    data = inputs.load_data(dataset, data_dir, seed)
    shape = [1, *data.input_shape[1:]]
    if list(table.input_shape) != shape:
        raise UserError(f"{dataset} images are {'x'.join(map(str, shape))}, the table was built at "
                        f"{'x'.join(map(str, table.input_shape))}")
    prepare_dir(out, "--out")
    log(f"exporting {model.model_name} with {model.kind} gates: per-block models and one graph with If per gated "
        f"block ({len(model.gated)} gated blocks)")
    folder = os.path.join(out, "staged")
    manifest = export_gated(model, shape, folder)
    if_dec = export_gated_if(model, shape, os.path.join(folder, "model_if.onnx"), staged=manifest)
    export_gated_if(model, shape, os.path.join(folder, "model_if_all.onnx"), force=True, staged=manifest)
    manifests = {"per-block": manifest, "if": write_if_manifest(folder, "model_if.onnx", if_dec, model, shape),
                 "if-all": write_if_manifest(folder, "model_if_all.onnx", if_dec, model, shape, "model_if_all.json")}
    inputs = os.path.join(out, "inputs.npz")
    n = export_inputs(data, "test", inputs, limit)
    with np.load(inputs) as z:
        xs = z["x"][:check]
    checks = {f: check_gated(model, manifests[f], xs) for f in ("per-block", "if")}
    write_manifest_note(folder, checks["per-block"])
    for f, c in checks.items():
        log(f"{f} export = torch on {c['inputs']} test inputs (same decisions, {c['ties']} ties at the threshold, max "
            f"|diff| {c['max_abs_diff']:.2g})")
    with open(manifest, encoding="utf-8") as f:
        steps = json.load(f)["steps"]
    gates = {s["name"]: os.path.join(folder, s["gate"]) for s in steps if s["kind"] == "gated"}
    log(f"measuring the {len(gates)} gate models on {device}")
    gb = bench_on_device(list(gates.values()), device=device, backend=table.backend, threads=table.threads,
                         iters=200, rounds=5, interleave=True, trust_new_host=trust_new_host)
    gate_ms = {b: gb["models"][p]["median_ms"] for b, p in gates.items()}
    runs = {}
    for f in ("per-block", "if", "if-all"):
        log(f"running {n} test inputs one at a time on {device} as the {f} form ({iters} runs each)")
        runs[f] = bench_inputs_on_device(manifests[f], inputs, device=device, backend=table.backend,
                                         threads=table.threads, iters=iters, trust_new_host=trust_new_host)
    ovh = table.overhead_ms
    forms = {}
    for f, call_ms, g_ms in (("per-block", ovh, gate_ms),
                             # inside one graph a gate pays no call of its own: its measured cost less the overhead
                             ("if", 0.0, {b: max(v - ovh, 0.0) for b, v in gate_ms.items()})):
        dyn = runs[f]
        pred = predict_dynamic(predictor, model, dyn["block_rates"], g_ms, call_ms)
        worst = dyn["worst_case_ms"] if f == "per-block" else runs["if-all"]["latency_ms"]
        forms[f] = {"measured_ms": dyn["latency_ms"], "worst_case_measured_ms": worst, "predicted": pred,
                    "prediction_error": pred["expected_ms"] / dyn["latency_ms"]["mean"] - 1,
                    "top1": dyn["top1"], "block_rates": dyn["block_rates"], "export_check": checks[f]}
    for f in forms:
        forms[f]["sha256"] = runs[f]["sha256"]  # the manifest the device ran (its step files in runs[f]["files"])
    best = min(forms, key=lambda f: forms[f]["measured_ms"]["mean"])
    dyn, chosen = runs[best], forms[best]

    shipped = ship_staged(manifests[best], shape, checkpoint, checks[best])
    macs = gated_macs(model, shape, dyn["block_rates"])
    report = {"schema": "edgeshrink.dynamic_report", "schema_version": 1,
              "checkpoint": checkpoint, "model": model.model_name, "gates": model.gates, "table": table_path,
              "device": dyn["device"], "inputs": n, "form": best, "forms": forms,
              "artifact": {"file": f"staged/{shipped['file']}", "sha256": shipped["sha256"]},
              "params": sum(p.numel() for p in model.parameters()), "macs": macs, "gate_ms": gate_ms,
              **{k: chosen[k] for k in ("top1", "block_rates", "measured_ms", "worst_case_measured_ms", "predicted",
                                        "prediction_error", "export_check", "sha256")},
              "per_input": dyn["per_input"]}
    write_json(os.path.join(out, "report.json"), report)
    for f, v in forms.items():
        m = v["measured_ms"]
        log(f"{f}: per-input latency ms: mean {m['mean']:.4f} (predicted {v['predicted']['expected_ms']:.4f}, "
            f"{v['prediction_error']:+.1%}), p50 {m['median']:.4f}, p90 {m['p90']:.4f}, p99 {m['p99']:.4f}, max "
            f"{m['max']:.4f}; every block {v['worst_case_measured_ms']['mean']:.4f} (predicted "
            f"{v['predicted']['worst_case_ms']:.4f})")
    log(f"deployed form: {best} (the faster); top-1 {100 * chosen['top1']:.2f}%; MACs per input "
        f"{macs['mean'] / 1e6:.2f} M (all blocks {macs['worst'] / 1e6:.2f} M)")
    return report
