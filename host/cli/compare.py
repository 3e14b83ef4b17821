"""``host compare``: pruning methods side by side at latency budgets, judged by latency measured on the device."""

from __future__ import annotations

from pathlib import Path

from edgeshrink.host.cli.args import add_data_args, add_json_arg, add_method_args, add_netadapt_args, add_table_arg, \
    image_size_for, method_configs, print_result


def register(sub) -> None:
    from edgeshrink.host.prune.config import METHOD_TRAITS as METHODS

    c = sub.add_parser("compare", help="several pruning methods at several budgets, every network measured side by "
                                       "side on the device: compare.json, a table and a Pareto plot")
    c.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated, from {', '.join(METHODS)} (default all)")
    c.add_argument("--budgets", default="0.5,0.3", help="comma-separated fractions of the unpruned predicted latency")
    add_table_arg(c)
    c.add_argument("--checkpoint", required=True, metavar="CKPT", help="the trained checkpoint every method prunes")
    add_data_args(c)
    add_method_args(c)
    add_netadapt_args(c, defaults=None)
    c.add_argument("--device", help="where to measure (default: the table's device)")
    c.add_argument("--trust-new-host", action="store_true", help="ssh://: accept and record an unknown host key")
    c.add_argument("--backend", help="refuse a table measured with another backend (the table's is used)")
    c.add_argument("--bench-seconds", type=float, default=60.0,
                   help="the measuring session's length, shared by every network (default 60 s)")
    c.add_argument("--per-input-limit", type=int, default=1000,
                   help="a checkpoint with internal classifiers: test inputs on which every network and the early-exit "
                        "network run one input at a time (default 1000)")
    c.add_argument("--out", required=True, help="folder; a rerun skips the runs that are complete and resumes the rest")
    add_json_arg(c, "compare.json")
    c.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    from edgeshrink.host.data import load_dataset
    from edgeshrink.host.pipeline.compare import CompareJob, parse_budgets, parse_methods, render_compare, run_compare
    from edgeshrink.host.pipeline.confirm import check_bench_seconds
    from edgeshrink.host.train import with_metrics

    methods, budgets = parse_methods(args.methods), parse_budgets(args.budgets)
    configs = method_configs(args, methods)  # another method's options and bad settings refused before any work
    check_bench_seconds(args.bench_seconds)
    job = CompareJob(table=args.table, checkpoint=args.checkpoint, out=args.out, methods=methods, budgets=budgets,
                     dataset=args.dataset, data_dir=args.data_dir, device=args.device, backend=args.backend,
                     seed=args.seed, bench_seconds=args.bench_seconds, trust_new_host=args.trust_new_host,
                     recover=args.recover, long_term_epochs=args.long_term_epochs, long_term_lr=args.long_term_lr,
                     per_input_limit=args.per_input_limit)
    data = with_metrics(load_dataset(args.dataset, args.data_dir, seed=args.seed, download=args.download,
                                     train_subset=args.train_subset, image_size=image_size_for(args)), args.metrics)
    result = run_compare(job, configs, data)
    if result:  # the other ranks of a distributed run leave the measurement and the summary to rank 0
        print_result(result, render_compare, args.json,
                     f"compare: {Path(args.out) / 'compare.json'}, {Path(args.out) / 'pareto.png'}")
    return 0
