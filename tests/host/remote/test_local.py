import json

import pytest

from edgeshrink.host.errors import DeviceError
from edgeshrink.host.remote import open_device
from tests.device.test_cli import tiny_onnx


def test_local_device_put_run_get(tmp_path):
    model = tiny_onnx(tmp_path / "a b.onnx")
    with open_device("local") as dev:
        work = dev.workdir
        assert (work / "device" / "__main__.py").exists()  # a copy of the device program
        dev.put(str(model), "art/a b.onnx")
        lines = []
        res = dev.run_device(["bench", "art/a b.onnx", "--iters", "5", "--warmup", "1", "--json"], on_stderr_line=lines.append)
        assert res.exit_code == 0 and any("a b.onnx" in l for l in lines)
        assert json.loads(res.stdout)["results"][0]["latency_ms"]["n"] == 5
        dev.put(str(model), "x.onnx")
        dev.get("x.onnx", str(tmp_path / "back.onnx"))
        assert (tmp_path / "back.onnx").read_bytes() == model.read_bytes()
        with pytest.raises(DeviceError, match="leaves the device work directory"):
            dev.put(str(model), "../escape.onnx")
    assert not work.exists()  # the temporary work directory is removed


def test_device_specs():
    with pytest.raises(DeviceError, match="malformed device spec"):
        open_device("jetson")
    from edgeshrink.host.remote.ssh import SshDevice

    dev = open_device("ssh://pi@board:2222?python=/opt/v/bin/python3")  # connects only when entered
    assert isinstance(dev, SshDevice) and dev.target.port == 2222 and dev.target.python == "/opt/v/bin/python3"
    with pytest.raises(DeviceError, match="malformed device spec"):
        open_device("ssh://")


def test_a_failing_device_command_raises_with_its_last_error_line():
    with open_device("local") as dev:
        with pytest.raises(DeviceError, match=r"device bench failed on local \(exit 2\): .*model file not found: nope.onnx"):
            dev.run_device(["bench", "nope.onnx"])
        res = dev.run_device(["bench", "nope.onnx"], check=False)
        assert res.exit_code == 2 and "model file not found" in res.stderr
