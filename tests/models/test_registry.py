import pytest
import torch

from edgeshrink import models


def test_registry_lists_every_architecture():
    imagenet = [f"resnet{d}{s}" for d in (18, 34, 50, 101, 152) for s in ("", "_cifar", "_cifar16")]
    assert models.list_models() == sorted(["resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
                                           "wrn16_2", "wrn40_2", "wrn28_10", "mobilenet_v2", "mobilenet_v3_small",
                                           "cells_dense", "cells_iterative", "cells_full_ic", "cells_full"]
                                          + imagenet + [f"hrnet_{c}{h}" for c in ("w18", "w32", "w48", "w18_small")
                                                        for h in ("", "_seg")])
    assert models.list_models("wrn*") == ["wrn16_2", "wrn28_10", "wrn40_2"]


@pytest.mark.parametrize("name,params", [
    ("resnet20", 272_474),   # He et al. 2016, option B projections: 0.27M
    ("resnet56", 855_770),   # 0.85M
    ("wrn16_2", 691_674),    # Zagoruyko & Komodakis 2016: 0.7M
    ("wrn40_2", 2_243_546),  # 2.2M
])
def test_parameter_counts_match_the_papers(name, params):
    m = models.create_model(name, 10)
    assert sum(p.numel() for p in m.parameters()) == params
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_resnet_stage_widths_and_depth():
    spec = models.channel_spec(models.create_model("resnet20"))
    assert spec["conv1"] == 16 and spec["layer2.0.conv1"] == 32 and spec["layer3.2.conv2"] == 64
    assert len([k for k in spec if k.endswith("conv1") or k.endswith("conv2")]) == 1 + 2 * 9
    assert "layer2.0.shortcut.0" in spec and "layer1.0.shortcut.0" not in spec
    assert len(models.channel_spec(models.create_model("resnet110"))) == 1 + 2 * 54 + 2


def test_rebuild_from_channel_spec_keeps_widths():
    spec = models.channel_spec(models.create_model("resnet20"))
    spec.update({"layer1.0.conv1": 5, "layer2.1.conv1": 7})
    for k in ("layer3.0.conv2", "layer3.0.shortcut.0", "layer3.1.conv2", "layer3.2.conv2"):
        spec[k] = 40
    m = models.create_model("resnet20", 10, spec)
    assert models.channel_spec(m) == spec
    assert m.fc.in_features == 40
    assert m(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_wrn_rebuild_from_spec():
    m = models.create_model("wrn16_2", 100, {"layer1.0.conv1": 9})
    assert m.layer1[0].conv1.out_channels == 9 and m.fc.out_features == 100
    assert m(torch.zeros(1, 3, 32, 32)).shape == (1, 100)


def test_unknown_model_is_refused():
    with pytest.raises(models.UnknownModelError, match="unknown model 'resnet21'"):
        models.create_model("resnet21")


def test_spec_for_another_model_is_refused():
    with pytest.raises(models.ChannelSpecError, match="does not have"):
        models.create_model("resnet20", 10, {"layer4.0.conv1": 8})


def test_broken_residual_coupling_is_refused():
    with pytest.raises(models.ChannelSpecError, match="identity shortcut"):
        models.create_model("resnet20", 10, {"layer1.1.conv2": 8})  # layer1 input stays 16 wide


@pytest.mark.parametrize("bad", [0, -3, 2.5, "8"])
def test_non_positive_or_non_integer_widths_are_refused(bad):
    with pytest.raises(models.ChannelSpecError, match="positive integer"):
        models.create_model("resnet20", 10, {"layer1.0.conv1": bad})
