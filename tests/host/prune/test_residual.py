"""Independent residual pruning: the index-add, its ScatterND export, and latency lookups at union widths."""

import onnx
import pytest
import torch

from edgeshrink import models
from edgeshrink.host.export.onnx import check_onnx, export_onnx
from edgeshrink.host.latency.key import LayerKey
from edgeshrink.host.prune.residual import interpolated_entry_ms, layer_keys, select_independent_keep
from edgeshrink.models.residual import IndexAdd, branch_names, independent_from_dense


def randomized_resnet20():
    torch.manual_seed(0)
    m = models.create_model("resnet20").eval()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):  # non-trivial BN so equality means something
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    return m


def test_index_add_scatters_each_branch_into_the_union():
    add = IndexAdd(4, torch.tensor([0, 2]), torch.tensor([2, 3]))
    a = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    b = torch.tensor([10.0, -20.0]).view(1, 2, 1, 1)
    assert add(a, b).flatten().tolist() == [1.0, 0.0, 12.0, 0.0]  # relu(-20) = 0


@pytest.mark.parametrize("ia,ib,width", [(list(range(8)), None, 8), (list(range(8)), list(range(8)), 8),
                                         ([0, 1, 2, 3, 4, 5, 7, 6], None, 8), ([0, 2, 4], [1, 2, 3], 5),
                                         (list(range(5)), [1, 2, 3], 5)])
def test_index_add_matches_in_onnxruntime_including_full_index_sets(tmp_path, ia, ib, width):
    """A ScatterND whose constant indices cover the whole tensor is rewritten away by the exporter's optimizer,
    losing reduction="add"; IndexAdd adds such branches instead."""
    import numpy as np
    import onnxruntime as ort

    m = IndexAdd(width, torch.tensor(ia), None if ib is None else torch.tensor(ib)).eval()
    a, b = torch.randn(1, len(ia), 4, 4), torch.randn(1, width if ib is None else len(ib), 4, 4)
    torch.onnx.export(m, (a, b), dynamo=True, opset_version=18).save(str(tmp_path / "ia.onnx"))
    s = ort.InferenceSession(str(tmp_path / "ia.onnx"))
    names = [i.name for i in s.get_inputs()]
    got = s.run(None, {names[0]: a.numpy(), names[1]: b.numpy()})[0]
    assert np.abs(got - m(a, b).numpy()).max() <= 1e-5


def test_keeping_every_channel_computes_the_dense_network():
    m = randomized_resnet20()
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(independent_from_dense(m, {})(x), m(x))


def test_independent_branches_export_to_scatternd_and_match_in_onnxruntime(tmp_path):
    m = randomized_resnet20()
    keep = select_independent_keep(m, {"layer1": 8, "layer2": 16, "layer3": 24})
    assert len({tuple(keep[n]) for n in branch_names(m)["layer3"]}) > 1  # the branches chose differently
    ind = independent_from_dense(m, keep)
    assert 8 < len(ind.union["layer1"]) <= 16 and 24 < len(ind.union["layer3"]) <= 64
    export_onnx(ind, (1, 3, 32, 32), str(tmp_path / "ind.onnx"), slim=True)
    ops = [n for n in onnx.load(str(tmp_path / "ind.onnx")).graph.node if n.op_type == "ScatterND"]
    assert len(ops) == 12 and all(a.s == b"add" for n in ops for a in n.attribute if a.name == "reduction")
    assert check_onnx(ind, str(tmp_path / "ind.onnx"), (1, 3, 32, 32))["max_abs_diff"] <= 1e-4


def test_an_independent_network_trains():
    m = randomized_resnet20().train()
    ind = independent_from_dense(m, select_independent_keep(m, {"layer3": 16})).train()
    opt = torch.optim.SGD(ind.parameters(), lr=0.1)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    w0 = ind.layer3[1].conv2.weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(ind(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(w0, ind.layer3[1].conv2.weight)


def test_bad_branch_names_are_refused():
    with pytest.raises(ValueError, match="not residual branches"):
        independent_from_dense(models.create_model("resnet20"), {"layer1.0.conv1": [0]})


def test_union_width_lookups_interpolate_between_grid_entries(formula_table):
    from edgeshrink.host.latency.table import load_table

    t = load_table(str(formula_table))
    ind = independent_from_dense(models.create_model("resnet20"),
                                 select_independent_keep(models.create_model("resnet20"), {"layer3": 16}))
    keys = layer_keys(ind)
    assert len(keys["index_adds"]) == 9 and len(keys["layers"]) == 22
    on = LayerKey("conv2d", 16, 32, (32, 32), (3, 3), (2, 2), (1, 1), 1, ("bn", "relu"))
    lo, hi = t.lookup(on), t.lookup(LayerKey("conv2d", 8, 32, (32, 32), (3, 3), (2, 2), (1, 1), 1, ("bn", "relu")))
    mid = LayerKey("conv2d", 12, 32, (32, 32), (3, 3), (2, 2), (1, 1), 1, ("bn", "relu"))
    assert interpolated_entry_ms(t, on) == lo.ms(t.statistic)
    assert interpolated_entry_ms(t, mid) == pytest.approx((lo.ms(t.statistic) + hi.ms(t.statistic)) / 2)


@pytest.mark.slow
def test_host_residual_cli_and_export_of_its_checkpoint(tmp_path, host_cli, untrained_ckpt):
    import json

    from tests.conftest import one_line_error

    out = tmp_path / "ind"
    r = host_cli("residual", "--checkpoint", str(untrained_ckpt), "--keep", "layer1=8,layer2=16,layer3=32", "--long-term-epochs", "0",
                 "--out", str(out))
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["scatternd_nodes"] == 9 + 3 and rep["onnx_check"]["max_abs_diff"] <= 1e-4
    assert rep["union_widths"]["layer3"] >= 32 and rep["schema"] == "edgeshrink.residual_report"
    import hashlib

    art = json.loads((out / "artifact.json").read_text())  # shipped as host export ships it
    assert art["sha256"] == hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest() and art["export"]["slim"]
    from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint
    from edgeshrink.host.data import load_digits
    from edgeshrink.host.train import evaluate

    ck = load_checkpoint(str(out / "model.pt"))
    assert ck["residual"]["mode"] == "independent" and ck["channels"]["conv1"] == 16  # the dense architecture
    rebuilt = model_from_checkpoint(ck)  # the independent network again
    assert evaluate(rebuilt, load_digits(seed=0), "test")["top1"] == pytest.approx(rep["test_top1"])
    r = host_cli("export", "--checkpoint", str(out / "model.pt"), "--format", "onnx", "-o", str(tmp_path / "ex"))
    assert r.returncode == 0, r.stderr  # the checkpoint rebuilds the independent network
    one_line_error(host_cli("residual", "--checkpoint", str(untrained_ckpt), "--keep", "layer9=3", "--out", str(tmp_path / "x")),
                   "malformed --keep")


def test_checkpoints_rebuild_independent_networks_without_the_pruning_code(tmp_path):
    """create_model(..., residual=...) rebuilds what a checkpoint describes; checkpoint.py imports nothing of prune/."""
    import ast

    from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from tests.conftest import ROOT

    m = randomized_resnet20()
    ind = independent_from_dense(m, select_independent_keep(m, {"layer2": 12}))
    save_checkpoint(str(tmp_path / "i.pt"), ind, 10)
    back = model_from_checkpoint(load_checkpoint(str(tmp_path / "i.pt")))
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(back(x), ind(x)) and back.union == ind.union
    tree = ast.parse((ROOT / "host" / "checkpoint.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any("prune" in (mod or "") for mod in imported), imported
    with pytest.raises(models.ChannelSpecError, match="residual spec"):
        models.create_model("resnet20", residual={"mode": "sideways"})
    with pytest.raises(models.ChannelSpecError, match="no independent residual mode"):
        models.create_model("wrn16_2", residual={"mode": "independent", "keep": {}})
