import pytest

from edgeshrink import models
from edgeshrink.host.latency.space import build_space, channel_grid, enumerate_keys


@pytest.fixture(scope="module")
def r20():
    return build_space(models.create_model("resnet20"), (1, 3, 32, 32))


def test_resnet20_channel_groups_follow_the_residual_couplings(r20):
    groups = {g.name: g for g in r20.groups}
    assert len(groups) == 12  # 3 residual widths + 9 block-internal widths
    assert groups["conv1"].members == ("conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2")
    assert groups["layer2.0.conv2"].members == ("layer2.0.conv2", "layer2.0.shortcut.0", "layer2.1.conv2", "layer2.2.conv2")
    assert groups["layer3.1.conv1"].members == ("layer3.1.conv1",) and groups["layer3.1.conv1"].width == 64


def test_sites_fuse_bn_relu_and_the_residual_add_as_onnx_runtime_does(r20):
    sites = {s.name: s for s in r20.sites}
    assert len(r20.sites) == 22  # 21 convs + the classifier; the 9 adds are fused into conv2
    assert sites["layer1.0.conv1"].fused == ("bn", "relu")
    assert sites["layer1.0.conv2"].fused == ("bn", "add", "relu")
    assert sites["layer2.0.shortcut.0"].fused == ("bn",) and sites["layer2.0.shortcut.0"].stride == (2, 2)
    assert sites["layer2.0.conv1"].in_hw == (32, 32) and sites["layer2.1.conv1"].in_hw == (16, 16)
    assert sites["fc"].op == "gap_linear" and sites["fc"].in_hw == (8, 8) and sites["fc"].out_channels == 10
    # which group sets which side
    assert sites["layer2.0.conv1"].in_group == "conv1" and sites["layer2.0.conv1"].out_group == "layer2.0.conv1"
    assert sites["conv1"].in_group is None and sites["conv1"].in_channels == 3


def test_unfused_space_keeps_separate_adds():
    sp = build_space(models.create_model("resnet20"), (1, 3, 32, 32), fuse_residual_add=False)
    adds = [s for s in sp.sites if s.op == "add"]
    assert len(adds) == 9 and all(a.fused == ("relu",) for a in adds)


def test_keys_follow_group_widths(r20):
    w = dict(r20.full_widths, **{"conv1": 8, "layer1.0.conv1": 4})
    keys = {s.name: k for s, k in zip(r20.sites, r20.keys(w))}
    assert (keys["layer1.0.conv1"].in_channels, keys["layer1.0.conv1"].out_channels) == (8, 4)
    assert (keys["layer1.0.conv2"].in_channels, keys["layer1.0.conv2"].out_channels) == (4, 8)
    assert keys["layer2.0.shortcut.0"].in_channels == 8


def test_channel_spec_and_group_widths_convert_both_ways(r20):
    w = dict(r20.full_widths, **{"layer3.0.conv2": 40})
    spec = r20.spec_from_widths(w)
    assert spec["layer3.0.shortcut.0"] == spec["layer3.2.conv2"] == 40
    assert r20.widths_from_spec(spec) == w
    with pytest.raises(ValueError, match="different widths"):
        r20.widths_from_spec({"layer3.0.conv2": 40, "layer3.1.conv2": 32})


def test_channel_grid():
    assert channel_grid(16, 4) == [4, 8, 12, 16]
    assert channel_grid(10, 4) == [4, 8, 10]
    assert channel_grid(3, 4) == [3]


def test_enumeration_measures_each_configuration_once(r20):
    keys = enumerate_keys(r20, 4)
    assert len(keys) == len(set(keys))
    # stage-1 3x3 convs: cin and cout each on {4, 8, 12, 16}, with and without the fused add
    s1 = [k for k in keys if k.op == "conv2d" and k.in_hw == (32, 32) and k.stride == (1, 1) and k.in_channels != 3]
    assert len(s1) == 16 * 2
    # every configuration of a randomly pruned network on the grid is in the enumeration
    import random

    rnd = random.Random(0)
    grid_w = {g.name: rnd.choice(channel_grid(g.width, 4)) for g in r20.groups}
    assert set(r20.keys(grid_w)) <= set(keys)


def test_wide_resnet_space_has_standalone_preactivation_bn():
    sp = build_space(models.create_model("wrn16_2"), (1, 3, 32, 32))
    assert len(sp.groups) == 10
    bns = [s for s in sp.sites if s.op == "bn"]
    assert bns and all(s.fused == ("relu",) for s in bns)
