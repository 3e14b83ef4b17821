"""Growth, the SDN loss and SNIP: the sensitivity against a hand computation, the loss weights' schedule, growth at
the stated epochs and by the loss criterion, the policies' keep ratios and floors, structured SNIP removing
channels, and the refusals."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from edgeshrink import models
from edgeshrink.host.dynamic import grow
from edgeshrink.host.prune.snip import snip_scores
from edgeshrink.host.train import TrainConfig, train_cells
from tests.conftest import one_line_error


@pytest.fixture(scope="module")
def small_digits():
    from edgeshrink.host.data import load_dataset

    return load_dataset("digits", seed=0, train_subset=128)


def cfg(epochs):
    return TrainConfig(epochs=epochs, batch_size=64, lr=0.05, seed=0)


def test_snip_sensitivity_against_a_hand_computation():
    # one linear layer y = W x, cross-entropy: dL/dW = mean over the batch of (softmax(W x) - onehot(y)) x^T
    torch.manual_seed(0)
    layer = nn.Linear(3, 4, bias=False)
    x = torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 3, 1])
    W = layer.weight.detach().numpy().astype(np.float64)
    X = x.numpy().astype(np.float64)
    z = X @ W.T
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(5), y.numpy()] -= 1
    G = p.T @ X / 5
    want = np.abs(W * G)
    want /= want.sum()
    got = snip_scores(layer, [layer], x, y)[0].numpy()
    assert got == pytest.approx(want, rel=1e-5, abs=1e-9)
    assert layer.weight.grad is None  # gradients left as they were


def test_snip_leaves_the_batchnorm_statistics_alone():
    m = models.create_model("cells_iterative_0101_w4", 10)
    before = m.blocks[0].cells[0].bn1.running_mean.clone()
    layers = [mod for _, mod in grow.block_layers(m, 0)]
    s = snip_scores(m, layers, torch.randn(8, 3, 32, 32) * 3 + 1, torch.arange(8) % 10)
    assert torch.equal(m.blocks[0].cells[0].bn1.running_mean, before)
    assert sum(float(t.sum()) for t in s) == pytest.approx(1.0)


def test_sdn_weights_grow_linearly_to_their_maxima():
    depths = [0.25, 0.5, 1.0]
    assert grow.sdn_weights(depths, 0.0) == pytest.approx([0.01, 0.01, 1.0])
    assert grow.sdn_weights(depths, 0.5) == pytest.approx([0.13, 0.255, 1.0])
    assert grow.sdn_weights(depths, 1.0) == pytest.approx([0.25, 0.5, 1.0])
    assert grow.sdn_weights(depths, 1.0, ic_max=(0.9, 0.6)) == pytest.approx([0.9, 0.6, 1.0])
    logits = [torch.zeros(2, 4), torch.zeros(2, 4)]
    y = torch.tensor([0, 3])
    assert float(grow.sdn_loss(logits, y, [0.5, 1.0])) == pytest.approx(1.5 * np.log(4))


def test_iterative_keep_ratios_and_floors():
    assert [grow.iterative_keep(0.5, j, 0.2) for j in (1, 2, 3, 4)] == pytest.approx([0.5, 0.25, 0.2, 0.2])
    assert grow.evenly_spaced(10, 4) == (2, 5, 8)  # 10 * k / 4 rounded (2.5 rounds to even)


def test_growth_adds_the_blocks_after_the_stated_epochs(small_digits):
    m = models.create_model("cells_iterative_010101_w4", 10)
    r = train_cells(m, small_digits, cfg(4), grow.GrowthConfig(grow_epochs=(1, 3)), log=lambda s: None)
    assert r["grown_at"] == [1, 3]
    assert [h["active_blocks"] for h in r["history"]] == [1, 2, 2, 3]
    assert [h["epoch"] for h in r["history"]] == [1, 2, 3, 4]
    assert m.active == 3


def test_the_loss_criterion_grows_on_a_plateau(small_digits):
    # a tolerance of 0.99 counts any epoch as a plateau: each block grows after its phase's second epoch
    m = models.create_model("cells_iterative_010101_w4", 10)
    r = train_cells(m, small_digits, cfg(6), grow.GrowthConfig(criterion="loss", tolerance=0.99),
                         log=lambda s: None)
    assert r["grown_at"] == [2, 4]


@pytest.mark.parametrize("policy,keeps,sparsity", [
    # skip_layer: each block once, when it is added
    ("skip_layer", {0: [0.5], 1: [0.5], 2: [0.5]}, [0.5, 0.5, 0.5]),
    # normal: every active block at every step, to its ratio (the same weights stay)
    ("normal", {0: [0.5, 0.5, 0.5], 1: [0.5, 0.5], 2: [0.5]}, [0.5, 0.5, 0.5]),
    # iterative: block b's j-th pruning keeps max(0.5 ** j, 0.2)
    pytest.param("iterative", {0: [0.5, 0.25, 0.2], 1: [0.5, 0.25], 2: [0.5]}, [0.8, 0.75, 0.5],
                 marks=pytest.mark.slow),
])
def test_the_policies_keep_ratios(small_digits, policy, keeps, sparsity):
    m = models.create_model("cells_iterative_010101_w4", 10)
    snip = grow.SnipConfig(keep=(0.5, 0.5, 0.5), policy=policy, prune_batch=32, min_keep=(0.2,))
    r = train_cells(m, small_digits, cfg(3), grow.GrowthConfig(grow_epochs=(1, 2)), snip, log=lambda s: None)
    got = {b: [rec["keep"][f"block{b}"] for rec in r["pruning"] if b in rec["blocks"]] for b in range(3)}
    assert got == {b: pytest.approx(v) for b, v in keeps.items()}
    # the masks made permanent: the zeros are in the weights (2 cells x 2 convs of 4x4x3x3 or 3x4x3x3 per block)
    assert [r["sparsity"][f"block{b}"] for b in range(3)] == pytest.approx(sparsity, abs=0.01)
    assert not any(hasattr(mod, "weight_mask") for mod in m.modules())


def test_structured_snip_removes_channels(small_digits):
    m = models.create_model("cells_full_ic_0101_w4", 10)
    snip = grow.SnipConfig(keep=(0.5, 0.75), form="structured", policy="normal", prune_batch=32, reinit=True)
    r = train_cells(m, small_digits, cfg(1), None, snip, log=lambda s: None)
    spec = models.channel_spec(m)
    # block 0 keeps round(0.5 * 8) = 4 of its cells' channels, block 1 round(0.75 * 8) = 6, each cell at least one
    assert spec["blocks.0.cells.0.conv2"] + spec["blocks.0.cells.1.conv2"] == 4
    assert spec["blocks.1.cells.0.conv2"] + spec["blocks.1.cells.1.conv2"] == 6
    assert all(spec[f"blocks.{b}.cells.{c}.conv1"] == spec[f"blocks.{b}.cells.{c}.conv2"] for b in (0, 1) for c in (0, 1))
    assert r["widths"] == spec
    rebuilt = models.create_model("cells_full_ic_0101_w4", 10, spec)
    rebuilt.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(rebuilt.eval()(x), m.eval()(x))


def test_reinit_draws_a_masked_block_afresh_and_keeps_its_mask():
    torch.manual_seed(0)
    m = models.create_model("cells_iterative_0101_w4", 10)
    layers = [mod for _, mod in grow.block_layers(m, 1)]
    grow.mask_block_(layers, [torch.rand_like(mod.weight) for mod in layers], 0.5)
    masks = [mod.weight_mask.clone() for mod in layers]
    orig = [mod.weight_orig.detach().clone() for mod in layers]
    other = [mod.weight.detach().clone() for _, mod in grow.block_layers(m, 0)]
    m.blocks[1].cells[0].bn1.running_mean.fill_(3.0)
    grow.reinit_block_(m, 1)
    assert all(torch.equal(mod.weight_mask, k) for mod, k in zip(layers, masks))
    assert all(not torch.allclose(mod.weight_orig, o) for mod, o in zip(layers, orig))
    assert all(torch.equal(mod.weight, o) for (_, mod), o in zip(grow.block_layers(m, 0), other))  # block 0 untouched
    assert float(m.blocks[1].cells[0].bn1.running_mean.abs().max()) == 0.0


def test_refusals(host_cli, tmp_path):
    base = ("train", "--model", "cells_iterative_0101_w4", "--epochs", "3", "--train-subset", "50", "--out",
            str(tmp_path / "o"))
    one_line_error(host_cli(*base, "--keep", "0.5"), "--keep gives 1 ratios", "2 blocks")
    one_line_error(host_cli(*base, "--keep", "0.5,1.5"), "--keep must be fractions in (0, 1]")
    one_line_error(host_cli(*base, "--keep", "0.5,0"), "--keep must be fractions in (0, 1]")
    one_line_error(host_cli(*base, "--grow-epochs", "1,2"), "--grow-epochs gives 2 epochs", "1 growth steps")
    one_line_error(host_cli(*base, "--grow-epochs", "3"), "not before the last epoch")
    one_line_error(host_cli(*base, "--grow-epochs", "2,1"), "increasing")
    one_line_error(host_cli(*base, "--prune-batch", "0", "--keep", "1,1"), "--prune-batch")
    one_line_error(host_cli(*base, "--snip-min-keep", "0.1"), "give --keep")
    one_line_error(host_cli("train", "--model", "cells_full_ic_0101_w4", "--grow-epochs", "1", "--out",
                            str(tmp_path / "o")), "growing cell network")
    one_line_error(host_cli("train", "--model", "resnet20", "--keep", "0.5", "--out", str(tmp_path / "o")),
                   "cell networks")
    one_line_error(host_cli("train", "--model", "resnet20", "--exits", "layer3.2", "--out", str(tmp_path / "o")),
                   "--exits", "before its last")
    assert not (tmp_path / "o").exists()
