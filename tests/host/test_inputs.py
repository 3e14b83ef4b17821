"""host inputs: a dataset split as the dynamic runner's input set, and the runner's decisions against torch."""

import json

import numpy as np
import torch

from edgeshrink import models
from edgeshrink.host.data import load_dataset
from edgeshrink.host.export.onnx import export_onnx
from tests.conftest import one_line_error, run_cli


def test_the_test_split_goes_to_the_device_and_its_predictions_are_torchs(tmp_path, host_cli):
    out = tmp_path / "inputs.npz"
    r = host_cli("inputs", "--dataset", "digits", "--limit", "12", "--out-npz", str(out))
    assert r.returncode == 0, r.stderr
    data = load_dataset("digits")
    with np.load(out, allow_pickle=False) as z:
        x, y = z["x"], z["y"]
    assert x.shape == (12, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    assert (y == data.test.labels[:12].numpy()).all()
    # normalised per channel: undoing it gives back the split's uint8 pixels
    back = (x * np.array(data.std).reshape(1, 3, 1, 1) + np.array(data.mean).reshape(1, 3, 1, 1)) * 255
    assert np.abs(back - data.test.images[:12].numpy()).max() < 1e-3
    torch.manual_seed(0)
    net = models.create_model("resnet20", 10).eval()
    export_onnx(net, (1, 3, 32, 32), str(tmp_path / "m.onnx"))
    b = run_cli("-m", "edgeshrink.device", "bench", str(tmp_path / "m.onnx"), "--inputs", str(out), "--iters", "1",
                "--json")
    assert b.returncode == 0, b.stderr
    rec = json.loads(b.stdout)["results"][0]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).argmax(1).numpy()
    assert rec["per_input"]["pred"] == want.tolist()  # input by input, the device decides as torch does
    assert rec["top1"] == float((want == y).mean()) and rec["latency_ms"]["n"] == 12


def test_inputs_refusals(tmp_path, host_cli):
    one_line_error(host_cli("inputs", "--dataset", "digits", "--limit", "0", "--out-npz", str(tmp_path / "a.npz")),
                   "--limit must be in 1..100000000")
    one_line_error(host_cli("inputs", "--dataset", "digits", "--out-npz", str(tmp_path / "a.txt")), "an input set is an .npz")
