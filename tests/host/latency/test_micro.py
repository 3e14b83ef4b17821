"""Micro-models are valid ONNX, run in ONNX Runtime, and fuse the way the whole network fuses."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgeshrink.host.latency.key import LayerKey
from edgeshrink.host.latency.micro import micro_model, overhead_model


@pytest.mark.parametrize("key,out_shape", [
    (LayerKey("conv2d", 16, 8, (32, 32), (3, 3), (1, 1), (1, 1), 1, ("bn", "relu")), (1, 8, 32, 32)),
    (LayerKey("conv2d", 16, 32, (32, 32), (1, 1), (2, 2), (0, 0), 1, ("bn",)), (1, 32, 16, 16)),
    (LayerKey("conv2d", 8, 8, (16, 16), (3, 3), (1, 1), (1, 1), 1, ("bn", "add", "relu")), (1, 8, 16, 16)),
    (LayerKey("bn", 12, 12, (8, 8), fused=("relu",)), (1, 12, 8, 8)),
    (LayerKey("add", 12, 12, (8, 8), fused=("relu",)), (1, 12, 8, 8)),
    (LayerKey("gap_linear", 64, 10, (8, 8)), (1, 10)),
])
def test_micro_models_check_and_run(key, out_shape):
    m = micro_model(key)
    onnx.checker.check_model(m, full_check=True)
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.random.rand(*i.shape).astype(np.float32) for i in s.get_inputs()}
    (y,) = s.run(None, feeds)
    assert y.shape == out_shape
    if "relu" in key.fused and "add" not in key.fused:  # add-fused entries stop at BN (see micro_model)
        assert y.min() >= 0


def _optimized_ops(model, tmp_path):
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]


def test_onnx_runtime_runs_the_micro_model_as_one_fused_conv(tmp_path):
    key = LayerKey("conv2d", 16, 16, (32, 32), (3, 3), (1, 1), (1, 1), 1, ("bn", "relu"))
    ops = _optimized_ops(micro_model(key), tmp_path)
    assert "BatchNormalization" not in ops and "Relu" not in ops and ops.count("Conv") == 1


def test_add_fused_entries_are_measured_as_conv_bn(tmp_path):
    """A standalone Add is not fused by ONNX Runtime (it is inside the network): the entry leaves it out."""
    key = LayerKey("conv2d", 16, 16, (32, 32), (3, 3), (1, 1), (1, 1), 1, ("bn", "add", "relu"))
    m = micro_model(key)
    assert [n.op_type for n in m.graph.node] == ["Conv", "BatchNormalization"] and len(m.graph.input) == 1
    ops = _optimized_ops(m, tmp_path)
    assert "Add" not in ops and ops.count("Conv") == 1


def test_overhead_model_keeps_the_network_interface():
    m = overhead_model((1, 3, 32, 32), 10)
    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = s.run(None, {"x": np.zeros((1, 3, 32, 32), np.float32)})
    assert y.shape == (1, 10)


def test_micro_model_workers_do_not_load_torch():
    """`host table build --jobs N` spawns workers that unpickle write_micro_models: they must stay light."""
    from tests.conftest import run_cli

    r = run_cli("-c", "import sys, edgeshrink.host.latency.micro; print('TORCH', 'torch' in sys.modules)")
    assert r.returncode == 0 and "TORCH False" in r.stdout, r.stderr


def test_write_micro_models_keeps_existing_files(tmp_path):
    from edgeshrink.host.latency.micro import key_id, write_micro_models

    key = LayerKey("conv2d", 4, 4, (8, 8), (3, 3), (1, 1), (1, 1), 1, ("bn", "relu"))
    (name,) = write_micro_models(([key.to_dict()], str(tmp_path)))
    assert name == key_id(key) + ".onnx"
    before = (tmp_path / name).stat().st_mtime_ns
    write_micro_models(([key.to_dict()], str(tmp_path)))
    assert (tmp_path / name).stat().st_mtime_ns == before and not list(tmp_path.glob("*.tmp"))
