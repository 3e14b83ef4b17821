"""``host``: the host-side command line (argparse subcommands).

  host models                         list registered architectures
  host train                          train a model, write a checkpoint
  host table build|predict|validate|recalibrate|merge|import|show
                                      latency lookup tables
  host prune --perf-table TABLE       latency-aware NetAdapt to a budget, confirmed on the device
  host bench MODEL.onnx               measure a model on a device (local or ssh://), with power
  host export CKPT --format F         ONNX / TFLite / TensorRT artifacts (or --manifest PLAN --jobs N)
  host residual CKPT --keep ...       independent residual pruning (index-add / ScatterND)
  host device pack                    the device side as one zipapp file
  host demo                           the main job on the embedded digits data, in one command

User errors print one line and exit with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import List, Optional

from device.options import add_measure_options
from device.options import forward as forward_measure_options
from host import __version__
from host.errors import UserError

NETADAPT_DEFAULTS = dict(init_reduction=0.06, decay=0.95, short_term_steps=30, short_term_lr=0.01,
                         long_term_epochs=10, long_term_lr=0.01)


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from host.train import OPTIMIZERS, SCHEDULES

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


def _add_data_args(p: argparse.ArgumentParser) -> None:
    from host.data import DATASETS

    p.add_argument("--dataset", choices=list(DATASETS), default="digits",
                   help="digits (embedded: scikit-learn's handwritten digits), cifar10, cifar100, imagefolder")
    p.add_argument("--data-dir", help="dataset folder (cifar*: the python archive or its extracted folder)")
    p.add_argument("--download", action="store_true", help="download CIFAR archives into --data-dir when missing")
    p.add_argument("--seed", type=int, default=0, help="seed of splits, initialisation and batches")


def _add_netadapt_args(p: argparse.ArgumentParser, defaults=NETADAPT_DEFAULTS) -> None:
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


def _network_bench_options(p: argparse.ArgumentParser, what: str) -> None:
    """--rounds/--iters/--loads of whole-network measurements (host table validate / recalibrate)."""
    from host.latency.validate import NETWORK_ITERS, NETWORK_LOADS, NETWORK_ROUNDS

    p.add_argument("--rounds", type=int, default=NETWORK_ROUNDS,
                   help=f"round-robin bursts per {what}, all loaded side by side, each round in a new order "
                        f"(default {NETWORK_ROUNDS})")
    p.add_argument("--iters", type=int, default=NETWORK_ITERS,
                   help=f"timed runs per {what} per burst (default {NETWORK_ITERS}: many short bursts follow a "
                        "device whose speed wanders within a second)")
    p.add_argument("--loads", type=int, default=None,
                   help=f"loadings of the whole list the rounds are shared out over (default {NETWORK_LOADS}, at most "
                        "--rounds: a loaded session keeps its own offset while it is loaded)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="host", description="edgeshrink host side: train, build latency tables, "
                                "prune with latency-aware NetAdapt, and confirm on the device.")
    p.add_argument("--version", action="version", version=f"edgeshrink {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    sub.add_parser("models", help="list model architectures")

    t = sub.add_parser("train", help="train a model and write OUT/model.pt and OUT/metrics.json")
    t.add_argument("--model", default="resnet20")
    _add_data_args(t)
    _add_train_args(t)
    t.add_argument("--out", required=True, help="output folder")

    tb = sub.add_parser("table", help="latency lookup tables").add_subparsers(dest="table_cmd", required=True)
    b = tb.add_parser("build", help="measure every prunable layer configuration on a device")
    b.add_argument("--model", default="resnet20")
    b.add_argument("--num-classes", type=int, default=10)
    b.add_argument("--input", default="1x3x32x32", help="input shape NxCxHxW (default 1x3x32x32)")
    b.add_argument("--device", action="append",
                   help="device spec: local (default) or ssh://[user@]host[:port][?python=PY&root=DIR]; give it "
                        "several times to spread the measurements over a farm of identical boards")
    b.add_argument("--trust-new-host", action="store_true",
                   help="ssh://: accept a board whose host key is not in known_hosts yet, and record it")
    b.add_argument("--backend", default="ort", help="device runner (default ort: ONNX Runtime CPU)")
    b.add_argument("--threads", type=int, default=1, help="intra-op threads on the device (default 1)")
    b.add_argument("--granularity", type=int, default=4, help="channel grid step (default 4)")
    b.add_argument("--jobs", type=int, default=1, help="local processes building micro-models")
    b.add_argument("--shard", default="1/1", help="measure only share i of N (i/N), to split the work across hosts")
    b.add_argument("--warmup", type=int, default=30, help="untimed runs per micro-model (default 30)")
    b.add_argument("--iters", type=int, default=200, help="timed runs per micro-model per round (default 200)")
    b.add_argument("--rounds", type=int, default=3,
                   help="passes over all micro-models, each in a new random order; an entry is the median of the "
                        "passes' medians, or the fastest run of all passes with --statistic min (default 3)")
    b.add_argument("--statistic", choices=("min", "median"), default="min",
                   help="what the table's entries and calibration networks hold, and so what it predicts: the fastest "
                        "timed run (min, default: on a CPU shared with other tenants the median follows their load; "
                        "the minimum repeats 5x closer) or the median run")
    b.add_argument("--workdir", help="micro-models and measured results (default OUT.build/, removed after success)")
    b.add_argument("--resume", action="store_true",
                   help="continue an interrupted build in its work folder; nothing measured there is measured again")
    b.add_argument("--batch", type=int, default=64, help="micro-models per device command (default 64)")
    b.add_argument("--interleave", type=int, default=0, metavar="K",
                   help="each device command loads its batch once and times it in K round-robin bursts of --iters "
                        "(device bench --interleave; steadier on a drifting CPU); default 0: one burst per model")
    b.add_argument("--calibrate", type=int, default=0, metavar="N",
                   help="also measure N networks of the model (the unpruned one, N-1 random pruned ones) and fit a "
                        "whole-network correction with per-configuration terms chosen by cross-validation "
                        "(calibration.fit; 0: none; on the order of 100 for a 1%% table)")
    b.add_argument("--coarse", type=int, metavar="STEP",
                   help="measure a coarse grid of STEP channels, check and refine, interpolate the rest of the "
                        "--granularity grid (entries say which they are)")
    b.add_argument("--refine-tol", type=float, default=0.03,
                   help="with --coarse: refine a cell whose check is off by more than this (default 0.03)")
    b.add_argument("--check-fraction", type=float, default=0.25,
                   help="with --coarse: share of coarse cells checked by a measurement (default 0.25)")
    b.add_argument("--refine-rounds", type=int, default=2, help="with --coarse: refinement rounds (default 2)")
    b.add_argument("--align", type=int, default=0, metavar="C",
                   help="with --coarse: the runtime's channel block (16: ONNX Runtime's NCHWc kernels on AVX-512, 8: on "
                        "AVX2); adds the 'block' interpolant, which reads a partial block at a measured partial block "
                        "(use --coarse C/2 so every block has one); default 0: linear and ceil only")
    b.add_argument("-o", "--out", required=True, help="table JSON to write")

    sh = tb.add_parser("show", help="what a table holds, and a latency heatmap per layer type")
    sh.add_argument("table")
    sh.add_argument("--out", help="folder for the heatmap PNGs (default: TABLE.show/)")
    sh.add_argument("--json", action="store_true")

    mg = tb.add_parser("merge", help="combine repeated runs (median, MAD outliers dropped) and shards; optional smoothing")
    mg.add_argument("tables", nargs="+", help="table JSON files of one device, backend, precision and input shape")
    mg.add_argument("-o", "--out", required=True)
    mg.add_argument("--mad", type=float, default=3.5, help="outlier threshold in scaled MADs (default 3.5; >= 3 runs)")
    mg.add_argument("--smooth", choices=("gaussian", "monotone"), help="smooth along the channel axes")
    mg.add_argument("--sigma", type=float, default=3.0, help="gaussian sigma in grid steps (default 3)")
    mg.add_argument("--num-classes", type=int, default=10,
                    help="classifier outputs of the calibration networks' model, for refitting the runs' calibration "
                         "on the merged entries (default 10)")

    im = tb.add_parser("import", help="convert a foreign latency table (the earlier NetAdapt perf tables)")
    im.add_argument("file", help="the foreign table (netadapt-pickle: a pickled dict of 2-D numpy arrays)")
    im.add_argument("--format", choices=("netadapt-pickle",), default="netadapt-pickle")
    im.add_argument("--model", default="wrn40_2")
    im.add_argument("-o", "--out", required=True, help="table JSON to write")

    va = tb.add_parser("validate", help="predicted vs measured latency (the table's statistic) of random pruned "
                                          "architectures")
    va.add_argument("table")
    va.add_argument("--model", default="resnet20")
    va.add_argument("--num-classes", type=int, default=10)
    va.add_argument("--samples", type=int, default=30, help="random architectures on the table's grid (default 30)")
    va.add_argument("--device", help="where to measure (default: the table's device)")
    va.add_argument("--trust-new-host", action="store_true")
    va.add_argument("--seed", type=int, default=0)
    _network_bench_options(va, "architecture")
    va.add_argument("--anchors", type=int, default=6,
                    help="calibration networks of the table measured again to estimate the device's speed drift "
                         "since the build (default 6; needs a table built with --calibrate)")
    va.add_argument("--jobs", type=int, default=1, help="processes exporting the architectures")
    va.add_argument("--recalibrate", action="store_true",
                    help="measure all the table's calibration networks among the architectures and also report the "
                         "errors of the table refitted on them (what 'host table recalibrate' before use gives)")
    va.add_argument("--compare", action="append", default=[], metavar="TABLE",
                    help="also judge this table on the same measured networks, side by side (repeatable; same "
                         "model, backend and statistic)")
    va.add_argument("--out", help="folder for validate.json and the scatter plot validate.png")
    va.add_argument("--json", action="store_true")

    rc = tb.add_parser("recalibrate", help="measure a table's calibration networks again and refit its calibration "
                                           "(the device's speed drifts; no micro-model is measured again)")
    rc.add_argument("table")
    rc.add_argument("--model", default="resnet20")
    rc.add_argument("--num-classes", type=int, default=10)
    rc.add_argument("--device", help="where to measure (default: the table's device)")
    rc.add_argument("--trust-new-host", action="store_true")
    _network_bench_options(rc, "network")
    rc.add_argument("--jobs", type=int, default=1, help="processes exporting the networks")
    rc.add_argument("-o", "--out", required=True, help="table JSON to write (may be TABLE itself)")

    pr = tb.add_parser("predict", help="predicted latency of a model from a table")
    pr.add_argument("table")
    pr.add_argument("--model", default="resnet20")
    pr.add_argument("--num-classes", type=int, default=10)
    pr.add_argument("--channels", help="channel spec JSON (layer name -> out channels), or a checkpoint .pt")
    pr.add_argument("--channels-format", choices=("json", "netadapt-pickle"), default="json",
                    help="json (channel spec or checkpoint .pt) or netadapt-pickle (the earlier NetAdapt work's "
                         "pruned architectures: layer name -> channels kept)")
    pr.add_argument("--backend", help="refuse a table measured with another backend")
    pr.add_argument("--per-layer", action="store_true", help="also print each layer site's share and MACs")
    pr.add_argument("--json", action="store_true", help="JSON on stdout")

    pn = sub.add_parser("prune", help="NetAdapt to a latency budget, then export and measure on the device")
    pn.add_argument("--perf-table", required=True, help="latency table JSON (host table build)")
    pn.add_argument("--model", help="expected architecture (checked against the checkpoint)")
    pn.add_argument("--checkpoint", required=True)
    _add_data_args(pn)
    bg = pn.add_mutually_exclusive_group()
    bg.add_argument("--budget", type=float, default=0.5, help="target, a fraction of the unpruned predicted latency (default 0.5)")
    bg.add_argument("--budget-ms", type=float,
                    help="target latency in ms, as the table predicts it (its statistic: the fastest run for tables "
                         "built with --statistic min, the default)")
    _add_netadapt_args(pn)
    pn.add_argument("--device", help="where to measure (default: the table's device)")
    pn.add_argument("--trust-new-host", action="store_true", help="ssh://: accept and record an unknown host key")
    pn.add_argument("--power", choices=("auto", "tegrastats", "pmic", "hwmon"),
                    help="also measure power and energy per inference on the device")
    pn.add_argument("--backend", help="refuse a table measured with another backend (the table's is used)")
    pn.add_argument("--bench-seconds", type=float, default=20.0,
                    help="confirmation: time baseline and pruned side by side, as the table's calibration networks "
                         "were (round-robin bursts of 4 runs over 5 loadings), for about this long (default 20 s)")
    pn.add_argument("--bench-iters", type=int, default=300,
                    help="confirmation with --power or a self-timed backend (trtexec, benchmark_model): timed runs "
                         "per model per round")
    pn.add_argument("--bench-rounds", type=int, default=3,
                    help="confirmation with --power or a self-timed backend: rounds A B A B ..., each model loaded "
                         "afresh")
    pn.add_argument("--resume", action="store_true", help="continue from the last completed iteration in OUT")
    pn.add_argument("--out", required=True)
    pn.add_argument("--json", action="store_true", help="report JSON on stdout")

    bn = sub.add_parser("bench", help="measure model files on a device (interleaved rounds)")
    bn.add_argument("models", nargs="+", help="model files (.onnx, .tflite) on this machine")
    bn.add_argument("--device", default="local", help="local or ssh://[user@]host[:port][?python=PY&root=DIR]")
    bn.add_argument("--trust-new-host", action="store_true", help="ssh://: accept and record an unknown host key")
    bn.add_argument("--backend", default="ort", help="device runner: ort, ort-cuda, ort-tensorrt, litert, tensorrt, "
                                                     "trtexec, benchmark_model (see `device backends` on the board)")
    bn.add_argument("--threads", type=int, default=1)
    bn.add_argument("--warmup", type=int, default=50, help="untimed runs before timing")
    bn.add_argument("--iters", type=int, default=300, help="timed runs per model per round")
    bn.add_argument("--rounds", type=int, default=1, help="interleaved rounds (A B A B ...)")
    add_measure_options(bn)  # the device's own measurement options, forwarded to it
    bn.add_argument("--calib-cache", help="int8 calibration cache for tensorrt/trtexec (from host export --format trt)")
    bn.add_argument("--out", help="folder for results.json and the power / tool logs pulled back from the device")
    bn.add_argument("--json", action="store_true")

    ex = sub.add_parser("export", help="deployable artifacts (ONNX, TFLite, TensorRT) with artifact.json, one or a manifest")
    ex.add_argument("checkpoint", nargs="?", help="checkpoint .pt (or use --manifest)")
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
    ex.add_argument("--json", action="store_true")

    rs = sub.add_parser("residual", help="independent residual pruning of a CIFAR ResNet: each branch at a "
                                         "residual add keeps its own channels (index-add, ScatterND in ONNX)")
    rs.add_argument("checkpoint", help="a resnet* checkpoint (dense, or pruned in the coupled mode)")
    rs.add_argument("--keep", required=True, help="channels each branch keeps per stage, e.g. layer1=8,layer2=16,layer3=32")
    rs.add_argument("--finetune-epochs", type=int, default=5, help="fine-tuning epochs after pruning (default 5)")
    rs.add_argument("--lr", type=float, default=0.01)
    _add_data_args(rs)
    rs.add_argument("--out", required=True, help="output folder: model.pt, model.onnx, report.json")

    dv = sub.add_parser("device", help="the device-side program").add_subparsers(dest="device_cmd", required=True)
    pk = dv.add_parser("pack", help="write device/ as one runnable zipapp (python3 edgeshrink-device.pyz ...)")
    pk.add_argument("-o", "--out", default="edgeshrink-device.pyz")

    d = sub.add_parser("demo", help="the main job on digits: train resnet20, build the local table, prune to 50%%, confirm")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--model", default="resnet20")
    d.add_argument("--epochs", type=int, default=20, help="baseline training epochs (default 20)")
    d.add_argument("--budget", type=float, default=0.5)
    d.add_argument("--jobs", type=int, default=2)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--calibrate", type=int, default=40, metavar="N",
                   help="calibration networks measured with the table (host table build --calibrate; default 40, "
                        "0: none, the plain sum of the micro-models)")
    _add_netadapt_args(d)
    d.add_argument("--bench-seconds", type=float, default=20.0,
                   help="confirmation: time baseline and pruned side by side for about this long (default 20 s)")
    d.add_argument("--fresh", action="store_true", help="redo every step (default: reuse the finished steps in OUT)")
    return p


# ---------------------------------------------------------------------------------------------- commands
def cmd_models(args) -> int:
    import models

    for n in models.list_models():
        print(n)
    return 0


def _train_config(args):
    from host.train import TrainConfig

    if args.epochs < 1:
        raise UserError("--epochs must be >= 1")
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                       momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
                       step_size=args.step_size, milestones=tuple(args.milestones), gamma=args.gamma,
                       power=args.power, label_smoothing=args.label_smoothing, seed=args.seed)


def train_model(model_name: str, dataset: str, data_dir, cfg, out: str, download: bool = False) -> dict:
    """Train and write OUT/model.pt + OUT/metrics.json; returns the metrics."""
    import torch

    import models
    from host import ui
    from host.checkpoint import save_checkpoint
    from host.data import load_dataset
    from host.io import write_json
    from host.train import evaluate, train

    data = load_dataset(dataset, data_dir, seed=cfg.seed, download=download)
    torch.manual_seed(cfg.seed)
    model = models.create(model_name, data.num_classes)
    ui.log(f"training {model_name} on {data.name} ({len(data.train)} train / {len(data.val)} val / "
           f"{len(data.test)} test), {cfg.epochs} epochs, {cfg.optimizer} lr {cfg.lr} {cfg.schedule}")
    t0 = time.monotonic()
    with ui.progress() as prog:
        task = prog.add_task("training", total=None)

        def on_epoch(e, m):
            if not ui.interactive() and (e % 5 == 0 or e == cfg.epochs):
                ui.log(f"epoch {e}/{cfg.epochs}: train loss {m['train_loss']:.4f}, val top-1 {m['val_top1']:.2f}%")

        history = train(model, data, cfg, on_epoch=on_epoch, on_step=lambda s, n: prog.update(task, completed=s, total=n))
    metrics = {"val": evaluate(model, data, "val"), "test": evaluate(model, data, "test"), "history": history,
               "train_config": cfg.to_dict(), "wall_s": round(time.monotonic() - t0, 1), "dataset": data.name,
               "model": model_name}
    save_checkpoint(str(Path(out) / "model.pt"), model, data.num_classes, dataset=data.name,
                    input_shape=list(data.input_shape), metrics={"val": metrics["val"], "test": metrics["test"]},
                    train_config=cfg.to_dict())
    write_json(Path(out) / "metrics.json", metrics)
    ui.log(f"{model_name}: val top-1 {metrics['val']['top1']:.2f}%, test top-1 {metrics['test']['top1']:.2f}% "
           f"({metrics['wall_s']:.0f} s) -> {Path(out) / 'model.pt'}")
    return metrics


def cmd_train(args) -> int:
    train_model(args.model, args.dataset, args.data_dir, _train_config(args), args.out, args.download)
    return 0


def check_calibrate(n: int) -> None:
    """Raise UserError unless ``n`` calibration networks is 0 (none) or enough for a fit (3 or more)."""
    if n < 0 or 0 < n < 3:
        raise UserError(f"--calibrate must be 0 (none) or >= 3 networks, got {n}")


def build_table_cli(model_name: str, input_text: str, out: str, device="local", backend="ort", threads=1,
                    granularity=4, jobs=1, shard="1/1", warmup=30, iters=200, workdir=None, num_classes=10, rounds=3,
                    resume=False, batch=64, trust_new_host=False, coarse=None, refine_tol=0.03, check_fraction=0.25,
                    refine_rounds=2, calibrate=0, interleave=0, align=0, statistic="min"):
    import models
    from host import ui
    from host.latency.build import BuildConfig, build_table, parse_shard
    from host.latency.space import build_space, enumerate_keys
    from host.latency.table import parse_shape

    try:
        shape = tuple(parse_shape(input_text))
        shard_t = parse_shard(shard)
    except ValueError as e:
        raise UserError(str(e)) from None
    if min(granularity, jobs, iters, rounds, batch) < 1 or threads < 0 or warmup < 0:
        raise UserError("--granularity, --jobs, --iters, --rounds and --batch must be >= 1; --threads and --warmup >= 0")
    check_calibrate(calibrate)
    if interleave < 0:
        raise UserError(f"--interleave must be >= 0, got {interleave}")
    if coarse is not None and (refine_tol <= 0 or not 0 < check_fraction <= 1 or refine_rounds < 0 or align < 0):
        raise UserError("--refine-tol must be > 0, --check-fraction in (0, 1], --refine-rounds >= 0 and --align >= 0")
    devices = [device] if isinstance(device, str) else list(device or ["local"])
    own_workdir = workdir is None
    workdir = workdir or out + ".build"
    if os.path.exists(workdir) and any(Path(workdir).glob("results_r*.jsonl")) and not resume:
        raise UserError(f"{workdir} holds an interrupted build: pass --resume to continue it, or delete the folder")
    if resume and not os.path.isdir(workdir):
        raise UserError(f"--resume: no interrupted build in {workdir}")
    space = build_space(models.create(model_name, num_classes), shape)
    keys = enumerate_keys(space, granularity)
    ui.log(f"latency table for {model_name} at {input_text}: {len(space.groups)} channel groups, {len(space.sites)} "
           f"layer sites, {len(keys)} distinct configurations on a grid of {granularity}"
           + (f", shard {shard}" if shard_t != (1, 1) else "") + f"; device {', '.join(devices)}, {backend}, "
           f"{threads} thread(s)" + (" (resuming)" if resume else ""))
    cfg = BuildConfig(model_name, shape, num_classes, devices[0], backend, threads, granularity, jobs, shard_t, warmup,
                      iters, rounds, workdir, farm=tuple(devices[1:]), batch=batch, resume=resume,
                      trust_new_host=trust_new_host, calibrate=calibrate, interleave=interleave, statistic=statistic)
    with ui.progress() as prog:
        tasks = {}

        def progress(stage, done, total):
            if stage not in tasks:
                tasks[stage] = prog.add_task({"build": "building micro-models", "measure": "measuring on device",
                                              "networks": "measuring calibration networks"}[stage],
                                             total=total)
            prog.update(tasks[stage], completed=done, total=total)

        if coarse is None:
            table = build_table(cfg, keys, progress=progress)
        else:
            from host.latency.build import build_table_interpolated

            table = build_table_interpolated(cfg, keys, coarse, refine_tol, check_fraction, refine_rounds,
                                             exhaustive=len(enumerate_keys(space, 1)), align=align,
                                             progress=progress, log=ui.log)
    table.save(out)
    if own_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    b = table.build
    ui.log(f"table ({table.statistic} latencies): {b['measured']} entries measured in {b['rounds']} rounds, "
           f"{b['interpolated']} interpolated; overhead {table.overhead_ms:.4f} ms; {b['measurements']} measurements taken now"
           + (" (the rest before the resume)" if resume else "") + f", total {b['wall_s']:.1f} s -> {out}")
    if b.get("interpolation"):
        it = b["interpolation"]
        ui.log(f"interpolation: coarse grid {it['coarse']}, {it['checks']} check measurements (mean |error| "
               f"{(it['check_mean_abs_rel_error'] or 0):.1%}, max {(it['check_max_abs_rel_error'] or 0):.1%}), methods "
               f"{it['methods']}; {b['measured']} of {b['target_grid_entries']} entries measured, "
               f"{b['reduction_vs_exhaustive_per_channel']:.0f}x fewer than the exhaustive per-channel grid "
               f"({b['exhaustive_per_channel_entries']})")
    fit = table.calibration.get("fit")
    if fit:
        cv = (f"; held out (5-fold) {fit['cv_mean_abs_rel_error']:.2%} mean, {fit['cv_max_abs_rel_error']:.2%} max "
              f"with {len(fit.get('corrections', []))} per-configuration/family corrections"
              if fit.get("key_ridge") is not None else "; no per-configuration corrections (they did not help "
              "held-out networks, or too few networks)")
        ui.log(f"calibration: {len(fit['networks'])} networks, fit mean |error| {fit['fit_mean_abs_rel_error']:.2%} "
               f"(uncorrected {fit['uncorrected_mean_abs_rel_error']:.2%}){cv}; coefficients "
               + ", ".join(f"{k} {v:.4g}" for k, v in fit["coefficients"].items()))
    return table


def _every_tenth(log):
    """Progress from the device's ``[i/n] ...`` lines: every tenth and the last."""
    def on_line(line: str) -> None:
        if line.startswith("[") and "/" in line and "]" in line:
            i, n = line[1:line.index("]")].split("/")
            if i.isdigit() and n.isdigit() and (int(i) % 10 == 0 or i == n):
                log(line)
    return on_line


def cmd_table_show(args) -> int:
    from host.latency.show import heatmaps, summarize
    from host.latency.table import load_table

    table = load_table(args.table)
    doc = summarize(table)
    doc["heatmaps"] = heatmaps(table, args.out or args.table + ".show")
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    d = table.device
    print(f"{args.table}: {doc['entries']} entries ({', '.join(f'{v} {k}' for k, v in doc['by_source'].items())})")
    print(f"device: {d.get('spec')} | {d.get('board') or d.get('cpu')} | {d.get('runtime')} | backend {table.backend} "
          f"| {table.precision} | {table.threads} thread(s) | input {'x'.join(map(str, table.input_shape))}")
    print(f"grid: {doc['granularity']} | {doc['statistic']} latencies | overhead {doc['overhead_ms']:.4f} ms "
          f"({doc['calibration_method']}) | "
          f"smoothing: {doc['smoothing'] or 'none'} | derived from {len(doc['derived_from'])} table(s)")
    for name, n in doc["layer_types"].items():
        print(f"  {name:45s} {n:6d}")
    print(f"{len(doc['heatmaps'])} heatmaps in {args.out or args.table + '.show'}/")
    return 0


def cmd_table_merge(args) -> int:
    from host import ui
    from host.latency.merge import merge_tables

    if args.mad <= 0 or args.sigma <= 0 or args.num_classes < 1:
        raise UserError("--mad and --sigma must be > 0 and --num-classes >= 1")
    table = merge_tables(args.tables, mad_threshold=args.mad, smooth=args.smooth, sigma=args.sigma,
                         num_classes=args.num_classes)
    table.save(args.out)
    m = table.build["merge"]
    runs = "; ".join(f"{d['table']} ({d['typical_deviation']:+.1%})" for d in m["runs_dropped"]) or "none"
    cal = m["calibration"]
    if cal is None:
        refit = ""
    elif cal["refit"]:
        fit = table.calibration["fit"]
        refit = (f"; calibration refitted on {cal['networks']} {cal['model']} networks of {len(cal['tables'])} runs "
                 f"(fit {fit['fit_mean_abs_rel_error']:.2%} mean abs error)")
    else:
        refit = f"; {cal['reason']}"
    ui.log(f"merged {m['tables']} tables into {len(table.entries)} entries ({table.build['measured']} measured, "
           f"{table.build['interpolated']} interpolated); runs dropped as outliers: {runs}; "
           f"{m['entries_dropped']} single entries dropped"
           + (f"; smoothed ({args.smooth})" if args.smooth else "") + refit + f" -> {args.out}")
    return 0


def cmd_table_import(args) -> int:
    from host import ui
    from host.latency.importers import import_netadapt_table

    table = import_netadapt_table(args.file, args.model)
    table.save(args.out)
    import models
    from host.latency.table import TablePredictor

    pred = TablePredictor.for_model(table, models.create(args.model))
    ui.log(f"imported {len(table.entries)} {args.model} configurations from {args.file} ({table.device['board']}, "
           f"{table.device['runtime']}); unpruned {args.model} sums to {pred.predict_ms(pred.space.full_widths):.2f} "
           f"ms -> {args.out}")
    return 0


def cmd_table_recalibrate(args) -> int:
    from host import ui
    from host.latency.validate import recalibrate_table

    if args.rounds < 1 or args.iters < 1 or args.jobs < 1:
        raise UserError("--rounds, --iters and --jobs must be >= 1")
    r = recalibrate_table(args.table, args.model, args.out, device=args.device, num_classes=args.num_classes,
                          rounds=args.rounds, iters=args.iters, jobs=args.jobs, trust_new_host=args.trust_new_host,
                          on_line=_every_tenth(ui.log), loads=args.loads)
    f = r["fit"]
    cv = (f", held out (5-fold) {f['cv_mean_abs_rel_error']:.2%} mean, {f['cv_max_abs_rel_error']:.2%} max"
          if "cv_mean_abs_rel_error" in f else "")
    print(f"{r['networks']} calibration networks measured again: speed now / at the last fit x{r['speed_ratio']:.4f} "
          f"(median; {r['ratio_min']:.4f} to {r['ratio_max']:.4f}); refitted: fit mean |error| "
          f"{f['fit_mean_abs_rel_error']:.2%}{cv} -> {args.out}")
    return 0


def cmd_table_validate(args) -> int:
    from host import ui
    from host.latency.validate import validate_table

    if args.rounds < 1 or args.iters < 1:
        raise UserError("--rounds and --iters must be >= 1")
    doc = validate_table(args.table, args.model, samples=args.samples, device=args.device, seed=args.seed,
                         out_dir=args.out, rounds=args.rounds, iters=args.iters, num_classes=args.num_classes,
                         trust_new_host=args.trust_new_host, on_line=_every_tenth(ui.log), anchors=args.anchors,
                         jobs=args.jobs, recalibrate=args.recalibrate, loads=args.loads, compare=args.compare)
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print(f"{args.model} on {doc['device'].get('spec')} ({doc['backend']}, {doc['threads']} thread(s)): "
                     f"{doc['samples']} random pruned architectures by {doc['statistic']} latency, mean |error| "
                     f"{doc['mean_abs_rel_error']:.2%}, "
                     f"max {doc['max_abs_rel_error']:.2%}, mean signed {doc['mean_rel_error']:+.2%}, Pearson r "
                     f"{doc['pearson_r']:.4f}" + (f" -> {args.out}/validate.json, validate.png" if args.out else ""))
        if doc.get("measurement_noise"):
            n = doc["measurement_noise"]
            lo, hi = n["mean_abs_rel_error_floor"]
            print(f"measurement noise: each network's even vs odd rounds differ by {n['split_half_rms_rel_diff']:.2%} "
                  f"(rms); an exact table would show a mean |error| of about {lo:.2%}-{hi:.2%} here")
        if doc.get("drift"):
            d = doc["drift"]
            print(f"device speed now vs at the build (median of {d['anchors']} anchors): x{d['speed_ratio']:.4f}; with "
                  f"the prediction scaled by it: mean |error| {d['mean_abs_rel_error']:.2%}, max {d['max_abs_rel_error']:.2%}")
        if doc.get("recalibrated"):
            rc = doc["recalibrated"]
            print(f"refitted on its {rc['networks']} calibration networks measured now: mean |error| "
                  f"{rc['mean_abs_rel_error']:.2%}, max {rc['max_abs_rel_error']:.2%}, Pearson r {rc['pearson_r']:.4f}")
        for c in doc["compared"]:
            extra = "".join(f"; {label} {c[k]['mean_abs_rel_error']:.2%} / {c[k]['max_abs_rel_error']:.2%}"
                            for k, label in (("drift", "drift removed"), ("recalibrated", "refitted")) if c[k])
            print(f"compared: {c['table']} on the same networks: mean |error| {c['mean_abs_rel_error']:.2%}, max "
                  f"{c['max_abs_rel_error']:.2%}, Pearson r {c['pearson_r']:.4f}{extra}")
    return 0


def cmd_table_build(args) -> int:
    build_table_cli(args.model, args.input, args.out, args.device, args.backend, args.threads, args.granularity,
                    args.jobs, args.shard, args.warmup, args.iters, args.workdir, args.num_classes, args.rounds,
                    args.resume, args.batch, args.trust_new_host, args.coarse, args.refine_tol, args.check_fraction,
                    args.refine_rounds, args.calibrate, args.interleave, args.align, args.statistic)
    return 0


def _read_channels(path: str, fmt: str = "json") -> dict:
    if fmt == "netadapt-pickle":
        from host.latency.importers import read_netadapt_channels

        return read_netadapt_channels(path)
    if path.endswith(".pt"):
        from host.checkpoint import load_checkpoint

        return load_checkpoint(path)["channels"]
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read channel spec JSON ({e})") from None
    if isinstance(spec, dict) and "channels" in spec and isinstance(spec["channels"], dict):
        spec = spec["channels"]
    if not isinstance(spec, dict) or not all(isinstance(v, int) for v in spec.values()):
        raise UserError(f"{path}: a channel spec is a JSON object of layer name -> integer channels")
    return spec


def cmd_table_predict(args) -> int:
    import models
    from host import ui
    from host.latency.table import TablePredictor, check_backend, load_table

    table = load_table(args.table)
    check_backend(table, args.table, args.backend)
    pred = TablePredictor.for_model(table, models.create(args.model, args.num_classes))
    space = pred.space
    spec = _read_channels(args.channels, args.channels_format) if args.channels else {}
    try:
        widths = space.widths_from_spec(spec)
    except ValueError as e:
        raise UserError(str(e)) from None
    layers = pred.layer_ms(widths)
    total = pred.predict_ms(widths)
    if args.json:
        doc = {"model": args.model, "table": args.table, "latency_ms_predicted": total, "overhead_ms": table.overhead_ms,
               "device": table.device, "backend": table.backend, "threads": table.threads, "widths": widths}
        if args.per_layer:
            doc["layers"] = [{"site": s.name, **s.key(widths).to_dict(), "macs": s.key(widths).macs(), "latency_ms": v}
                             for s, v in zip(space.sites, layers)]
        print(json.dumps(doc, indent=1))
    else:
        if args.per_layer:
            from rich.table import Table

            t = Table(title=f"{args.model}: predicted latency per layer site (ms)")
            for c in ("site", "op", "in", "out", "hw", "MACs", "ms", "ms per MMAC"):
                t.add_column(c, justify="left" if c in ("site", "op") else "right")
            for s, v in zip(space.sites, layers):
                k = s.key(widths)
                per = f"{v / (k.macs() / 1e6):.4f}" if k.macs() else "-"
                t.add_row(s.name, k.op, str(k.in_channels), str(k.out_channels), f"{k.in_hw[0]}x{k.in_hw[1]}",
                          f"{k.macs():,}", f"{v:.4f}", per)
            ui.out.print(t)
        print(f"{args.model}: predicted latency {total:.4f} ms (overhead {table.overhead_ms:.4f} ms counted once) "
              f"on {table.device.get('spec')} / {table.backend} / {table.threads} thread(s)")
    return 0


def _netadapt_config(args, seed: int):
    from host.prune.netadapt import NetAdaptConfig

    if not (0 < args.init_reduction < 1) or not (0 < args.decay <= 1):
        raise UserError("--init-reduction must be in (0, 1) and --decay in (0, 1]")
    if args.short_term_steps < 0 or args.long_term_epochs < 0:
        raise UserError("--short-term-steps and --long-term-epochs must be >= 0")
    return NetAdaptConfig(budget_ms=0.0, init_reduction=args.init_reduction, decay=args.decay,
                          short_term_steps=args.short_term_steps, short_term_lr=args.short_term_lr,
                          select=args.select, long_term_epochs=args.long_term_epochs, long_term_lr=args.long_term_lr,
                          max_iters=getattr(args, "max_iters", 100), seed=seed)


def cmd_prune(args) -> int:
    from host import ui
    from host.data import load_dataset
    from host.pipeline import PruneJob, render_report, run_prune

    job = PruneJob(table=args.perf_table, checkpoint=args.checkpoint, out=args.out, model=args.model,
                   dataset=args.dataset, data_dir=args.data_dir,
                   budget=None if args.budget_ms is not None else args.budget, budget_ms=args.budget_ms,
                   device=args.device, backend=args.backend, bench_iters=args.bench_iters, bench_rounds=args.bench_rounds,
                   bench_seconds=args.bench_seconds, resume=args.resume, seed=args.seed, trust_new_host=args.trust_new_host, power=args.power)
    data = load_dataset(args.dataset, args.data_dir, seed=args.seed, download=args.download)
    report = run_prune(job, _netadapt_config(args, args.seed), data=data)
    if args.json:
        render_report(report, ui.err)
        print(json.dumps(report, indent=1))
    else:
        render_report(report)
        print(f"report: {Path(args.out) / 'report.json'}")
    return 0


def cmd_bench(args) -> int:
    from host import ui
    from host.bench import bench_on_device

    from host.io import write_json

    extra = forward_measure_options(args)
    if args.rounds < 1 or args.iters < 1:
        raise UserError("--rounds and --iters must be >= 1")
    res = bench_on_device(args.models, device=args.device, backend=args.backend, threads=args.threads,
                          warmup=args.warmup, iters=args.iters, rounds=args.rounds, device_args=extra,
                          out_dir=args.out, trust_new_host=args.trust_new_host, calib_cache=args.calib_cache,
                          on_line=lambda ln: ui.log(ln) if ln.startswith("[") else None)
    if args.out:
        write_json(Path(args.out) / "results.json", res)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    from rich.table import Table

    def f(v, p=4):
        return "-" if v is None else f"{v:.{p}f}"

    t = Table(title=f"{args.device} | {args.backend} | {args.threads} thread(s) | {res['device']['cpu']}")
    cols = ["model", "median ms", "mean ms", "p90 ms", "p99 ms", "cv", "rounds' medians ms"]
    if args.power:
        cols += ["idle mW", "mean mW", "mJ/inference", "mJ above idle"]
    for c in cols + ["throttled"]:
        t.add_column(c)
    for path, m in res["models"].items():
        s = m["latency_ms"]
        row = [path, f(m["median_ms"]), f(s["mean"]), f(s["p90"]), f(s["p99"]), f(s["cv"], 3),
               ", ".join(f"{v:.4f}" for v in m["round_medians_ms"])]
        if args.power:
            pw = m.get("power") or {}
            row += [f(pw.get("idle_power_mw"), 0), f(pw.get("mean_power_mw"), 0),
                    f(pw.get("energy_per_inference_mj"), 4), f(pw.get("energy_above_idle_per_inference_mj"), 4)]
        t.add_row(*row, "yes: " + "; ".join(m["throttle_evidence"]) if m["throttled"] else "no")
    ui.out.print(t)
    if args.out:
        print(f"results: {Path(args.out) / 'results.json'}" + (f" (+{len(res['pulled'])} log files)" if res["pulled"] else ""))
    return 0


def cmd_export(args) -> int:
    from host import ui
    from host.export import artifact

    if args.manifest:
        from host.latency.build import parse_shard

        if args.checkpoint or args.out:
            raise UserError("give either CHECKPOINT -o DIR or --manifest PLAN, not both")
        if args.jobs < 1:
            raise UserError("--jobs must be >= 1")
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
            for row in artifact.summary_rows(doc["artifacts"]):
                t.add_row(*row)
            ui.out.print(t)
        return 1 if doc["counts"]["failed"] else 0
    if not args.checkpoint or not args.out:
        raise UserError("host export needs CHECKPOINT and -o DIR (or --manifest PLAN)")
    doc = artifact.export_one_cli(args.checkpoint, args.format, args.precision, args.input, args.out, args.dynamic_batch,
                                  args.dataset, args.data_dir, args.calib_samples, args.seed)
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
    import onnx
    import torch

    from host import ui
    from host.checkpoint import load_checkpoint, model_from_checkpoint
    from host.data import load_dataset
    from host.export.onnx import check_onnx, export_onnx
    from host.io import atomic_path, write_json
    from host.prune.residual import checkpoint_dict, independent_from_dense, parse_stage_widths, select_independent_keep
    from host.train import TrainConfig, evaluate, train

    try:
        per_stage = parse_stage_widths(args.keep)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.finetune_epochs < 0:
        raise UserError("--finetune-epochs must be >= 0")
    ckpt = load_checkpoint(args.checkpoint)
    if not str(ckpt["model"]).startswith("resnet") or ckpt.get("residual"):
        raise UserError(f"{args.checkpoint}: independent residual pruning needs a coupled CIFAR ResNet checkpoint, "
                        f"not {ckpt['model']}{' (already independent)' if ckpt.get('residual') else ''}")
    data = load_dataset(args.dataset, args.data_dir, seed=args.seed, download=args.download)
    base = model_from_checkpoint(ckpt, path=args.checkpoint)
    keep = select_independent_keep(base, per_stage)
    model = independent_from_dense(base, keep)
    before = evaluate(model, data, "test")["top1"]
    ui.log(f"independent branches: union widths {', '.join(f'{k} {len(v)}' for k, v in model.union.items())}; "
           f"test top-1 before fine-tuning {before:.2f}%")
    if args.finetune_epochs:
        torch.manual_seed(args.seed)
        train(model, data, TrainConfig(epochs=args.finetune_epochs, lr=args.lr, batch_size=64, seed=args.seed))
    after = evaluate(model, data, "test")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.pt") as tmp:
        torch.save(checkpoint_dict(model, ckpt["model"], ckpt["channels"], keep, ckpt["num_classes"],
                                   dataset=data.name, input_shape=list(data.input_shape)), tmp)
    shape = data.input_shape
    export_onnx(model, shape, str(out / "model.onnx"), slim=True)
    check = check_onnx(model, str(out / "model.onnx"), shape)
    scatter = sum(1 for n in onnx.load(str(out / "model.onnx")).graph.node if n.op_type == "ScatterND")
    report = {"checkpoint": args.checkpoint, "keep_per_stage": per_stage,
              "union_widths": {k: len(v) for k, v in model.union.items()},
              "params": sum(p.numel() for p in model.parameters()), "test_top1_before_finetune": before,
              "test_top1": after["top1"], "finetune_epochs": args.finetune_epochs, "onnx_check": check,
              "scatternd_nodes": scatter}
    write_json(out / "report.json", report)
    ui.log(f"test top-1 {after['top1']:.2f}% after {args.finetune_epochs} epochs; ONNX with {scatter} ScatterND, "
           f"max |diff| to torch {check['max_abs_diff']:.2g} -> {out}")
    return 0


def cmd_device(args) -> int:
    from host.remote.pack import pack_device

    info = pack_device(args.out)
    print(f"{args.out}: {info['files']} files, {info['bytes']} bytes, device/ sha256 {info['device_sha256'][:12]}; "
          f"run it on the board with: python3 {Path(args.out).name} backends")
    return 0


def cmd_demo(args) -> int:
    from host import ui
    from host.data import load_dataset
    from host.pipeline import PruneJob, render_report, run_prune
    from host.train import TrainConfig

    check_calibrate(args.calibrate)  # before training, not after it
    out = Path(args.out)
    t0 = time.monotonic()
    base = out / "base" / "model.pt"
    table_path = out / "table.json"
    ui.log(f"[bold]edgeshrink demo[/]: {args.model} on digits -> local ONNX Runtime table -> NetAdapt to "
           f"{args.budget:.0%} of the predicted latency -> measured on the device. Output in {out}/")
    if args.fresh or not base.exists():
        ui.log("[bold]1/3 train[/]")
        train_model(args.model, "digits", None, TrainConfig(epochs=args.epochs, lr=0.1, batch_size=64, seed=args.seed),
                    str(out / "base"))
    else:
        ui.log(f"1/3 train: reusing {base}")
    if args.fresh or not table_path.exists():
        ui.log("[bold]2/3 latency table[/]")
        work = Path(str(table_path) + ".build")
        if args.fresh and work.exists():
            shutil.rmtree(work)
        # an interrupted demo continues its table build where it stopped
        build_table_cli(args.model, "1x3x32x32", str(table_path), jobs=args.jobs,
                        resume=any(work.glob("results_r*.jsonl")), calibrate=args.calibrate)
    else:
        ui.log(f"2/3 latency table: reusing {table_path}")
    ui.log("[bold]3/3 NetAdapt[/]")
    job = PruneJob(table=str(table_path), checkpoint=str(base), out=str(out / "pruned"), model=args.model,
                   budget=args.budget, resume=not args.fresh, seed=args.seed, bench_seconds=args.bench_seconds)
    report = run_prune(job, _netadapt_config(args, args.seed), data=load_dataset("digits", seed=args.seed))
    render_report(report)
    ui.log(f"demo finished in {time.monotonic() - t0:.0f} s; report: {out / 'pruned' / 'report.json'}")
    return 0


COMMANDS = {"models": cmd_models, "train": cmd_train, "prune": cmd_prune, "bench": cmd_bench, "demo": cmd_demo,
            "device": cmd_device, "export": cmd_export, "residual": cmd_residual}


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    import models

    try:
        if args.cmd == "table":
            return {"build": cmd_table_build, "predict": cmd_table_predict, "validate": cmd_table_validate,
                    "recalibrate": cmd_table_recalibrate, "import": cmd_table_import, "merge": cmd_table_merge, "show": cmd_table_show}[args.table_cmd](args)
        return COMMANDS[args.cmd](args)
    except (UserError, models.UnknownModelError, models.ChannelSpecError) as e:
        print(f"host: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("host: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
