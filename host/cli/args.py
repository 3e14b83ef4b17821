"""Argument groups several commands share (training, data, NetAdapt, whole-network timing), and the parsing of
values whose checks live in the library."""

from __future__ import annotations

import argparse
from typing import Optional

from edgeshrink.host.latency.networks import NETWORK_ITERS, NETWORK_LOADS, NETWORK_ROUNDS

from edgeshrink.host.prune.config import NetAdaptConfig

NETADAPT_OPTIONS = ("init_reduction", "decay", "short_term_steps", "short_term_lr", "long_term_epochs", "long_term_lr")


def netadapt_defaults(cfg: NetAdaptConfig = NetAdaptConfig()) -> dict:
    """The command-line defaults of NetAdapt's options: ``cfg``'s (NetAdaptConfig's own, or a named preset's)."""
    return {k: getattr(cfg, k) for k in NETADAPT_OPTIONS}


NETADAPT_DEFAULTS = netadapt_defaults()


# -- one vocabulary ----------------------------------------------------------------------------------------------
# Every command spells the same thing the same way: --table (a latency table), --checkpoint (a checkpoint),
# --out (always a folder; a single file written is named --out-<kind>, e.g. --out-table), --json (the result on
# stdout). Spellings of earlier releases keep working for now and say so in one line on stderr.

# Options whose flag is not their field's name with dashes (renamed so that no flag has two meanings).
FLAGS = {"criterion": "--swd-scope", "power": "--poly-power", "out_table": "--out-table"}


def flag_of(dest: str) -> str:
    """The flag that sets ``dest``: ``--swd-scope`` for SWD's ``criterion``, else the name with dashes."""
    return FLAGS.get(dest, "--" + dest.replace("_", "-"))


def deprecated(spelling: str, use: str) -> None:
    """One line on stderr: ``spelling`` still works, ``use`` is the word now."""
    import sys

    print(f"host: note: {spelling} is deprecated; use {use}", file=sys.stderr)


def add_option(p, names, old=(), **kw):
    """``p.add_argument(*names, **kw)``, also accepting the ``old`` spellings (with :func:`deprecated`'s notice)."""
    if not old:
        return p.add_argument(*names, **kw)
    base = p._registry_get("action", kw.pop("action", None), None)  # groups share their parser's registry
    new = [n for n in names if n.startswith("--")][0]

    class Deprecating(base):
        spellings_deprecated = tuple(old)

        def __call__(self, parser, namespace, values, option_string=None):
            if option_string in old:
                deprecated(option_string, new)
            super().__call__(parser, namespace, values, option_string)

    return p.add_argument(*names, *old, action=Deprecating, **kw)


def add_table_arg(p, required: bool = True, help: str = "latency table JSON (host table build)") -> None:
    """``--table T.json`` (``--perf-table`` of earlier releases)."""
    add_option(p, ["--table"], old=("--perf-table",), required=required, metavar="TABLE", help=help)


def add_checkpoint_arg(p, required: bool = True, help: str = "a checkpoint (host train's model.pt)") -> None:
    """``--checkpoint CKPT``; a positional checkpoint (earlier releases) still works, resolved by
    :func:`resolve_deprecated`."""
    p.add_argument("--checkpoint", metavar="CKPT", help=help)
    p.add_argument("checkpoint_pos", nargs="?", metavar="CHECKPOINT", help=argparse.SUPPRESS)
    p.set_defaults(checkpoint_required=required)


def add_json_arg(p, what: str = "the result") -> None:
    p.add_argument("--json", action="store_true", help=f"{what} as JSON on stdout (logs on stderr)")


def resolve_deprecated(args: argparse.Namespace) -> None:
    """After parsing: a positional checkpoint becomes ``--checkpoint`` (with its notice); a required one missing is
    refused.

    Raises:
        UserError: both spellings, or neither where the command needs one.
    """
    from edgeshrink.host.errors import UserError

    if not hasattr(args, "checkpoint_pos"):
        return
    pos = args.checkpoint_pos
    del args.checkpoint_pos
    if pos is not None:
        if args.checkpoint is not None:
            raise UserError(f"give the checkpoint once: --checkpoint {args.checkpoint} or {pos}, not both")
        deprecated("a positional checkpoint", f"--checkpoint {pos}")
        args.checkpoint = pos
    if args.checkpoint_required and args.checkpoint is None:
        raise UserError("--checkpoint is required")


def add_train_args(p: argparse.ArgumentParser) -> None:
    from edgeshrink.host.names import OPTIMIZERS, SCHEDULES

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
    add_option(g, ["--poly-power"], old=("--power",), dest="power", type=float, default=0.9,
               help="the poly schedule's exponent (default 0.9)")
    g.add_argument("--label-smoothing", type=float, default=0.0, help="off by default")
    g.add_argument("--criterion", choices=("crossentropy", "rmi"), default="crossentropy",
                   help="the loss: crossentropy (default), or rmi for segmentation (Region Mutual Information, Zhao et "
                        "al. 2019, with the binary cross-entropy)")


def add_per_input_args(p: argparse.ArgumentParser) -> None:
    """The options of a command that runs test inputs one at a time on the device (``host dynamic``, ``host
    exits``)."""
    p.add_argument("--device", help="where to measure (default: the table's device)")
    p.add_argument("--trust-new-host", action="store_true", help="ssh://: accept and record an unknown host key")
    p.add_argument("--limit", type=int, metavar="N", help="the first N test images only (default: all)")
    p.add_argument("--iters", type=int, default=3, help="timed runs per input (its latency is their median)")
    p.add_argument("--check", type=int, default=200, help="test inputs the export is checked on against torch")


def add_data_args(p: argparse.ArgumentParser, training: bool = True, image_size: bool = True,
                  metrics: Optional[bool] = None) -> None:
    """The dataset options a command uses, no more. ``training=False``: a command that only runs test inputs (no
    --train-subset, --download, --metrics); ``image_size=False``: one that takes the size from its checkpoint;
    ``metrics=False``: one that reports top-1 only (default: as ``training``)."""
    from edgeshrink.host.names import DATASET_NAMES

    p.add_argument("--dataset", choices=DATASET_NAMES, default="digits",
                   help="digits (embedded: scikit-learn's handwritten digits), fashion-mnist (the real benchmark: "
                        "Debian's dataset-fashion-mnist), cifar10, cifar100, imagefolder, imagenet (ROOT/train and "
                        "ROOT/val class folders), cityscapes (segmentation: ROOT/leftImg8bit and ROOT/gtFine)")
    p.add_argument("--data-dir", help="dataset folder (cifar*: the python archive or its extracted folder; "
                                      "fashion-mnist: the IDX files, default /usr/share/datasets/fashion-mnist)")
    if training:
        p.add_argument("--train-subset", type=int, metavar="N",
                       help="train on a stratified, seeded subset of N training images (quick runs); val and test whole")
    if image_size:
        p.add_argument("--image-size", type=int, metavar="PX",
                       help="resize the images to PX x PX (networks for 64-512 pixel inputs; cityscapes: PX x 2PX, "
                            "default 256; imagenet: a PX crop, default 224); prune and compare default to the "
                            "checkpoint's input size")
    if training:
        p.add_argument("--download", action="store_true", help="download CIFAR archives into --data-dir when missing")
    if training if metrics is None else metrics:
        p.add_argument("--metrics", metavar="M1,M2,..", help="what evaluation reports, the first selecting models "
                       "(NetAdapt's short-term score): miou, top1, top5 (default miou,top1,top5 for segmentation, where "
                       "top-1 / top-5 are per labelled pixel; top1,top5 otherwise)")
    p.add_argument("--seed", type=int, default=0, help="seed of splits, initialisation and batches")


def add_netadapt_args(p: argparse.ArgumentParser, defaults=NETADAPT_DEFAULTS) -> None:
    """NetAdapt's options and the recovery's epochs and lr. ``defaults=None``: every option defaults to None (unset,
    so an option given to another method is refused) and :func:`netadapt_config` fills :data:`NETADAPT_DEFAULTS`."""
    d = defaults or {k: None for k in NETADAPT_DEFAULTS}
    shown = defaults or NETADAPT_DEFAULTS
    g = p.add_argument_group("NetAdapt (Yang et al. 2018)")
    g.add_argument("--init-reduction", type=float, default=d["init_reduction"],
                   help="first iteration's latency reduction target, a fraction of the unpruned prediction "
                        f"(default {shown['init_reduction']})")
    g.add_argument("--decay", type=float, default=d["decay"],
                   help=f"per-iteration decay of the reduction target (default {shown['decay']})")
    g.add_argument("--short-term-steps", type=int, default=d["short_term_steps"],
                   help=f"SGD steps of short-term fine-tuning per proposal (default {shown['short_term_steps']})")
    g.add_argument("--short-term-lr", type=float, default=d["short_term_lr"],
                   help=f"(default {shown['short_term_lr']})")
    g.add_argument("--select", choices=("ratio", "accuracy"), default="ratio" if defaults else None,
                   help="ratio: least val accuracy loss per ms saved (default); accuracy: most accurate proposal (the paper)")
    g.add_argument("--max-iters", type=int, default=NetAdaptConfig.max_iters if defaults else None,
                   help=f"(default {NetAdaptConfig.max_iters})")
    g.add_argument("--short-term-val", type=int, metavar="N",
                   help="evaluate each proposal on a seeded subset of N val images (default: the whole val split)")
    r = p.add_argument_group("recovery after pruning (every method)")
    r.add_argument("--long-term-epochs", type=int, default=d["long_term_epochs"],
                   help=f"epochs of recovery training (default {shown['long_term_epochs']}; lr-rewind: the last this "
                        "many epochs of the original schedule)")
    r.add_argument("--long-term-lr", type=float, default=d["long_term_lr"],
                   help=f"peak lr of fine-tuning (default {shown['long_term_lr']})")


def netadapt_config(args, seed: int, defaults=NETADAPT_DEFAULTS):
    """The NetAdapt settings of parsed ``args``, unset options from ``defaults`` (the budget and grid are filled in by
    the pipeline; the integer ranges were checked by :func:`check_ranges`).

    Raises:
        UserError: ``--init-reduction`` or ``--decay`` out of range.
    """
    from edgeshrink.host.errors import UserError

    def get(name, default=None):
        v = getattr(args, name, None)
        return v if v is not None else defaults.get(name, default)

    if not (0 < get("init_reduction") < 1) or not (0 < get("decay") <= 1):
        raise UserError("--init-reduction must be in (0, 1) and --decay in (0, 1]")
    return NetAdaptConfig(budget_ms=0.0, init_reduction=get("init_reduction"), decay=get("decay"),
                          short_term_steps=get("short_term_steps"), short_term_lr=get("short_term_lr"),
                          select=get("select", NetAdaptConfig.select), long_term_epochs=get("long_term_epochs"),
                          long_term_lr=get("long_term_lr"), max_iters=get("max_iters", NetAdaptConfig.max_iters),
                          seed=seed,
                          short_term_val=getattr(args, "short_term_val", None))


# Options that every method shares (not owned by one): NetAdaptConfig holds them for its own history.
COMMON_OPTIONS = ("budget_ms", "granularity", "batch_size", "seed", "long_term_epochs", "long_term_lr")


def add_method_args(p: argparse.ArgumentParser) -> None:
    """``--method`` / ``--methods`` options of every registry method (default None: the method's own default)."""
    from edgeshrink.host.prune.config import PENALTIES, RANKS, RECOVERY, SCOPES

    r = p.add_argument_group("method (any); see docs/pruning.md")
    r.add_argument("--recover", choices=RECOVERY,
                   help="after pruning: fine-tune (NetAdapt's long-term fine-tuning), lr-rewind (Renda et al. 2020: "
                        "the original schedule's last --long-term-epochs), scratch (the pruned architecture retrained "
                        "from a fresh initialisation with the original schedule), none (default: the method's; swd: "
                        "none, the others: fine-tune)")
    r.add_argument("--pruning-rate", type=float, metavar="P",
                   help="threshold methods (magnitude, taylor, slimming, swd, snip): remove this fraction of the parameters "
                        "(bisection on the threshold) instead of meeting a latency budget")
    r.add_argument("--rank", choices=RANKS, help="criterion methods: rank channels by their score (importance, "
                                                 "the default) or by score per ms of marginal latency (per-ms)")
    c = p.add_argument_group("magnitude, taylor, snip")
    c.add_argument("--scope", choices=SCOPES, help="global: one ranking over the network (default); local: the same "
                                                   "ratio per layer; safe: global, no group below --min-keep")
    c.add_argument("--norm", type=int, choices=(1, 2), help="magnitude: L1 or L2 filter norm (default 2)")
    c.add_argument("--taylor-batches", type=int, help="taylor: training batches the gradients sum over (default 8)")
    c.add_argument("--min-keep", type=float, help="safe scope/criterion: each group keeps at least this fraction "
                                                  "(default 0.25)")
    c.add_argument("--prune-batch", type=int, help="snip: examples in the one batch of the sensitivity (default 128)")
    s = p.add_argument_group("slimming (Liu et al. 2017), swd (Tessier et al. 2022), morphnet (Gordon et al. 2018)")
    s.add_argument("--method-epochs", type=int, help="epochs of the method's own training: sparsity training "
                                                     "(slimming, default 5), SWD (default 5), per MorphNet round (default 2)")
    s.add_argument("--method-lr", type=float, help="peak lr of that training (and of eigendamage's fine-tuning "
                                                   "between rounds; default 0.01)")
    s.add_argument("--penalty", choices=PENALTIES, help="slimming: l1 (default) or smooth-l1")
    s.add_argument("--sparsity", type=float, help="slimming: penalty strength (default 1e-5 for l1, 1e-6 for smooth-l1)")
    s.add_argument("--pruning-iterations", type=int, help="slimming, eigendamage: rounds of prune + fine-tune "
                                                          "(default 1)")
    s.add_argument("--fine-tuning-epochs", type=int, help="slimming, eigendamage: fine-tuning epochs after each round "
                                                          "but the last (default 1)")
    s.add_argument("--mu", type=float, help="swd: decay strength mu (default 5e-4)")
    s.add_argument("--a-min", type=float, help="swd: a at the start (default 1)")
    s.add_argument("--a-max", type=float, help="swd: a at the end (default 1e4)")
    add_option(s, ["--swd-scope"], old=("--criterion",), dest="criterion", choices=SCOPES,
               help="swd: which channels are targets at the budget: global (default), local, safe")
    s.add_argument("--refresh-steps", type=int, help="swd: steps between target sets; morphnet: between marginal "
                                                     "latencies (default 50)")
    s.add_argument("--morphnet-rounds", type=int, help="morphnet: shrink/expand rounds (default 2)")
    s.add_argument("--morphnet-strength", type=float, help="morphnet: lambda per ms of marginal latency (default 0.05)")
    s.add_argument("--gamma-threshold", type=float, help="morphnet: |gamma| below this is a dead channel (default 0.01)")
    e = p.add_argument_group("eigendamage (Wang et al. 2019)")
    e.add_argument("--damping", type=float, help="added to every K-FAC eigenvalue (default 1e-3)")
    e.add_argument("--correct-eigenvalues", action="store_const", const=True,
                   help="the eigenvalue-corrected curvature in the eigenbasis (EKFAC, George et al. 2018)")
    e.add_argument("--kfac-batches", type=int, help="training batches the K-FAC factors average over (default 8)")
    e.add_argument("--eigenbasis", choices=("latency", "off"),
                   help="off: plain channels only (default); latency: after pruning, a layer also takes its "
                        "eigenbasis form (three convolutions) where they are measured faster on the table's device "
                        "than the plain layer (it removes more: docs/pruning.md)")


def option_owners() -> dict:
    """``{option dest: [methods it belongs to]}`` from the methods' settings classes."""
    from dataclasses import fields

    from edgeshrink.host.prune.config import METHOD_TRAITS

    owners: dict = {}
    for name, spec in METHOD_TRAITS.items():
        for f in fields(spec.config):
            if f.name not in COMMON_OPTIONS:
                owners.setdefault(f.name, []).append(name)
    return owners


def method_configs(args, methods) -> dict:
    """Each method's settings from parsed ``args``: the options given that it owns, its defaults for the rest.

    Raises:
        UserError: an option given that belongs to none of ``methods`` (one line naming it and its methods), or a
            NetAdapt setting out of range.
    """
    from edgeshrink.host.errors import UserError
    from edgeshrink.host.prune.config import METHOD_TRAITS
    from edgeshrink.host.prune.methods import method_spec

    owners = option_owners()
    for m in methods:
        method_spec(m)
    for opt, own in owners.items():
        if getattr(args, opt, None) is not None and not set(own) & set(methods):
            raise UserError(f"{flag_of(opt)} belongs to {', '.join(own)}, not {', '.join(methods)}")
    if getattr(args, "pruning_rate", None) is not None:
        wrong = [m for m in methods if not METHOD_TRAITS[m].threshold]
        if wrong:
            raise UserError(f"--pruning-rate applies to the threshold methods (magnitude, taylor, slimming, swd, snip), "
                            f"not {', '.join(wrong)}")
    out = {}
    for m in methods:
        if m == "netadapt":
            out[m] = netadapt_config(args, args.seed)
            continue
        cls = method_spec(m).config
        out[m] = cls(**{opt: getattr(args, opt) for opt, own in owners.items()
                        if m in own and getattr(args, opt, None) is not None})
    return out


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


def print_result(result, render, as_json: bool, where: str) -> None:
    """A command's result: the rich summary on stdout and ``where`` after it, or with ``--json`` the summary on
    stderr and the JSON on stdout."""
    import json

    from edgeshrink.host import ui

    if as_json:
        render(result, ui.err)
        print(json.dumps(result, indent=1))
    else:
        render(result)
        print(where)


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
    "interleave": (0, 1_000_000), "align": (0, 4096), "loads": (1, 1_000_000), "train_subset": (10, 100_000_000),
    "method_epochs": (1, 100_000), "pruning_iterations": (1, 1000), "fine_tuning_epochs": (0, 100_000),
    "taylor_batches": (1, 1_000_000), "refresh_steps": (1, MAX_ITERS), "morphnet_rounds": (1, 1000),
    "short_term_val": (10, 100_000_000), "kfac_batches": (1, 1_000_000), "gate_hidden": (1, 4096),
    "limit": (1, 100_000_000), "check": (1, 100_000_000), "prune_batch": (1, 1_000_000),
    "cost_inputs": (1, 100_000_000), "per_input_limit": (1, 100_000_000),
}
POSITIVE = ("lr", "short_term_lr", "long_term_lr", "gamma", "power", "refine_tol", "sigma", "mad", "method_lr",
            "sparsity", "mu", "a_min", "a_max", "morphnet_strength", "gamma_threshold", "min_keep", "pruning_rate",
            "damping", "rl_weight", "rl_gamma", "growth_tolerance", "p99_ms")
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
        flag = flag_of(name)
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


def image_size_for(args) -> "int | None":
    """``--image-size``, else the height of ``--pruner-input``, else the height of the input the checkpoint was
    trained at (``input_shape``), else None (a dataset's ``--image-size`` is its height: square images, cityscapes
    twice as wide)."""
    if getattr(args, "image_size", None):
        return args.image_size
    if getattr(args, "pruner_input", None):
        return int(args.pruner_input[2])
    from edgeshrink.host.checkpoint import load_checkpoint

    shape = load_checkpoint(args.checkpoint).get("input_shape")
    return int(shape[-2]) if shape else None


def shape_arg(text: str):
    """argparse type of ``--input`` / ``--pruner-input``: ``1x3x512x1024`` -> a tuple (one-line error otherwise)."""
    from edgeshrink.host.latency.table import parse_shape

    try:
        return tuple(parse_shape(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_shape_args(p: argparse.ArgumentParser) -> None:
    """``--input`` (the deployment input, the table's) and ``--pruner-input`` (where pruning runs)."""
    p.add_argument("--input", type=shape_arg, metavar="NxCxHxW",
                   help="the deployment input: the table's, the export's and the measurement's (default: the table's; "
                        "given, it must be the table's)")
    p.add_argument("--pruner-input", type=shape_arg, metavar="NxCxHxW",
                   help="prune at this smaller input (training, evaluation, surgery; e.g. 1x3x64x128 for a segmentation "
                        "network deployed at 1x3x512x1024); default: the deployment input")
