"""The prune report (``report.json``, ``schema: edgeshrink.prune_report``): one record of what was pruned, how,
and what the device measured, and its summary table. The JSON keys are documented in docs/formats.md."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from edgeshrink.device.provenance import sha256_file, utc_now
from edgeshrink.host import __version__, ui
from edgeshrink.host.bench import stat_ms

REPORT_SCHEMA = "edgeshrink.prune_report"
REPORT_SCHEMA_VERSION = 1


def side(top1: Dict[str, Dict[str, float]], macs_params: Dict[str, int], predicted_ms: float, statistic: str,
         channels: Dict[str, int], onnx_path: str, measured: Optional[Dict[str, object]],
         interleaved: bool = False) -> Dict[str, object]:
    """One side (baseline or pruned) of the report.

    Args:
        top1: ``{"val": evaluate(...), "test": evaluate(...)}`` (top-1 / top-5 in %).
        macs_params: ``{"macs", "params"}``.
        predicted_ms: the table's prediction (its ``statistic``).
        measured: this model's entry of :func:`edgeshrink.host.bench.bench_on_device`, or None (not measured).
        interleaved: the models were timed side by side in bursts (their round medians are not kept then).
    """
    if measured is None:
        m = {"latency_ms_measured": None, "latency_ms_measured_stats": None, "latency_ms_measured_min": None,
             "latency_ms_round_medians": None, "latency_ms_load_medians": None, "prediction_error": None,
             "onnx_sha256": sha256_file(onnx_path)}
    else:
        m = {"latency_ms_measured": measured["median_ms"], "latency_ms_measured_stats": measured["latency_ms"],
             "latency_ms_measured_min": measured.get("min_ms"),
             "latency_ms_round_medians": None if interleaved else measured["round_medians_ms"],
             "latency_ms_load_medians": measured.get("load_medians_ms"),
             "prediction_error": predicted_ms / stat_ms(measured, statistic) - 1, "onnx_sha256": measured["sha256"]}
    seg = {}
    if "miou" in top1["test"]:  # a segmentation network: mIoU and per-class IoU (%) beside the per-pixel top-1
        seg = {"miou": top1["test"]["miou"], "val_miou": top1["val"]["miou"],
               "per_class_iou": top1["test"].get("per_class_iou")}
    return {"top1": top1["test"]["top1"], "top5": top1["test"]["top5"], "val_top1": top1["val"]["top1"], **seg,
            **macs_params, "latency_ms_predicted": predicted_ms, "prediction_statistic": statistic, **m,
            "channels": dict(channels), "onnx": os.path.basename(onnx_path)}


@dataclass(frozen=True)
class PruneReport:
    """A finished prune, confirmed on the device or not. :meth:`to_dict` is ``report.json``."""

    model: str  # registry name or file.py:factory reference
    model_source: Dict[str, object]  # {"model", "file", "sha256"}: the code that was pruned
    dataset: str
    checkpoint: str  # the input checkpoint's path
    table: str  # the latency table's path
    input_shape: List[int]  # (1, C, H, W)
    device: Dict[str, object]  # the measuring device's metadata (spec None when not measured)
    backend: str
    precision: str
    threads: int
    table_device: Dict[str, object]  # the device the table was measured on
    budget_ms: Optional[float]  # as the table predicts it (its statistic); None with a pruning rate
    budget_fraction: Optional[float]  # budget_ms / the baseline's prediction
    baseline: Dict[str, object]  # see side()
    pruned: Dict[str, object]
    confirmed_on_device: bool
    artifact: Dict[str, object]  # {"file", "sha256"}: what ships (artifact.json); pruned.onnx_sha256 is what was measured
    method: str  # a name of edgeshrink.host.prune.methods.METHODS
    settings: Dict[str, object]  # the method's settings (its config's to_dict())
    iterations: List[Dict[str, object]]  # the method's history
    long_term: List[Dict[str, object]]  # recovery training, per epoch
    recovery: Dict[str, object]  # {"mode", "epochs", ...}
    pruning_rate: Optional[float]
    onnx_check: Dict[str, object]  # {"baseline", "pruned"}: checker + max abs difference to torch
    measurement: Dict[str, object]  # rounds, warmup, iters, interleaved, loads
    power: Optional[Dict[str, object]]  # {"baseline", "pruned"} with --power, else None
    throttled: bool
    versions: Dict[str, str]
    wall_s: Dict[str, float]  # method, long_term (recovery), total
    table_fit: Optional[Dict[str, object]] = None  # TablePredictor.fit_record(): the calibration predicted with
    pruner_input_shape: Optional[List[int]] = None  # where pruning ran (--pruner-input); input_shape is the deployment's
    metrics: Optional[List[str]] = None  # what was evaluated, the first selecting (top1, or miou for segmentation)
    table_build: Optional[Dict[str, object]] = None  # the table's input, build time (s) and measurement count
    created_utc: str = field(default_factory=utc_now)

    def to_dict(self) -> Dict[str, object]:
        b, p = self.baseline, self.pruned
        return {
            "schema": REPORT_SCHEMA, "schema_version": REPORT_SCHEMA_VERSION, "tool_version": __version__,
            "created_utc": self.created_utc, "model": self.model,
            "model_source": self.model_source, "dataset": self.dataset,
            "checkpoint": self.checkpoint, "table": self.table, "input_shape": list(self.input_shape),
            "pruner_input_shape": list(self.pruner_input_shape or self.input_shape),
            "metrics": list(self.metrics or ["top1", "top5"]), "table_build": self.table_build,
            "device": self.device, "backend": self.backend, "precision": self.precision, "threads": self.threads,
            "table_device": self.table_device, "table_fit": self.table_fit, "budget_ms": self.budget_ms, "budget_fraction": self.budget_fraction,
            "baseline": b, "pruned": p, "confirmed_on_device": self.confirmed_on_device, "artifact": self.artifact,
            "ratios": {"latency_measured": (p["latency_ms_measured"] / b["latency_ms_measured"])
                       if self.confirmed_on_device else None,
                       "latency_predicted": p["latency_ms_predicted"] / b["latency_ms_predicted"],
                       "macs": p["macs"] / b["macs"], "params": p["params"] / b["params"]},
            "top1_drop": b["top1"] - p["top1"],
            **({"miou_drop": b["miou"] - p["miou"]} if "miou" in b else {}),
            "method": self.method, "settings": self.settings, "pruning_rate": self.pruning_rate,
            "iterations": self.iterations, "recovery": self.recovery, "long_term": self.long_term,
            "onnx_check": self.onnx_check, "measurement": self.measurement, "power": self.power,
            "throttled": self.throttled, "versions": self.versions, "wall_s": self.wall_s,
        }


def render_report(report: Dict[str, object], console=None) -> None:
    """The summary table of a prune report (rich): accuracy, size, predicted and measured latency side by side."""
    from rich.table import Table

    console = console or ui.out
    b, p = report["baseline"], report["pruned"]
    target = (f"{report['budget_ms']:.4f} ms ({report['budget_fraction']:.0%} of predicted)"
              if report.get("budget_ms") is not None else f"pruning rate {report.get('pruning_rate')}")
    t = Table(title=f"{report['model']} on {report['dataset']}: {report.get('method', 'netadapt')} to {target} | "
                    f"{report['device'].get('spec')} {report['backend']} {report['precision']} {report['threads']} "
                    "thread(s)")
    t.add_column("")
    t.add_column("baseline", justify="right")
    t.add_column("pruned", justify="right")
    t.add_column("pruned / baseline", justify="right")
    seg = "miou" in b
    rows = ([("test mIoU (%)", "miou", "{:.2f}")] if seg else []) + [
            (f"test top-1{' per pixel' if seg else ''} (%)", "top1", "{:.2f}"),
            (f"test top-5{' per pixel' if seg else ''} (%)", "top5", "{:.2f}"),
            ("params", "params", "{:,}"), ("MACs", "macs", "{:,}"),
            (f"latency predicted, {b.get('prediction_statistic') or 'table'} (ms)", "latency_ms_predicted", "{:.4f}"),
            ("latency measured, median (ms)", "latency_ms_measured", "{:.4f}")]
    measured = b.get("latency_ms_measured") is not None
    for label, k, f in rows:
        if b.get(k) is None:
            t.add_row(label, "not measured", "not measured", "")
            continue
        ratio = "" if k in ("top1", "top5", "miou") else f"{p[k] / b[k]:.3f}"
        t.add_row(label, f.format(b[k]), f.format(p[k]), ratio)
    if measured:
        t.add_row("latency measured, p90 (ms)", f"{b['latency_ms_measured_stats']['p90']:.4f}",
                  f"{p['latency_ms_measured_stats']['p90']:.4f}", "")
        if b.get("latency_ms_measured_min") and p.get("latency_ms_measured_min"):
            t.add_row("latency measured, min (ms)", f"{b['latency_ms_measured_min']:.4f}",
                      f"{p['latency_ms_measured_min']:.4f}",
                      f"{p['latency_ms_measured_min'] / b['latency_ms_measured_min']:.3f}")
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
    steps = (f"{len(report['iterations'])} NetAdapt iterations" if report.get("method", "netadapt") == "netadapt"
             else f"recovery {report.get('recovery', {}).get('mode')}")
    why = report["device"].get("note") or "not measured"
    shapes = ""
    if report.get("pruner_input_shape") and report["pruner_input_shape"] != report["input_shape"]:
        shapes = (f" | pruned at {'x'.join(map(str, report['pruner_input_shape']))}, deployed at "
                  f"{'x'.join(map(str, report['input_shape']))}")
    drop = (f"mIoU drop {report['miou_drop']:+.2f} points, " if "miou_drop" in report else "")
    console.print(f"{drop}top-1 drop {report['top1_drop']:+.2f} points | {steps} | "
                  + (f"measured latency ratio {lm:.3f}" if lm is not None else
                     f"predicted latency ratio {report['ratios']['latency_predicted']:.3f} ({why})")
                  + f" | wall {report['wall_s']['total']:.0f} s{shapes}")
