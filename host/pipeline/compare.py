"""``host compare``: several pruning methods at several latency budgets from one checkpoint and one table, every
pruned network and the baseline then measured side by side in one device session, judged by measured latency.

Each (method, budget) run is a ``host prune`` into ``OUT/runs/METHOD_bBUDGET`` without its own confirmation; a run
whose ``compare_key.json`` matches (checkpoint, table, method, budget, settings, recovery) is complete and skipped, an
interrupted one resumes (NetAdapt per iteration, the others after the method). Then one interleaved session times
all networks (:func:`edgeshrink.host.bench.bench_on_device`, the table's backend and threads, round-robin bursts as
the table's calibration networks), and ``compare.json``, the summary table and ``pareto.png`` are written.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from edgeshrink.host import ui
from edgeshrink.host.bench import bench_on_device, stat_ms
from edgeshrink.host.data import Dataset
from edgeshrink.host.errors import BudgetError, UserError
from edgeshrink.host.io import prepare_dir, write_json
from edgeshrink.host.job_inputs import resolve_inputs
from edgeshrink.host.latency.networks import NETWORK_ITERS, NETWORK_LOADS, network_loads
from edgeshrink.host.pipeline import PruneJob, run_prune
from edgeshrink.host.pipeline.confirm import confirmation_rounds
from edgeshrink.host.pipeline.plots import plot_pareto
from edgeshrink.host.prune.methods import method_spec

COMPARE_SCHEMA = "edgeshrink.compare"


@dataclass(frozen=True)
class CompareJob:
    table: str
    checkpoint: str
    out: str
    methods: Sequence[str]
    budgets: Sequence[float]  # fractions of the baseline's predicted latency
    dataset: str = "digits"
    data_dir: Optional[str] = None
    device: Optional[str] = None  # default: the table's device
    backend: Optional[str] = None
    seed: int = 0
    bench_seconds: float = 60.0  # the whole session, shared by every network
    trust_new_host: bool = False
    recover: Optional[str] = None
    long_term_epochs: Optional[int] = None
    long_term_lr: Optional[float] = None
    per_input_limit: int = 1000  # a network with internal classifiers: test inputs run one at a time per network


def parse_budgets(text: str) -> List[float]:
    """``"0.5,0.3"`` -> ``[0.5, 0.3]``.

    Raises:
        UserError: not comma-separated fractions in (0, 1), or a repeat.
    """
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--budgets must be comma-separated fractions such as 0.5,0.3, got {text!r}") from None
    if not vals or any(not (0 < v < 1 and math.isfinite(v)) for v in vals) or len(set(vals)) != len(vals):
        raise UserError(f"--budgets must be distinct fractions in (0, 1) of the unpruned latency, got {text!r}")
    return vals


def parse_methods(text: str) -> List[str]:
    """``"netadapt,uniform"`` -> the names, each checked against the registry.

    Raises:
        UserError: an unknown method or a repeat.
    """
    names = [v.strip() for v in text.split(",") if v.strip()]
    for n in names:
        method_spec(n)
    if not names or len(set(names)) != len(names):
        raise UserError(f"--methods must be distinct method names, got {text!r}")
    return names


def _run_key(job: CompareJob, method: str, budget: float, cfg, ckpt_sha: str, table_sha: str) -> Dict[str, object]:
    return {"checkpoint_sha256": ckpt_sha, "table_sha256": table_sha, "method": method, "budget": budget,
            "settings": cfg.to_dict(), "recover": job.recover, "long_term_epochs": job.long_term_epochs,
            "long_term_lr": job.long_term_lr, "dataset": job.dataset, "seed": job.seed}


def _complete(run_dir: Path, key: Dict[str, object]) -> Optional[Dict[str, object]]:
    """The run's report when it finished with these settings, else None."""
    try:
        saved = json.loads((run_dir / "compare_key.json").read_text())
        report = json.loads((run_dir / "report.json").read_text())
    except (OSError, ValueError):
        return None
    return report if saved == json.loads(json.dumps(key)) and isinstance(report, dict) else None


def run_compare(job: CompareJob, configs: Dict[str, object], data: Dataset) -> Dict[str, object]:
    """Run every (method, budget), then measure the baseline and every pruned network in one session.

    Args:
        configs: ``{method: its settings}`` (``host prune``'s), one per name of ``job.methods``.

    Returns:
        ``compare.json``: ``{"schema", "baseline", "rows": [one per run], "measurement", "noise", ...}``.

    Raises:
        UserError subclasses: as ``host prune``, before the first run where it can be known (each method's settings,
            budgets, the table and checkpoint); DeviceError: the measuring session failed.
    """
    t0 = time.monotonic()
    out = Path(job.out)
    # before any run: every network is measured at the end, so an imported table needs --device now
    inputs = resolve_inputs(job.checkpoint, job.table, job.device, job.backend)
    table, device = inputs.table, inputs.device
    data = inputs.check_data(data)
    if set(configs) != set(job.methods):
        raise UserError("host compare needs one settings object per method")
    from edgeshrink.host import distributed as dist_

    ckpt_sha, table_sha = inputs.checkpoint_sha256, inputs.table_sha256
    dist_.agree(table_sha, f"the table ({job.table})")
    dist_.agree(ckpt_sha, f"the checkpoint ({job.checkpoint})")
    if dist_.is_main():
        prepare_dir(out, "--out")
    dist_.barrier()
    runs, failed, base_eval = [], [], None
    total = len(job.methods) * len(job.budgets)
    world, me = dist_.world_size(), dist_.rank()
    if world > 1:
        ui.log(f"distributed: {world} ranks share the {total} runs (run k on rank k mod {world}); rank 0 measures them")
    k = -1
    for m in job.methods:
        for b in job.budgets:
            k += 1
            if k % world != me:
                continue
            run_dir = out / "runs" / f"{m}_b{b:g}"
            key = _run_key(job, m, b, configs[m], ckpt_sha, table_sha)
            report = _complete(run_dir, key)
            n = len(runs) + len(failed) + 1
            if report is not None:
                ui.log(f"[{n}/{total}] {m} at budget {b:g}: complete in {run_dir}, skipped")
            else:
                ui.log(f"[bold][{n}/{total}] {m} at budget {b:g}[/]")
                pj = PruneJob(table=job.table, checkpoint=job.checkpoint, out=str(run_dir), dataset=job.dataset,
                              data_dir=job.data_dir, budget=b, device=job.device, backend=job.backend,
                              resume=run_dir.is_dir(), seed=job.seed, method=m, recover=job.recover,
                              long_term_epochs=job.long_term_epochs, long_term_lr=job.long_term_lr, measure=False)
                if base_eval is None:
                    from edgeshrink.host.train import evaluate

                    base_eval = {"val": evaluate(inputs.model, data, "val"), "test": evaluate(inputs.model, data, "test")}
                try:
                    with dist_.local():  # this rank's run alone: its NetAdapt and recovery in this process
                        report = run_prune(pj, configs[m], data=data, base_eval=base_eval)
                except BudgetError as e:  # one method failing a budget does not discard the others' hours
                    ui.log(f"[yellow]{m} at budget {b:g}: {e}[/]")
                    failed.append({"method": m, "budget": b, "error": str(e)})
                    continue
                write_json(run_dir / "compare_key.json", key)
            runs.append((m, b, run_dir, report))
    if world > 1:  # every rank's runs to rank 0, in the order of the methods and budgets; the others are done
        done = {(r[0], r[1]): r for part in dist_.gather(runs) for r in part}
        failed = [f for part in dist_.gather(failed) for f in part]
        runs = [done[(m, b)] for m in job.methods for b in job.budgets if (m, b) in done]
        if not dist_.is_main():
            return {}
    if not runs:
        raise BudgetError("host compare: no method reached any budget; " + "; ".join(f["error"] for f in failed))

    # One session: the baseline and every pruned network, loaded side by side, timed in round-robin bursts.
    base_onnx = str(runs[0][2] / "baseline.onnx")
    paths = [base_onnx] + [str(r[2] / "model.onnx") for r in runs]
    preds = [runs[0][3]["baseline"]["latency_ms_predicted"]] + [r[3]["pruned"]["latency_ms_predicted"] for r in runs]
    rounds = confirmation_rounds(job.bench_seconds, preds)
    ui.log(f"measuring the baseline and {len(runs)} pruned networks side by side on {device} ({table.backend}, "
           f"{table.threads} thread(s)): {rounds} round-robin bursts of {NETWORK_ITERS} runs over {NETWORK_LOADS} "
           f"loadings (about {job.bench_seconds:g} s)")
    bench = bench_on_device(paths, device=device, backend=table.backend, threads=table.threads, iters=NETWORK_ITERS,
                            rounds=rounds, trust_new_host=job.trust_new_host, interleave=True,
                            loads=network_loads(None, rounds))
    stat = table.statistic
    bm = bench["models"][base_onnx]
    base = runs[0][3]["baseline"]
    baseline = {"top1": base["top1"], **({"miou": base["miou"]} if "miou" in base else {}),
                "params": base["params"], "macs": base["macs"],
                "latency_ms_predicted": base["latency_ms_predicted"], "latency_ms_measured": bm["median_ms"],
                "latency_ms_measured_min": bm.get("min_ms"), "load_medians_ms": bm.get("load_medians_ms"),
                "onnx_sha256": bm["sha256"]}
    rows = []
    for (m, b, run_dir, rep), path in zip(runs, paths[1:]):
        mm = bench["models"][path]
        p = rep["pruned"]
        rows.append({
            "method": m, "budget": b, "budget_ms": rep["budget_ms"], "latency_ms_predicted": p["latency_ms_predicted"],
            "latency_ms_measured": mm["median_ms"], "latency_ms_measured_min": mm.get("min_ms"),
            "load_medians_ms": mm.get("load_medians_ms"), "onnx_sha256": mm["sha256"],
            "prediction_error": p["latency_ms_predicted"] / stat_ms(mm, stat) - 1,
            "ratio_measured_median": mm["median_ms"] / bm["median_ms"],
            "ratio_measured_min": (mm["min_ms"] / bm["min_ms"]) if mm.get("min_ms") and bm.get("min_ms") else None,
            "meets_budget": mm["median_ms"] / bm["median_ms"] <= b + 0.05,
            "top1": p["top1"], "val_top1": p["val_top1"], **({"miou": p["miou"]} if "miou" in p else {}),
            "params": p["params"], "macs": p["macs"],
            "recovery": rep.get("recovery", {}).get("mode"), "wall_s": rep["wall_s"], "run": str(run_dir)})
    rows += failed
    loads = [v for v in (bm.get("load_medians_ms") or []) if v]
    noise = (max(loads) - min(loads)) / bm["median_ms"] if len(loads) > 1 else None
    result = {"schema": COMPARE_SCHEMA, "schema_version": 1, "model": runs[0][3]["model"],
              "dataset": runs[0][3]["dataset"], "checkpoint": job.checkpoint, "table": job.table,
              "device": bench["device"], "backend": table.backend, "threads": table.threads, "statistic": stat,
              "methods": list(job.methods), "budgets": list(job.budgets), "baseline": baseline, "rows": rows,
              "noise": {"baseline_load_medians_spread": noise,
                        "note": "(max - min) / median of the baseline's per-loading medians in this session"},
              "measurement": {"rounds": rounds, "iters": NETWORK_ITERS, "interleaved": True,
                              "loads": network_loads(None, rounds)}}
    from edgeshrink.models.cells import has_exits

    if has_exits(inputs.model):
        result["early_exit"] = early_exit_rows(job, inputs.model, data, table, device, baseline, rows, base_onnx, paths[1:])
        plot_per_input(result, str(out / "pareto_per_input.png"))
    result["wall_s"] = round(time.monotonic() - t0, 1)
    write_json(out / "compare.json", result)
    plot_pareto(rows, baseline, list(job.budgets), str(out / "pareto.png"),
                f"{result['model']} on {result['dataset']}: test top-1 over latency measured on "
                f"{bench['device'].get('spec')} ({table.backend}, {table.threads} thread(s))", noise)
    return result


def early_exit_rows(job: CompareJob, model, data: Dataset, table, device: str, baseline: Dict[str, object],
                    rows: List[Dict[str, object]], base_onnx: str, onnx_paths: Sequence[str]) -> Dict[str, object]:
    """The early-exit network at every budget beside the static methods, all measured the same way: one input at a
    time on ``job.per_input_limit`` test inputs (:class:`edgeshrink.host.dynamic.exits.ExitDeployment`). The budget is the
    fraction of the full network's mean latency measured so; each static row and the baseline get their per-input
    mean and p99 (``per_input_ms``) too.

    Returns:
        ``{"full_network_ms", "exit_cost_ms", "rows": one per budget (thresholds, measured mean and p99, ratio to the
        full network, test top-1, exit histogram; or an error)}``.
    """
    from edgeshrink.host.bench import bench_inputs_on_device
    from edgeshrink.host.dynamic.exits import ExitDeployment

    out = Path(job.out) / "early_exit"
    ui.log(f"early exit: {model.model_name} has {model.active - 1} internal classifiers; measuring it and every network "
           f"one input at a time on {device} ({job.per_input_limit} test inputs)")
    dep = ExitDeployment(model, data, table, str(out), device, iters=3, trust_new_host=job.trust_new_host, log=ui.log,
                         test_limit=job.per_input_limit)
    limit = min(job.per_input_limit, dep.n_test)
    for rec, path in [(baseline, base_onnx)] + [(r, p) for r, p in zip(rows, onnx_paths)]:
        m = bench_inputs_on_device(path, dep.test_inputs, device=device, backend=table.backend, threads=table.threads,
                                   iters=3, limit=limit, trust_new_host=job.trust_new_host)
        rec["per_input_ms"] = {k: m["latency_ms"][k] for k in ("mean", "median", "p99", "max")}
    full = baseline["per_input_ms"]["mean"]
    ee = []
    for b in job.budgets:
        try:
            ch = dep.choose(b * full, label=f"budget {b:g} ({b * full:.4g} ms of the full network's {full:.4g})")
        except UserError as e:
            ui.log(f"[yellow]early exit at budget {b:g}: {e}[/]")
            ee.append({"method": "early-exit", "budget": b, "error": str(e)})
            continue
        d = dep.deploy(ch["thresholds"], name=f"model_b{b:g}.json", limit=limit)
        m = d["measured"]
        ee.append({"method": "early-exit", "budget": b, "budget_ms": b * full, "thresholds": ch["thresholds"],
                   "val_top1": 100 * ch["top1"], "expected_mean_ms": d["expected"]["mean_ms"],
                   "latency_ms_predicted": d["predicted_mean_ms"], "latency_ms_measured": m["latency_ms"]["mean"],
                   "latency_ms_p99": m["latency_ms"]["p99"], "ratio_measured_mean": m["latency_ms"]["mean"] / full,
                   "meets_budget": m["latency_ms"]["mean"] / full <= b + 0.05, "top1": 100 * (m["top1"] or 0.0),
                   "exit_histogram": m["exit_histogram"], "exit_top1": m["exit_top1"], "manifest": d["manifest"],
                   "export_check": d["check"]})
    return {"inputs": limit, "full_network_ms": baseline["per_input_ms"], "exit_cost_ms": dep.cost_ms,
            "exit_cost_ms_predicted": dep.predicted["cost_ms"], "exits": model.exit_names, "rows": ee,
            "note": "every network here is measured one input at a time at batch 1 on the same test inputs; the "
                    "budget is a fraction of the full network's mean measured so"}


def plot_per_input(result: Dict[str, object], path: str) -> None:
    """Test top-1 over mean per-input latency: the static methods, early exit and the full network."""
    from edgeshrink.host.pipeline.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    rows = [r for r in result["rows"] if not r.get("error") and r.get("per_input_ms")]
    markers = "osD^v<>pXh"
    for i, m in enumerate(dict.fromkeys(r["method"] for r in rows)):
        pts = [(r["per_input_ms"]["mean"], r["top1"]) for r in rows if r["method"] == m]
        ax.scatter(*zip(*pts), marker=markers[i % len(markers)], s=45, label=m)
    ee = [r for r in result["early_exit"]["rows"] if not r.get("error")]
    if ee:
        ax.scatter([r["latency_ms_measured"] for r in ee], [r["top1"] for r in ee], marker="P", s=80, color="C3",
                   label="early exit")
    b = result["baseline"]
    ax.scatter([b["per_input_ms"]["mean"]], [b["top1"]], marker="*", s=160, color="k", label="full network")
    for x in result["budgets"]:
        ax.axvline(x * b["per_input_ms"]["mean"], color="#999999", ls="--", lw=0.8)
    ax.set_xlabel("mean latency per input, one at a time (ms)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"{result['model']} on {result['dataset']}: static pruning and early exit, measured one input at a "
                 "time", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    _save(fig, path, 120)


def render_compare(result: Dict[str, object], console=None) -> None:
    """The summary table of ``compare.json`` (rich), baseline first."""
    from rich.table import Table

    console = console or ui.out
    if not console.is_terminal and console.width < 150:  # a log file: wide enough to read every column
        from rich.console import Console

        console = Console(file=console.file, width=150, highlight=False)
    b = result["baseline"]
    acc = "miou" if "miou" in b else "top1"  # a segmentation network is judged by mIoU
    t = Table(title=f"{result['model']} on {result['dataset']}: methods at latency budgets, measured side by side on "
                    f"{result['device'].get('spec')} ({result['backend']}, {result['threads']} thread(s))")
    for col in ("method", "budget", "predicted (ms)", "measured min (ms)", "measured median (ms)", "ratio (median)",
                "pred. error", "test mIoU (%)" if acc == "miou" else "test top-1 (%)", "params", "MACs", "wall (s)"):
        t.add_column(col, justify="left" if col == "method" else "right")
    t.add_row("baseline", "", f"{b['latency_ms_predicted']:.4f}", f"{b['latency_ms_measured_min'] or 0:.4f}",
              f"{b['latency_ms_measured']:.4f}", "1.000", "", f"{b[acc]:.2f}", f"{b['params']:,}", f"{b['macs']:,}", "")
    for r in result["rows"]:
        if r.get("error"):
            t.add_row(r["method"], f"{r['budget']:g}", "[red]unreachable[/]", *[""] * 8)
            continue
        ok = "" if r["meets_budget"] else " [red](over)[/]"
        t.add_row(r["method"], f"{r['budget']:g}", f"{r['latency_ms_predicted']:.4f}",
                  f"{r['latency_ms_measured_min'] or 0:.4f}", f"{r['latency_ms_measured']:.4f}",
                  f"{r['ratio_measured_median']:.3f}{ok}", f"{r['prediction_error']:+.1%}", f"{r.get(acc, r['top1']):.2f}",
                  f"{r['params']:,}", f"{r['macs']:,}", f"{r['wall_s'].get('total', 0):.0f}")
    console.print(t)
    n = result["noise"]["baseline_load_medians_spread"]
    if n is not None:
        console.print(f"measurement noise: the baseline's per-loading medians spread {n:.1%} of its median")
    ee = result.get("early_exit")
    if ee:
        t = Table(title=f"one input at a time ({ee['inputs']} test inputs): the static networks and early exit")
        for col in ("network", "budget", "mean (ms)", "p99 (ms)", "ratio (mean)", "test top-1 (%)", "thresholds",
                    "exits taken"):
            t.add_column(col, justify="left" if col in ("network", "thresholds", "exits taken") else "right")
        t.add_row("full network", "", f"{b['per_input_ms']['mean']:.4f}", f"{b['per_input_ms']['p99']:.4f}", "1.000",
                  f"{b['top1']:.2f}", "", "")
        full = b["per_input_ms"]["mean"]
        for r in result["rows"]:
            if r.get("per_input_ms"):
                t.add_row(r["method"], f"{r['budget']:g}", f"{r['per_input_ms']['mean']:.4f}",
                          f"{r['per_input_ms']['p99']:.4f}", f"{r['per_input_ms']['mean'] / full:.3f}",
                          f"{r['top1']:.2f}", "", "")
        for r in ee["rows"]:
            if r.get("error"):
                t.add_row("early exit", f"{r['budget']:g}", "[red]unreachable[/]", *[""] * 5)
                continue
            ok = "" if r["meets_budget"] else " [red](over)[/]"
            t.add_row("early exit", f"{r['budget']:g}", f"{r['latency_ms_measured']:.4f}", f"{r['latency_ms_p99']:.4f}",
                      f"{r['ratio_measured_mean']:.3f}{ok}", f"{r['top1']:.2f}",
                      ", ".join("never" if q is None else f"{q:g}" for q in r["thresholds"]),
                      " ".join(f"{v}" for v in r["exit_histogram"].values()))
        console.print(t)


__all__ = ["CompareJob", "run_compare", "render_compare", "parse_budgets", "parse_methods"]
