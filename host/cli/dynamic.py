"""``host dynamic``: a SkipNet-gated checkpoint deployed as a staged model and measured input by input on the device."""

from __future__ import annotations

from edgeshrink.host.cli.args import add_checkpoint_arg, add_data_args, add_json_arg, add_per_input_args, \
    add_table_arg


def register(sub) -> None:
    p = sub.add_parser("dynamic", help="export a gated checkpoint (host train --gates) as per-block models and as one "
                                       "graph with If per block, check both against torch, run the test split one "
                                       "input at a time on the device in both, report measured against predicted")
    add_checkpoint_arg(p, help="a checkpoint with SkipNet gates")
    add_table_arg(p, help="latency table of the device (the prediction; its device, backend and threads are used)")
    add_data_args(p, training=False, image_size=False)
    add_per_input_args(p)
    p.add_argument("--out", required=True, help="output folder: staged/ (both forms, artifact.json), inputs.npz, "
                                                "report.json")
    add_json_arg(p, "report.json")
    p.set_defaults(func=cmd_dynamic)


def cmd_dynamic(args) -> int:
    import json

    from edgeshrink.host import ui
    from edgeshrink.host.dynamic.skipnet import measure_gated

    report = measure_gated(args.checkpoint, args.table, args.dataset, args.out, data_dir=args.data_dir,
                           device=args.device, limit=args.limit, iters=args.iters, check=args.check, seed=args.seed,
                           trust_new_host=args.trust_new_host, log=ui.log)
    if args.json:
        print(json.dumps(report, indent=1))
    return 0
