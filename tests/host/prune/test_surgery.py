import torch

from edgeshrink import models
from edgeshrink.host.latency.space import build_space
from edgeshrink.host.prune.surgery import filter_l2_importance, prune_group_


def test_residual_group_pruning_keeps_the_largest_l2_filters_everywhere():
    torch.manual_seed(0)
    m = models.create_model("resnet20").eval()
    members = next(g.members for g in build_space(m, (1, 3, 32, 32)).groups if g.name == "layer2.0.conv2")
    scores = filter_l2_importance(m, members)
    before = {n: m.get_submodule(n).weight.detach().clone() for n in members}
    kept = prune_group_(m, members, 12, (1, 3, 32, 32))
    assert kept == sorted(torch.topk(scores, 12).indices.tolist())
    for n in members:
        assert torch.equal(m.get_submodule(n).weight, before[n][kept])  # the same filters, physically kept
    # consumers lost the matching input channels
    assert m.layer2[1].conv1.in_channels == 12 and m.layer3[0].conv1.in_channels == 12
    assert m.layer3[0].shortcut[0].in_channels == 12


def test_pruned_model_equals_its_rebuild_from_channel_spec():
    torch.manual_seed(0)
    m = models.create_model("resnet20").eval()
    space = build_space(m, (1, 3, 32, 32))
    for g, keep in (("conv1", 8), ("layer1.1.conv1", 4), ("layer3.0.conv2", 40)):
        prune_group_(m, next(x.members for x in space.groups if x.name == g), keep, (1, 3, 32, 32))
    spec = models.channel_spec(m)
    rebuilt = models.create_model("resnet20", 10, spec).eval()
    rebuilt.load_state_dict(m.state_dict())
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(rebuilt(x), m(x))
    assert spec["layer1.2.conv2"] == 8 and spec["layer3.0.shortcut.0"] == 40


def test_wide_resnet_internal_group():
    m = models.create_model("wrn16_2").eval()
    prune_group_(m, ("layer2.1.conv1",), 10, (1, 3, 32, 32))
    assert m.layer2[1].conv1.out_channels == 10 and m.layer2[1].bn2.num_features == 10
    assert m(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
