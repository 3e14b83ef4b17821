"""The main job (``host prune``, ``host compare`` and ``host demo``): budget -> method (any of
:data:`edgeshrink.host.prune.methods.METHODS`, resumable) -> recovery training -> export -> the device's
confirmation -> the report.

Each step is its own module: :mod:`.budget` (the budget as the table predicts it), :mod:`.resume` (the
method's state after each iteration), :mod:`.confirm` (baseline and pruned measured side by side on the device)
and :mod:`.report` (``report.json`` and its summary table).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import onnx
import onnxruntime
import torch
import torch.nn as nn
import torch_pruning
import torch_pruning as tp

from edgeshrink import models
from edgeshrink.host import __version__
from edgeshrink.host import distributed as dist_
from edgeshrink.host import ui
from edgeshrink.host.checkpoint import save_checkpoint
from edgeshrink.host.data import Dataset
from edgeshrink.host.errors import TableError, UserError
from edgeshrink.host.export.artifact import export_checked_onnx, ship_onnx
from edgeshrink.host.io import prepare_dir, write_json
from edgeshrink.host.job_inputs import resolve_inputs
from edgeshrink.host.latency.predict import TablePredictor
from edgeshrink.host.latency.table import fmt_shape
from edgeshrink.host.pipeline.budget import resolve_budget
from edgeshrink.host.pipeline.confirm import check_bench_seconds, confirm_on_device, not_measured
from edgeshrink.host.pipeline.plots import plot_widths
from edgeshrink.host.pipeline.report import PruneReport, render_report, side
from edgeshrink.host.pipeline.resume import ResumeState
from edgeshrink.host.prune.config import NetAdaptConfig
from edgeshrink.host.prune.methods import (METHODS, MethodContext, check_config, check_method_reachable, method_spec,
                                           recover)
from edgeshrink.host.tensorboard import open_writer
from edgeshrink.host.train import METRIC_NAMES, check_task, evaluate, metric_text

__all__ = ["PruneJob", "run_prune", "render_report"]


@dataclass(frozen=True)
class PruneJob:
    table: str  # latency table path
    checkpoint: str  # trained checkpoint path
    out: str  # output folder
    model: Optional[str] = None  # expected architecture (checked against the checkpoint)
    dataset: str = "digits"
    data_dir: Optional[str] = None
    budget: Optional[float] = 0.5  # fraction of the unpruned predicted latency
    budget_ms: Optional[float] = None  # absolute target; overrides budget
    device: Optional[str] = None  # where to measure; default the table's device
    backend: Optional[str] = None  # the backend the user expects the table to be for
    bench_iters: int = 300  # with power or a self-timed backend: timed runs per model per round
    bench_rounds: int = 3  # with power or a self-timed backend: rounds, each model loaded afresh
    bench_seconds: float = 20.0  # otherwise: timed side by side like calibration networks for at least this long
    resume: bool = False
    seed: int = 0
    trust_new_host: bool = False  # ssh:// devices: accept and record an unknown host key
    power: Optional[str] = None  # power meter on the device (tegrastats, pmic, hwmon, auto); None: no power
    method: str = "netadapt"  # a name of METHODS
    recover: Optional[str] = None  # fine-tune | lr-rewind | scratch | none; None: the method's default
    long_term_epochs: Optional[int] = None  # recovery epochs; None: NetAdaptConfig's for netadapt, else 10
    long_term_lr: Optional[float] = None  # fine-tuning's peak lr; None: NetAdaptConfig's for netadapt, else 0.01
    pruning_rate: Optional[float] = None  # remove this fraction of the parameters instead of meeting a budget
    measure: bool = True  # False: skip the device's confirmation (host compare measures every network together)
    tensorboard: Optional[str] = None  # also log the iterations and the recovery's epochs to TensorBoard here
    input: Optional[Tuple[int, ...]] = None  # the deployment input (1, C, H, W) expected of the table; None: the table's
    pruner_input: Optional[Tuple[int, ...]] = None  # prune (train, evaluate, trace) at this smaller input; None: the
    #   deployment input


def _macs_params(model: nn.Module, input_shape) -> Dict[str, int]:
    macs, params = tp.utils.count_ops_and_params(model, torch.zeros(*input_shape))
    return {"macs": int(macs), "params": int(params)}


def _versions() -> Dict[str, str]:
    return {"edgeshrink": __version__, "torch": torch.__version__,
            "torch_pruning": getattr(torch_pruning, "__version__", "?"), "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


def check_pruner_input(pruner, deploy) -> Tuple[int, ...]:
    """``--pruner-input`` as a tuple, checked against the deployment input: ``(1, C, h, w)`` with the deployment's
    ``C`` and ``h, w`` no larger than its.

    Raises:
        UserError: naming both shapes.
    """
    pruner, deploy = tuple(int(v) for v in pruner), tuple(int(v) for v in deploy)
    if len(pruner) != 4 or pruner[0] != 1 or pruner[1] != deploy[1] or any(v < 1 for v in pruner):
        raise UserError(f"--pruner-input {fmt_shape(pruner)} must be 1x{deploy[1]}xHxW (the deployment input is "
                        f"{fmt_shape(deploy)})")
    if pruner[2] > deploy[2] or pruner[3] > deploy[3]:
        raise UserError(f"--pruner-input {fmt_shape(pruner)} is larger than the deployment input {fmt_shape(deploy)}; "
                        "prune at the smaller shape")
    return pruner


def _progress_events(prog, method: str) -> Callable[[str, Dict[str, object]], None]:
    """A method's progress events as bars and log lines (NetAdapt's iterations and candidates)."""
    tasks: Dict[str, object] = {}
    metric = ["top-1"]

    def on_event(kind: str, info: Dict[str, object]) -> None:
        if kind == "start":
            metric[0] = METRIC_NAMES.get(info["metric"], info["metric"])
            tasks["iter"] = prog.add_task(f"{method} iterations", total=info["expected_iterations"],
                                          completed=info["done"])
            tasks["cand"] = prog.add_task("  candidates", total=None)
        elif kind == "iteration":
            prog.update(tasks["cand"], completed=0, total=info["candidates"])
            prog.update(tasks["iter"], description=f"{method} iteration {info['iteration']}")
        elif kind == "candidate":
            prog.update(tasks["cand"], completed=info["index"], description=f"  {info['group']} -> {info['width']} "
                        f"ch, val {metric[0]} {info['val_top1']:.2f}%")
            if not ui.interactive():
                ui.log(f"  candidate {info['index']}/{info['of']}: {info['group']} -> {info['width']} ch, "
                       f"predicted {info['predicted_ms']:.4f} ms, val {metric[0]} {info['val_top1']:.2f}%")
        elif kind == "chosen":
            prog.advance(tasks["iter"])
            ui.log(f"iter {info['iteration']:2d}: target {info['target_ms']:.4f} ms"
                   f"{' (relaxed)' if info['target_relaxed'] else ''} | {info['chosen_group']} "
                   f"{info['width_before']}->{info['width_after']} | predicted {info['predicted_ms']:.4f} ms | "
                   f"val {metric[0]} {info['val_top1']:.2f}% | {len(info['candidates'])} candidates, {info['wall_s']:.1f} s")

    return on_event


class _MethodResume:
    """A method's own progress in the prune's resume state (NetAdapt's completed iterations)."""

    def __init__(self, state: ResumeState, ctx: MethodContext, resume: bool):
        self.state, self.ctx, self.resume = state, ctx, resume

    def load(self):
        return self.state.load(self.ctx.name, self.ctx.num_classes, self.ctx.space.input_shape) if self.resume else None

    def save(self, model: nn.Module, history: list) -> None:
        self.state.save(model, history)


def _run_method(job: "PruneJob", cfg, ctx: MethodContext, state: ResumeState) -> Tuple[nn.Module, list]:
    """The registry method, its result kept in the resume state once it has finished (a resumed prune then goes
    straight to recovery); a method that keeps its own progress (NetAdapt) continues from it."""
    if job.resume:
        saved = state.load(ctx.name, ctx.num_classes, ctx.space.input_shape)
        if saved is not None and saved[1] and saved[1][-1].get("stage") == "method_done":
            ui.log(f"resuming: {job.method} finished before; its network is in {state.path}")
            return saved[0], saved[1][:-1]
    with ui.progress() as prog:
        ctx = replace(ctx, resume=_MethodResume(state, ctx, job.resume), on_event=_progress_events(prog, job.method))
        model, history = method_spec(job.method).run(ctx, cfg)
    state.save(model, history + [{"stage": "method_done"}])
    return model, history


def run_prune(job: PruneJob, cfg=None, data: Optional[Dataset] = None,
              base_eval: Optional[Dict[str, Dict[str, float]]] = None) -> Dict[str, object]:
    """Prune ``job.checkpoint`` with ``job.method`` until the table predicts the budget (or ``job.pruning_rate`` of
    the parameters is removed), recover (``job.recover``), export and measure baseline and pruned side by side on the
    device, write ``model.pt``, ``model.onnx``, ``baseline.onnx``, ``widths.png`` and ``report.json`` into
    ``job.out``; returns the report (:class:`PruneReport` as a dict).

    Args:
        cfg: the method's settings (``NetAdaptConfig`` for netadapt, ``MagnitudeConfig`` for magnitude, ...; see
            :data:`edgeshrink.host.prune.methods.METHODS`); None: its defaults. NetAdaptConfig's ``budget_ms`` and
            ``granularity`` are ignored; the budget comes from ``job`` and the grid from the table.
        base_eval: the checkpoint's ``{"val": evaluate(...), "test": evaluate(...)}`` when already known (``host
            compare`` evaluates it once for all its runs).

    With ``job.resume`` a run continues from the last completed NetAdapt iteration, or after the finished method.

    Raises:
        UserError subclasses: unreadable table/checkpoint/dataset, table for another model or input shape,
            unreachable budget, classes that do not match, an unknown method, settings of another method or out of
            range, ``bench_seconds`` not positive.
    """
    t_start = time.monotonic()
    out = Path(job.out)
    spec, cfg = _method_settings(job, cfg)
    mode = job.recover or spec.recover
    # the recovery's schedule: the job's, else the method's own (NetAdapt's long-term fine-tuning), else its defaults
    lt_epochs = job.long_term_epochs if job.long_term_epochs is not None else \
        getattr(cfg, "long_term_epochs", NetAdaptConfig.long_term_epochs)
    lt_lr = job.long_term_lr if job.long_term_lr is not None else getattr(cfg, "long_term_lr", NetAdaptConfig.long_term_lr)
    # An imported table (the earlier NetAdapt work's Raspberry Pi table) describes a board that is not here:
    # prune with its predictions and leave the confirmation to `host bench` on that board, unless --device names one.
    inputs = resolve_inputs(job.checkpoint, job.table, job.device, job.backend, job.model, measure=False)
    table, ckpt, base_model, device = inputs.table, inputs.checkpoint, inputs.model, inputs.device
    confirm = job.measure and device is not None
    name = ckpt["model"]
    if mode in ("lr-rewind", "scratch") and not isinstance(ckpt.get("train_config"), dict):
        raise UserError(f"--recover {mode} replays the original training schedule, and {job.checkpoint} has none "
                        "(train it with `host train`, or use --recover fine-tune)")
    input_shape, pruner_shape = _shapes(job, table, ckpt)
    predictor = TablePredictor.for_model(table, models.create_model(name, ckpt["num_classes"]))
    if predictor.transfer_note():
        ui.log(predictor.transfer_note())
    if ckpt.get("gates"):
        ui.log(f"{job.checkpoint} has SkipNet {ckpt['gates']['kind']} gates: they are pruned with the streams they read "
               "and trained in the recovery; the table's predictions and the confirmation are for every block run, "
               "`host dynamic` measures the gated network per input")
    space = predictor.space

    dist_.agree(inputs.table_sha256, f"the table ({job.table})")
    dist_.agree(inputs.checkpoint_sha256, f"the checkpoint ({job.checkpoint})")
    dist_.agree((job.method, job.budget, job.budget_ms, job.seed, cfg.to_dict()), "the prune settings")
    data = inputs.check_data(data) if data is not None else inputs.load_data(job.dataset, job.data_dir, job.seed)
    if tuple(data.input_shape) != tuple(pruner_shape):
        raise UserError(f"dataset {data.name} gives inputs {fmt_shape(data.input_shape)}, pruning runs at "
                        f"{fmt_shape(pruner_shape)} ({'--pruner-input' if job.pruner_input else 'the table and checkpoint'})")
    check_task(base_model, data)
    criterion = (ckpt.get("train_config") or {}).get("criterion", "crossentropy")
    if pruner_shape != input_shape:
        ui.log(f"pruning at {fmt_shape(pruner_shape)} (training, evaluation, surgery); the table, the export and the "
               f"measurement at the deployment input {fmt_shape(input_shape)}")

    base_widths = space.widths_from_spec(ckpt["channels"])  # the checkpoint's (possibly already pruned) widths
    baseline_pred = predictor.predict_ms(base_widths)
    budget_ms = None if job.pruning_rate is not None else \
        resolve_budget(baseline_pred, job.budget if job.budget_ms is None else None, job.budget_ms)
    granularity = int(table.build.get("granularity", getattr(cfg, "granularity", 4)))
    # settings the method reads from the job (a budget, the table's grid, the checkpoint's loss) are recorded as used
    cfg = replace(cfg, **{k: v for k, v in (("budget_ms", budget_ms), ("granularity", granularity),
                                            ("loss", criterion)) if hasattr(cfg, k)})
    ctx = MethodContext(base_model, data, space, predictor, name, ckpt["num_classes"], granularity, budget_ms,
                        job.pruning_rate, batch_size=getattr(cfg, "batch_size", 64), seed=job.seed, log=ui.log,
                        example_shape=pruner_shape, criterion=criterion)
    target = f"budget {budget_ms:.4f} ms ({budget_ms / baseline_pred:.0%})" if budget_ms is not None else \
        f"pruning rate {job.pruning_rate:g} of the parameters"
    check_method_reachable(ctx, cfg, job.method)  # an impossible budget is bad input: refused before any work
    ui.log(f"[bold]{job.method}[/] ({spec.summary}) {name}: predicted {baseline_pred:.4f} ms -> {target} on "
           f"{table.device.get('spec')} / {table.backend}, {len(space.groups)} channel groups, recovery {mode}")

    if dist_.is_main():
        prepare_dir(out, "--out")  # after every refusal above: a refused prune leaves no folder behind
    dist_.barrier()
    base_eval = base_eval or {"val": evaluate(base_model, data, "val"), "test": evaluate(base_model, data, "test")}
    settings = cfg.to_dict()
    state = ResumeState(str(out), inputs.checkpoint_sha256, float(budget_ms if budget_ms is not None else -1.0),
                        {"table_sha256": inputs.table_sha256, "method": job.method, "granularity": granularity,
                         "pruning_rate": job.pruning_rate, "seed": job.seed,
                         **{k: v for k, v in settings.items() if k not in ("budget_ms", "long_term_epochs",
                                                                           "long_term_lr", "max_iters")}})
    t_method = time.monotonic()
    if not dist_.is_main():
        state.save = lambda *a, **k: None  # rank 0 keeps the resume state; the others hold the same network
    pruned, history = _run_method(job, cfg, ctx, state)
    method_s = time.monotonic() - t_method
    t_lt = time.monotonic()
    pruned, long_term, recovery = _recover_logged(job, pruned, history, mode, ctx, lt_epochs, lt_lr,
                                                  ckpt.get("train_config"), data)
    long_term_s = time.monotonic() - t_lt
    pruned.eval()
    if not dist_.is_main():  # rank 0 evaluates, exports, measures and writes the report
        return {}
    pruned_eval = {"val": evaluate(pruned, data, "val"), "test": evaluate(pruned, data, "test")}
    pruned_widths = space.widths_from_spec(models.channel_spec(pruned))
    # layers in their eigenbasis form (eigendamage): the plain layer's prediction less the saving measured side by side
    pruned_pred = ctx.predict(pruned_widths) - sum(r.get("saving_ms", 0.0) for r in history
                                                   if r.get("stage") == "eigenbasis")
    save_checkpoint(str(out / "model.pt"), pruned, ckpt["num_classes"], dataset=data.name,
                    input_shape=list(input_shape), metrics=pruned_eval, source_checkpoint=str(job.checkpoint),
                    latency_ms_predicted=pruned_pred, method=job.method,
                    **({"train_config": ckpt["train_config"]} if isinstance(ckpt.get("train_config"), dict) else {}))

    # Deploy both through export/ (the pruned network is the artifact, with its artifact.json) and measure those
    # very files side by side on the device the table was measured on.
    onnx_base, onnx_pruned = str(out / "baseline.onnx"), str(out / "model.onnx")
    shipped, checks, bench = _deploy_and_measure(job, table, device, confirm, base_model, pruned, input_shape, out,
                                                 onnx_base, [baseline_pred, pruned_pred])
    interleaved = bool(bench.get("interleaved"))
    report = PruneReport(
        model=name, model_source=models.describe_model(base_model), dataset=data.name, checkpoint=str(job.checkpoint), table=str(job.table),
        input_shape=list(input_shape), device=bench["device"], backend=table.backend, precision=table.precision,
        threads=table.threads, table_device=table.device, table_fit=predictor.fit_record(), budget_ms=budget_ms,
        budget_fraction=budget_ms / baseline_pred if budget_ms is not None else None,
        baseline=side(base_eval, _macs_params(base_model, input_shape), baseline_pred, table.statistic,
                      models.channel_spec(base_model), onnx_base, bench["models"][onnx_base], interleaved),
        pruned=side(pruned_eval, _macs_params(pruned, input_shape), pruned_pred, table.statistic,
                    models.channel_spec(pruned), onnx_pruned, bench["models"][onnx_pruned], interleaved),
        confirmed_on_device=confirm, artifact={"file": shipped["file"], "sha256": shipped["sha256"]},
        method=job.method, settings=settings, iterations=history, long_term=long_term,
        recovery=recovery, pruning_rate=job.pruning_rate,
        onnx_check=checks, measurement={k: bench.get(k) for k in ("rounds", "warmup", "iters", "interleaved", "loads")},
        power={"baseline": bench["models"][onnx_base].get("power"),
               "pruned": bench["models"][onnx_pruned].get("power")} if job.power and confirm else None,
        throttled=confirm and any(bench["models"][p]["throttled"] for p in (onnx_base, onnx_pruned)),
        versions=_versions(), pruner_input_shape=list(pruner_shape), metrics=list(data.metrics),
        table_build={"input_shape": list(table.input_shape), "wall_s": table.build.get("wall_s"),
                     "measurements": table.build.get("measurements"), "entries": len(table.entries)},
        wall_s={"method": round(method_s, 1), "long_term": round(long_term_s, 1),
                "total": round(time.monotonic() - t_start, 1)}).to_dict()

    plot_widths(space, base_widths, pruned_widths, str(out / "widths.png"),
                f"{name}: {job.method} to {target}")
    write_json(out / "report.json", report)
    state.clear()
    return report


def _recover_logged(job: PruneJob, pruned, history, mode: str, ctx, epochs: int, lr: float, train_config, data):
    """:func:`recover` with a progress line and, with ``job.tensorboard``, the method's iterations and the recovery's
    epochs logged as scalars. Returns what :func:`recover` returns: ``(model, per-epoch metrics, recovery record)``."""
    writer = open_writer(job.tensorboard)
    for rec in history:
        if "iteration" in rec:
            writer.scalars(job.method, {k: rec.get(k) for k in ("predicted_ms", "val_top1", "target_ms")},
                           int(rec["iteration"]))

    def on_epoch(e: int, m: Dict[str, object]) -> None:
        prog.update(task, completed=e)
        writer.scalars("recovery", m, e)

    with ui.progress() as prog:
        task = prog.add_task(f"recovery ({mode})", total=None)
        pruned, long_term, recovery = recover(pruned, mode, ctx, epochs, lr, train_config, on_epoch=on_epoch)
    writer.close()
    if long_term:
        ui.log(f"recovery ({mode}): {len(long_term)} epochs, val "
               + metric_text(long_term[-1], data.metrics, prefix="val_"))
    return pruned, long_term, recovery


def _method_settings(job: PruneJob, cfg):
    """The method's registry entry and its settings (``cfg``, else its defaults), checked against ``job`` before any
    work. Returns ``(spec, cfg)``. Raises UserError: settings of another method or out of range, a pruning rate
    for a method that does not take one or outside (0, 1), ``bench_seconds`` not positive."""
    spec = method_spec(job.method)
    if cfg is None:
        cfg = spec.config()
    if not isinstance(cfg, spec.config):
        raise UserError(f"--method {job.method} takes {spec.config.__name__} settings, not {type(cfg).__name__}")
    check_config(job.method, cfg)
    if job.pruning_rate is not None and not spec.threshold:
        raise UserError(f"--pruning-rate applies to the threshold methods "
                        f"({', '.join(n for n, m in METHODS.items() if m.threshold)}), not {job.method}")
    if job.pruning_rate is not None and not 0 < job.pruning_rate < 1:
        raise UserError(f"--pruning-rate must be a fraction in (0, 1), got {job.pruning_rate:g}")
    check_bench_seconds(job.bench_seconds)  # refused before any work, not after the method
    return spec, cfg


def _shapes(job: PruneJob, table, ckpt) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """``(deployment input, pruner input)``, each ``(N, C, H, W)``: the deployment input is the table's (the
    export's and the measurement's); pruning runs at ``job.pruner_input`` or else at the checkpoint's input, which
    must then be the table's. Raises TableError / UserError when they disagree."""
    input_shape = tuple(table.input_shape)
    if job.input is not None and tuple(job.input) != input_shape:
        raise TableError(f"--input {fmt_shape(job.input)} is the deployment input, but {job.table} was measured at "
                         f"{fmt_shape(input_shape)}; build the table at --input")
    ckpt_shape = tuple(ckpt.get("input_shape", input_shape))
    if job.pruner_input is not None:
        return input_shape, check_pruner_input(job.pruner_input, input_shape)
    if ckpt_shape != input_shape:
        raise TableError(f"{job.table} was measured at input {fmt_shape(table.input_shape)}, but {job.checkpoint} "
                         f"takes {fmt_shape(ckpt_shape)}; build a table at that input, or prune at --pruner-input "
                         f"{fmt_shape(ckpt_shape)} for a deployment at the table's")
    return input_shape, input_shape


def _deploy_and_measure(job: PruneJob, table, device, confirm: bool, base_model, pruned, input_shape, out: Path,
                        onnx_base: str, predicted_ms: List[float]):
    """Deploy baseline (to ``onnx_base``) and pruned network through export/ (the pruned one is the artifact in
    ``out``, its file named by the artifact.json) and measure those very files side by side on ``device`` when
    ``confirm``; otherwise say why nothing was measured. Returns ``(shipped, onnx checks, bench record)``."""
    _, base_check = export_checked_onnx(base_model, input_shape, onnx_base)
    shipped = ship_onnx(pruned, input_shape, out, str(out / "model.pt"))
    onnx_pruned = str(out / shipped["file"])
    checks = {"baseline": base_check, "pruned": shipped["check"]}
    if confirm:
        bench = confirm_on_device(onnx_base, onnx_pruned, table, device, predicted_ms, job.bench_seconds,
                                  job.bench_iters, job.bench_rounds, job.power, job.trust_new_host,
                                  str(out / "device_logs"))
    elif job.measure:
        ui.log(f"[yellow]{job.table} was imported ({table.device.get('board')}, {table.device.get('runtime')}): the "
               "latencies below are the table's predictions; nothing was measured. Confirm on that board with "
               "`host bench model.onnx --device ssh://...` (or pass --device)[/]")
        bench = not_measured(onnx_base, onnx_pruned)
    else:
        bench = not_measured(onnx_base, onnx_pruned, "not measured here: host compare measures every network together")
    return shipped, checks, bench
