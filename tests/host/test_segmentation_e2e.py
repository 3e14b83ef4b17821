"""HRNet segmentation end to end on a Cityscapes folder the test writes: trained at a small input, a table built at the
deployment input, NetAdapt at a smaller --pruner-input, exported at the deployment input and confirmed on the device
(this machine's ONNX Runtime). HRNetV2-W18-Small-v1, the HRNet that trains here in seconds (full tier)."""

from __future__ import annotations

import json

import onnx
import pytest

from tests.cityscapes_data import write_cityscapes
from tests.conftest import one_line_error

pytestmark = pytest.mark.slow

DEPLOY, PRUNER = (1, 3, 64, 128), (1, 3, 32, 64)


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    from edgeshrink import models
    from edgeshrink.host.latency.build import BuildConfig, build_table
    from edgeshrink.host.latency.space import build_space, enumerate_keys
    from edgeshrink.host.train import TrainConfig, train_and_save

    d = tmp_path_factory.mktemp("seg")
    root = write_cityscapes(d / "cityscapes", n_train=12, n_val=4, h=64, w=128)
    train_and_save("hrnet_w18_small_seg", "cityscapes", str(root), TrainConfig(epochs=3, batch_size=4, lr=0.05),
                   str(d / "train"), image_size=PRUNER[2])
    space = build_space(models.create_model("hrnet_w18_small_seg", 19), DEPLOY)
    cfg = BuildConfig("hrnet_w18_small_seg", DEPLOY, num_classes=19, granularity=32, jobs=2, warmup=3, iters=10,
                      rounds=1)
    build_table(cfg, enumerate_keys(space, 32)).save(str(d / "table.json"))
    return d, root


def test_hrnet_trains_prunes_at_the_pruner_input_and_is_confirmed_at_the_deployment_input(seg_run, host_cli):
    d, root = seg_run
    metrics = json.loads((d / "train" / "metrics.json").read_text())
    assert metrics["task"] == "segmentation" and 0 <= metrics["test"]["miou"] <= 100
    assert len(metrics["test"]["per_class_iou"]) == 19
    r = host_cli("prune", "--table", d / "table.json", "--checkpoint", d / "train" / "model.pt", "--dataset",
                 "cityscapes", "--data-dir", root, "--pruner-input", "1x3x32x64", "--input", "1x3x64x128",
                 "--budget", "0.85", "--short-term-steps", "1", "--long-term-epochs", "1", "--bench-seconds", "2",
                 "--out", d / "prune", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(r.stdout)
    assert rep["input_shape"] == list(DEPLOY) and rep["pruner_input_shape"] == list(PRUNER)
    assert rep["metrics"][0] == "miou" and rep["iterations"] and rep["iterations"][0]["metric"] == "miou"
    assert rep["confirmed_on_device"] and rep["pruned"]["latency_ms_measured"] > 0
    assert rep["pruned"]["latency_ms_predicted"] <= rep["budget_ms"] + 1e-9
    assert "miou" in rep["pruned"] and len(rep["pruned"]["per_class_iou"]) == 19 and "miou_drop" in rep
    assert rep["table_build"]["input_shape"] == list(DEPLOY) and rep["table_build"]["measurements"] > 0
    exported = onnx.load(str(d / "prune" / "model.onnx"))
    dims = [v.dim_value for v in exported.graph.input[0].type.tensor_type.shape.dim]
    assert dims == list(DEPLOY)  # exported and measured at the deployment input
    assert "pruned at 1x3x32x64, deployed at 1x3x64x128" not in r.stdout  # --json: the report alone on stdout


def test_a_pruner_input_larger_than_the_deployment_input_or_another_input_than_the_table_is_refused(seg_run, host_cli):
    d, root = seg_run
    common = ["--table", d / "table.json", "--checkpoint", d / "train" / "model.pt", "--dataset", "cityscapes",
              "--data-dir", root, "--out", d / "refused"]
    one_line_error(host_cli("prune", *common, "--pruner-input", "1x3x128x256", "--input", "1x3x64x128"),
                   "--pruner-input 1x3x128x256 is larger than the deployment input")
    one_line_error(host_cli("prune", *common, "--pruner-input", "1x3x128x256"),
                   "--pruner-input 1x3x128x256 is larger than the deployment input 1x3x64x128")
    one_line_error(host_cli("prune", *common, "--input", "1x3x512x1024", "--pruner-input", "1x3x32x64"),
                   "was measured at 1x3x64x128")
    one_line_error(host_cli("prune", *common), "takes 1x3x32x64", "--pruner-input")
    assert not (d / "refused").exists()
