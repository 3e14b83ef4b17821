"""``edgeshrink.shrink(...)``: the DNN-shrink-tool's workflow on any model, with the user's own training and test
functions doing all training and evaluation, driven by a latency lookup table and confirmed on the table's device.

::

    result = edgeshrink.shrink(model, torch.zeros(1, 3, 64, 64), "table.json", budget=0.5, method="netadapt",
                               train_one_epoch=my_epoch, train=my_train, test=my_test)
    result.model            # the pruned nn.Module (pruned copy; ``model`` is not changed)

The methods are the registry's (``host prune --method``), run with the user's functions as their trainer: ``netadapt``
(Yang et al. 2018; each proposal is short-term fine-tuned by ``train_one_epoch(model, lr)`` and judged by
``test(model)``, a larger-is-better score), ``uniform`` (one width multiplier, bisection on the table) and
``magnitude`` (Torch-Pruning's magnitude importance). The others read training batches inside their own loop (Taylor's
gradients, the regularised training of slimming, SWD and MorphNet, EigenDamage's K-FAC statistics, SNIP's batch), which
three opaque functions cannot give them: they run through ``host prune`` / :func:`edgeshrink.run_prune`.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from edgeshrink import models
from edgeshrink.host import ui
from edgeshrink.host.bench import stat_ms
from edgeshrink.host.errors import UserError
from edgeshrink.host.export.artifact import export_checked_onnx, ship_onnx
from edgeshrink.host.latency.predict import TablePredictor
from edgeshrink.host.latency.table import LatencyTable, load_table, require_device
from edgeshrink.host.pipeline.confirm import confirm_on_device
from edgeshrink.host.prune.config import SHRINK_METHODS
from edgeshrink.host.prune.config import SHRINK_OUTPUTS as OUTPUTS
from edgeshrink.host.prune.methods import METHODS, MethodContext, check_config, check_method_reachable, recover
from edgeshrink.host.tensorboard import open_writer
from edgeshrink.host.train import UserTrainer


class SelectOutput(nn.Module):
    """``model``'s forward with one output picked: ``out[key]`` for a dict, list or tuple output, or ``key(out)``
    for a callable; what tracing, export and latency see of a model that returns several outputs (the
    DNN-shrink-tool's ``generate_graph`` case). Shapes: as the picked output."""

    def __init__(self, model: nn.Module, key: Union[str, int, Callable[[Any], torch.Tensor]]):
        super().__init__()
        self.model, self.key = model, key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return self.key(out) if callable(self.key) else out[self.key]


@dataclass
class ShrinkResult:
    """What :func:`shrink` returns. Latencies in ms (``*_predicted`` by the table's statistic; ``*_measured`` the
    device's, by the table's statistic, of side-by-side bursts; None with ``measure=False``); scores are ``test(model)``'s."""

    model: nn.Module
    onnx: Optional[str]
    method: str
    baseline_ms_predicted: float
    pruned_ms_predicted: float
    budget_ms: float
    baseline_score: Optional[float]
    score: Optional[float]
    baseline_ms_measured: Optional[float] = None
    pruned_ms_measured: Optional[float] = None
    widths: Dict[str, int] = field(default_factory=dict)
    history: List[Dict[str, object]] = field(default_factory=list)
    wall_s: float = 0.0
    table_fit: Dict[str, object] = field(default_factory=dict)  # TablePredictor.fit_record()
    sha256: Optional[str] = None  # of the pruned ONNX written beside its artifact.json (``onnx``)
    measured_sha256: Optional[str] = None  # of the file the device measured (the device computes it): ``sha256``

    @property
    def measured_ratio(self) -> Optional[float]:
        if self.baseline_ms_measured and self.pruned_ms_measured:
            return self.pruned_ms_measured / self.baseline_ms_measured
        return None


def _frozen_groups(space, net: nn.Module, prune_only: Optional[str], ignore: Iterable[str]) -> List[str]:
    """Groups that must keep their width: any member outside ``prune_only`` or in (or under) an ``ignore`` name.
    As Torch-Pruning's ``ignored_layers``: an ignored layer keeps its output channels (a linear classifier keeps its
    classes anyway)."""
    ignore = [i for i in ignore]
    known = {m for g in space.groups for m in g.members}
    names = {n for n, _ in net.named_modules()}
    for name in ignore:
        if name not in names:
            raise UserError(f"ignore: the model has no layer or module {name!r}")
    if prune_only is not None and not any(m == prune_only or m.startswith(prune_only + ".") for m in known):
        raise UserError(f"prune_only: {prune_only!r} holds no prunable convolution of the model")
    out = []
    for g in space.groups:
        outside = prune_only is not None and any(not (m == prune_only or m.startswith(prune_only + "."))
                                                 for m in g.members)
        kept = any(m == i or m.startswith(i + ".") for m in g.members for i in ignore)
        if outside or kept:
            out.append(g.name)
    return out


def _prefixed(name: Optional[str], wrapped: bool) -> Optional[str]:
    return None if name is None else (f"model.{name}" if wrapped else name)


def shrink(model: nn.Module, example_input: Union[torch.Tensor, Sequence[int]], table, budget: Optional[float] = 0.5,
           method: str = "netadapt", train_one_epoch: Optional[Callable[[nn.Module, float], Any]] = None,
           train: Optional[Callable[[nn.Module], Any]] = None, test: Optional[Callable[[nn.Module], float]] = None,
           prune_only: Optional[str] = None, ignore: Sequence[str] = (), output: str = "pytorch",
           select_output: Union[None, str, int, Callable[[Any], torch.Tensor]] = None, budget_ms: Optional[float] = None,
           short_term_lr: Optional[float] = None, init_reduction: Optional[float] = None,
           decay: Optional[float] = None, config=None, out_dir: Optional[str] = None,
           measure: bool = True, device: Optional[str] = None, bench_seconds: float = 10.0,
           tensorboard: Optional[str] = None) -> ShrinkResult:
    """Shrink ``model`` to a latency budget on the table's device, with the user's functions for all training.

    The method runs through the same registry entry as ``host prune --method`` (:data:`METHODS
    <edgeshrink.host.prune.methods.METHODS>`) with the user's functions as its trainer
    (:class:`~edgeshrink.host.train.UserTrainer`); the methods that read training batches themselves are not offered.

    Args:
        model: any ``nn.Module`` the pruning space can trace (not modified; a pruned copy is returned).
        example_input: an input tensor ``(1, C, H, W)`` or its shape; must match the table's input shape.
        table: a :class:`edgeshrink.LatencyTable` or the path of one (``host table build --model file.py:factory``).
        budget: the target as a fraction of the table's prediction of ``model`` (``budget_ms`` instead: in ms).
        method: one of :data:`SHRINK_METHODS` (``netadapt``, ``uniform``, ``magnitude``).
        train_one_epoch: ``train_one_epoch(model, lr)``: NetAdapt's short-term fine-tuning of each proposal.
        train: ``train(model)``: the recovery after pruning (skipped when None).
        test: ``test(model) -> float``, larger is better (top-1, mIoU...): NetAdapt's selection, and the
            before/after scores of the result.
        prune_only: a sub-module name (the tool's ``back_bone_only``): only groups entirely inside it are pruned.
        ignore: layer or module names kept whole (a detection head, the classifier).
        output: ``"pytorch"`` (the pruned module) or ``"onnx"`` (also ``out_dir/model.onnx`` with its
            ``artifact.json``, checked against torch).
        select_output: for a model whose forward returns a dict, list or tuple, the key, index or callable that picks
            the tensor to trace, export and time.
        short_term_lr, init_reduction, decay: NetAdapt's settings (None: :class:`NetAdaptConfig`'s defaults, the
            ones ``host prune`` uses).
        config: the method's settings object (``NetAdaptConfig``, ``MagnitudeConfig``...; None: its defaults).
        out_dir: where ONNX files go (default: a temporary folder, removed unless ``output="onnx"``).
        measure: measure the unpruned and pruned ONNX side by side on ``device`` (default: the table's device) for
            about ``bench_seconds``.
        tensorboard: log NetAdapt's iterations and the scores to TensorBoard in this folder.

    Returns:
        :class:`ShrinkResult`.

    Raises:
        UserError: an unknown method or one that needs a dataset, an unknown output, a missing function the method
            needs, a budget out of range or unreachable (``BudgetError``), names in ``prune_only`` / ``ignore`` that
            are not in the model, an input shape the table was not measured at, settings out of range; ``TableError``
            when the table lacks one of the model's layers (it names the layer); ``UnsupportedOpError`` for a model
            the pruning space cannot trace (it names the op).
    """
    t0 = time.monotonic()
    if method not in SHRINK_METHODS:
        why = f"{method} reads training batches itself: run it through host prune" if method in METHODS else \
            f"unknown method {method!r}"
        raise UserError(f"shrink: method must be one of {', '.join(SHRINK_METHODS)} (the methods that run on your own "
                        f"functions); {why}")
    spec = METHODS[method]
    if output not in OUTPUTS:
        raise UserError(f"shrink: output must be 'pytorch' or 'onnx', got {output!r}")
    if method == "netadapt" and (train_one_epoch is None or test is None):
        raise UserError("shrink: netadapt needs train_one_epoch(model, lr) and test(model)")
    if budget_ms is None and not (budget is not None and 0 < budget < 1):
        raise UserError(f"shrink: budget must be a fraction in (0, 1), got {budget!r}")
    cfg = config if config is not None else spec.config()
    if not isinstance(cfg, spec.config):
        raise UserError(f"shrink: {method} takes {spec.config.__name__} settings, not {type(cfg).__name__}")
    given = {"short_term_lr": short_term_lr, "init_reduction": init_reduction, "decay": decay}
    cfg = replace(cfg, **{k: v for k, v in given.items() if v is not None and hasattr(cfg, k)})
    check_config(method, cfg)
    if isinstance(table, (str, os.PathLike)):
        table = load_table(str(table))
    elif not isinstance(table, LatencyTable):
        raise UserError(f"shrink: table must be a LatencyTable or the path of one, got {type(table).__name__}")
    if measure:  # refused before any work where nothing here can measure (an imported table)
        device = require_device(table, "shrink's table", device)
    shape = tuple(example_input.shape) if isinstance(example_input, torch.Tensor) else tuple(int(v) for v in example_input)
    if list(shape) != list(table.input_shape):
        raise UserError(f"shrink: the table was measured at input {'x'.join(map(str, table.input_shape))}, the "
                        f"example input is {'x'.join(map(str, shape))}")
    work = copy.deepcopy(model).eval()
    wrapped = select_output is not None
    net = SelectOutput(work, select_output) if wrapped else work
    net.model_name = getattr(model, "model_name", type(model).__name__)
    predictor = TablePredictor.for_model(table, net)
    if predictor.transfer_note():
        ui.log(predictor.transfer_note())
    space = predictor.space
    frozen = _frozen_groups(space, net, _prefixed(prune_only, wrapped), [_prefixed(i, wrapped) for i in ignore])
    granularity = int(table.build.get("granularity", 4))
    base_ms = predictor.predict_ms(space.widths_from_spec(models.channel_spec(net)))
    target = budget_ms if budget_ms is not None else budget * base_ms
    writer = open_writer(tensorboard)
    trainer = UserTrainer(train_one_epoch, train, test, unwrap=(lambda m: m.model) if wrapped else None)
    base_score = trainer.score(net) if test else None

    def on_event(kind: str, info: Dict[str, object]) -> None:
        if kind == "chosen":
            ui.log(f"iter {info['iteration']:2d}: {info['chosen_group']} {info['width_before']}->"
                   f"{info['width_after']} | predicted {info['predicted_ms']:.4f} ms | test {info['val_top1']:.4g}")
            writer.scalars(method, {"predicted_ms": info["predicted_ms"], "score": info["val_top1"]},
                           int(info["iteration"]))

    ctx = MethodContext(net, None, space, predictor, net.model_name, 0, granularity, target, seed=getattr(cfg, "seed", 0),
                        log=ui.log, example_shape=shape, trainer=trainer, frozen=tuple(frozen), on_event=on_event)
    check_method_reachable(ctx, cfg, method)
    ui.log(f"shrink ({method}): predicted {base_ms:.4f} ms -> budget {target:.4f} ms, {len(space.groups)} channel "
           f"groups ({len(frozen)} kept whole)" + (f", test score {base_score:.4g}" if base_score is not None else ""))
    pruned, history = spec.run(ctx, cfg)
    pruned, _, _ = recover(pruned, "fine-tune", ctx, 0, 0.0, None)  # the user's train(model), when given
    pruned.eval()
    final_widths = space.widths_from_spec(models.channel_spec(pruned))
    pruned_ms = predictor.predict_ms(final_widths)
    final_score = trainer.score(pruned) if test else None
    writer.scalars("shrink", {"baseline_ms_predicted": base_ms, "pruned_ms_predicted": pruned_ms,
                              "baseline_score": base_score, "score": final_score}, 0)
    writer.close()
    result = ShrinkResult(model=pruned.model if wrapped else pruned, onnx=None, method=method,
                          baseline_ms_predicted=base_ms, pruned_ms_predicted=pruned_ms, budget_ms=target,
                          baseline_score=base_score, score=final_score, widths=final_widths, history=history,
                          table_fit=predictor.fit_record())
    if measure or output == "onnx":
        _export_and_measure(result, net, pruned, shape, table, output, out_dir, measure, device, bench_seconds)
    result.wall_s = round(time.monotonic() - t0, 2)
    ui.log(f"shrink: predicted {base_ms:.4f} -> {pruned_ms:.4f} ms"
           + (f", measured {result.baseline_ms_measured:.4f} -> {result.pruned_ms_measured:.4f} ms (ratio "
              f"{result.measured_ratio:.3f})" if result.measured_ratio else "")
           + (f", test score {base_score:.4g} -> {final_score:.4g}" if final_score is not None else "")
           + f" ({result.wall_s:.0f} s)")
    return result


def _export_and_measure(result: ShrinkResult, base: nn.Module, pruned: nn.Module, shape, table, output: str,
                        out_dir: Optional[str], measure: bool, device: Optional[str], bench_seconds: float) -> None:
    tmp = None
    if out_dir is None and output != "onnx":
        tmp = tempfile.TemporaryDirectory(prefix="edgeshrink-shrink-")
    folder = out_dir or (tmp.name if tmp else "shrink_out")
    os.makedirs(folder, exist_ok=True)
    try:
        # the baseline as the pruned network is deployed (export/'s one ONNX path); the pruned one is the artifact
        paths = {"baseline": os.path.join(folder, "baseline.onnx"), "model": os.path.join(folder, "model.onnx")}
        export_checked_onnx(base.eval(), shape, paths["baseline"])
        result.sha256 = ship_onnx(pruned.eval(), shape, folder, None)["sha256"]
        if output == "onnx":
            result.onnx = paths["model"]
        if measure:
            got = confirm_on_device(paths["baseline"], paths["model"], table, device,
                                    [result.baseline_ms_predicted, result.pruned_ms_predicted], bench_seconds)
            result.baseline_ms_measured = stat_ms(got["models"][paths["baseline"]], table.statistic)
            result.pruned_ms_measured = stat_ms(got["models"][paths["model"]], table.statistic)
            result.measured_sha256 = got["models"][paths["model"]]["sha256"]
    finally:
        if tmp is not None:
            tmp.cleanup()
