"""``host exits`` (early-exit thresholds for a latency budget, measured on the device) and ``host show`` (a trained or
pruned network: structure, parameters, accuracy per exit)."""

from __future__ import annotations

from edgeshrink.host.cli.args import add_checkpoint_arg, add_data_args, add_json_arg, add_per_input_args, \
    add_table_arg


def register(sub) -> None:
    p = sub.add_parser("exits", help="early exit: pick per-classifier confidence thresholds that meet a mean latency "
                                     "budget (under a p99 cap) with the least val accuracy lost, from what leaving at "
                                     "each classifier costs measured on the device; deploy them as a staged model, "
                                     "check against torch, measure the test split one input at a time")
    add_checkpoint_arg(p, help="a network with internal classifiers (cells_*, or host train --exits)")
    add_table_arg(p, help="latency table of the device (its device, backend and threads are used; its prediction is "
                          "reported beside the measurement)")
    bg = p.add_mutually_exclusive_group(required=True)
    bg.add_argument("--budget-ms", type=float, help="mean latency per input, ms (measured one input at a time)")
    bg.add_argument("--budget", type=float, help="mean latency as a fraction of the full network's, measured one "
                                                 "input at a time beside it")
    bg.add_argument("--thresholds", metavar="Q1,Q2,..", help="no search: these confidence thresholds in [0, 1], one "
                                                             "per internal classifier")
    p.add_argument("--p99-ms", type=float, help="cap on the p99 latency per input, ms")
    add_data_args(p, training=False, image_size=False)
    add_per_input_args(p)
    p.add_argument("--cost-inputs", type=int, default=300,
                   help="val inputs on which what leaving at each classifier costs is measured (default 300)")
    p.add_argument("--out", required=True, help="output folder: staged/ (the stages, model.json, artifact.json), "
                                                "report.json, exits.png")
    add_json_arg(p, "report.json")
    p.set_defaults(func=cmd_exits)

    s = sub.add_parser("show", help="a trained or pruned network: its layers (output shape, parameters, MACs, "
                                    "sparsity), totals, and top-1 per exit")
    s.add_argument("run", help="a run folder (with model.pt) or a checkpoint")
    s.add_argument("--dataset", help="evaluate on this dataset (default: the checkpoint's)")
    s.add_argument("--data-dir", help="dataset folder (as host train)")
    s.add_argument("--no-eval", action="store_true", help="print the structure only")
    add_json_arg(s, "the structure and the metrics")
    s.set_defaults(func=cmd_show)


def cmd_exits(args) -> int:
    import json

    from edgeshrink.host import ui
    from edgeshrink.host.dynamic.exits import choose_exits

    report = choose_exits(args.checkpoint, args.table, args.dataset, args.out, budget_ms=args.budget_ms,
                 budget=args.budget, p99_ms=args.p99_ms, thresholds=args.thresholds, data_dir=args.data_dir, device=args.device, limit=args.limit,
                 iters=args.iters, check=args.check, cost_inputs=args.cost_inputs, seed=args.seed,
                 trust_new_host=args.trust_new_host, log=ui.log)
    if args.json:
        print(json.dumps(report, indent=1))
    return 0


def cmd_show(args) -> int:
    from edgeshrink.host.show import render_show, show

    doc = show(args.run, dataset=args.dataset, data_dir=args.data_dir, evaluate=not args.no_eval)
    if args.json:
        import json

        from edgeshrink.host import ui

        render_show(doc, ui.err)
        print(json.dumps(doc, indent=1))
    else:
        render_show(doc)
    return 0
