"""``host shrink``: :func:`edgeshrink.shrink` from the command line, with the user's model and their three functions
named by reference (``file.py:name``), as the DNN-shrink-tool took them."""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    from edgeshrink.host.cli.args import add_json_arg, add_option, add_table_arg
    from edgeshrink.host.prune.config import SHRINK_METHODS, SHRINK_OUTPUTS as OUTPUTS

    s = sub.add_parser("shrink", help="shrink your own model with your own train_one_epoch / train / test functions "
                                      "(file.py:name references) to a latency budget, measured on the device")
    s.add_argument("--model", required=True, help="file.py:factory or package.module:factory (or a registry name)")
    s.add_argument("--checkpoint", metavar="CKPT", help="weights to start from (host train's model.pt); default: the "
                                                         "factory's")
    s.add_argument("--num-classes", type=int, default=10)
    add_table_arg(s, help="latency table JSON (host table build --model ...)")
    s.add_argument("--budget", type=float, default=0.5, help="fraction of the unpruned predicted latency (default 0.5)")
    s.add_argument("--method", choices=SHRINK_METHODS, default="netadapt")
    s.add_argument("--train-one-epoch-fn", metavar="REF",
                   help="file.py:name of train_one_epoch(model, lr): NetAdapt's short-term fine-tuning")
    s.add_argument("--train-fn", metavar="REF", help="file.py:name of train(model): the long-term fine-tuning")
    s.add_argument("--test-fn", metavar="REF", help="file.py:name of test(model) -> float, larger is better")
    s.add_argument("--prune-only", metavar="MODULE", help="prune only the channel groups inside this sub-module")
    s.add_argument("--ignore", default="", help="comma-separated layers or modules kept whole")
    s.add_argument("--select-output", metavar="KEY",
                   help="the output to trace, export and time, for a model returning a dict (a key) or a tuple (an "
                        "index)")
    add_option(s, ["--format"], old=("--output",), choices=OUTPUTS, default="pytorch",
               help="pytorch (OUT/model.pt only) or onnx (also OUT/model.onnx with its artifact.json)")
    s.add_argument("--short-term-lr", type=float, help="netadapt: lr of train_one_epoch (default 0.01, host prune's)")
    s.add_argument("--no-measure", action="store_true", help="skip the device's measurement")
    s.add_argument("--bench-seconds", type=float, default=10.0)
    s.add_argument("--tensorboard", metavar="DIR", help="log NetAdapt's iterations to TensorBoard in DIR")
    s.add_argument("--out", required=True, help="folder: model.pt (checkpoint), shrink.json, model.onnx")
    add_json_arg(s, "shrink.json")
    s.set_defaults(func=cmd_shrink)


def cmd_shrink(args) -> int:
    from edgeshrink import models
    from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from edgeshrink.host.io import prepare_dir, write_json
    from edgeshrink.host.latency.table import load_table
    from edgeshrink.host.shrink import shrink

    fns = {k: models.resolve_callable(getattr(args, k)) if getattr(args, k) else None
           for k in ("train_one_epoch_fn", "train_fn", "test_fn")}
    table = load_table(args.table)
    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint)
        model = model_from_checkpoint(ckpt, args.model, args.checkpoint)
        num_classes = ckpt["num_classes"]
    else:
        model, num_classes = models.create_model(args.model, args.num_classes), args.num_classes
    key = args.select_output
    if key is not None and key.lstrip("-").isdigit():
        key = int(key)
    prepare_dir(args.out, "--out")
    out = Path(args.out)
    r = shrink(model, tuple(table.input_shape), table, budget=args.budget, method=args.method,
               train_one_epoch=fns["train_one_epoch_fn"], train=fns["train_fn"], test=fns["test_fn"],
               prune_only=args.prune_only, ignore=[i for i in args.ignore.split(",") if i], output=args.format,
               select_output=key, short_term_lr=args.short_term_lr, out_dir=str(out), measure=not args.no_measure,
               bench_seconds=args.bench_seconds, tensorboard=args.tensorboard)
    save_checkpoint(str(out / "model.pt"), r.model, num_classes, input_shape=list(table.input_shape),
                    shrink={"method": r.method, "budget_ms": r.budget_ms})
    doc = {"schema": "edgeshrink.shrink", "schema_version": 1, "model": args.model,
           "model_source": models.describe_model(r.model), "table": args.table, "table_fit": r.table_fit,
           "method": r.method,
           "budget_ms": r.budget_ms, "baseline_ms_predicted": r.baseline_ms_predicted,
           "pruned_ms_predicted": r.pruned_ms_predicted, "baseline_ms_measured": r.baseline_ms_measured,
           "pruned_ms_measured": r.pruned_ms_measured, "measured_ratio": r.measured_ratio,
           "baseline_score": r.baseline_score, "score": r.score, "widths": r.widths, "onnx": r.onnx,
           "sha256": r.sha256, "measured_sha256": r.measured_sha256,
           "iterations": r.history, "wall_s": r.wall_s}
    write_json(out / "shrink.json", doc)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"shrink.json, model.pt{', model.onnx' if r.onnx else ''} -> {out}")
    return 0
