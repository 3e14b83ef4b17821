import onnx
import pytest
import torch

from edgeshrink import models
from edgeshrink.host.export.onnx import ExportCheckError, check_onnx, export_onnx


def test_pruned_resnet_exports_and_matches_torch(tmp_path):
    torch.manual_seed(0)
    m = models.create_model("resnet20", 10, {"layer1.0.conv1": 4, "layer3.1.conv1": 20}).eval()
    path = tmp_path / "m.onnx"
    export_onnx(m, (1, 3, 32, 32), str(path))
    res = check_onnx(m, str(path), (1, 3, 32, 32))
    assert res["checker"] == "ok" and res["max_abs_diff"] <= 1e-4
    g = onnx.load(str(path))
    assert g.opset_import[0].version >= 17
    assert [i.name for i in g.graph.input] == ["input"] and [o.name for o in g.graph.output] == ["logits"]


def test_a_graph_that_differs_from_torch_is_caught(tmp_path):
    m = models.create_model("resnet20").eval()
    path = tmp_path / "m.onnx"
    export_onnx(m, (1, 3, 32, 32), str(path))
    with torch.no_grad():
        m.fc.bias.add_(0.01)  # torch changes, the exported graph does not
    with pytest.raises(ExportCheckError, match="differs from torch"):
        check_onnx(m, str(path), (1, 3, 32, 32))
