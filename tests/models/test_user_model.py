"""A user's own model by reference: loading a file that imports its own ``models`` package, rebuilding and reloading
a pruned checkpoint of it, and the refusals."""

import hashlib

import pytest
import torch

from edgeshrink import models
from tests.usermodel import write_user_model


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return write_user_model(tmp_path_factory.mktemp("userproj"))


def test_a_user_file_imports_its_own_models_package_without_touching_edgeshrinks(ref):
    m = models.create_model(ref, 7)
    assert type(m).__name__ == "UserNet" and m(torch.zeros(2, 3, 64, 64)).shape == (2, 7)
    blocks = type(m.features[1]).__module__
    assert blocks == "models.blocks"  # the user's package, not edgeshrink.models
    assert "mobilenet_v2" in models.list_models()  # edgeshrink's registry is untouched
    path = ref.rsplit(":", 1)[0]
    assert m.model_source == {"model": ref, "file": path,
                              "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest()}


def test_a_user_model_is_rebuilt_from_a_channel_spec(ref):
    m = models.create_model(ref, 10, {"features.2.conv.0.0": 24, "features.0.0": 16}, input_shape=(1, 3, 64, 64))
    spec = models.channel_spec(m)
    assert spec["features.2.conv.1.0"] == 24  # the depthwise conv follows its expansion
    assert spec["features.0.0"] == 16 and m.features[1].conv[0][0].in_channels == 16
    assert m(torch.zeros(1, 3, 64, 64)).shape == (1, 10)


def test_a_pruned_user_checkpoint_reloads_from_the_file_and_its_shapes(ref, tmp_path):
    from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint

    torch.manual_seed(0)
    m = models.create_model(ref, 10, {"features.4.conv.0.0": 40, "features.7.conv.2": 48}).eval()
    x = torch.randn(3, 3, 64, 64)
    want = m(x)
    save_checkpoint(str(tmp_path / "c.pt"), m, 10)
    ckpt = load_checkpoint(str(tmp_path / "c.pt"))
    assert ckpt["shapes"]["features.4.conv.1.0"]["groups"] == 40  # tp.state_dict's attributions, plain values
    again = model_from_checkpoint(ckpt, path="c.pt")
    assert again.features[4].conv[1][0].groups == 40 and again.features[7].conv[2].out_channels == 48
    assert torch.allclose(again(x), want, atol=1e-6)


def test_a_changed_source_file_is_named_when_the_weights_no_longer_fit(tmp_path):
    from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from edgeshrink.host.errors import CheckpointError

    ref = write_user_model(tmp_path / "proj")
    save_checkpoint(str(tmp_path / "c.pt"), models.create_model(ref, 10), 10)
    net = tmp_path / "proj" / "net.py"
    net.write_text(net.read_text() + "\n# a comment changes the hash, not the layers\n")
    with pytest.warns(UserWarning, match="changed since the checkpoint.*still fit"):
        model_from_checkpoint(load_checkpoint(str(tmp_path / "c.pt")), path="c.pt")
    net.write_text(net.read_text().replace("self.head", "self.classifier"))  # a renamed layer: nothing fits
    with pytest.raises(CheckpointError, match=r"net.py changed since the checkpoint was written \(sha256"):
        model_from_checkpoint(load_checkpoint(str(tmp_path / "c.pt")), path="c.pt")


@pytest.mark.parametrize("suffix,match", [
    (":nothing", "has no 'nothing'"),
    (":not_a_model", "returned a dict, not an nn.Module"),
])
def test_references_that_do_not_give_a_model_are_refused(ref, suffix, match):
    with pytest.raises(models.ModelReferenceError, match=match):
        models.create_model(ref.rsplit(":", 1)[0] + suffix)


def test_a_missing_file_or_module_is_refused(tmp_path):
    with pytest.raises(models.ModelReferenceError, match="no such file"):
        models.create_model(f"{tmp_path}/absent.py:make")
    with pytest.raises(models.ModelReferenceError, match="cannot import no_such_package_xyz"):
        models.create_model("no_such_package_xyz.net:make")
    with pytest.raises(models.ModelReferenceError, match="must be path/to/file.py:factory"):
        models.create_model("net.py:")


def test_a_model_the_pruning_space_cannot_model_names_the_op(ref):
    from edgeshrink.host.latency.space import UnsupportedOpError, build_space

    m = models.create_model(ref.rsplit(":", 1)[0] + ":rolled")
    with pytest.raises(UnsupportedOpError, match="op roll"):
        build_space(m, (1, 3, 32, 32))
