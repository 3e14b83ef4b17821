"""``host prune``: a pruning method to a latency budget, confirmed on the device."""

from __future__ import annotations

from pathlib import Path

from edgeshrink.host.cli.args import add_data_args, add_json_arg, add_method_args, add_netadapt_args, add_shape_args, \
    add_table_arg, image_size_for, method_configs, print_result


def register(sub) -> None:
    from edgeshrink.host.prune.config import METHOD_TRAITS as METHODS

    pn = sub.add_parser("prune", help="a pruning method (NetAdapt by default) to a latency budget, then export and "
                                      "measure on the device")
    add_table_arg(pn)
    pn.add_argument("--model", help="expected architecture (checked against the checkpoint)")
    pn.add_argument("--checkpoint", required=True)
    add_data_args(pn)
    add_shape_args(pn)
    bg = pn.add_mutually_exclusive_group()
    bg.add_argument("--budget", type=float, default=0.5, help="target, a fraction of the unpruned predicted latency (default 0.5)")
    bg.add_argument("--budget-ms", type=float,
                    help="target latency in ms, as the table predicts it (its statistic: the fastest run for tables "
                         "built with --statistic min, the default)")
    pn.add_argument("--method", default="netadapt", metavar="NAME",
                    help=f"one of {', '.join(METHODS)} (default netadapt); docs/pruning.md")
    add_method_args(pn)
    add_netadapt_args(pn, defaults=None)
    pn.add_argument("--device", help="where to measure (default: the table's device)")
    pn.add_argument("--trust-new-host", action="store_true", help="ssh://: accept and record an unknown host key")
    pn.add_argument("--power", choices=("auto", "tegrastats", "pmic", "hwmon"),
                    help="also measure power and energy per inference on the device")
    pn.add_argument("--backend", help="refuse a table measured with another backend (the table's is used)")
    pn.add_argument("--bench-seconds", type=float, default=20.0,
                    help="confirmation: time baseline and pruned side by side, as the table's calibration networks "
                         "were (round-robin bursts of 4 runs over 5 loadings), for about this long (default 20 s)")
    pn.add_argument("--bench-iters", type=int, default=300,
                    help="confirmation with --power or a self-timed backend (trtexec, benchmark_model): timed runs "
                         "per model per round")
    pn.add_argument("--bench-rounds", type=int, default=3,
                    help="confirmation with --power or a self-timed backend: rounds A B A B ..., each model loaded "
                         "afresh")
    pn.add_argument("--resume", action="store_true",
                    help="continue from the last completed NetAdapt iteration (other methods: after the method) in OUT")
    pn.add_argument("--out", required=True)
    pn.add_argument("--tensorboard", metavar="DIR",
                    help="also log the method's iterations and the recovery's epochs to TensorBoard in DIR")
    add_json_arg(pn, "report.json")
    pn.set_defaults(func=cmd_prune)


def cmd_prune(args) -> int:
    from edgeshrink.host.data import load_dataset
    from edgeshrink.host.pipeline import PruneJob, render_report, run_prune
    from edgeshrink.host.train import with_metrics

    cfg = method_configs(args, [args.method])[args.method]  # refuses another method's options before any work
    job = PruneJob(table=args.table, checkpoint=args.checkpoint, out=args.out, model=args.model,
                   dataset=args.dataset, data_dir=args.data_dir,
                   budget=None if args.budget_ms is not None else args.budget, budget_ms=args.budget_ms,
                   device=args.device, backend=args.backend, bench_iters=args.bench_iters, bench_rounds=args.bench_rounds,
                   bench_seconds=args.bench_seconds, resume=args.resume, seed=args.seed, trust_new_host=args.trust_new_host,
                   power=args.power, method=args.method, recover=args.recover, long_term_epochs=args.long_term_epochs,
                   long_term_lr=args.long_term_lr, pruning_rate=args.pruning_rate,
                   tensorboard=args.tensorboard, input=args.input, pruner_input=args.pruner_input)
    data = with_metrics(load_dataset(args.dataset, args.data_dir, seed=args.seed, download=args.download,
                                     train_subset=args.train_subset, image_size=image_size_for(args)), args.metrics)
    report = run_prune(job, cfg, data=data)
    if report:  # the other ranks of a distributed run leave the report to rank 0
        print_result(report, render_report, args.json, f"report: {Path(args.out) / 'report.json'}")
    return 0
