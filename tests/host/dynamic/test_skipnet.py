"""SkipNet on the host: the gated network exported as a staged model and checked against torch on real inputs,
the device's execution rates against torch's decisions, the hybrid RL loss by hand, the expected latency from a
table with a known answer, and the refusals."""

import json
import os
import types

import numpy as np
import pytest
import torch

from edgeshrink import models
from edgeshrink.host.dynamic import skipnet
from tests.conftest import assert_shipped, one_line_error


@pytest.fixture(scope="module")
def staged_ff(tmp_path_factory, digits):
    """An (untrained) resnet20 with ff gates whose decisions differ between inputs, exported as a staged model,
    and 60 digits test images as an input set."""
    from edgeshrink.host.data import export_inputs

    torch.manual_seed(3)
    m = models.create_model("resnet20", 10, gates={"kind": "ff", "hidden": 10}).eval()
    folder = tmp_path_factory.mktemp("staged")
    inputs = str(folder / "inputs.npz")
    export_inputs(digits, "test", inputs, limit=60)
    x = np.load(inputs)["x"]
    with torch.no_grad():
        m(torch.from_numpy(x))
    # move each gate's probability on these inputs so that its decisions split them (at a 40% quantile, so that no
    # input sits on the threshold, where float rounding may decide either way)
    for i, g in enumerate(m.gate):
        g.fc.bias.data -= torch.logit(m.last_probs[:, i].quantile(0.4).clamp(1e-4, 1 - 1e-4)) - 1e-3
    return m, skipnet.export_gated(m, (1, 3, 32, 32), str(folder / "staged")), inputs, x


@pytest.mark.slow  # the shared staged export (staged_ff) takes about 15 s: the full tier's
def test_the_staged_model_decides_as_torch_input_by_input(staged_ff):
    m, manifest, _, x = staged_ff
    with torch.no_grad():
        m(torch.from_numpy(x))
    d = m.last_decisions
    assert 0 < d.mean() < 1 and (d.std(0) > 0).all()  # every gate runs some inputs and skips others
    got = skipnet.check_gated(m, manifest, x)
    assert got["decisions_equal"] and got["ties"] == 0 and got["max_abs_diff"] <= 1e-4
    assert got["block_rates"] == pytest.approx(dict(zip(m.gated, d.mean(0).tolist())))
    doc = json.load(open(manifest))
    assert [s["kind"] for s in doc["steps"]].count("gated") == 7 and doc["steps"][-1]["name"] == "head"


@pytest.mark.slow  # the shared staged export (staged_ff) takes about 15 s: the full tier's
def test_the_device_runs_the_blocks_torch_runs(staged_ff):
    from edgeshrink.device.dynamic import bench_dynamic

    m, manifest, inputs, x = staged_ff
    got = bench_dynamic(manifest, inputs, iters=1, warmup=1)
    with torch.no_grad():
        m(torch.from_numpy(x))
    want = m.last_decisions.int().tolist()
    assert got["per_input"]["executed"] == ["".join(map(str, row)) for row in want]
    assert got["block_rates"] == pytest.approx(dict(zip(m.gated, m.last_decisions.mean(0).tolist())))
    assert got["worst_case_ms"]["mean"] >= got["latency_ms"]["min"]


@pytest.mark.slow  # the shared staged export (staged_ff) takes about 15 s: the full tier's
def test_a_changed_block_is_caught_by_the_check(staged_ff, tmp_path):
    from edgeshrink.host.export.onnx import ExportCheckError

    m, manifest, _, x = staged_ff
    other = models.create_model("resnet20", 10, gates={"kind": "ff"}).eval()
    other.load_state_dict(m.state_dict())
    with torch.no_grad():
        other.base.layer3[2].conv2.weight.mul_(1.5)
    with pytest.raises(ExportCheckError, match="logits differ from torch|ran blocks"):
        skipnet.check_gated(other, manifest, x)


@pytest.mark.slow
def test_a_recurrent_gate_exports_and_decides_as_torch(tmp_path, digits):
    from edgeshrink.host.data import export_inputs

    torch.manual_seed(5)
    m = models.create_model("resnet20", 10, gates={"kind": "rnn", "hidden": 8}).eval()
    export_inputs(digits, "test", str(tmp_path / "x.npz"), limit=40)
    x = np.load(tmp_path / "x.npz")["x"]
    with torch.no_grad():
        m(torch.from_numpy(x))
    m.gate.fc.bias.data -= torch.logit(m.last_probs.quantile(0.4).clamp(1e-4, 1 - 1e-4)) - 1e-3
    manifest = skipnet.export_gated(m, (1, 3, 32, 32), str(tmp_path / "rnn"))
    got = skipnet.check_gated(m, manifest, x)
    assert got["decisions_equal"] and got["max_abs_diff"] <= 1e-4
    assert 0 < np.mean(list(got["block_rates"].values())) < 1


def test_the_hybrid_rl_loss_by_hand():
    # two examples, two gates: rewards alpha (1 - g_i) w_i, terminal -CE = -ln 2 (two equal logits), gamma 0.5.
    # example 0 runs gate 0's block and skips gate 1's: R_1 = 0.4 - 0.5 ln 2, R_0 = 0.5 R_1;
    # example 1 skips gate 0's and runs gate 1's: R_1 = -0.5 ln 2, R_0 = 0.2 + 0.5 R_1.
    # The batch means as baselines: gate 0's advantages are 0 and 0, gate 1's +0.2 and -0.2.
    m = types.SimpleNamespace(last_decisions=torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
                              last_log_probs=torch.tensor([[-0.1, -0.2], [-0.3, -0.4]], requires_grad=True))
    loss = skipnet.rl_loss(m, torch.zeros(2, 2), torch.tensor([0, 1]), torch.tensor([0.2, 0.4]),
                           skipnet.RLConfig(alpha=1.0, gamma=0.5))
    # ln 2 - mean_n sum_i adv * log pi = ln 2 - (0.2 * -0.2 + -0.2 * -0.4) / 2
    assert float(loss) == pytest.approx(np.log(2) - 0.02, abs=1e-6)
    loss.backward()
    assert m.last_log_probs.grad.flatten().tolist() == pytest.approx([0.0, -0.1, 0.0, 0.1], abs=1e-6)


def test_expected_latency_from_a_known_table(formula_table):
    from edgeshrink.host.latency.predict import TablePredictor
    from edgeshrink.host.latency.table import load_table
    from tests.tables import predicted_by_formula

    m = models.create_model("resnet20", 10, gates={"kind": "ff"})
    pred = TablePredictor.for_model(load_table(str(formula_table)), m.base)
    full = predicted_by_formula("resnet20", pred.space.full_widths)
    ones = {b: 1.0 for b in m.gated}
    zero = {b: 0.0 for b in m.gated}
    at1 = skipnet.predict_dynamic(pred, m, ones, zero, 0.0)
    assert at1["expected_ms"] == pytest.approx(full) == pytest.approx(at1["worst_case_ms"])
    # every gate 0.1 ms: 7 gates
    assert skipnet.predict_dynamic(pred, m, ones, {b: 0.1 for b in m.gated}, 0.0)["expected_ms"] == \
        pytest.approx(full + 0.7)
    # 11 calls (stem, 9 blocks, head), one already in the table's overhead: 10 more of 0.05 ms
    assert skipnet.predict_dynamic(pred, m, ones, zero, 0.05)["expected_ms"] == pytest.approx(full + 0.5)
    half = skipnet.predict_dynamic(pred, m, {b: 0.5 for b in m.gated}, zero, 0.0)["expected_ms"]
    none = skipnet.predict_dynamic(pred, m, zero, zero, 0.0)
    assert half == pytest.approx((full + none["expected_ms"]) / 2) and none["expected_ms"] < full
    w = skipnet.block_weights(pred, m)
    assert sum(w.values()) == pytest.approx((full - none["expected_ms"]) / full)
    macs = skipnet.gated_macs(m, (1, 3, 32, 32), {b: 0.0 for b in m.gated})
    assert macs["worst"] > macs["mean"] > 0


def test_train_refusals(host_cli, tmp_path, formula_table):
    r = host_cli("train", "--model", "mobilenet_v2", "--gates", "ff", "--epochs", "1", "--out", tmp_path / "a")
    one_line_error(r, "no residual blocks")
    one_line_error(host_cli("train", "--rl", "--epochs", "1", "--out", tmp_path / "b"), "--gates ff|rnn")
    one_line_error(host_cli("train", "--gates", "ff", "--rl", "--epochs", "1", "--out", tmp_path / "c"),
                   "--table")
    one_line_error(host_cli("train", "--gates", "ff", "--rl", "--rl-gamma", "0", "--table", formula_table,
                            "--epochs", "1", "--out", tmp_path / "d"), "--rl-gamma must be > 0")
    one_line_error(host_cli("train", "--gates", "ff", "--rl", "--rl-gamma", "1.5", "--table", formula_table,
                            "--epochs", "1", "--out", tmp_path / "e"), "--rl-gamma must be in (0, 1]")
    assert not any((tmp_path / n).exists() for n in "abcde")


def test_dynamic_refuses_a_checkpoint_without_gates(host_cli, tmp_path, untrained_ckpt, formula_table):
    r = host_cli("dynamic", "--checkpoint", untrained_ckpt, "--table", formula_table, "--out", tmp_path / "o")
    one_line_error(r, "has no SkipNet gates")


@pytest.mark.slow
def test_rl_with_a_large_skip_reward_skips_more_than_supervised_training(tmp_path, host_cli, formula_table):
    from edgeshrink.host.checkpoint import load_checkpoint

    base = ["--train-subset", "400", "--batch-size", "32", "--lr", "0.05", "--seed", "0"]
    assert host_cli("train", "--gates", "ff", "--epochs", "2", *base, "--out", tmp_path / "sup").returncode == 0
    r = host_cli("train", "--init", tmp_path / "sup" / "model.pt", "--rl", "--rl-weight", "20", "--table",
                 formula_table, "--epochs", "2", *base, "--out", tmp_path / "rl")
    assert r.returncode == 0, r.stderr
    sup = json.load(open(tmp_path / "sup" / "metrics.json"))["gates"]["test_block_rates"]
    rl = json.load(open(tmp_path / "rl" / "metrics.json"))["gates"]
    assert rl["stage"] == "rl" and rl["rl"] == {"alpha": 20.0, "gamma": 0.99}
    assert np.mean(list(rl["test_block_rates"].values())) < np.mean(list(sup.values())) - 0.2
    assert load_checkpoint(str(tmp_path / "rl" / "model.pt"))["gates"] == {"kind": "ff", "hidden": 10}


@pytest.mark.slow
def test_host_dynamic_measures_a_gated_checkpoint_input_by_input(tmp_path, host_cli, formula_table, digits):
    from edgeshrink.host.checkpoint import save_checkpoint

    torch.manual_seed(3)
    m = models.create_model("resnet20", 10, gates={"kind": "ff"}).eval()
    save_checkpoint(str(tmp_path / "g.pt"), m, 10, dataset="digits", input_shape=[1, 3, 32, 32])
    r = host_cli("dynamic", "--checkpoint", tmp_path / "g.pt", "--table", formula_table, "--dataset", "digits", "--limit", "30",
                 "--iters", "1", "--check", "30", "--out", tmp_path / "dyn")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((tmp_path / "dyn" / "report.json").read_text())
    x = np.load(tmp_path / "dyn" / "inputs.npz")
    with torch.no_grad():
        pred = m(torch.from_numpy(x["x"])).argmax(1).numpy()
    assert rep["inputs"] == 30 and rep["export_check"]["decisions_equal"]
    assert rep["top1"] == pytest.approx(float((pred == x["y"]).mean()))
    assert rep["per_input"]["pred"] == pred.tolist()
    assert rep["block_rates"] == pytest.approx(dict(zip(m.gated, m.last_decisions.mean(0).tolist())))
    assert set(rep["gate_ms"]) == set(m.gated) and all(v > 0 for v in rep["gate_ms"].values())
    assert rep["predicted"]["expected_ms"] > 0 and rep["measured_ms"]["mean"] > 0
    assert rep["macs"]["mean"] <= rep["macs"]["worst"]
    assert json.loads((tmp_path / "dyn" / "staged" / "model.json").read_text())["check"]["inputs"] == 30
    # the form the device measured fastest is the one shipped: its manifest's hash, as the device read it
    assert rep["schema"] == "edgeshrink.dynamic_report" and rep["schema_version"] == 1
    art = assert_shipped(tmp_path / "dyn" / "staged", rep["sha256"])
    assert rep["artifact"] == {"file": f"staged/{art['file']}", "sha256": rep["forms"][rep["form"]]["sha256"]}
    from edgeshrink.device.dynamic import load_manifest, step_files

    steps = load_manifest(str(tmp_path / "dyn" / "staged" / art["file"]))["steps"]
    assert art["format"] == "staged-onnx" and set(art["files"]) == {art["file"], *map(os.path.basename, step_files(steps))}


@pytest.mark.slow
def test_the_one_graph_form_decides_as_torch_and_as_the_per_block_form(staged_ff, tmp_path):
    from edgeshrink.device.dynamic import bench_dynamic

    m, manifest, inputs, x = staged_ff
    # built from the fixture's staged steps (what host dynamic does); without them it exports the same steps afresh
    dec = skipnet.export_gated_if(m, (1, 3, 32, 32), str(tmp_path / "net.onnx"), staged=manifest)
    one = skipnet.write_if_manifest(str(tmp_path), "net.onnx", dec, m, (1, 3, 32, 32))
    got = skipnet.check_gated(m, one, x)
    assert got["decisions_equal"] and got["ties"] == 0 and got["max_abs_diff"] <= 1e-4
    runs = bench_dynamic(one, inputs, iters=1, warmup=1)
    assert runs["per_input"]["executed"] == bench_dynamic(manifest, inputs, iters=1, warmup=1)["per_input"]["executed"]
    assert list(runs["block_rates"]) == m.gated and runs["exit_histogram"] == {"network": len(x)}
    # forced: every block runs, so its logits are the ungated network's
    skipnet.export_gated_if(m, (1, 3, 32, 32), str(tmp_path / "all.onnx"), force=True, staged=manifest)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "all.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = m.base(torch.from_numpy(x[:4])).numpy()
    got_all = np.concatenate([sess.run(["logits"], {"input": x[i:i + 1]})[0] for i in range(4)])
    assert np.abs(got_all - want).max() <= 1e-4


# uniform with ff gates is left out: ff gates are pruned by eigendamage-ff, and uniform's narrowing by uniform-rnn
@pytest.mark.parametrize("method,kind", [pytest.param("uniform", "rnn", marks=pytest.mark.slow),
                                         pytest.param("eigendamage", "ff", marks=pytest.mark.slow)])
def test_a_gated_network_is_pruned_with_its_gates(method, kind, tmp_path, host_cli, formula_table):
    """The seed's order: train with gates, prune statically, fine-tune with the gates (the recovery)."""
    from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from edgeshrink.host.latency.space import build_space

    torch.manual_seed(0)
    m = models.create_model("resnet20", 10, gates={"kind": kind})
    save_checkpoint(str(tmp_path / "g.pt"), m, 10, dataset="digits", input_shape=[1, 3, 32, 32])
    extra = ["--kfac-batches", "1"] if method == "eigendamage" else []
    r = host_cli("prune", "--method", method, *extra, "--table", formula_table, "--checkpoint", tmp_path / "g.pt",
                 "--budget", "0.6", "--long-term-epochs", "1", "--bench-seconds", "0.5", "--out", tmp_path / "p")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((tmp_path / "p" / "report.json").read_text())
    ck = load_checkpoint(str(tmp_path / "p" / "model.pt"))
    assert ck["gates"] == {"kind": kind, "hidden": 10} and ck["channels"] == rep["pruned"]["channels"]
    assert not any(k.startswith("gate.") for k in ck["channels"])
    pruned = model_from_checkpoint(ck)
    space = build_space(models.create_model("resnet20", 10), (1, 3, 32, 32))
    widths = space.widths_from_spec(ck["channels"])
    assert rep["pruned"]["latency_ms_predicted"] <= rep["budget_ms"] and widths != space.full_widths
    # every gate reads the pruned stream of its block
    convs = list(pruned.gate) if kind == "ff" else list(pruned.gate.proj)
    convs = [c.conv for c in convs] if kind == "ff" else convs
    want = [b.conv1.in_channels for n, b in pruned.blocks if n in pruned.gated]
    assert [c.in_channels for c in convs] == want
    if method == "uniform":  # one multiplier for every group: every stream is narrower, and so every gate's input
        assert all(w < f for w, f in zip(want, [16] * 3 + [32] * 2 + [64] * 2))
    with torch.no_grad():
        out = pruned(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and pruned.last_decisions.shape == (2, 7)
