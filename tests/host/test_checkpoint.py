import pytest
import torch

from edgeshrink import models
from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from edgeshrink.host.errors import CheckpointError


def test_roundtrip_rebuilds_the_pruned_architecture(tmp_path):
    spec = {"layer1.0.conv1": 6, "layer2.1.conv1": 10}
    m = models.create_model("resnet20", 10, spec).eval()
    save_checkpoint(str(tmp_path / "m.pt"), m, 10, dataset="digits")
    ck = load_checkpoint(str(tmp_path / "m.pt"))
    assert ck["model"] == "resnet20" and ck["channels"]["layer1.0.conv1"] == 6 and ck["dataset"] == "digits"
    r = model_from_checkpoint(ck)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(r(x), m(x))
    assert not any(isinstance(v, torch.nn.Module) for v in ck.values())  # never a pickled module
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind


def test_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(str(tmp_path / "none.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(str(tmp_path / "junk.pt"))
    m = models.create_model("resnet20", 10)
    save_checkpoint(str(tmp_path / "r.pt"), m, 10)
    ck = load_checkpoint(str(tmp_path / "r.pt"))
    with pytest.raises(CheckpointError, match="holds a resnet20, not a resnet56"):
        model_from_checkpoint(ck, expect_model="resnet56")
    ck["channels"]["layer1.0.conv1"] = 7  # spec no longer matches the weights
    with pytest.raises(CheckpointError, match="weights do not fit resnet20"):
        model_from_checkpoint(ck)
