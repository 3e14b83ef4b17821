"""``host table build|show|merge|import|validate|recalibrate|predict``: latency lookup tables."""

from __future__ import annotations

import json

from edgeshrink.host.cli.args import add_json_arg, add_network_bench_args, add_option, every_tenth, progress_reporter
from edgeshrink.host.errors import UserError
from edgeshrink.host.io import prepare_file


DEFAULT_CALIBRATE = 40  # calibration networks of a default build (docs/latency.md has the measurements behind it)


def register(sub) -> None:
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
    b.add_argument("--workdir", help="micro-models and measured results (default T.json.build/ beside --out-table, removed after success)")
    b.add_argument("--resume", action="store_true",
                   help="continue an interrupted build in its work folder; nothing measured there is measured again")
    b.add_argument("--batch", type=int, default=64, help="micro-models per device command (default 64)")
    b.add_argument("--interleave", type=int, default=0, metavar="K",
                   help="each device command loads its batch once and times it in K round-robin bursts of --iters "
                        "(device bench --interleave; steadier on a drifting CPU); default 0: one burst per model")
    b.add_argument("--calibrate", type=int, metavar="N",
                   help="also measure N networks of the model (the unpruned one, N-1 random pruned ones) and fit a "
                        "whole-network correction with per-configuration terms chosen by cross-validation "
                        f"(calibration.fit; default {DEFAULT_CALIBRATE}, 0 for a sharded build; 0: none, the plain sum "
                        "of the micro-models, which over-predicts whole networks by several percent)")
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
    add_option(b, ["--out-table"], old=("-o", "--out"), dest="out_table", required=True, metavar="T.json",
               help="the table JSON to write")
    add_json_arg(b, "the table's summary (entries, measurements, build time, the calibration's fit)")

    sh = tb.add_parser("show", help="what a table holds, and a latency heatmap per layer type")
    sh.add_argument("table")
    sh.add_argument("--out", help="folder for the heatmap PNGs (default: TABLE.show/)")
    sh.add_argument("--json", action="store_true")

    mg = tb.add_parser("merge", help="combine repeated runs (median, MAD outliers dropped) and shards; optional smoothing")
    mg.add_argument("tables", nargs="+", help="table JSON files of one device, backend, precision and input shape")
    add_option(mg, ["--out-table"], old=("-o", "--out"), dest="out_table", required=True, metavar="T.json",
               help="the merged table JSON to write")
    mg.add_argument("--mad", type=float, default=3.5, help="outlier threshold in scaled MADs (default 3.5; >= 3 runs)")
    mg.add_argument("--smooth", choices=("gaussian", "monotone"), help="smooth along the channel axes")
    mg.add_argument("--sigma", type=float, default=3.0, help="gaussian sigma in grid steps (default 3)")
    mg.add_argument("--num-classes", type=int, default=10,
                    help="classifier outputs of the calibration networks' model, for refitting the runs' calibration "
                         "on the merged entries (default 10)")

    im = tb.add_parser("import", help="convert a foreign latency table (the earlier NetAdapt perf tables)")
    im.add_argument("file", help="the foreign table (netadapt-pickle: a pickled dict of 2-D numpy arrays)")
    add_option(im, ["--input-format"], old=("--format",), dest="input_format", choices=("netadapt-pickle",),
               default="netadapt-pickle", help="what FILE is (default netadapt-pickle)")
    im.add_argument("--model", default="wrn40_2")
    add_option(im, ["--out-table"], old=("-o", "--out"), dest="out_table", required=True, metavar="T.json",
               help="the table JSON to write")

    va = tb.add_parser("validate", help="predicted vs measured latency (the table's statistic) of random pruned "
                                          "architectures")
    va.add_argument("table")
    va.add_argument("--model", default="resnet20")
    va.add_argument("--num-classes", type=int, default=10)
    va.add_argument("--samples", type=int, default=30, help="random architectures on the table's grid (default 30)")
    va.add_argument("--device", help="where to measure (default: the table's device)")
    va.add_argument("--trust-new-host", action="store_true")
    va.add_argument("--seed", type=int, default=0)
    add_network_bench_args(va, "architecture")
    va.add_argument("--anchors", type=int, default=6,
                    help="calibration networks of the table measured again to estimate the device's speed drift "
                         "since the build (default 6; needs a table built with --calibrate)")
    va.add_argument("--jobs", type=int, default=1, help="processes exporting the architectures")
    va.add_argument("--recalibrate", action="store_true",
                    help="measure all the table's calibration networks among the architectures and also report the "
                         "errors of the table refitted on them (what 'host table recalibrate' before use gives)")
    va.add_argument("--no-transfer", dest="transfer", action="store_false",
                    help="do not apply a calibration fitted on another model's networks (applied by default, its "
                         "intercept moved per site: docs/latency.md)")
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
    add_network_bench_args(rc, "network")
    rc.add_argument("--jobs", type=int, default=1, help="processes exporting the networks")
    add_option(rc, ["--out-table"], old=("-o", "--out"), dest="out_table", required=True, metavar="T.json",
               help="the table JSON to write (may be TABLE itself)")

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
    b.set_defaults(func=cmd_table_build)
    sh.set_defaults(func=cmd_table_show)
    mg.set_defaults(func=cmd_table_merge)
    im.set_defaults(func=cmd_table_import)
    va.set_defaults(func=cmd_table_validate)
    rc.set_defaults(func=cmd_table_recalibrate)
    pr.set_defaults(func=cmd_table_predict)


def cmd_table_build(args) -> int:
    from edgeshrink.host import ui
    from edgeshrink.host.latency.build import BuildConfig, build_and_save, parse_shard
    from edgeshrink.host.latency.table import parse_shape

    try:
        shape = tuple(parse_shape(args.input))
        shard = parse_shard(args.shard)
    except ValueError as e:
        raise UserError(str(e)) from None
    devices = list(args.device or ["local"])
    cfg = BuildConfig(args.model, shape, num_classes=args.num_classes, device=devices[0], backend=args.backend,
                      threads=args.threads, granularity=args.granularity, jobs=args.jobs, shard=shard,
                      warmup=args.warmup, iters=args.iters, rounds=args.rounds, workdir=args.workdir,
                      farm=tuple(devices[1:]), batch=args.batch, resume=args.resume,
                      trust_new_host=args.trust_new_host,
                      calibrate=args.calibrate if args.calibrate is not None else (0 if shard != (1, 1) else
                                                                                   DEFAULT_CALIBRATE),
                      interleave=args.interleave,
                      statistic=args.statistic, coarse=args.coarse, refine_tol=args.refine_tol,
                      check_fraction=args.check_fraction, refine_rounds=args.refine_rounds, align=args.align)
    with ui.progress() as prog:
        table = build_and_save(cfg, args.out_table, log=ui.log, progress=progress_reporter(prog, BUILD_STAGES))
    log_build_summary(table, args.out_table, cfg.resume)
    if args.json:
        print(json.dumps({"table": args.out_table, "entries": len(table.entries), "statistic": table.statistic,
                          "overhead_ms": table.overhead_ms, "build": table.build,
                          "fit": table.calibration.get("fit")}, indent=1, default=str))
    return 0


BUILD_STAGES = {"build": "building micro-models", "measure": "measuring on device",
                "networks": "measuring calibration networks"}


def log_build_summary(table, out: str, resumed: bool) -> None:
    """What a finished build measured, interpolated and fitted, in a few log lines."""
    from edgeshrink.host import ui

    b = table.build
    reused = b.get("reused_measurements") or 0
    ui.log(f"table ({table.statistic} latencies): {b['measured']} entries measured in {b['rounds']} rounds, "
           f"{b['interpolated']} interpolated; overhead {table.overhead_ms:.4f} ms; {b['measurements']} measurements "
           "taken now" + (f", {reused} reused from the interrupted build" if resumed or reused else "")
           + f", total {b['wall_s']:.1f} s -> {out}")
    if b.get("interpolation"):
        it = b["interpolation"]
        ui.log(f"interpolation: coarse grid {it['coarse']}, {it['checks']} check measurements (mean |error| "
               f"{(it['check_mean_abs_rel_error'] or 0):.1%}, max {(it['check_max_abs_rel_error'] or 0):.1%}), methods "
               f"{it['methods']}; {b['measured']} of {b['target_grid_entries']} entries measured, "
               f"{b['reduction_vs_exhaustive_per_channel']:.0f}x fewer than the exhaustive per-channel grid "
               f"({b['exhaustive_per_channel_entries']})")
    fit = table.calibration.get("fit")
    if fit:
        cv = (f"; held out (5-fold) {fit['cv_mean_abs_rel_error']:.2%} mean, {fit['cv_max_abs_rel_error']:.2%} max"
              if "cv_mean_abs_rel_error" in fit else "")
        cv += (f" with {len(fit.get('corrections', []))} per-configuration/family corrections"
               if fit.get("key_ridge") is not None else "; no per-configuration corrections (they did not help "
               "held-out networks, or too few networks)")
        ui.log(f"calibration: {len(fit['networks'])} networks, fit mean |error| {fit['fit_mean_abs_rel_error']:.2%} "
               f"(uncorrected {fit['uncorrected_mean_abs_rel_error']:.2%}){cv}; coefficients "
               + ", ".join(f"{k} {v:.4g}" for k, v in fit["coefficients"].items()))
        gate = fit.get("weight_cache")
        ui.log(f"streamed weights: from {gate['mparams']:.2f} M conv weights ({gate['mparams'] * 4:.1f} MB fp32) on, "
               "each inference reads them from memory" if gate else
               "streamed weights: no cache threshold (the calibration networks' weights behave as cached, or "
               "too few networks)")


def cmd_table_show(args) -> int:
    from edgeshrink.host.latency.plots import heatmaps
    from edgeshrink.host.latency.show import summarize
    from edgeshrink.host.latency.table import load_table

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
    from edgeshrink.host import ui
    from edgeshrink.host.latency.merge import merge_tables

    prepare_file(args.out_table, "--out-table")
    table = merge_tables(args.tables, mad_threshold=args.mad, smooth=args.smooth, sigma=args.sigma,
                         num_classes=args.num_classes)
    table.save(args.out_table)
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
           + (f"; smoothed ({args.smooth})" if args.smooth else "") + refit + f" -> {args.out_table}")
    return 0


def cmd_table_import(args) -> int:
    from edgeshrink import models
    from edgeshrink.host import ui
    from edgeshrink.host.latency.importers import import_netadapt_table
    from edgeshrink.host.latency.predict import TablePredictor

    prepare_file(args.out_table, "--out-table")
    table = import_netadapt_table(args.file, args.model)
    table.save(args.out_table)
    pred = TablePredictor.for_model(table, models.create_model(args.model))
    ui.log(f"imported {len(table.entries)} {args.model} configurations from {args.file} ({table.device['board']}, "
           f"{table.device['runtime']}); unpruned {args.model} sums to {pred.predict_ms(pred.space.full_widths):.2f} "
           f"ms -> {args.out_table}")
    return 0


def cmd_table_recalibrate(args) -> int:
    from edgeshrink.host import ui
    from edgeshrink.host.latency.recalibrate import recalibrate_table

    r = recalibrate_table(args.table, args.model, args.out_table, device=args.device, num_classes=args.num_classes,
                          rounds=args.rounds, iters=args.iters, jobs=args.jobs, trust_new_host=args.trust_new_host,
                          on_line=every_tenth(ui.log), loads=args.loads)
    f = r["fit"]
    cv = (f", held out (5-fold) {f['cv_mean_abs_rel_error']:.2%} mean, {f['cv_max_abs_rel_error']:.2%} max"
          if "cv_mean_abs_rel_error" in f else "")
    print(f"{r['networks']} calibration networks measured again: speed now / at the last fit x{r['speed_ratio']:.4f} "
          f"(median; {r['ratio_min']:.4f} to {r['ratio_max']:.4f}); refitted: fit mean |error| "
          f"{f['fit_mean_abs_rel_error']:.2%}{cv} -> {args.out_table}")
    return 0


def cmd_table_validate(args) -> int:
    from edgeshrink.host import ui
    from edgeshrink.host.latency.validate import validate_table

    doc = validate_table(args.table, args.model, samples=args.samples, device=args.device, seed=args.seed,
                         out_dir=args.out, rounds=args.rounds, iters=args.iters, num_classes=args.num_classes,
                         trust_new_host=args.trust_new_host, on_line=every_tenth(ui.log), anchors=args.anchors,
                         jobs=args.jobs, recalibrate=args.recalibrate, loads=args.loads, compare=args.compare,
                         transfer=args.transfer)
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print(f"{args.model} on {doc['device'].get('spec')} ({doc['backend']}, {doc['threads']} thread(s)): "
                     f"{doc['samples']} random pruned architectures by {doc['statistic']} latency, mean |error| "
                     f"{doc['mean_abs_rel_error']:.2%}, "
                     f"max {doc['max_abs_rel_error']:.2%}, mean signed {doc['mean_rel_error']:+.2%}, Pearson r "
                     f"{doc['pearson_r']:.4f}" + (f" -> {args.out}/validate.json, validate.png" if args.out else ""))
        if doc.get("fit_scope") == "transferred":
            print(f"calibration: fitted on {doc['fit_model']}'s networks and applied to {args.model}, outside the "
                  f"networks it was fitted on (intercept {doc.get('intercept_rule')}; --no-transfer for the plain sum)")
        elif doc.get("fit_scope") == "not transferred":
            print(f"calibration: the table's fit is {doc['fit_model']}'s and is not applied to {args.model} (the plain "
                  "sum of the micro-models, --no-transfer)")
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


def _read_channels(path: str, fmt: str = "json") -> dict:
    if fmt == "netadapt-pickle":
        from edgeshrink.host.latency.importers import read_netadapt_channels

        return read_netadapt_channels(path)
    if path.endswith(".pt"):
        from edgeshrink.host.checkpoint import load_checkpoint

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
    from edgeshrink import models
    from edgeshrink.host import ui
    from edgeshrink.host.latency.predict import TablePredictor
    from edgeshrink.host.latency.table import check_backend, load_table

    table = load_table(args.table)
    check_backend(table, args.table, args.backend)
    pred = TablePredictor.for_model(table, models.create_model(args.model, args.num_classes))
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
