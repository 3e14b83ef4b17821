"""HRNet (Wang et al. TPAMI 2020): parameter counts against the paper, the segmentation head's output, the couplings
Torch-Pruning finds (branch streams through the fusion, the concatenation into the head), rebuilding from a spec."""

import pytest
import torch

from edgeshrink import models
from edgeshrink.host.latency.space import build_space


@pytest.mark.parametrize("name,classes,millions", [
    ("hrnet_w18", 1000, 21.3), ("hrnet_w32", 1000, 41.2), ("hrnet_w48", 1000, 77.5),  # HRNet-Wn-C, the appendix's table
    ("hrnet_w48_seg", 19, 65.9),  # HRNetV2-W48 on Cityscapes (Table 4 of the paper)
    ("hrnet_w18_seg", 19, 9.6),  # HRNetV2-W18 (the authors' segmentation release)
    ("hrnet_w18_small_seg", 19, 1.5),  # HRNetV2-W18-Small-v1 (the same release)
])
def test_parameter_counts_match_the_paper(name, classes, millions):
    m = models.create_model(name, classes)
    assert round(sum(p.numel() for p in m.parameters()) / 1e6, 1) == millions


def test_segmentation_head_gives_one_logit_map_per_class_at_the_input_size_and_classification_a_vector():
    seg = models.create_model("hrnet_w18_small_seg", 19).eval()
    x = torch.randn(2, 3, 64, 96)
    assert seg(x).shape == (2, 19, 64, 96)
    feats = seg.features(x)
    # four branches at 1/4 .. 1/32 of the input, widths C, 2C, 4C, 8C (C = 16 for the small network)
    assert [tuple(f.shape[1:]) for f in feats] == [(16, 16, 24), (32, 8, 12), (64, 4, 6), (128, 2, 3)]
    assert seg.task == "segmentation"
    cls = models.create_model("hrnet_w18_small", 10).eval()
    assert cls(torch.randn(1, 3, 64, 64)).shape == (1, 10) and cls.task == "classification"


def test_the_branch_streams_are_coupled_through_the_fusion_and_the_space_models_the_concatenation():
    m = models.create_model("hrnet_w18_small_seg", 19)
    space = build_space(m, (1, 3, 64, 128))
    members = {g.name: set(g.members) for g in space.groups}
    stream1 = next(g for g in members.values() if "transition1.1.0.0" in g)
    # branch 1's stream: the transition that starts it, every block's conv2 and every fusion term into it
    assert {"stage2.0.branches.1.0.conv2", "stage2.0.branches.1.1.conv2", "stage2.0.fuse_layers.1.0.0.0",
            "stage3.0.branches.1.1.conv2", "stage4.0.fuse_layers.1.3.0"} <= stream1
    assert any(s.op == "concat" for s in space.sites) and any(s.op.startswith("resize") for s in space.sites)
    # a block's inner conv is its own group
    assert members["stage4.0.branches.3.0.conv1"] == {"stage4.0.branches.3.0.conv1"}


def test_rebuilt_from_a_pruned_spec_loads_its_weights():
    from edgeshrink.host.prune.surgery import prune_group_

    m = models.create_model("hrnet_w18_small_seg", 19)
    space = build_space(m, (1, 3, 64, 64))
    group = next(g for g in space.groups if "transition1.1.0.0" in g.members)
    prune_group_(m, group.members, 16, (1, 3, 64, 64))
    spec = models.channel_spec(m)
    assert spec["stage3.0.branches.1.1.conv2"] == 16 and spec["stage4.0.fuse_layers.1.3.0"] == 16
    again = models.create_model("hrnet_w18_small_seg", 19, spec)
    again.load_state_dict(m.state_dict())
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(again.eval()(x), m.eval()(x), atol=1e-5)
