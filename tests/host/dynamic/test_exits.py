"""Early exit: where inputs leave and what it costs on hand cases, the threshold search's answer on a case solved by
hand, the staged export against torch input by input and the device's exit histogram against torch's, the table's
per-exit prediction against a formula, ``host exits`` and ``host show`` end to end, and the refusals."""

import json

import numpy as np
import pytest
import torch

from edgeshrink import models
from edgeshrink.host.dynamic import exits
from edgeshrink.host.errors import UserError
from edgeshrink.host.latency.key import LayerKey
from tests.conftest import assert_shipped, one_line_error
from tests.tables import OVERHEAD_MS, formula_ms, synthetic_table


def test_exit_index_and_outcome_by_hand():
    conf = np.array([[0.95, 0.5, 0.1], [0.3, 0.85, 0.9], [0.4, 0.2, 0.3], [0.9, 0.99, 0.99]])
    pred = np.array([[1, 0, 0], [0, 2, 2], [5, 5, 3], [4, 4, 4]])
    y = np.array([1, 2, 3, 0])
    th = [0.9, 0.8]
    assert exits.exit_index(conf, th).tolist() == [0, 1, 2, 0]
    o = exits.outcome(conf, pred, y, th, [1.0, 2.0, 4.0])
    assert o["histogram"] == [2, 1, 1]
    assert o["top1"] == 0.75  # inputs 0, 1, 2 right where they left, input 3 wrong at the first exit
    assert o["mean_ms"] == pytest.approx((1 + 2 + 4 + 1) / 4)
    assert exits.exit_index(conf, [None, 0.8]).tolist() == [2, 1, 2, 1]  # None: the first never lets one leave


def test_the_search_on_a_case_solved_by_hand():
    # one internal classifier: right on its two most confident inputs, wrong on the others; the final is always
    # right. Leaving costs 1 ms there, 3 ms at the end.
    conf = np.array([[0.99, 1.0], [0.9, 1.0], [0.6, 1.0], [0.4, 1.0]])
    pred = np.array([[0, 0], [1, 1], [9, 2], [9, 3]])
    y = np.array([0, 1, 2, 3])
    # a 2 ms mean needs two inputs to leave early: the two confident ones, all right
    r = exits.choose_thresholds(conf, pred, y, [1.0, 3.0], budget_ms=2.0)
    assert (r["top1"], r["mean_ms"], r["histogram"]) == (1.0, 2.0, [2, 2])
    assert 0.6 < r["thresholds"][0] <= 0.9
    # 1.5 ms needs three: the third is wrong
    r = exits.choose_thresholds(conf, pred, y, [1.0, 3.0], budget_ms=1.5)
    assert (r["top1"], r["mean_ms"]) == (0.75, 1.5)
    # a p99 cap of 1 ms: every input must leave at the first classifier
    r = exits.choose_thresholds(conf, pred, y, [1.0, 3.0], budget_ms=3.0, p99_ms=1.0)
    assert r["histogram"] == [4, 0] and r["top1"] == 0.5
    with pytest.raises(UserError, match="below the first exit's measured latency"):
        exits.choose_thresholds(conf, pred, y, [1.0, 3.0], budget_ms=0.9)
    with pytest.raises(UserError, match="--p99-ms"):
        exits.choose_thresholds(conf, pred, y, [1.0, 3.0], budget_ms=2.0, p99_ms=0.5)


@pytest.fixture(scope="module")
def staged(tmp_path_factory, digits):
    """An untrained 3-block cell network whose classifiers are biased so each threshold splits 60 digits test inputs,
    exported as stages, with thresholds at each classifier's 40% quantile of confidence."""
    from edgeshrink.host.data import export_inputs

    torch.manual_seed(1)
    m = models.create_model("cells_iterative_010101_w4", 10).eval()
    folder = tmp_path_factory.mktemp("exits")
    inputs = str(folder / "inputs.npz")
    export_inputs(digits, "test", inputs, limit=60)
    x = np.load(inputs)["x"]
    with torch.no_grad():
        for clf in m.exits:
            clf.fc.weight.mul_(4)  # more confident classifiers, so confidences spread
        outs = m.forward_exits(torch.from_numpy(x))
    conf = [torch.softmax(o.double(), 1).max(1).values for o in outs]
    th = [float(c.quantile(0.4)) + 1e-4 for c in conf[:-1]]
    steps = exits.export_stages(m, (1, 3, 32, 32), str(folder))
    return m, steps, exits.write_manifest(str(folder), steps, th), th, inputs, x


def test_the_staged_export_exits_as_torch_input_by_input(staged):
    m, steps, manifest, th, _, x = staged
    got = exits.check_exits(m, manifest, x, th)
    assert got["ties"] == 0 and got["max_abs_diff"] <= 1e-4
    assert 0 < got["exits"].count(0) < 60 and got["exits"].count(2) > 0  # every stage takes some inputs
    doc = json.load(open(manifest))
    assert [s.get("exit", {}).get("threshold") for s in doc["steps"]] == pytest.approx(th + [0.0])


def test_the_device_runner_exit_histogram_equals_torch(staged):
    from edgeshrink.device.dynamic import bench_dynamic

    m, steps, manifest, th, inputs, x = staged
    got = bench_dynamic(manifest, inputs, iters=1, warmup=1)
    with torch.no_grad():
        outs = m.forward_exits(torch.from_numpy(x))
    conf = np.stack([torch.softmax(o.double(), 1).max(1).values.numpy() for o in outs], 1)
    pred = np.stack([o.argmax(1).numpy() for o in outs], 1)
    k = exits.exit_index(conf, th)
    assert list(got["exit_histogram"].values()) == np.bincount(k, minlength=3).tolist()
    assert list(got["exit_histogram"]) == m.exit_names
    assert got["per_input"]["pred"] == pred[np.arange(60), k].tolist()


def test_a_changed_stage_is_caught(staged):
    from edgeshrink.host.export.onnx import ExportCheckError

    m, steps, manifest, th, _, x = staged
    other = models.create_model("cells_iterative_010101_w4", 10).eval()
    other.load_state_dict(m.state_dict())
    with torch.no_grad():
        other.blocks[1].cells[0].conv2.weight.mul_(1.5)
    with pytest.raises(ExportCheckError, match="differs from torch"):
        exits.check_exits(other, manifest, x, th)


def _f(op, cin, cout, k=(1, 1), stride=(1, 1), padding=(0, 0), hw=(32, 32)):
    """formula_ms less the overhead, for a layer described by hand."""
    return formula_ms(LayerKey(op, cin, cout, hw, kernel=k, stride=stride, padding=padding)) - OVERHEAD_MS


def test_the_tables_cost_of_each_exit_against_the_formula():
    # cells_dense_0101_w8: block 0 = 2 cells (3->8, then three 8->8 3x3 convs, BN, add and ReLU fused), classifier on
    # 8 channels; block 1 = 2 cells of 8->8, the concatenation of 8 + 8, classifier on 16 channels
    conv = lambda cin: _f("conv2d", cin, 8, (3, 3), (1, 1), (1, 1))  # noqa: E731
    clf = lambda c: _f("avgpool", c, c, (8, 8), (8, 8)) + _f("linear", c * 16, 10, hw=(1, 1))  # noqa: E731
    stage0 = conv(3) + 3 * conv(8) + clf(8)
    stage1 = 4 * conv(8) + _f("concat", 16, 16) + clf(16)
    table = synthetic_table("cells_dense_0101_w8", 4)
    m = models.create_model("cells_dense_0101_w8", 10)
    asked = []

    def measure(t, keys, name, log=None):  # block 0's classifier: not in a table built for the final one only
        asked.extend(keys)
        return {k: formula_ms(k) - OVERHEAD_MS for k in keys}

    got = exits.predict_exit_costs(table, m, measure=measure)
    assert got["stage_ms"] == pytest.approx([OVERHEAD_MS + stage0, OVERHEAD_MS + stage1])
    assert got["cost_ms"] == pytest.approx([OVERHEAD_MS + stage0, 2 * OVERHEAD_MS + stage0 + stage1])
    # what the table lacked, and only that, was measured: block 0's classifier reads 128 features, the final 256
    assert LayerKey("linear", 128, 10, (1, 1)) in asked and got["measured_keys"] == len(asked)
    assert all(table.lookup(k) is None for k in asked)


def test_the_tables_cost_of_a_resnets_exit(formula_table):
    from edgeshrink.host.latency.table import load_table

    m = models.create_model("resnet20", 10, exits=["layer1.2"])
    got = exits.predict_exit_costs(load_table(str(formula_table)), m,
                                   measure=lambda t, keys, name, log=None: {k: formula_ms(k) - OVERHEAD_MS for k in keys})
    # the stem and layer1's six 16->16 convs, then the classifier on 16 channels
    want0 = OVERHEAD_MS + _f("conv2d", 3, 16, (3, 3), (1, 1), (1, 1)) + 6 * _f("conv2d", 16, 16, (3, 3), (1, 1), (1, 1)) \
        + _f("avgpool", 16, 16, (8, 8), (8, 8)) + _f("linear", 256, 10, hw=(1, 1))
    assert got["cost_ms"][0] == pytest.approx(want0)
    from tests.tables import predicted_by_formula

    from edgeshrink.host.latency.space import build_space

    plain = predicted_by_formula("resnet20", build_space(models.create_model("resnet20"), (1, 3, 32, 32)).full_widths)
    # the whole chain: the plain network, the classifier passed, one more runtime call
    assert got["cost_ms"][1] == pytest.approx(plain + _f("avgpool", 16, 16, (8, 8), (8, 8)) +
                                              _f("linear", 256, 10, hw=(1, 1)) + OVERHEAD_MS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-block cell network of 16 channels trained 2 epochs on 200 digits (grown after the first) and its formula
    table. (At 4 channels, leaving at the first classifier costs about as much as the whole network here: the
    runtime's per-call overhead is most of it.)"""
    from edgeshrink.host.cli import main

    d = tmp_path_factory.mktemp("ee")
    assert main(["train", "--model", "cells_iterative_0101_w16", "--epochs", "2", "--train-subset", "200",
                 "--grow-epochs", "1", "--out", str(d / "run")]) == 0
    synthetic_table("cells_iterative_0101_w16", 8).save(str(d / "t.json"))
    return d


@pytest.mark.slow
def test_host_exits_end_to_end(trained, host_cli, tmp_path):
    r = host_cli("exits", "--checkpoint", trained / "run" / "model.pt", "--table", trained / "t.json", "--budget", "1",
                 "--limit", "40", "--cost-inputs", "20", "--check", "40", "--iters", "1", "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert sum(rep["exit_histogram"].values()) == rep["inputs"] == 40
    assert rep["budget_ms"] == pytest.approx(rep["full_network_ms"]["mean"])
    assert rep["val"]["mean_ms"] <= rep["budget_ms"]
    assert len(rep["thresholds"]) == 1 and rep["export_check"]["inputs"] == 40
    assert rep["exit_cost_ms"]["predicted"][1] > rep["exit_cost_ms"]["predicted"][0] > 0
    assert (tmp_path / "o" / "exits.png").stat().st_size > 1000
    assert rep["schema"] == "edgeshrink.exits_report" and rep["schema_version"] == 1
    art = assert_shipped(tmp_path / "o" / "staged", rep["sha256"])  # the manifest measured is the one shipped
    assert art["file"] == "model.json" and rep["artifact"]["sha256"] == rep["sha256"]
    assert set(art["files"]) == {"model.json", "stage0.onnx", "stage1.onnx"}
    # thresholds as given: the histogram follows from torch's confidences
    r = host_cli("exits", "--checkpoint", trained / "run" / "model.pt", "--table", trained / "t.json", "--thresholds", "0",
                 "--limit", "20", "--cost-inputs", "10", "--iters", "1", "--out", tmp_path / "o2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "o2" / "report.json").read_text())["exit_histogram"] == {"exits.0": 20,
                                                                                          "exits.1": 0}


@pytest.mark.slow
def test_host_exits_refusals(trained, host_cli, tmp_path, untrained_ckpt):
    ck, t = trained / "run" / "model.pt", trained / "t.json"
    base = ("--table", t, "--out", tmp_path / "o", "--cost-inputs", "10", "--iters", "1")
    one_line_error(host_cli("exits", "--checkpoint", ck, "--thresholds", "1.2", *base), "--thresholds", "[0, 1]")
    one_line_error(host_cli("exits", "--checkpoint", ck, "--thresholds", "0.5,0.5", *base), "2 values", "1 internal classifiers")
    one_line_error(host_cli("exits", "--checkpoint", ck, "--budget", "1.5", *base), "--budget must be a fraction")
    one_line_error(host_cli("exits", "--checkpoint", untrained_ckpt, "--budget", "0.5", *base), "no internal classifiers")
    # below what the table predicts for the first exit: refused before measuring
    one_line_error(host_cli("exits", "--checkpoint", ck, "--budget-ms", "0.0001", *base), "--budget-ms 0.0001",
                   "below the first exit's")
    # a fraction: known once the full network is measured (the progress lines first, the error last)
    r = host_cli("exits", "--checkpoint", ck, "--budget", "0.01", *base)
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and last.startswith("host: error: --budget 0.01 (") and "below the first exit's" in last


def test_host_show_prints_the_structure_and_each_exit(trained, host_cli):
    r = host_cli("show", trained / "run")
    assert r.returncode == 0, r.stderr[-2000:]
    # by hand: cells 3->16, three 16->16 convs, one more block of four; BNs 8 x 32; two classifiers of 256 -> 10
    params = 3 * 16 * 9 + 7 * 16 * 16 * 9 + 8 * 32 + 2 * (256 * 10 + 10)
    assert f"parameters {params:,}" in r.stdout
    assert "exits.0" in r.stdout and "exits.1" in r.stdout and "grown after epochs 1" in r.stdout
    got = json.loads((trained / "run" / "metrics.json").read_text())["exits"]["test_top1"]
    assert f"{got[1]:.2f}" in r.stdout


@pytest.mark.slow
def test_host_compare_puts_early_exit_beside_structured_snip(trained, host_cli, tmp_path):
    r = host_cli("compare", "--methods", "snip", "--budgets", "0.9", "--table", trained / "t.json",
                 "--checkpoint", trained / "run" / "model.pt", "--long-term-epochs", "1", "--bench-seconds", "2",
                 "--per-input-limit", "30", "--out", tmp_path / "c")
    assert r.returncode == 0, r.stderr[-3000:]
    c = json.loads((tmp_path / "c" / "compare.json").read_text())
    snip = c["rows"][0]
    assert snip["method"] == "snip" and snip["per_input_ms"]["mean"] > 0
    ee = c["early_exit"]
    assert ee["inputs"] == 30 and ee["rows"][0]["method"] == "early-exit"
    row = ee["rows"][0]
    assert sum(row["exit_histogram"].values()) == 30
    assert row["ratio_measured_mean"] == pytest.approx(row["latency_ms_measured"] / c["baseline"]["per_input_ms"]["mean"])
    assert "early exit" in r.stdout and (tmp_path / "c" / "pareto_per_input.png").is_file()
