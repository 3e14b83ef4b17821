"""The ImageNet-layout ResNets and the MobileNets: parameter counts against the papers, rebuilding from a channel
spec, and the op mix the latency table must model."""

import pytest
import torch

from edgeshrink import models


@pytest.mark.parametrize("name,params", [
    # He et al. 2016 at 1000 classes (Table 1's networks as torchvision counts them: 11.7M ... 60.2M)
    ("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032), ("resnet101", 44_549_160),
    ("resnet152", 60_192_808),
    ("mobilenet_v2", 3_504_872),        # Sandler et al. 2018, Table 4: 3.4M
    ("mobilenet_v3_small", 2_542_856),  # Howard et al. 2019, Table 3: 2.5M
])
def test_parameter_counts_match_the_papers(name, params):
    m = models.create_model(name, 1000)
    assert sum(p.numel() for p in m.parameters()) == params


def test_cifar_stems_keep_the_resolution_and_take_16_or_64_first_stage_channels():
    for name, width in (("resnet18_cifar", 64), ("resnet18_cifar16", 16)):
        m = models.create_model(name, 10).eval()
        assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1) and m.conv1.out_channels == width
        assert m.layer4[0].conv2.out_channels == 8 * width
        feats = {}
        m.layer1.register_forward_hook(lambda mod, i, o: feats.update(l1=o.shape))
        assert m(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
        assert feats["l1"][2:] == (32, 32)  # no max-pool: stage 1 runs at the input resolution


@pytest.mark.parametrize("name,spec,check", [
    ("mobilenet_v2", {"features.2.conv.0.0": 48}, ("features.2.conv.1.0", 48)),   # the depthwise conv follows
    ("mobilenet_v3_small", {"features.4.block.2.fc1": 16}, ("features.4.block.2.fc2", None)),
    ("resnet18", {"layer1.0.conv1": 20, "conv1": 40}, ("layer1.1.conv2", 40)),  # the stage's residual width
])
def test_rebuilt_from_a_channel_spec_with_the_couplings_followed(name, spec, check):
    m = models.create_model(name, 10, spec).eval()
    got = models.channel_spec(m)
    assert all(got[k] == v for k, v in spec.items())
    layer, width = check
    if width is not None:
        assert got[layer] == width
    else:
        assert m.get_submodule(layer).in_channels == 16
    assert m(torch.zeros(1, 3, 64, 64)).shape == (1, 10)
    # the spec round-trips: a model rebuilt from its own spec loads its weights
    again = models.create_model(name, 10, got)
    again.load_state_dict(m.state_dict())


def test_a_spec_that_breaks_a_coupling_or_names_no_conv_is_refused():
    with pytest.raises(models.ChannelSpecError, match="different widths"):
        models.create_model("mobilenet_v2", 10, {"features.2.conv.0.0": 48, "features.2.conv.1.0": 40})
    with pytest.raises(models.ChannelSpecError, match="not a Conv2d"):
        models.create_model("mobilenet_v2", 10, {"features.2.conv.9": 4})
    with pytest.raises(models.ChannelSpecError, match="must be 1..96"):
        models.create_model("mobilenet_v2", 10, {"features.2.conv.0.0": 500})


def test_every_model_names_its_source_file_and_hash():
    import hashlib

    m = models.create_model("mobilenet_v2")
    src = models.describe_model(m)
    assert src["model"] == "mobilenet_v2" and src["file"].endswith("mobilenet.py")
    assert src["sha256"] == hashlib.sha256(open(src["file"], "rb").read()).hexdigest()
