"""``host`` (also ``edgeshrink``): the host-side command line, one module per command group.

  host models | train                 registered architectures; train a model, write a checkpoint
  host table build|predict|validate|recalibrate|merge|import|show
                                      latency lookup tables
  host prune --table TABLE            a pruning method (--method; NetAdapt by default) to a budget, confirmed on the device
  host compare --methods M --budgets B  methods side by side at budgets, measured in one device session
  host shrink --model F.py:make       your model with your train_one_epoch/train/test functions (edgeshrink.shrink)
  host bench MODEL.onnx               measure a model on a device (local or ssh://), with power
  host export --checkpoint C --format F  ONNX / TFLite / TensorRT artifacts (or --manifest PLAN --jobs N)
  host residual --checkpoint C --keep .. independent residual pruning (index-add / ScatterND)
  host dynamic --checkpoint C --table T  a SkipNet-gated network measured input by input on the device
  host exits --checkpoint C --budget-ms B  early-exit thresholds for a latency budget, measured input by input
  host show RUN                       a network's layers, parameters and top-1 per exit
  host device pack                    the device side as one zipapp file
  host demo                           the main job on the embedded digits data, in one command

User errors print one line and exit with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from edgeshrink.host import __version__
from edgeshrink.host.cli import bench, compare, demo, device, dynamic, exits, export, inputs, prune, shrink, table, \
    train
from edgeshrink.host.errors import UserError

GROUPS = (train, table, prune, compare, shrink, bench, export, inputs, dynamic, exits, device, demo)  # each adds its own subcommands (``register``)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="host", description="edgeshrink host side: train, build latency tables, "
                                "prune with latency-aware NetAdapt, and confirm on the device.")
    p.add_argument("--version", action="version", version=f"edgeshrink {__version__}")
    p.add_argument("--distributed", type=int, metavar="N",
                   help="run the command on N local processes through torchrun (the same as torchrun "
                        "--nproc-per-node N -m edgeshrink.host.cli ...; use torchrun itself across machines)")
    sub = p.add_subparsers(dest="cmd", required=True)
    for group in GROUPS:
        group.register(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; returns its exit code (0, 1 for a manifest with failed artifacts, 2 for bad input, 130
    when interrupted)."""
    args = build_parser().parse_args(argv)
    from edgeshrink.host import distributed, ui
    from edgeshrink.host.cli.args import check_ranges, resolve_deprecated
    from edgeshrink.models import ModelError

    where = ""
    try:
        resolve_deprecated(args)
        check_ranges(args)
        if args.distributed is not None:
            return _torchrun(args.distributed, list(sys.argv[1:] if argv is None else argv))
        if distributed.init_from_env():
            where = f" [rank {distributed.rank()} of {distributed.world_size()}]"
            ui.quiet = not distributed.is_main()
        return args.func(args)
    except (UserError, ModelError) as e:
        print(f"host: error: {e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("host: interrupted", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()


def _torchrun(n: int, argv: List[str]) -> int:
    """``host --distributed N CMD ...``: the same command under ``torchrun --nproc-per-node N`` on this machine."""
    import subprocess

    if not 1 <= n <= 256:
        raise UserError(f"--distributed must be 1..256 processes, got {n}")
    if distributed_env():
        raise UserError("--distributed inside a torchrun run: give one or the other")
    rest, skip = [], False
    for a in argv:  # the command without --distributed N
        if skip:
            skip = False
            continue
        if a == "--distributed":
            skip = True
            continue
        if a.startswith("--distributed="):
            continue
        rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
           "-m", "edgeshrink.host.cli", *rest]
    return subprocess.call(cmd)


def distributed_env() -> bool:
    import os

    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
