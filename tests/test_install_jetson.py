"""install_jetson.sh: dry run on this (non-Jetson) machine, idempotence, and bad options."""

import os
import subprocess

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "install_jetson.sh"


def run(*args, home, path=None):
    env = dict(os.environ, HOME=str(home))
    if path is not None:
        env["PATH"] = path
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


def test_dry_run_shows_the_plan_and_installs_nothing(tmp_path):
    r = run("--dry-run", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"+ python3 -m venv --system-site-packages {tmp_path}/edgeshrink-venv" in r.stdout
    for pkg in ("pycuda", "onnxruntime-gpu", "numpy<2"):
        assert pkg in r.stdout
    assert not (tmp_path / "edgeshrink-venv").exists()


def test_the_tool_check_finds_tegrastats_when_it_is_there_and_says_missing_when_not(tmp_path):
    """This machine is not a Jetson: on a PATH without the tools they are MISSING; with a tegrastats on the PATH
    (a FAKE, the check only looks for the command) it is found."""
    if os.path.exists("/usr/bin/tegrastats"):
        pytest.skip("a real tegrastats is installed here")
    plain = "/usr/bin:/bin"
    r = run("--dry-run", home=tmp_path, path=plain)
    assert r.returncode == 0 and "tegrastats: MISSING" in r.stderr and "tegrastats: found" not in r.stdout
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "tegrastats").write_text("#!/bin/sh\nexit 0\n")
    os.chmod(bin_dir / "tegrastats", 0o755)
    r = run("--dry-run", home=tmp_path, path=f"{bin_dir}:{plain}")
    assert r.returncode == 0 and "tegrastats: found" in r.stdout and "tegrastats: MISSING" not in r.stderr
    assert "nvpmodel: MISSING" in r.stderr


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
