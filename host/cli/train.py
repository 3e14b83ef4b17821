"""``host models`` and ``host train``."""

from __future__ import annotations

from edgeshrink.host.cli.args import add_data_args, add_json_arg, add_option, add_table_arg, add_train_args


def register(sub) -> None:
    m = sub.add_parser("models", help="list model architectures")
    m.set_defaults(func=cmd_models)
    t = sub.add_parser("train", help="train a model and write OUT/model.pt and OUT/metrics.json")
    t.add_argument("--model", default="resnet20",
                   help="a registry name (host models) or your own model: path/to/file.py:factory or "
                        "package.module:factory (default resnet20)")
    add_data_args(t)
    add_train_args(t)
    t.add_argument("--out", required=True, help="output folder: model.pt, metrics.json")
    add_json_arg(t, "metrics.json")
    t.add_argument("--tensorboard", metavar="DIR", help="also log the epochs to TensorBoard in DIR (needs tensorboard)")
    t.add_argument("--init", metavar="CKPT", help="start from this checkpoint's weights and architecture (pruned or "
                                                  "not) instead of an initialisation")
    g = t.add_argument_group("SkipNet gates (Wang et al. 2018; CIFAR ResNets)")
    g.add_argument("--gates", choices=("ff", "rnn"), help="a gate before each identity-shortcut residual block: ff "
                                                           "(feed-forward, one per block) or rnn (one shared LSTM)")
    g.add_argument("--gate-hidden", type=int, default=10, help="the gates' hidden width (default 10)")
    g.add_argument("--rl", action="store_true", help="the hybrid reinforcement stage (after supervised training "
                                                     "with --gates: --init that checkpoint)")
    g.add_argument("--rl-weight", type=float, default=0.1,
                   help="alpha: the reward for skipping a block, per unit of its latency share (default 0.1)")
    g.add_argument("--rl-gamma", type=float, default=0.99, help="the reward's discount (default 0.99)")
    add_table_arg(g, required=False, help="latency table: each gated block's latency share (the RL reward weights)")
    e = t.add_argument_group("internal classifiers, growth and SNIP (Shallow-Deep Networks, Kaya et al. 2019; SNIP, "
                             "Lee et al. 2019; the cell networks cells_*)")
    e.add_argument("--exits", metavar="BLOCKS", help="CIFAR ResNets: internal classifiers after these residual blocks, "
                                                     "comma-separated (e.g. layer1.2,layer2.2)")
    e.add_argument("--grow-epochs", metavar="E1,E2,..", help="growing cell networks: add the next block (with its "
                                                             "classifier) after each of these epochs (default: evenly "
                                                             "spaced)")
    e.add_argument("--growth", choices=("epochs", "loss"), default=None,
                   help="epochs (at --grow-epochs) or loss: as soon as an epoch's training loss fell by less than "
                        "--growth-tolerance, at the latest at the evenly spaced epochs")
    e.add_argument("--growth-tolerance", type=float, default=0.01, help="the loss criterion's relative improvement "
                                                                        "(default 0.01)")
    e.add_argument("--ic-weights", metavar="W1,W2,..", help="each internal classifier's maximum SDN loss weight "
                                                            "(default: its depth fraction)")
    e.add_argument("--keep", metavar="K1,K2,..", help="SNIP: the fraction of weights (or channels, structured) each "
                                                      "block keeps, one per block, in (0, 1]")
    e.add_argument("--prune-policy", choices=("skip_layer", "normal", "iterative"), default="skip_layer",
                   help="skip_layer: the newest block at each growth step; normal: every block at each step; "
                        "iterative: every block at each step, keep**j at its j-th pruning (default skip_layer)")
    e.add_argument("--snip-form", choices=("unstructured", "structured"), default="unstructured",
                   help="unstructured masks, or channels removed physically (default unstructured)")
    e.add_argument("--prune-batch", type=int, default=128, help="examples for SNIP's sensitivity (default 128)")
    add_option(e, ["--snip-min-keep"], old=("--min-keep",), dest="min_keep", metavar="F1,F2,..",
               help="iterative policy: each block's floor (default min(0.1, keep))")
    e.add_argument("--reinit-pruned", action="store_true", help="draw the pruned blocks' surviving weights afresh "
                                                                "after each pruning")
    e.add_argument("--prune-epochs", metavar="E1,E2,..", help="further SNIP steps after these epochs (non-growing "
                                                              "networks prune before training and here)")
    t.set_defaults(func=cmd_train)


def cmd_models(args) -> int:
    from edgeshrink import models

    for n in models.list_models():
        print(n)
    return 0


def train_config(args):
    """The training settings of parsed ``args`` (their ranges were checked by :func:`.args.check_ranges`)."""
    from edgeshrink.host.train import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                       momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
                       step_size=args.step_size, milestones=tuple(args.milestones), gamma=args.gamma,
                       power=args.power, label_smoothing=args.label_smoothing, seed=args.seed,
                       criterion=getattr(args, "criterion", "crossentropy"))


def cmd_train(args) -> int:
    from edgeshrink.host.train import train_and_save

    from edgeshrink.host.dynamic.skipnet import RLConfig

    from edgeshrink.host.dynamic.grow import GrowthConfig, SnipConfig, parse_epochs, parse_fractions

    gates = {"kind": args.gates, "hidden": args.gate_hidden} if args.gates else None
    rl = RLConfig(alpha=args.rl_weight, gamma=args.rl_gamma) if args.rl else None
    growth = None
    if args.grow_epochs or args.growth or args.ic_weights:
        growth = GrowthConfig(grow_epochs=parse_epochs(args.grow_epochs, "--grow-epochs") if args.grow_epochs else None,
                              criterion=args.growth or "epochs", tolerance=args.growth_tolerance,
                              ic_max=parse_fractions(args.ic_weights, "--ic-weights") if args.ic_weights else None)
    snip = None
    if args.keep:
        snip = SnipConfig(keep=parse_fractions(args.keep, "--keep"), policy=args.prune_policy, form=args.snip_form,
                          prune_batch=args.prune_batch,
                          min_keep=parse_fractions(args.min_keep, "--snip-min-keep") if args.min_keep else None,
                          reinit=args.reinit_pruned,
                          prune_epochs=parse_epochs(args.prune_epochs, "--prune-epochs") if args.prune_epochs else ())
    elif args.min_keep or args.prune_epochs or args.reinit_pruned:
        from edgeshrink.host.errors import UserError

        raise UserError("--snip-min-keep, --prune-epochs and --reinit-pruned set SNIP: give --keep")
    exits = [v.strip() for v in args.exits.split(",") if v.strip()] if args.exits else None
    metrics = train_and_save(args.model, args.dataset, args.data_dir, train_config(args), args.out, args.download,
                   args.train_subset, image_size=args.image_size, tensorboard=args.tensorboard, gates=gates,
                   init=args.init, rl=rl, perf_table=args.table, exits=exits, growth=growth, snip=snip,
                   metrics=args.metrics)
    if args.json:
        import json

        print(json.dumps(metrics, indent=1))
    return 0
