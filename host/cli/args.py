"""Argument groups several commands share (training, data, NetAdapt, whole-network timing), and the parsing of
values whose checks live in the library."""

from __future__ import annotations

import argparse

from edgeshrink.host.latency.networks import NETWORK_ITERS, NETWORK_LOADS, NETWORK_ROUNDS

NETADAPT_DEFAULTS = dict(init_reduction=0.06, decay=0.95, short_term_steps=30, short_term_lr=0.01,
                         long_term_epochs=10, long_term_lr=0.01)


def add_train_args(p: argparse.ArgumentParser) -> None:
    from edgeshrink.host.train import OPTIMIZERS, SCHEDULES

    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=30)
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="SGD with Nesterov momentum, or Adam")
    g.add_argument("--lr", type=float, default=0.1, help="peak learning rate (default 0.1; use ~1e-3 with adam)")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=5e-4)
    g.add_argument("--schedule", choices=SCHEDULES, default="cosine")
    g.add_argument("--step-size", type=int, default=30, help="epochs between decays (step)")
    g.add_argument("--milestones", type=lambda s: [int(v) for v in s.split(",")], default=[100, 150],
                   help="comma-separated epochs (multistep)")
    g.add_argument("--gamma", type=float, default=0.1, help="decay factor (step, multistep)")
    g.add_argument("--power", type=float, default=0.9, help="exponent (poly)")
    g.add_argument("--label-smoothing", type=float, default=0.0, help="off by default")


def add_data_args(p: argparse.ArgumentParser) -> None:
    from edgeshrink.host.data import DATASETS

    p.add_argument("--dataset", choices=list(DATASETS), default="digits",
                   help="digits (embedded: scikit-learn's handwritten digits), cifar10, cifar100, imagefolder")
    p.add_argument("--data-dir", help="dataset folder (cifar*: the python archive or its extracted folder)")
    p.add_argument("--download", action="store_true", help="download CIFAR archives into --data-dir when missing")
    p.add_argument("--seed", type=int, default=0, help="seed of splits, initialisation and batches")


def add_netadapt_args(p: argparse.ArgumentParser, defaults=NETADAPT_DEFAULTS) -> None:
    g = p.add_argument_group("NetAdapt (Yang et al. 2018)")
    g.add_argument("--init-reduction", type=float, default=defaults["init_reduction"],
                   help="first iteration's latency reduction target, a fraction of the unpruned prediction")
    g.add_argument("--decay", type=float, default=defaults["decay"], help="per-iteration decay of the reduction target")
    g.add_argument("--short-term-steps", type=int, default=defaults["short_term_steps"],
                   help="SGD steps of short-term fine-tuning per proposal")
    g.add_argument("--short-term-lr", type=float, default=defaults["short_term_lr"])
    g.add_argument("--select", choices=("ratio", "accuracy"), default="ratio",
                   help="ratio: least val accuracy loss per ms saved (default); accuracy: most accurate proposal (the paper)")
    g.add_argument("--long-term-epochs", type=int, default=defaults["long_term_epochs"])
    g.add_argument("--long-term-lr", type=float, default=defaults["long_term_lr"])
    g.add_argument("--max-iters", type=int, default=100)


def netadapt_config(args, seed: int):
    """The NetAdapt settings of parsed ``args`` (the budget and grid are filled in by the pipeline; the integer
    ranges were checked by :func:`check_ranges`).

    Raises:
        UserError: ``--init-reduction`` or ``--decay`` out of range.
    """
    from edgeshrink.host.errors import UserError
    from edgeshrink.host.prune.netadapt import NetAdaptConfig

    if not (0 < args.init_reduction < 1) or not (0 < args.decay <= 1):
        raise UserError("--init-reduction must be in (0, 1) and --decay in (0, 1]")
    return NetAdaptConfig(budget_ms=0.0, init_reduction=args.init_reduction, decay=args.decay,
                          short_term_steps=args.short_term_steps, short_term_lr=args.short_term_lr,
                          select=args.select, long_term_epochs=args.long_term_epochs, long_term_lr=args.long_term_lr,
                          max_iters=getattr(args, "max_iters", 100), seed=seed)


def add_network_bench_args(p: argparse.ArgumentParser, what: str) -> None:
    """--rounds/--iters/--loads of whole-network measurements (host table validate / recalibrate)."""
    p.add_argument("--rounds", type=int, default=NETWORK_ROUNDS,
                   help=f"round-robin bursts per {what}, all loaded side by side, each round in a new order "
                        f"(default {NETWORK_ROUNDS})")
    p.add_argument("--iters", type=int, default=NETWORK_ITERS,
                   help=f"timed runs per {what} per burst (default {NETWORK_ITERS}: many short bursts follow a "
                        "device whose speed wanders within a second)")
    p.add_argument("--loads", type=int, default=None,
                   help=f"loadings of the whole list the rounds are shared out over (default {NETWORK_LOADS}, at most "
                        "--rounds: a loaded session keeps its own offset while it is loaded)")


def every_tenth(log):
    """Progress from the device's ``[i/n] ...`` lines: every tenth and the last."""
    def on_line(line: str) -> None:
        if line.startswith("[") and "/" in line and "]" in line:
            i, n = line[1:line.index("]")].split("/")
            if i.isdigit() and n.isdigit() and (int(i) % 10 == 0 or i == n):
                log(line)
    return on_line


def progress_reporter(prog, labels):
    """A ``progress(stage, done, total)`` callback drawing one rich task per stage (``labels``: stage -> title)."""
    tasks = {}

    def progress(stage, done, total):
        if stage not in tasks:
            tasks[stage] = prog.add_task(labels.get(stage, stage), total=total)
        prog.update(tasks[stage], completed=done, total=total)

    return progress


# Limits of the numbers a command line takes: (lowest, highest). Integers beyond them would run for days or
# allocate more than a board has; floats must be finite besides (inf and nan parse, and would hang a wait).
MAX_ITERS = 10_000_000
LIMITS = {
    "epochs": (1, 100_000), "batch_size": (1, 1 << 16), "iters": (1, MAX_ITERS), "warmup": (0, MAX_ITERS),
    "rounds": (1, 1_000_000), "jobs": (1, 256), "threads": (0, 4096), "granularity": (1, 4096),
    "batch": (1, 1_000_000), "samples": (3, 100_000), "anchors": (0, 100_000), "calib_samples": (1, 1_000_000),
    "max_iters": (1, 1_000_000), "bench_iters": (1, MAX_ITERS), "bench_rounds": (1, 1_000_000),
    "short_term_steps": (0, MAX_ITERS), "long_term_epochs": (0, 100_000), "step_size": (1, 100_000),
    "finetune_epochs": (0, 100_000), "table_iters": (1, MAX_ITERS), "table_rounds": (1, 1_000_000),
    "num_classes": (1, 1_000_000), "power_interval_ms": (10, 60_000), "refine_rounds": (0, 1000),
    "interleave": (0, 1_000_000), "align": (0, 4096), "loads": (1, 1_000_000),
}
POSITIVE = ("lr", "short_term_lr", "long_term_lr", "gamma", "power", "refine_tol", "sigma", "mad")
NON_NEGATIVE = ("momentum", "weight_decay", "label_smoothing", "warmup_s", "idle_s", "cool_down_s")
FINITE = ("cool_down_to",)


def check_ranges(args: argparse.Namespace) -> None:
    """Refuse a number out of its range (:data:`LIMITS`) or not finite, naming the flag, before any work.

    Raises:
        UserError: one line naming the flag and the value.
    """
    from edgeshrink.host.checks import integer, number

    for name, value in vars(args).items():
        if value is None or isinstance(value, (bool, str, list)):
            continue
        flag = "--" + name.replace("_", "-")
        if name in LIMITS and isinstance(value, int):
            lo, hi = LIMITS[name]
            integer(value, flag, lo=lo, hi=hi)
        elif name in POSITIVE:
            number(value, flag, positive=True)
        elif name in NON_NEGATIVE:
            number(value, flag, non_negative=True)
        elif name in FINITE:
            number(value, flag)
    if getattr(args, "label_smoothing", None) is not None and not args.label_smoothing < 1:
        from edgeshrink.host.errors import UserError

        raise UserError(f"--label-smoothing must be below 1, got {args.label_smoothing}")
