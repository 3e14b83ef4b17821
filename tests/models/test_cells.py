"""The cell networks and internal classifiers on ResNets: parameter counts by hand, the stages chained equal the
network, names, channel specs and checkpoints."""

import pytest
import torch

from edgeshrink import models
from edgeshrink.models.cells import ExitResNet, has_exits

# by hand, 11 cells of 16 channels at 32x32: the first cell's convs 3*16*9 + 16*16*9, the other ten 2 * 16*16*9, every
# cell two BNs of 2 * 16; a classifier 16 channels pooled to 4x4 -> 10 (256 * 10 + 10)
CELLS = 3 * 16 * 9 + 16 * 16 * 9 + 10 * 2 * 16 * 16 * 9 + 11 * 2 * 2 * 16
CLASSIFIER = 16 * 16 * 10 + 10


@pytest.mark.parametrize("name,params", [
    ("cells_full", CELLS + CLASSIFIER),  # the final classifier only
    ("cells_iterative", CELLS + 4 * CLASSIFIER),  # after cells 3, 6, 9 and the last
    ("cells_full_ic", CELLS + 4 * CLASSIFIER),
    # dense: block b's first conv reads b * 16 channels (16 more per block than feed-forward for b >= 2), its
    # classifier (b + 1) * 16
    ("cells_dense", CELLS + (32 - 16) * 16 * 9 + (48 - 16) * 16 * 9 + sum((b * 16 * 16 * 10 + 10) for b in (1, 2, 3, 4))),
])
def test_parameter_counts_by_hand(name, params):
    m = models.create_model(name, 10)
    assert sum(p.numel() for p in m.parameters()) == params


def test_the_name_carries_the_array_and_width():
    m = models.create_model("cells_iterative_0101_w8", 10)
    assert (m.kind, m.array, m.width, len(m.blocks), m.block_cells) == ("iterative", "0101", 8, 2, [(0, 1), (2, 3)])
    assert m.exit_depths() == [0.5, 1.0]
    assert "cells_dense" in models.list_models()
    for bad in ("cells_iterative_0110_w8", "cells_full_012_w8", "cells_deep"):
        with pytest.raises(models.ModelError):
            models.create_model(bad, 10)


@pytest.mark.parametrize("name", ["cells_dense_010101_w4", "cells_iterative_010101_w4"])
def test_the_stages_chained_compute_the_network(name):
    torch.manual_seed(0)
    m = models.create_model(name, 10).eval()
    x = torch.randn(3, 3, 32, 32)
    h, outs = x, []
    for seg, clf in m.segments():
        h = seg(h)
        outs.append(clf(h))
    want = m.forward_exits(x)
    assert len(outs) == len(want) == 3
    for a, b in zip(outs, want):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(m(x), want[-1])
    assert has_exits(m) and not has_exits(models.create_model("cells_full", 10))


def test_a_pruned_cell_network_rebuilds_from_its_channel_spec():
    spec = {"blocks.0.cells.0.conv1": 3, "blocks.0.cells.0.conv2": 3, "blocks.1.cells.1.conv1": 2,
            "blocks.1.cells.1.conv2": 2}
    m = models.create_model("cells_dense_0101_w4", 10, spec)
    got = models.channel_spec(m)
    assert {k: got[k] for k in spec} == spec
    # dense: block 1 reads block 0's output (its last cell's 4 channels); its classifier that and block 1's (2)
    assert m.blocks[1].cells[0].conv1.in_channels == 4
    assert m.exits[1].fc.in_features == (4 + 2) * 16
    with pytest.raises(models.ChannelSpecError, match="must be equal"):
        models.create_model("cells_iterative_0101_w4", 10, {"blocks.0.cells.0.conv1": 3})


def test_internal_classifiers_on_a_resnet_and_its_checkpoint(tmp_path):
    from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint

    torch.manual_seed(0)
    m = models.create_model("resnet20", 10, exits=["layer2.2", "layer1.2"]).eval()
    assert isinstance(m, ExitResNet) and m.exit_names == ["exits.layer1_2", "exits.layer2_2", "fc"]
    base = models.create_model("resnet20", 10)
    extra = sum(p.numel() for p in m.parameters()) - sum(p.numel() for p in base.parameters())
    assert extra == (16 * 16 * 10 + 10) + (32 * 16 * 10 + 10)  # a 4x4-pooled classifier after 16 and 32 channels
    assert models.channel_spec(m) == models.channel_spec(base)
    x = torch.randn(2, 3, 32, 32)
    h = x
    for seg, clf in m.segments():
        h = seg(h)
    assert torch.allclose(clf(h), m(x), atol=1e-6)
    save_checkpoint(str(tmp_path / "m.pt"), m, 10)
    ck = load_checkpoint(str(tmp_path / "m.pt"))
    assert ck["exits"] == ["layer1.2", "layer2.2"]
    back = model_from_checkpoint(ck)
    assert all(torch.equal(a, b) for a, b in zip(back.forward_exits(x), m.forward_exits(x)))
    for bad in (["layer3.2"], ["layer9.0"], ["layer1.0", "layer1.0"]):  # the last block, unknown, repeated
        with pytest.raises(models.ModelError, match="exits must name"):
            models.create_model("resnet20", 10, exits=bad)
