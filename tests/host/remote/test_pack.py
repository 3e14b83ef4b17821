"""``host device pack``: the device side as one zipapp that runs from anywhere with the board's python3."""

import json
import zipfile

from tests.conftest import run_cli
from tests.device.test_cli import tiny_onnx


def test_pack_writes_a_runnable_zipapp(tmp_path, host_cli):
    pyz = tmp_path / "edgeshrink-device.pyz"
    r = host_cli("device", "pack", "--out-pyz", str(pyz))
    assert r.returncode == 0, r.stderr
    names = zipfile.ZipFile(pyz).namelist()
    assert "__main__.py" in names and "device/__main__.py" in names and "device/power/tegrastats.py" in names
    assert not [n for n in names if "__pycache__" in n or n.startswith(("host/", "models/"))]
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3")
    model = tiny_onnx(tmp_path / "m.onnx")
    elsewhere = tmp_path / "board"
    elsewhere.mkdir()
    r = run_cli(str(pyz), "bench", str(model), "--iters", "20", "--json", cwd=elsewhere,
                env={"PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["results"][0]["latency_ms"]["n"] == 20
    r = run_cli(str(pyz), "bench", "missing.onnx", cwd=elsewhere)
    assert r.returncode == 2  # the exit code survives the zipapp's __main__
