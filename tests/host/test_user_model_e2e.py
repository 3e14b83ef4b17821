"""The any-model acceptance, end to end through the CLI: a MobileNetV2-style network defined in a file outside the
project (with its own ``models`` package) is trained on digits at 64x64, gets a table measured on this machine,
is pruned by NetAdapt to 0.6 of its predicted latency, exported to ONNX (checked against torch) and confirmed on the
local device; its checkpoint reloads from the file and the spec. (Every other method's end to end runs on resnet20 in
tests/host/pipeline/test_methods.py; the user's model needs only what differs for it: its table and NetAdapt.)"""

import json

import pytest
import torch

from tests.usermodel import write_user_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return tmp_path_factory.mktemp("userproj")


def test_a_users_mobilenet_is_pruned_to_0_6_of_its_latency_and_confirmed(project, tmp_path, host_cli):
    from edgeshrink import models
    from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint

    ref = write_user_model(project / "proj")
    base = tmp_path / "base"
    r = host_cli("train", "--model", ref, "--image-size", "64", "--epochs", "1", "--out", base)
    assert r.returncode == 0, r.stderr[-2000:]
    table = tmp_path / "table.json"
    r = host_cli("table", "build", "--model", ref, "--input", "1x3x64x64", "--granularity", "16", "--iters", "50",
                 "--rounds", "1", "--calibrate", "8", "--jobs", "2", "--out-table", table)
    assert r.returncode == 0, r.stderr[-2000:]
    t = json.loads(table.read_text())
    assert t["models"] == [ref] and t["build"]["model_source"]["sha256"]
    assert t["calibration"]["fusion"]["rules"]["conv_acts"] == ["relu6"]  # read from ONNX Runtime
    assert t["calibration"]["fusion"]["runtime"] == t["calibration"]["fusion"]["candidates"]
    for method, extra in (("netadapt", ["--short-term-steps", "5", "--init-reduction", "0.15"]),):
        out = tmp_path / method
        r = host_cli("prune", "--checkpoint", base / "model.pt", "--table", table, "--budget", "0.6",
                     "--method", method, "--long-term-epochs", "1", "--bench-seconds", "2", *extra, "--out", out)
        assert r.returncode == 0, r.stderr[-2000:]
        rep = json.loads((out / "report.json").read_text())
        assert rep["model"] == ref and rep["model_source"]["file"].endswith("net.py")
        assert rep["confirmed_on_device"] and rep["input_shape"] == [1, 3, 64, 64]
        assert rep["onnx_check"]["pruned"]["max_abs_diff"] <= 1e-4
        # 0.6, not 0.5: on a grid of 16 the narrowest network this table can reach is predicted at 0.5 to 0.54 of the
        # full one depending on the day's measurement, so 0.5 was refused as unreachable on some runs
        assert rep["pruned"]["latency_ms_predicted"] <= 0.6 * rep["baseline"]["latency_ms_predicted"] + 1e-9
        ratio = rep["pruned"]["latency_ms_measured_min"] / rep["baseline"]["latency_ms_measured_min"]
        assert ratio <= 0.65, (method, ratio)
        ckpt = load_checkpoint(str(out / "model.pt"))
        again = model_from_checkpoint(ckpt, path="model.pt")  # from the file, reshaped by tp.load_state_dict
        assert models.channel_spec(again) == rep["pruned"]["channels"]
        spec_built = models.create_model(ref, 10, ckpt["channels"], input_shape=(1, 3, 64, 64))  # and the spec
        spec_built.load_state_dict(ckpt["state_dict"])
        x = torch.randn(2, 3, 64, 64)
        assert torch.allclose(again(x), spec_built.eval()(x), atol=1e-6)
