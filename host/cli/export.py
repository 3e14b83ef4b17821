"""``host export`` (one artifact or a manifest of many) and ``host residual`` (independent residual pruning)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

from edgeshrink.host.cli.args import add_checkpoint_arg, add_data_args, add_json_arg, add_option
from edgeshrink.host.errors import UserError


def register(sub) -> None:
    ex = sub.add_parser("export", help="deployable artifacts (ONNX, TFLite, TensorRT) with artifact.json, one or a manifest")
    add_checkpoint_arg(ex, required=False, help="the checkpoint to export (or use --manifest)")
    ex.add_argument("--format", choices=("onnx", "tflite", "trt"), default="onnx",
                    help="onnx; tflite (litert-torch, the [tflite] extra); trt (ships the ONNX, plus the int8 "
                         "calibration cache; the device builds the engine)")
    ex.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    ex.add_argument("--input", default="1x3x32x32", help="input shape NxCxHxW (fixed)")
    ex.add_argument("--dynamic-batch", action="store_true", help="ONNX: leave the batch axis free")
    ex.add_argument("--dataset", default="digits", help="representative set (int8) and test split (int8 top-1)")
    ex.add_argument("--data-dir")
    ex.add_argument("--calib-samples", type=int, default=128, help="representative inputs for int8 (training split)")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("-o", "--out", help="output folder (one artifact)")
    ex.add_argument("--manifest", help="YAML plan of many artifacts (see README)")
    ex.add_argument("--jobs", type=int, default=1, help="worker processes for a manifest")
    ex.add_argument("--shard", default="1/1", help="build only share i of N of the manifest")
    add_json_arg(ex, "artifact.json (or manifest.json)")

    rs = sub.add_parser("residual", help="independent residual pruning of a CIFAR ResNet: each branch at a "
                                         "residual add keeps its own channels (index-add, ScatterND in ONNX)")
    add_checkpoint_arg(rs, help="a resnet* checkpoint (dense, or pruned in the coupled mode)")
    rs.add_argument("--keep", required=True, help="channels each branch keeps per stage, e.g. layer1=8,layer2=16,layer3=32")
    add_option(rs, ["--long-term-epochs"], old=("--finetune-epochs",), type=int, default=5,
               help="fine-tuning epochs after pruning (default 5)")
    rs.add_argument("--lr", type=float, default=0.01)
    add_data_args(rs, image_size=False, metrics=False)
    rs.add_argument("--out", required=True, help="output folder: model.pt, model.onnx, report.json")
    add_json_arg(rs, "report.json")
    ex.set_defaults(func=cmd_export)
    rs.set_defaults(func=cmd_residual)


def summary_rows(results: Sequence[Dict[str, object]]) -> List[List[str]]:
    """The manifest's summary table: one row per artifact (id, status, check, seconds)."""
    rows = []
    for r in results:
        chk = r.get("check") or {}
        diff = chk.get("max_abs_diff_test", chk.get("max_abs_diff"))
        detail = r.get("error") or (f"max |diff| {diff:.2g}" if diff is not None else "")
        if "top1" in chk:
            detail += f", top-1 {chk['top1']:.2f}% (fp32 {chk['top1_fp32_torch']:.2f}%)"
        rows.append([r["id"], r["status"], detail, f"{r['wall_s']:.1f}"])
    return rows


def cmd_export(args) -> int:
    from edgeshrink.host import ui
    from edgeshrink.host.export import artifact

    if args.manifest:
        from edgeshrink.host.latency.build import parse_shard

        if args.checkpoint or args.out:
            raise UserError("give either --checkpoint CKPT --out DIR or --manifest PLAN, not both")
        try:
            shard = parse_shard(args.shard)
        except ValueError as e:
            raise UserError(str(e)) from None
        doc = artifact.build_manifest(args.manifest, jobs=args.jobs, shard=shard,
                                      progress=lambda k, n, r: ui.log(f"[{k}/{n}] {r['id']}: {r['status']}"
                                                                      + (f" ({r['error']})" if r.get("error") else "")))
        if args.json:
            print(json.dumps(doc, indent=1))
        else:
            from rich.table import Table

            t = Table(title=f"{args.manifest}: {doc['counts']['built']} built, {doc['counts']['skipped']} skipped, "
                            f"{doc['counts']['failed']} failed ({doc['wall_s']:.0f} s, {args.jobs} jobs)")
            for c in ("artifact", "status", "check", "s"):
                t.add_column(c)
            for row in summary_rows(doc["artifacts"]):
                t.add_row(*row)
            ui.out.print(t)
        return 1 if doc["counts"]["failed"] else 0
    if not args.checkpoint or not args.out:
        raise UserError("host export needs --checkpoint CKPT and --out DIR (or --manifest PLAN)")
    doc = artifact.export_artifact({"checkpoint": args.checkpoint, "format": args.format, "precision": args.precision,
                                    "input": args.input, "out": args.out, "dynamic_batch": args.dynamic_batch,
                                    "dataset": args.dataset, "data_dir": args.data_dir,
                                    "calib_samples": args.calib_samples, "seed": args.seed, "force": True})
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        chk = doc["check"]
        msg = f"{doc['format']} {doc['precision']} -> {Path(args.out) / doc['file']} ({doc['sha256'][:12]})"
        if "max_abs_diff_test" in chk:
            msg += f"; max |diff| to torch on the test split {chk['max_abs_diff_test']:.2g}"
        elif "max_abs_diff" in chk:
            msg += f"; max |diff| to torch {chk['max_abs_diff']:.2g}"
        if "top1" in chk:
            msg += f"; test top-1 {chk['top1']:.2f}% vs fp32 {chk['top1_fp32_torch']:.2f}%"
        ui.log(msg)
    return 0


def cmd_residual(args) -> int:
    from edgeshrink.host.data import load_dataset
    from edgeshrink.host.prune.residual import parse_stage_widths, run_independent

    try:
        per_stage = parse_stage_widths(args.keep)
    except ValueError as e:
        raise UserError(str(e)) from None
    report = run_independent(args.checkpoint, per_stage, load_dataset(args.dataset, args.data_dir, seed=args.seed,
                                                              train_subset=args.train_subset,
                                                              download=args.download),
                    args.out, finetune_epochs=args.long_term_epochs, lr=args.lr, seed=args.seed)
    if args.json:
        print(json.dumps(report, indent=1))
    return 0
