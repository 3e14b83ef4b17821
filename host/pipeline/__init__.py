"""The main job (``host prune`` and ``host demo``): budget -> method (NetAdapt, resumable) -> long-term
fine-tuning -> export -> the device's confirmation -> the report.

Each step is its own module: :mod:`.budget` (the budget as the table predicts it), :mod:`.resume` (the
method's state after each iteration), :mod:`.confirm` (baseline and pruned measured side by side on the device)
and :mod:`.report` (``report.json`` and its summary table).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn

from edgeshrink import models
from edgeshrink.device.provenance import sha256_file
from edgeshrink.host import __version__, ui
from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from edgeshrink.host.data import Dataset, load_dataset
from edgeshrink.host.errors import CheckpointError, TableError, UserError
from edgeshrink.host.export.onnx import check_onnx, export_onnx
from edgeshrink.host.io import prepare_dir, write_json
from edgeshrink.host.latency.predict import TablePredictor
from edgeshrink.host.latency.table import check_backend, fmt_shape, load_table
from edgeshrink.host.pipeline.budget import resolve_budget
from edgeshrink.host.pipeline.confirm import check_bench_seconds, confirm_on_device, not_measured
from edgeshrink.host.pipeline.report import PruneReport, render_report, side
from edgeshrink.host.pipeline.resume import ResumeState
from edgeshrink.host.prune.netadapt import NetAdapt, NetAdaptConfig
from edgeshrink.host.train import TrainConfig, evaluate, train

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


def _macs_params(model: nn.Module, input_shape) -> Dict[str, int]:
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model, torch.zeros(*input_shape))
    return {"macs": int(macs), "params": int(params)}


def _versions() -> Dict[str, str]:
    import onnx
    import onnxruntime
    import torch_pruning

    return {"edgeshrink": __version__, "torch": torch.__version__,
            "torch_pruning": getattr(torch_pruning, "__version__", "?"), "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


def _run_netadapt(na: NetAdapt, state: ResumeState, resume: bool, name: str, num_classes: int,
                  long_term: TrainConfig, data: Dataset) -> Tuple[nn.Module, list, float, float]:
    """NetAdapt with its resume state, then long-term fine-tuning, with progress bars.

    Returns:
        ``(pruned model, long-term history, NetAdapt seconds, long-term seconds)``.
    """
    with ui.progress() as prog:
        iter_task = prog.add_task("NetAdapt iterations", total=None)
        cand_task = prog.add_task("  candidates", total=None)

        def on_event(kind: str, info: Dict[str, object]) -> None:
            if kind == "iteration":
                prog.update(cand_task, completed=0, total=info["candidates"])
                prog.update(iter_task, description=f"NetAdapt iteration {info['iteration']}")
            elif kind == "candidate":
                prog.update(cand_task, completed=info["index"],
                            description=f"  {info['group']} -> {info['width']} ch, val {info['val_top1']:.2f}%")
                if not ui.interactive():
                    ui.log(f"  candidate {info['index']}/{info['of']}: {info['group']} -> {info['width']} ch, "
                           f"predicted {info['predicted_ms']:.4f} ms, val top-1 {info['val_top1']:.2f}%")
            elif kind == "chosen":
                prog.advance(iter_task)
                ui.log(f"iter {info['iteration']:2d}: target {info['target_ms']:.4f} ms"
                       f"{' (relaxed)' if info['target_relaxed'] else ''} | {info['chosen_group']} "
                       f"{info['width_before']}->{info['width_after']} | predicted {info['predicted_ms']:.4f} ms | "
                       f"val top-1 {info['val_top1']:.2f}% | {len(info['candidates'])} candidates, {info['wall_s']:.1f} s")

        na.on_event = on_event
        prog.update(iter_task, total=na.expected_iterations())
        start = 0
        if resume:
            saved = state.load(name, num_classes)
            if saved is not None:
                na.restore_(*saved)
                start = len(na.history)
                ui.log(f"resuming after iteration {start} from {state.path}")
                prog.update(iter_task, completed=start)
        t_na = time.monotonic()
        pruned = na.run(start_iteration=start, after_iteration=lambda n: state.save(n.model, n.history))
        netadapt_s = time.monotonic() - t_na
        t_lt = time.monotonic()
        history = []
        if long_term.epochs > 0:
            lt_task = prog.add_task("long-term fine-tuning", total=long_term.epochs)
            history = train(pruned, data, long_term, on_epoch=lambda e, m: prog.update(lt_task, completed=e))
            ui.log(f"long-term fine-tuning: {long_term.epochs} epochs, val top-1 {history[-1]['val_top1']:.2f}%")
    return pruned, history, netadapt_s, time.monotonic() - t_lt


def run_prune(job: PruneJob, na_cfg: NetAdaptConfig, data: Optional[Dataset] = None) -> Dict[str, object]:
    """Prune ``job.checkpoint`` with NetAdapt until the table predicts the budget, fine-tune long-term, export and
    measure baseline and pruned side by side on the device, write ``model.pt``, ``model.onnx``, ``baseline.onnx``
    and ``report.json`` into ``job.out``; returns the report (:class:`PruneReport` as a dict).

    ``na_cfg.budget_ms`` and ``granularity`` are ignored; the budget comes from ``job`` and the grid from the table.
    With ``job.resume`` a run continues from the last completed NetAdapt iteration (:mod:`.resume`).

    Raises:
        UserError subclasses: unreadable table/checkpoint/dataset, table for another model or input shape,
            unreachable budget, classes that do not match, ``bench_seconds`` not positive.
    """
    t_start = time.monotonic()
    out = Path(job.out)
    check_bench_seconds(job.bench_seconds)  # refused before any work, not after NetAdapt
    table = load_table(job.table)
    check_backend(table, job.table, job.backend)
    # An imported table (the earlier NetAdapt work's Raspberry Pi table) describes a board that is not here:
    # prune with its predictions and leave the confirmation to `host bench` on that board, unless --device names one.
    confirm = job.device is not None or table.device.get("spec") not in (None, "imported")
    ckpt = load_checkpoint(job.checkpoint)
    base_model = model_from_checkpoint(ckpt, job.model, job.checkpoint)
    name = ckpt["model"]
    input_shape = tuple(ckpt.get("input_shape", table.input_shape))
    if list(input_shape) != list(table.input_shape):
        raise TableError(f"{job.table} was measured at input {fmt_shape(table.input_shape)}, but {job.checkpoint} "
                         f"takes {fmt_shape(input_shape)}; build a table at that input")
    predictor = TablePredictor.for_model(table, models.create_model(name, ckpt["num_classes"]))
    space = predictor.space
    data = data or load_dataset(job.dataset, job.data_dir, seed=job.seed)
    if data.num_classes != ckpt["num_classes"]:
        raise CheckpointError(f"{job.checkpoint} has {ckpt['num_classes']} classes, dataset {data.name} has "
                              f"{data.num_classes}")
    if tuple(data.input_shape) != tuple(input_shape):
        raise UserError(f"dataset {data.name} gives inputs {data.input_shape}, the table and checkpoint use {input_shape}")

    base_widths = space.widths_from_spec(ckpt["channels"])  # the checkpoint's (possibly already pruned) widths
    baseline_pred = predictor.predict_ms(base_widths)
    budget_ms = resolve_budget(baseline_pred, job.budget if job.budget_ms is None else None, job.budget_ms)
    cfg = NetAdaptConfig(**{**na_cfg.to_dict(), "budget_ms": budget_ms,
                            "granularity": int(table.build.get("granularity", na_cfg.granularity))})
    na = NetAdapt(base_model, data, space, predictor, cfg)
    na.check_reachable()  # an impossible budget is bad input: refuse it before any work
    ui.log(f"[bold]NetAdapt[/] {name}: predicted {baseline_pred:.4f} ms -> budget {budget_ms:.4f} ms "
           f"({budget_ms / baseline_pred:.0%}) on {table.device.get('spec')} / {table.backend}, "
           f"select={cfg.select}, {len(space.groups)} channel groups")

    prepare_dir(out, "--out")  # after every refusal above: a refused prune leaves no folder behind
    base_eval = {"val": evaluate(base_model, data, "val"), "test": evaluate(base_model, data, "test")}
    state = ResumeState(str(out), sha256_file(job.checkpoint), budget_ms,
                        {"table_sha256": sha256_file(job.table),
                         **{k: getattr(cfg, k) for k in ("granularity", "init_reduction", "decay", "short_term_steps",
                                                         "short_term_lr", "select", "batch_size", "seed")}})
    long_term_cfg = TrainConfig(epochs=cfg.long_term_epochs, lr=cfg.long_term_lr, batch_size=cfg.batch_size,
                                schedule="cosine", seed=cfg.seed)
    pruned, long_term, netadapt_s, long_term_s = _run_netadapt(na, state, job.resume, name, ckpt["num_classes"],
                                                               long_term_cfg, data)
    pruned.eval()
    pruned_eval = {"val": evaluate(pruned, data, "val"), "test": evaluate(pruned, data, "test")}
    pruned_widths = space.widths_from_spec(models.channel_spec(pruned))
    pruned_pred = predictor.predict_ms(pruned_widths)
    save_checkpoint(str(out / "model.pt"), pruned, ckpt["num_classes"], dataset=data.name,
                    input_shape=list(input_shape), metrics=pruned_eval, source_checkpoint=str(job.checkpoint),
                    latency_ms_predicted=pruned_pred)

    # Export both and measure them side by side on the device the table was measured on.
    onnx_base, onnx_pruned = str(out / "baseline.onnx"), str(out / "model.onnx")
    export_onnx(base_model, input_shape, onnx_base)
    export_onnx(pruned, input_shape, onnx_pruned)
    checks = {"baseline": check_onnx(base_model, onnx_base, input_shape),
              "pruned": check_onnx(pruned, onnx_pruned, input_shape)}
    if confirm:
        bench = confirm_on_device(onnx_base, onnx_pruned, table, job.device or table.device.get("spec") or "local",
                                  [baseline_pred, pruned_pred], job.bench_seconds, job.bench_iters, job.bench_rounds,
                                  job.power, job.trust_new_host, str(out / "device_logs"))
    else:
        ui.log(f"[yellow]{job.table} was imported ({table.device.get('board')}, {table.device.get('runtime')}): the "
               "latencies below are the table's predictions; nothing was measured. Confirm on that board with "
               "`host bench model.onnx --device ssh://...` (or pass --device)[/]")
        bench = not_measured(onnx_base, onnx_pruned)
    interleaved = bool(bench.get("interleaved"))
    report = PruneReport(
        model=name, dataset=data.name, checkpoint=str(job.checkpoint), table=str(job.table),
        input_shape=list(input_shape), device=bench["device"], backend=table.backend, precision=table.precision,
        threads=table.threads, table_device=table.device, budget_ms=budget_ms,
        budget_fraction=budget_ms / baseline_pred,
        baseline=side(base_eval, _macs_params(base_model, input_shape), baseline_pred, table.statistic,
                      models.channel_spec(base_model), onnx_base, bench["models"][onnx_base], interleaved),
        pruned=side(pruned_eval, _macs_params(pruned, input_shape), pruned_pred, table.statistic,
                    models.channel_spec(pruned), onnx_pruned, bench["models"][onnx_pruned], interleaved),
        confirmed_on_device=confirm, method=cfg.to_dict(), iterations=na.history, long_term=long_term,
        onnx_check=checks, measurement={k: bench.get(k) for k in ("rounds", "warmup", "iters", "interleaved", "loads")},
        power={"baseline": bench["models"][onnx_base].get("power"),
               "pruned": bench["models"][onnx_pruned].get("power")} if job.power and confirm else None,
        throttled=confirm and any(bench["models"][p]["throttled"] for p in (onnx_base, onnx_pruned)),
        versions=_versions(),
        wall_s={"netadapt": round(netadapt_s, 1), "long_term": round(long_term_s, 1),
                "total": round(time.monotonic() - t_start, 1)}).to_dict()
    write_json(out / "report.json", report)
    state.clear()
    return report
