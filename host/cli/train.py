"""``host models`` and ``host train``."""

from __future__ import annotations

from edgeshrink.host.cli.args import add_data_args, add_train_args


def register(sub) -> None:
    m = sub.add_parser("models", help="list model architectures")
    m.set_defaults(func=cmd_models)
    t = sub.add_parser("train", help="train a model and write OUT/model.pt and OUT/metrics.json")
    t.add_argument("--model", default="resnet20",
                   help="a registry name (host models) or your own model: path/to/file.py:factory or "
                        "package.module:factory (default resnet20)")
    add_data_args(t)
    add_train_args(t)
    t.add_argument("--out", required=True, help="output folder")
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
    g.add_argument("--perf-table", help="latency table: each gated block's latency share (the RL reward weights)")
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
                       power=args.power, label_smoothing=args.label_smoothing, seed=args.seed)


def cmd_train(args) -> int:
    from edgeshrink.host.train import train_and_save

    from edgeshrink.host.skipnet import RLConfig

    gates = {"kind": args.gates, "hidden": args.gate_hidden} if args.gates else None
    rl = RLConfig(alpha=args.rl_weight, gamma=args.rl_gamma) if args.rl else None
    train_and_save(args.model, args.dataset, args.data_dir, train_config(args), args.out, args.download,
                   args.train_subset, image_size=args.image_size, tensorboard=args.tensorboard, gates=gates,
                   init=args.init, rl=rl, perf_table=args.perf_table)
    return 0
