"""install_jetson.sh: dry run on this (non-Jetson) machine, idempotence, and bad options."""

import os
import subprocess

from tests.conftest import ROOT

SCRIPT = ROOT / "install_jetson.sh"


def run(*args, home):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env=dict(os.environ, HOME=str(home)), timeout=60)


def test_dry_run_shows_the_plan_and_installs_nothing(tmp_path):
    r = run("--dry-run", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"+ python3 -m venv --system-site-packages {tmp_path}/edgeshrink-venv" in r.stdout
    for pkg in ("pycuda", "onnxruntime-gpu", "numpy<2"):
        assert pkg in r.stdout
    assert "tegrastats: MISSING" in r.stderr or "tegrastats: found" in r.stdout
    assert not (tmp_path / "edgeshrink-venv").exists()


def test_an_existing_venv_is_reused(tmp_path):
    venv = tmp_path / "v"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python3").write_text("#!/bin/sh\n")
    os.chmod(venv / "bin" / "python3", 0o755)
    r = run("--venv", str(venv), "--dry-run", home=tmp_path)
    assert r.returncode == 0 and "exists: reusing it" in r.stdout and "-m venv" not in r.stdout


def test_unknown_option_exits_2(tmp_path):
    r = run("--bogus", home=tmp_path)
    assert r.returncode == 2 and "unknown option --bogus" in r.stderr
