"""SkipNet gates on the registry's CIFAR ResNets: the straight-through estimator, which blocks are gated, hard
decisions, checkpoints and refusals."""

import pytest
import torch

from edgeshrink import models
from edgeshrink.models import ModelError
from edgeshrink.models.gated import GatedResNet, straight_through


def test_straight_through_is_hard_forward_and_identity_backward():
    p = torch.tensor([0.2, 0.5, 0.7, 0.49], requires_grad=True)
    out = straight_through(p)
    assert out.tolist() == [0.0, 1.0, 1.0, 0.0]
    (out * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert p.grad.tolist() == [1.0, 2.0, 3.0, 4.0]  # d out / d p = 1: the upstream gradient passes unchanged


def _bias_gates(m, value):
    """Every gate's probability sigmoid(value), whatever the input (the gates' last layer: weights 0, bias value)."""
    for n, p in m.named_parameters():
        if n.startswith("gate.") and n.endswith("fc.bias"):
            p.data.fill_(value)
        elif n.startswith("gate.") and n.endswith("fc.weight"):
            p.data.zero_()


@pytest.mark.parametrize("kind", ["ff", "rnn"])
def test_gates_before_the_identity_blocks_and_skipping_passes_the_input_on(kind):
    torch.manual_seed(0)
    m = models.create_model("resnet20", 10, gates={"kind": kind, "hidden": 6})
    # resnet20: 9 blocks, the first of stages 2 and 3 project (stride 2): 7 gated
    assert m.gated == ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1", "layer3.2"]
    assert models.channel_spec(m.base) == m.dense_channels == models.channel_spec(models.create_model("resnet20", 10))
    x = torch.randn(3, 3, 32, 32)
    m.eval()
    _bias_gates(m, -5.0)  # every gate closed: the network is the stem, the two projection blocks and the head
    with torch.no_grad():
        got = m(x)
        b = m.base
        h = b.relu(b.bn1(b.conv1(x)))
        h = b.layer3[0](b.layer2[0](h))
        want = b.fc(torch.flatten(b.pool(h), 1))
    assert m.last_decisions.sum() == 0 and torch.allclose(got, want, atol=1e-6)
    _bias_gates(m, 5.0)  # every gate open: the plain network
    with torch.no_grad():
        assert torch.allclose(m(x), m.base(x), atol=1e-6) and m.last_decisions.min() == 1


def test_a_gated_checkpoint_rebuilds_the_same_network(tmp_path):
    from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint

    torch.manual_seed(0)
    m = models.create_model("resnet20", 10, {"layer1.0.conv1": 8, "layer3.1.conv1": 24}, gates={"kind": "rnn"})
    save_checkpoint(str(tmp_path / "g.pt"), m, 10)
    ck = load_checkpoint(str(tmp_path / "g.pt"))
    assert ck["gates"] == {"kind": "rnn", "hidden": 10} and ck["channels"]["layer1.0.conv1"] == 8
    r = model_from_checkpoint(ck)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(r(x), m.eval()(x))


def test_refusals():
    with pytest.raises(ModelError, match="no residual blocks in the CIFAR ResNet layout"):
        models.create_model("mobilenet_v2", 10, gates={"kind": "ff"})
    with pytest.raises(ModelError, match="--gates must be one of ff, rnn"):
        GatedResNet(models.create_model("resnet20", 10), "lstm")
    with pytest.raises(ModelError, match="hidden width"):
        GatedResNet(models.create_model("resnet20", 10), "ff", 0)
