"""Bad input, by class, as a careless or hostile user gives it: each is refused with one line naming the problem
and exit code 2, and nothing is written or measured first. (The SSH classes are in tests/host/remote.)"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch

from tests.conftest import error_line, one_line_error, run_cli
from tests.device.test_cli import tiny_onnx

UNDER_A_FILE = "/etc/hostname/sub"  # a path under a regular file: cannot be a folder, even for root


def read_only_dir(tmp_path):
    """A folder nobody may write into (for root, /sys: a read-only filesystem)."""
    if os.geteuid() == 0:
        return "/sys/edgeshrink-test"
    d = tmp_path / "ro"
    d.mkdir()
    os.chmod(d, 0o555)
    return str(d / "sub")


def _table(formula_table, tmp_path, edit, name="bad.json"):
    d = json.loads(formula_table.read_text())
    edit(d)
    p = tmp_path / name
    p.write_text(json.dumps(d))
    return str(p)


# -- class 1: what used to be a traceback -------------------------------------------------------------------
@pytest.mark.parametrize("edit,needle", [
    (lambda d: d.update(entries={"a": 1}), "entries must be a list"),
    (lambda d: d.update(calibration=[1, 2]), "calibration must be a JSON object"),
    (lambda d: d["calibration"].update(fit={"coefficients": {"conv": "x"}}), "coefficient conv must be a finite number"),
    (lambda d: d["calibration"].update(fit={"weight_cache": {"mparams": -1.0, "log_width": 0.1}}),
     "weight_cache mparams must be"),
    (lambda d: d["calibration"].update(fit={"corrections": [{"kind": "key", "key": {"op": "conv2d"}, "delta": 1}]}),
     "correction 0 key has no 'in_channels'"),
    (lambda d: d["entries"][2].update(in_channels="16"), "entry 2 in_channels must be an integer"),
    (lambda d: d["entries"][0].update(latency_ms=[0.1]), "entry 0 latency_ms must be a JSON object"),
    (lambda d: d.update(input_shape=[1, 3, 32]), "input_shape must have 4 items"),
    (lambda d: d.update(threads="one"), "threads must be an integer"),
    # class 2 in tables: booleans were counted as 1 ms, NaN slipped through
    (lambda d: d["entries"][1]["latency_ms"].update(min=True), "entry 1 (conv2d"),
    (lambda d: d["entries"][1]["latency_ms"].update(mean=float("nan")), "latency_ms mean must be a finite number"),
])
def test_malformed_tables_are_one_line(tmp_path, host_cli, formula_table, edit, needle):
    path = _table(formula_table, tmp_path, edit)
    one_line_error(host_cli("table", "predict", path), path, needle)
    one_line_error(host_cli("table", "show", path, "--out", str(tmp_path / "h")), needle)
    assert not (tmp_path / "h").exists()


@pytest.mark.parametrize("change,needle", [
    (lambda c: c.pop("channels"), "has no 'channels'"),
    (lambda c: c.update(num_classes="10"), "num_classes must be an integer"),
    (lambda c: c.update(channels=[16]), "channels must be a JSON object"),
    (lambda c: c["state_dict"].update(extra=[1, 2]), "state_dict entry 'extra' is not a tensor"),
    (lambda c: c.update(input_shape=[1, 3, 32]), "input_shape must have 4 items"),
])
def test_malformed_checkpoints_are_one_line(tmp_path, host_cli, untrained_ckpt, formula_table, change, needle):
    ck = torch.load(untrained_ckpt, weights_only=True)
    change(ck)
    bad = tmp_path / "bad.pt"
    torch.save(ck, bad)
    one_line_error(host_cli("export", "--checkpoint", str(bad), "-o", str(tmp_path / "x")), str(bad), needle)
    one_line_error(host_cli("prune", "--table", str(formula_table), "--checkpoint", str(bad), "--out",
                            str(tmp_path / "p")), needle)
    assert not (tmp_path / "x").exists() and not (tmp_path / "p").exists()


@pytest.mark.parametrize("state", [b"\x00not a torch file", {"checkpoint_sha": "x"}])
def test_a_corrupt_resume_state_is_one_line(tmp_path, host_cli, untrained_ckpt, formula_table, state):
    out = tmp_path / "p"
    out.mkdir()
    from edgeshrink.device.provenance import sha256_file

    if isinstance(state, bytes):
        (out / "netadapt_state.pt").write_bytes(state)
    else:
        torch.save({**state, "checkpoint_sha": sha256_file(str(untrained_ckpt))}, out / "netadapt_state.pt")
    r = host_cli("prune", "--table", str(formula_table), "--checkpoint", str(untrained_ckpt), "--out", str(out),
                 "--resume", "--short-term-steps", "0", "--long-term-epochs", "0")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    error_line(r, "netadapt_state.pt", "--resume")


def test_a_results_line_without_a_field_is_one_line(tmp_path, host_cli):
    out = tmp_path / "t.json"
    work = tmp_path / "t.json.build"
    work.mkdir()
    (work / "results_r0.jsonl").write_text('{"model": "overhead.onnx"}\n{"model": "x", "latency_ms": {}}\n')
    error_line(host_cli("table", "build", "--granularity", "32", "--iters", "2", "--rounds", "1", "--resume",
                        "--out-table", str(out)), "results_r0.jsonl line 1 latency_ms must be a JSON object",
               "delete the work folder")


def test_board_replies_are_checked_before_they_are_read():
    from edgeshrink.host.bench import check_bench_reply
    from edgeshrink.host.errors import DeviceError

    good = {"device": {}, "results": [{"model": "a.onnx", "latency_ms": {"median": 1.0, "mean": 1.1}, "sha256": "x"}]}
    assert check_bench_reply(json.dumps(good), "d", ["a.onnx"]) == good
    for text, needle in (("Traceback (most recent call last):", "not JSON: 'Traceback"),
                         ("[1, 2]", "must be a JSON object"),
                         (json.dumps({"device": {}}), "results must be a list"),
                         (json.dumps({**good, "results": [{"model": "b.onnx", "latency_ms": {"median": 1}}]}),
                          "'b.onnx', which was not asked for"),
                         (json.dumps({**good, "results": [{"model": "a.onnx", "latency_ms": {"median": "fast"}}]}),
                          "latency_ms median must be a finite number"),
                         (json.dumps({**good, "results": []}), "without results for a.onnx"),
                         (json.dumps({**good, "results": [{**good["results"][0], "power": {"log_csv": 3}}]}),
                          "power log_csv must be a string")):
        with pytest.raises(DeviceError, match=needle):
            check_bench_reply(text, "d", ["a.onnx"])


@pytest.mark.parametrize("where", [UNDER_A_FILE, "READ_ONLY"])
def test_unwritable_outputs_are_refused_before_any_work(tmp_path, host_cli, formula_table, untrained_ckpt, where):
    target = read_only_dir(tmp_path) if where == "READ_ONLY" else where
    T, C = str(formula_table), str(untrained_ckpt)
    t0 = time.monotonic()
    one_line_error(host_cli("table", "build", "--granularity", "32", "--out-table", f"{target}/t.json"), target, "cannot write")
    one_line_error(host_cli("table", "merge", T, T, "--out-table", f"{target}/m.json"), target)
    one_line_error(host_cli("table", "show", T, "--out", target), target)
    error_line(host_cli("prune", "--table", T, "--checkpoint", C, "--out", target), target)
    one_line_error(host_cli("export", "--checkpoint", C, "-o", target), target)
    one_line_error(host_cli("train", "--epochs", "1", "--out", target), target)
    one_line_error(host_cli("device", "pack", "--out-pyz", f"{target}/d.pyz"), target)
    model = tiny_onnx(tmp_path / "m.onnx")
    r = host_cli("bench", str(model), "--out", target)
    one_line_error(r, target)
    assert "[1/1]" not in r.stderr  # refused before measuring, not after
    assert time.monotonic() - t0 < 60
    r = run_cli("-m", "edgeshrink.device", "bench", str(model), "--log-dir", target)
    one_line_error(r, "--log-dir", prog="device")


def test_a_pack_into_a_missing_folder_makes_it(tmp_path, host_cli):
    r = host_cli("device", "pack", "--out-pyz", str(tmp_path / "new" / "dir" / "d.pyz"))
    assert r.returncode == 0 and (tmp_path / "new" / "dir" / "d.pyz").stat().st_size > 1000


def test_model_files_the_runtime_cannot_load_and_inputs_too_large(tmp_path):
    (tmp_path / "text.onnx").write_text("hello")
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "binary.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    for name in ("text.onnx", "empty.onnx", "binary.onnx"):
        for backend in ("ort", "litert"):
            r = run_cli("-m", "edgeshrink.device", "bench", str(tmp_path / name), "--backend", backend, "--iters", "2")
            one_line_error(r, name, "not a model", prog="device")
    import onnx
    from onnx import TensorProto, helper

    shape = [1, 3, 1_000_000, 1_000_000]  # 3e12 values: no device has the memory for its input
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "huge",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "huge.onnx"))
    r = run_cli("-m", "edgeshrink.device", "bench", str(tmp_path / "huge.onnx"), "--iters", "2")
    one_line_error(r, "do not fit in this device's memory", prog="device")


def test_host_inputs_too_large_and_negative_class_counts(tmp_path, host_cli, formula_table):
    one_line_error(host_cli("table", "build", "--input", "1x3x100000x100000", "--out-table", str(tmp_path / "t.json")),
                   "too large")
    one_line_error(host_cli("table", "build", "--num-classes", "-3", "--out-table", str(tmp_path / "t.json")), "--num-classes")
    one_line_error(host_cli("table", "predict", str(formula_table), "--num-classes", "-3"), "--num-classes")
    one_line_error(host_cli("table", "validate", str(formula_table), "--num-classes", "0"), "--num-classes")
    assert not (tmp_path / "t.json").exists()


# -- class 2: what used to be accepted with exit code 0 -----------------------------------------------------
@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0"])
def test_budgets_that_mean_nothing_are_refused_and_leave_no_folder(tmp_path, host_cli, formula_table, untrained_ckpt,
                                                                   value):
    out = tmp_path / "p"
    one_line_error(host_cli("prune", "--table", str(formula_table), "--checkpoint", str(untrained_ckpt),
                            "--budget-ms", value, "--out", str(out)), "--budget-ms must be a positive finite number")
    assert not out.exists()


def test_a_grid_coarser_than_every_layer_is_refused(tmp_path, host_cli):
    one_line_error(host_cli("table", "build", "--granularity", "64", "--out-table", str(tmp_path / "t.json")),
                   "--granularity 64 leaves every channel group of resnet20 at its full width")
    assert not (tmp_path / "t.json").exists()


@pytest.mark.parametrize("args,needle", [
    (["--threads", "100000"], "--threads must be from 0 to"),
    (["--warmup-s", "inf"], "--warmup-s must be a finite number"),
    (["--idle-s", "nan"], "--idle-s must be a finite number"),
    (["--cool-down-s", "inf"], "--cool-down-s must be a finite number"),
    (["--iters", "100000000000"], "--iters must be from 1 to"),
    (["--power-interval-ms", "1"], "--power-interval-ms must be from 10"),
])
def test_device_numbers_beyond_what_the_device_can_do(tmp_path, args, needle):
    model = tiny_onnx(tmp_path / "m.onnx")
    one_line_error(run_cli("-m", "edgeshrink.device", "bench", str(model), *args), needle, prog="device")


@pytest.mark.parametrize("args,needle", [
    (["bench", "M", "--warmup-s", "inf"], "--warmup-s must be a finite number"),
    (["bench", "M", "--iters", "0"], "--iters must be in 1.."),
    (["bench", "M", "--threads", "-1"], "--threads must be in 0.."),
    (["train", "--lr", "nan", "--out", "O"], "--lr must be a finite number"),
    (["train", "--epochs", "0", "--out", "O"], "--epochs must be in 1.."),
    (["table", "merge", "A", "A", "--sigma", "inf", "--out-table", "O"], "--sigma must be a finite number"),
])
def test_host_numbers_beyond_their_range(tmp_path, host_cli, args, needle):
    model = str(tiny_onnx(tmp_path / "m.onnx"))
    args = [model if a == "M" else str(tmp_path / "o") if a == "O" else a for a in args]
    one_line_error(host_cli(*args), needle)
    assert not (tmp_path / "o").exists()


# -- the methods of host prune --method and host compare ----------------------------------------------------
@pytest.mark.parametrize("args,needle", [
    (["--method", "obd"], "unknown method 'obd'; known: netadapt, uniform, magnitude"),
    (["--method", "uniform", "--sparsity", "1e-5"], "--sparsity belongs to slimming, not uniform"),
    (["--method", "netadapt", "--a-max", "10"], "--a-max belongs to swd, not netadapt"),
    (["--method", "magnitude", "--short-term-steps", "5"], "--short-term-steps belongs to netadapt, not magnitude"),
    (["--method", "slimming", "--sparsity", "-0.00001"], "--sparsity must be > 0"),
    (["--method", "morphnet", "--morphnet-strength", "0"], "--morphnet-strength must be > 0"),
    (["--method", "swd", "--mu", "nan"], "--mu must be a finite number"),
    (["--method", "eigendamage", "--damping", "0"], "--damping must be > 0"),
    (["--method", "eigendamage", "--kfac-batches", "0"], "--kfac-batches must be in 1..1000000"),
    (["--method", "swd", "--a-min", "100", "--a-max", "10"], "--a-min 100 is above --a-max 10"),
    (["--method", "uniform", "--pruning-rate", "0.5"], "--pruning-rate applies to the threshold methods"),
    (["--method", "magnitude", "--pruning-rate", "1.5"], "--pruning-rate must be a fraction in (0, 1)"),
    (["--method", "uniform", "--budget-ms", "0.001"], "--method uniform: budget 0.0010 ms is unreachable"),
    (["--method", "magnitude", "--scope", "safe", "--min-keep", "0.9", "--budget", "0.3"],
     ("unreachable", "safe floor 0.9")),
    (["--method", "slimming", "--recover", "lr-rewind"], "--recover lr-rewind replays the original training schedule"),
    (["--method", "taylor", "--dataset", "fashion-mnist", "--data-dir", "ABSENT"],
     ("dataset-fashion-mnist", "is not a folder")),
])
def test_method_settings_that_cannot_work_are_one_line_and_leave_no_folder(tmp_path, host_cli, formula_table,
                                                                          untrained_ckpt, args, needle):
    out = tmp_path / "p"
    args = [str(tmp_path / "absent") if a == "ABSENT" else a for a in args]
    needles = needle if isinstance(needle, tuple) else (needle,)
    one_line_error(host_cli("prune", "--table", str(formula_table), "--checkpoint", str(untrained_ckpt),
                            *args, "--out", str(out)), *needles)
    assert not out.exists()


@pytest.mark.parametrize("args,needle", [
    (["--methods", "uniform,obd"], "unknown method 'obd'"),
    (["--methods", "uniform,uniform"], "--methods must be distinct"),
    (["--budgets", "0.5,1.2"], "--budgets must be distinct fractions in (0, 1)"),
    (["--budgets", "half"], "--budgets must be comma-separated fractions"),
    (["--methods", "uniform,magnitude", "--mu", "1e-3"], "--mu belongs to swd, not uniform, magnitude"),
    (["--methods", "netadapt,magnitude", "--pruning-rate", "0.3"], "not netadapt"),
    (["--bench-seconds", "0"], "--bench-seconds must be > 0"),
])
def test_compare_settings_are_refused_before_any_run(tmp_path, host_cli, formula_table, untrained_ckpt, args, needle):
    out = tmp_path / "c"
    one_line_error(host_cli("compare", "--table", str(formula_table), "--checkpoint", str(untrained_ckpt),
                            *args, "--out", str(out)), needle)
    assert not out.exists()


@pytest.mark.parametrize("content", [b"lorem ipsum 12/34\n", np.random.default_rng(1).bytes(3000),
                                     b"# a comment\n\nCPU [1%@100] VDD_IN 1/2\n"])
def test_a_tegrastats_log_that_is_not_one_is_refused(tmp_path, content):
    log = tmp_path / "log.txt"
    log.write_bytes(content)
    r = run_cli("-m", "edgeshrink.device", "power", "parse-tegrastats", str(log), "--json")
    one_line_error(r, "not a tegrastats sample (no RAM field)", prog="device")
    assert r.stdout == ""


def test_model_references_that_do_not_give_a_model_are_one_line(tmp_path, host_cli, formula_table):
    from tests.usermodel import write_user_model

    ref = write_user_model(tmp_path / "proj")
    net = ref.rsplit(":", 1)[0]
    out = str(tmp_path / "out")
    one_line_error(host_cli("train", "--model", f"{tmp_path}/absent.py:make", "--epochs", "1", "--out", out),
                   "model reference", "no such file")
    one_line_error(host_cli("train", "--model", f"{net}:not_a_model", "--epochs", "1", "--out", out),
                   "returned a dict, not an nn.Module")
    one_line_error(host_cli("table", "build", "--model", f"{net}:rolled", "--calibrate", "0", "--out-table",
                            str(tmp_path / "t.json")), "op roll", "not one the latency table models")
    one_line_error(host_cli("table", "predict", formula_table, "--model", ref), "has no entry for", "layer features.0.0")
    one_line_error(host_cli("shrink", "--model", ref, "--table", formula_table, "--train-fn",
                            f"{net}:nothing", "--out", out), "has no 'nothing'")
    assert not (tmp_path / "out").exists() and not (tmp_path / "t.json").exists()
