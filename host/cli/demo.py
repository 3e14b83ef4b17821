"""``host demo``: the main job on the embedded digits data in one command, resumable step by step."""

from __future__ import annotations

import shutil
from dataclasses import replace
import time
from pathlib import Path

from edgeshrink.host.cli.args import add_netadapt_args, netadapt_config, netadapt_defaults, progress_reporter
from edgeshrink.host.prune.config import DEMO_PRESET, preset_changes


def register(sub) -> None:
    d = sub.add_parser("demo", help="the main job on digits: train resnet20, build the local table, prune to 50%%, confirm")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--model", default="resnet20")
    d.add_argument("--epochs", type=int, default=10, help="baseline training epochs (default 10)")
    d.add_argument("--budget", type=float, default=0.5)
    d.add_argument("--granularity", type=int, default=4, help="the table's channel grid (default 4)")
    d.add_argument("--table-iters", type=int, default=100,
                   help="timed runs per micro-model per round of the table (default 100)")
    d.add_argument("--table-rounds", type=int, default=2, help="rounds of the table's micro-models (default 2)")
    d.add_argument("--jobs", type=int, default=2)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--calibrate", type=int, default=20, metavar="N",
                   help="calibration networks measured with the table (host table build --calibrate; default 20, "
                        "0: none, the plain sum of the micro-models)")
    add_netadapt_args(d, netadapt_defaults(DEMO_PRESET))
    d.add_argument("--bench-seconds", type=float, default=20.0,
                   help="confirmation: time baseline and pruned side by side for about this long (default 20 s)")
    d.add_argument("--fresh", action="store_true", help="redo every step (default: reuse the finished steps in OUT)")
    d.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from edgeshrink.host import ui
    from edgeshrink.host.cli.table import BUILD_STAGES, log_build_summary
    from edgeshrink.host.data import load_dataset
    from edgeshrink.host.io import prepare_dir
    from edgeshrink.host.latency.build import BuildConfig, build_and_save
    from edgeshrink.host.pipeline import PruneJob, render_report, run_prune
    from edgeshrink.host.train import TrainConfig, train_and_save

    out = Path(args.out)
    table_path = out / "table.json"
    work = Path(str(table_path) + ".build")
    # settings are checked before any work: a bad --calibrate is refused before training, not after it
    build_cfg = BuildConfig(args.model, (1, 3, 32, 32), granularity=args.granularity, jobs=args.jobs,
                            iters=args.table_iters, rounds=args.table_rounds, calibrate=args.calibrate,
                            workdir=str(work), resume=work.is_dir() and any(work.glob("results_r*.jsonl")))
    na_cfg = netadapt_config(args, args.seed)
    prepare_dir(out, "--out")
    t0 = time.monotonic()
    base = out / "base" / "model.pt"
    ui.log(f"[bold]edgeshrink demo[/]: {args.model} on digits -> local ONNX Runtime table -> NetAdapt to "
           f"{args.budget:.0%} of the predicted latency -> measured on the device. Output in {out}/")
    if args.fresh or not base.exists():
        ui.log("[bold]1/3 train[/]")
        train_and_save(args.model, "digits", None, TrainConfig(epochs=args.epochs, lr=0.1, batch_size=64,
                                                               seed=args.seed), str(out / "base"))
    else:
        ui.log(f"1/3 train: reusing {base}")
    if args.fresh or not table_path.exists():
        ui.log("[bold]2/3 latency table[/]")
        if args.fresh and work.exists():
            shutil.rmtree(work)
            build_cfg = replace(build_cfg, resume=False)
        # an interrupted demo continues its table build where it stopped
        with ui.progress() as prog:
            table = build_and_save(build_cfg, str(table_path), log=ui.log, progress=progress_reporter(prog, BUILD_STAGES))
        shutil.rmtree(work, ignore_errors=True)
        log_build_summary(table, str(table_path), build_cfg.resume)
    else:
        ui.log(f"2/3 latency table: reusing {table_path}")
    changes = preset_changes(DEMO_PRESET)
    ui.log("[bold]3/3 NetAdapt[/], the demo preset (DEMO_PRESET; host prune's defaults in brackets): " + ", ".join(
        f"{k.replace('_', '-')} {getattr(na_cfg, k):g} ({d:g})" for k, (_, d) in changes.items()))
    job = PruneJob(table=str(table_path), checkpoint=str(base), out=str(out / "pruned"), model=args.model,
                   budget=args.budget, resume=not args.fresh, seed=args.seed, bench_seconds=args.bench_seconds)
    report = run_prune(job, na_cfg, data=load_dataset("digits", seed=args.seed))
    render_report(report)
    ui.log(f"demo finished in {time.monotonic() - t0:.0f} s; report: {out / 'pruned' / 'report.json'}")
    return 0
