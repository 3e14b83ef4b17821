"""The main job: NetAdapt to a latency budget from a table, long-term fine-tuning, export, and the
device's confirmation, written as a report (``host prune`` and ``host demo``)."""

from __future__ import annotations

import datetime as _dt
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import torch

import models
from host import __version__, ui
from device.runners import is_self_timed
from host.bench import bench_on_device, stat_ms
from host.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from host.data import Dataset, load_dataset
from host.errors import BudgetError, CheckpointError, TableError, UserError
from host.export.onnx import check_onnx, export_onnx
from host.io import write_json
from host.latency.table import TablePredictor, check_backend, fmt_shape, load_table
from host.latency.validate import NETWORK_ITERS, NETWORK_LOADS, NETWORK_ROUNDS, network_loads
from host.prune.netadapt import NetAdapt, NetAdaptConfig
from host.train import TrainConfig, evaluate, train

REPORT_SCHEMA = "edgeshrink.prune_report"
REPORT_SCHEMA_VERSION = 1
STATE_FILE = "netadapt_state.pt"


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


MAX_CONFIRMATION_ROUNDS = 20000


def check_bench_seconds(seconds: float) -> None:
    """Raises UserError unless ``seconds`` (``--bench-seconds``) is positive."""
    if not seconds > 0:
        raise UserError(f"--bench-seconds must be > 0, got {seconds:g}")


def confirmation_rounds(seconds: float, predicted_ms) -> int:
    """Round-robin bursts for the prune confirmation: enough bursts of :data:`NETWORK_ITERS` runs of every
    network for about ``seconds`` of timing, judged by the table's predictions (ms), and never fewer than the
    :data:`NETWORK_ROUNDS` a calibration or validation network gets (at most :data:`MAX_CONFIRMATION_ROUNDS`).

    Why a span and not a count: on a shared CPU the fast state that a table built by the minimum predicts can
    be absent for seconds (``bench/timing_statistic.py``); calibration networks, timed side by side with a
    hundred others, are timed over tens of seconds, and two networks timed for 3 s miss it (README, demo).

    Raises:
        UserError: ``seconds`` not positive.
    """
    check_bench_seconds(seconds)
    per_round_s = NETWORK_ITERS * sum(predicted_ms) / 1000.0
    want = int(-(-seconds // per_round_s)) if per_round_s > 0 else NETWORK_ROUNDS
    return max(NETWORK_ROUNDS, min(MAX_CONFIRMATION_ROUNDS, want))


def _macs_params(model: torch.nn.Module, input_shape) -> Dict[str, int]:
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model, torch.zeros(*input_shape))
    return {"macs": int(macs), "params": int(params)}


def run_prune(job: PruneJob, na_cfg: NetAdaptConfig, data: Optional[Dataset] = None) -> Dict[str, object]:
    """Prune ``job.checkpoint`` with NetAdapt until the table predicts the budget, fine-tune long-term,
    export and measure baseline and pruned side by side on the device, write ``model.pt``, ``model.onnx``,
    ``baseline.onnx`` and ``report.json`` into ``job.out``.

    ``na_cfg.budget_ms`` is ignored; the budget comes from ``job``. With ``job.resume`` a run continues
    from the last completed NetAdapt iteration saved in ``out/netadapt_state.pt``.

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
    predictor = TablePredictor.for_model(table, models.create(name, ckpt["num_classes"]))
    space = predictor.space
    data = data or load_dataset(job.dataset, job.data_dir, seed=job.seed)
    if data.num_classes != ckpt["num_classes"]:
        raise CheckpointError(f"{job.checkpoint} has {ckpt['num_classes']} classes, dataset {data.name} has {data.num_classes}")
    if tuple(data.input_shape) != tuple(input_shape):
        raise UserError(f"dataset {data.name} gives inputs {data.input_shape}, the table and checkpoint use {input_shape}")

    base_widths = space.widths_from_spec(ckpt["channels"])  # the checkpoint's (possibly already pruned) widths
    baseline_pred = predictor.predict_ms(base_widths)
    if job.budget_ms is not None:
        budget_ms = float(job.budget_ms)
    elif job.budget is not None and 0 < job.budget < 1:
        budget_ms = job.budget * baseline_pred
    else:
        raise BudgetError(f"--budget must be a fraction in (0, 1) of the unpruned latency, got {job.budget}")
    if budget_ms <= 0:
        raise BudgetError(f"budget must be positive, got {budget_ms} ms")
    cfg = NetAdaptConfig(**{**na_cfg.to_dict(), "budget_ms": budget_ms,
                            "granularity": int(table.build.get("granularity", na_cfg.granularity))})
    na = NetAdapt(base_model, data, space, predictor, cfg)
    na.check_reachable()  # an impossible budget is bad input: refuse it before any work
    ui.log(f"[bold]NetAdapt[/] {name}: predicted {baseline_pred:.4f} ms -> budget {budget_ms:.4f} ms "
           f"({budget_ms / baseline_pred:.0%}) on {table.device.get('spec')} / {table.backend}, "
           f"select={cfg.select}, {len(space.groups)} channel groups")

    base_eval = {"val": evaluate(base_model, data, "val"), "test": evaluate(base_model, data, "test")}
    out.mkdir(parents=True, exist_ok=True)

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
        state_path = out / STATE_FILE
        ckpt_sha = _sha(job.checkpoint)
        start = 0
        if job.resume and state_path.exists():
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            if state.get("checkpoint_sha") != ckpt_sha or abs(state.get("budget_ms", -1) - budget_ms) > 1e-9:
                raise UserError(f"{state_path} belongs to another checkpoint or budget; remove it or drop --resume")
            resumed = models.create(name, ckpt["num_classes"], state["channels"])
            resumed.load_state_dict(state["state_dict"])
            na.restore_(resumed, state["history"])
            start = len(na.history)
            ui.log(f"resuming after iteration {start} from {state_path}")
            prog.update(iter_task, completed=start)

        def save_state(n: NetAdapt) -> None:
            from host.io import atomic_path

            with atomic_path(state_path) as tmp:
                torch.save({"checkpoint_sha": ckpt_sha, "budget_ms": budget_ms,
                            "channels": models.channel_spec(n.model), "state_dict": n.model.state_dict(),
                            "history": n.history}, tmp)

        t_na = time.monotonic()
        pruned = na.run(start_iteration=start, after_iteration=save_state)
        netadapt_s = time.monotonic() - t_na

        t_lt = time.monotonic()
        long_term = []
        if cfg.long_term_epochs > 0:
            lt_task = prog.add_task("long-term fine-tuning", total=cfg.long_term_epochs)
            lt_cfg = TrainConfig(epochs=cfg.long_term_epochs, lr=cfg.long_term_lr, batch_size=cfg.batch_size,
                                 schedule="cosine", seed=cfg.seed)
            long_term = train(pruned, data, lt_cfg, on_epoch=lambda e, m: prog.update(lt_task, completed=e))
            ui.log(f"long-term fine-tuning: {cfg.long_term_epochs} epochs, val top-1 {long_term[-1]['val_top1']:.2f}%")
        long_term_s = time.monotonic() - t_lt

    pruned.eval()
    pruned_eval = {"val": evaluate(pruned, data, "val"), "test": evaluate(pruned, data, "test")}
    pruned_widths = space.widths_from_spec(models.channel_spec(pruned))
    save_checkpoint(str(out / "model.pt"), pruned, ckpt["num_classes"], dataset=data.name,
                    input_shape=list(input_shape), metrics=pruned_eval, source_checkpoint=str(job.checkpoint),
                    latency_ms_predicted=predictor.predict_ms(pruned_widths))

    # Export both and measure them side by side on the device the table was measured on.
    onnx_base, onnx_pruned = str(out / "baseline.onnx"), str(out / "model.onnx")
    export_onnx(base_model, input_shape, onnx_base)
    export_onnx(pruned, input_shape, onnx_pruned)
    checks = {"baseline": check_onnx(base_model, onnx_base, input_shape),
              "pruned": check_onnx(pruned, onnx_pruned, input_shape)}
    device = job.device or table.device.get("spec") or "local"
    if confirm:
        like_networks = not job.power and not is_self_timed(table.backend)
        if like_networks:
            rounds = confirmation_rounds(job.bench_seconds, [baseline_pred, predictor.predict_ms(pruned_widths)])
            ui.log(f"measuring baseline and pruned ONNX on {device} ({table.backend}, {table.threads} thread(s)) as "
                   f"the table's calibration networks were: {rounds} round-robin bursts of {NETWORK_ITERS} runs over "
                   f"{NETWORK_LOADS} loadings (about {job.bench_seconds:g} s)")
            bench = bench_on_device([onnx_base, onnx_pruned], device=device, backend=table.backend,
                                    threads=table.threads, iters=NETWORK_ITERS, rounds=rounds,
                                    trust_new_host=job.trust_new_host, interleave=True,
                                    loads=network_loads(None, rounds))
        else:
            ui.log(f"measuring baseline and pruned ONNX on {device} ({table.backend}, {table.threads} thread(s), "
                   f"{job.bench_rounds} rounds of {job.bench_iters} runs, each model loaded afresh)")
            bench = bench_on_device([onnx_base, onnx_pruned], device=device, backend=table.backend,
                                    threads=table.threads, iters=job.bench_iters, rounds=job.bench_rounds,
                                    trust_new_host=job.trust_new_host,
                                    device_args=["--power", job.power] if job.power else [],
                                    out_dir=str(out / "device_logs") if job.power else None)
    else:
        ui.log(f"[yellow]{job.table} was imported ({table.device.get('board')}, {table.device.get('runtime')}): the "
               "latencies below are the table's predictions; nothing was measured. Confirm on that board with "
               "`host bench model.onnx --device ssh://...` (or pass --device)[/]")
        bench = {"device": {"spec": None, "note": "not measured: imported table"}, "rounds": 0, "warmup": 0,
                 "iters": 0, "models": {onnx_base: None, onnx_pruned: None}}

    def side(model, widths, ev, path) -> Dict[str, object]:
        m = bench["models"][path]
        pred = predictor.predict_ms(widths)
        measured = {"latency_ms_measured": None, "latency_ms_measured_stats": None, "latency_ms_measured_min": None,
                    "latency_ms_round_medians": None, "latency_ms_load_medians": None,
                    "prediction_error": None, "onnx_sha256": _sha(path)} if m is None else {
            "latency_ms_measured": m["median_ms"], "latency_ms_measured_stats": m["latency_ms"],
            "latency_ms_measured_min": m.get("min_ms"),
            "latency_ms_round_medians": None if bench.get("interleaved") else m["round_medians_ms"],
            "latency_ms_load_medians": m.get("load_medians_ms"),
            "prediction_error": pred / stat_ms(m, table.statistic) - 1, "onnx_sha256": m["sha256"]}
        return {"top1": ev["test"]["top1"], "top5": ev["test"]["top5"], "val_top1": ev["val"]["top1"],
                **_macs_params(model, input_shape), "latency_ms_predicted": pred,
                "prediction_statistic": table.statistic, **measured,
                "channels": models.channel_spec(model), "onnx": os.path.basename(path)}

    baseline = side(base_model, base_widths, base_eval, onnx_base)
    pruned_side = side(pruned, pruned_widths, pruned_eval, onnx_pruned)
    report = {
        "schema": REPORT_SCHEMA, "schema_version": REPORT_SCHEMA_VERSION, "tool_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": name, "dataset": data.name, "checkpoint": str(job.checkpoint), "table": str(job.table),
        "input_shape": list(input_shape), "device": bench["device"], "backend": table.backend,
        "precision": table.precision, "threads": table.threads, "table_device": table.device,
        "budget_ms": budget_ms, "budget_fraction": budget_ms / baseline_pred,
        "baseline": baseline, "pruned": pruned_side,
        "confirmed_on_device": confirm,
        "ratios": {"latency_measured": (pruned_side["latency_ms_measured"] / baseline["latency_ms_measured"])
                   if confirm else None,
                   "latency_predicted": pruned_side["latency_ms_predicted"] / baseline["latency_ms_predicted"],
                   "macs": pruned_side["macs"] / baseline["macs"], "params": pruned_side["params"] / baseline["params"]},
        "top1_drop": baseline["top1"] - pruned_side["top1"],
        "netadapt": cfg.to_dict(), "iterations": na.history, "long_term": long_term, "onnx_check": checks,
        "measurement": {k: bench.get(k) for k in ("rounds", "warmup", "iters", "interleaved", "loads")},
        "power": {"baseline": bench["models"][onnx_base].get("power"),
                  "pruned": bench["models"][onnx_pruned].get("power")} if job.power and confirm else None,
        "throttled": confirm and any(bench["models"][p]["throttled"] for p in (onnx_base, onnx_pruned)),
        "versions": _versions(),
        "wall_s": {"netadapt": round(netadapt_s, 1), "long_term": round(long_term_s, 1),
                   "total": round(time.monotonic() - t_start, 1)},
    }
    write_json(out / "report.json", report)
    if state_path.exists():
        state_path.unlink()  # the run is complete; model.pt holds the result
    return report


def _sha(path: str) -> str:
    from device.bench import sha256_file

    return sha256_file(path)


def _versions() -> Dict[str, str]:
    import onnx
    import onnxruntime
    import torch_pruning

    return {"edgeshrink": __version__, "torch": torch.__version__, "torch_pruning": getattr(torch_pruning, "__version__", "?"),
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def render_report(report: Dict[str, object], console=None) -> None:
    """The summary table of a prune report (rich)."""
    from rich.table import Table

    console = console or ui.out
    b, p = report["baseline"], report["pruned"]
    t = Table(title=f"{report['model']} on {report['dataset']}: NetAdapt to {report['budget_ms']:.4f} ms "
                    f"({report['budget_fraction']:.0%} of predicted) | {report['device'].get('spec')} "
                    f"{report['backend']} {report['precision']} {report['threads']} thread(s)")
    t.add_column("")
    t.add_column("baseline", justify="right")
    t.add_column("pruned", justify="right")
    t.add_column("pruned / baseline", justify="right")
    rows = [("test top-1 (%)", "top1", "{:.2f}"), ("test top-5 (%)", "top5", "{:.2f}"),
            ("params", "params", "{:,}"), ("MACs", "macs", "{:,}"),
            (f"latency predicted, {b.get('prediction_statistic') or 'table'} (ms)", "latency_ms_predicted", "{:.4f}"),
            ("latency measured, median (ms)", "latency_ms_measured", "{:.4f}")]
    measured = b.get("latency_ms_measured") is not None
    for label, k, f in rows:
        if b.get(k) is None:
            t.add_row(label, "not measured", "not measured", "")
            continue
        ratio = "" if k in ("top1", "top5") else f"{p[k] / b[k]:.3f}"
        t.add_row(label, f.format(b[k]), f.format(p[k]), ratio)
    if measured:
        t.add_row("latency measured, p90 (ms)", f"{b['latency_ms_measured_stats']['p90']:.4f}",
                  f"{p['latency_ms_measured_stats']['p90']:.4f}", "")
        if b.get("latency_ms_measured_min") and p.get("latency_ms_measured_min"):
            t.add_row("latency measured, min (ms)", f"{b['latency_ms_measured_min']:.4f}",
                      f"{p['latency_ms_measured_min']:.4f}", f"{p['latency_ms_measured_min'] / b['latency_ms_measured_min']:.3f}")
        t.add_row(f"prediction error (vs measured {b.get('prediction_statistic', 'median')})",
                  f"{b['prediction_error']:+.1%}", f"{p['prediction_error']:+.1%}", "")
    pw = report.get("power") or {}
    if pw.get("baseline") and pw.get("pruned"):
        for label, k in (("mean power (mW)", "mean_power_mw"), ("energy / inference (mJ)", "energy_per_inference_mj"),
                         ("energy above idle / inference (mJ)", "energy_above_idle_per_inference_mj")):
            bv, pv = pw["baseline"].get(k), pw["pruned"].get(k)
            if bv is not None and pv is not None:
                t.add_row(label, f"{bv:.4g}", f"{pv:.4g}", f"{pv / bv:.3f}" if bv else "")
    console.print(t)
    if report.get("throttled"):
        console.print("[bold red]the device throttled during the measurement; latencies may be inflated[/]")
    lm = report["ratios"]["latency_measured"]
    console.print(f"top-1 drop {report['top1_drop']:+.2f} points | {len(report['iterations'])} NetAdapt iterations | "
                  + (f"measured latency ratio {lm:.3f}" if lm is not None else
                     f"predicted latency ratio {report['ratios']['latency_predicted']:.3f} (imported table: not measured)")
                  + f" | wall {report['wall_s']['total']:.0f} s")
