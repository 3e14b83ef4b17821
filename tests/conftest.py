"""Shared fixtures and helpers.

The fast tier (``-m "not slow"``) uses tables with a known answer (:mod:`tests.tables`), untrained checkpoints
and in-process CLI calls (``host_cli``); the full tier adds what trains or measures for real: a briefly trained
resnet20, a table measured on this machine with ONNX Runtime through the ``local`` device, end-to-end runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Real captures (tegrastats, trtexec, benchmark_model, Raspberry Pi) copied verbatim from the project's
# ../shared/data, so a clone alone runs the tests; tests/test_captures.py checks the copy is still identical.
SHARED_DATA = ROOT / "tests" / "data" / "captures"
UPSTREAM_DATA = ROOT.parent / "shared" / "data"


# The fast tier (-m "not slow") has a budget of 3 minutes: a test there that runs longer than this is a slow test
# (mark it, or make it cheaper). Only its call is timed: the shared session fixtures' set-up is paid once. Judged when
# the tier runs as a whole (a file run alone pays the process's first ONNX export and imports in its first test).
FAST_TEST_LIMIT_S = float(os.environ.get("EDGESHRINK_FAST_TEST_LIMIT_S", "5"))
FAST_TIER_MIN_TESTS = 200


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    import time

    t0 = time.perf_counter()
    yield
    took = time.perf_counter() - t0
    fast_tier = "not slow" in (item.config.getoption("markexpr") or "") and \
        len(item.session.items) >= FAST_TIER_MIN_TESTS
    if fast_tier and item.get_closest_marker("slow") is None and took > FAST_TEST_LIMIT_S:
        pytest.fail(f"a fast-tier test took {took:.1f} s (> {FAST_TEST_LIMIT_S:g} s): mark it slow or make it cheaper",
                    pytrace=False)


def run_cli(*args: str, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` in a subprocess (``-m edgeshrink.device ...``, ``-c ...``): for what must be a separate
    process (import checks, the device folder or zipapp on its own, signals)."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, *args], cwd=cwd or ROOT, env=e, capture_output=True, text=True,
                          timeout=timeout)


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def host_cli(capsys):
    """``host_cli(*args)`` runs ``host ARGS`` in this process (``edgeshrink.host.cli.main``) and returns its exit
    code, stdout and stderr."""
    from edgeshrink.host.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        got = capsys.readouterr()
        return CliResult(code, got.out, got.err)

    return run


def one_line_error(r: CliResult, *needles: str, prog: str = "host") -> str:
    """Assert ``r`` is one line ``PROG: error: ...`` with exit code 2 holding every needle; returns the line."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def error_line(r: CliResult, *needles: str, prog: str = "host") -> str:
    """Assert ``r`` failed with exit code 2 and no traceback, its last stderr line the only ``PROG: error: ...`` line
    and holding every needle (progress lines may come before it); returns that line."""
    assert r.returncode == 2 and "Traceback" not in r.stderr, (r.returncode, r.stderr[-2000:])
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith(f"{prog}: error: ")]
    assert len(errors) == 1 and r.stderr.strip().splitlines()[-1] == errors[0], r.stderr
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def assert_shipped(folder, measured_sha256: str) -> dict:
    """Assert the file the device measured (``measured_sha256``, as the device hashed it) is the file shipped: the
    ``artifact.json`` in ``folder`` names it, and its bytes on disk still hash so. Returns the artifact.json."""
    import hashlib
    import json

    doc = json.loads((Path(folder) / "artifact.json").read_text())
    assert doc["schema"] == "edgeshrink.artifact" and doc["sha256"] == measured_sha256, (doc["sha256"], measured_sha256)
    for name, sha in doc["files"].items():
        assert hashlib.sha256((Path(folder) / name).read_bytes()).hexdigest() == sha, name
    assert doc["files"][doc["file"]] == measured_sha256
    return doc


@pytest.fixture(scope="session")
def digits():
    from edgeshrink.host.data import load_digits

    return load_digits(seed=0)


@pytest.fixture(scope="session")
def untrained_ckpt(tmp_path_factory):
    """An initialised, untrained resnet20 checkpoint (digits: 10 classes, 1x3x32x32)."""
    import torch

    from edgeshrink import models
    from edgeshrink.host.checkpoint import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "untrained.pt"
    save_checkpoint(str(path), models.create_model("resnet20", 10), 10, dataset="digits", input_shape=[1, 3, 32, 32])
    return path


@pytest.fixture(scope="session")
def pruned_ckpt(tmp_path_factory):
    """A pruned (untrained) resnet20 checkpoint: the architecture NetAdapt leaves, rebuilt from a channel spec."""
    import torch

    from edgeshrink import models
    from edgeshrink.host.checkpoint import save_checkpoint

    torch.manual_seed(1)
    spec = {"conv1": 8, "layer1.0.conv2": 8, "layer1.1.conv2": 8, "layer1.2.conv2": 8, "layer1.0.conv1": 4,
            "layer2.1.conv1": 16, "layer3.0.conv1": 32, "layer3.2.conv1": 24}
    path = tmp_path_factory.mktemp("ckpt") / "pruned.pt"
    save_checkpoint(str(path), models.create_model("resnet20", 10, spec), 10, dataset="digits",
                    input_shape=[1, 3, 32, 32])
    return path


@pytest.fixture(scope="session")
def formula_table(tmp_path_factory):
    """A resnet20 table on the grid of 8 whose entries come from :func:`tests.tables.formula_ms` (statistic min)."""
    from tests.tables import synthetic_table

    path = tmp_path_factory.mktemp("table") / "resnet20_formula_g8.json"
    synthetic_table("resnet20", 8).save(str(path))
    return path


@pytest.fixture(scope="session")
def trained_ckpt(tmp_path_factory, digits):
    """resnet20 trained for 3 epochs on digits: a real checkpoint, well above chance (full tier)."""
    import torch

    from edgeshrink import models
    from edgeshrink.host.checkpoint import save_checkpoint
    from edgeshrink.host.train import TrainConfig, evaluate, train

    torch.manual_seed(0)
    m = models.create_model("resnet20", 10)
    train(m, digits, TrainConfig(epochs=3, lr=0.1, batch_size=64))
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(str(path), m, 10, dataset="digits", input_shape=[1, 3, 32, 32],
                    metrics={"test": evaluate(m, digits, "test")})
    return path


@pytest.fixture(scope="session")
def small_table(tmp_path_factory):
    """A real resnet20 table on a coarse grid (granularity 8), measured briefly on this machine (full tier)."""
    from edgeshrink import models
    from edgeshrink.host.latency.build import BuildConfig, build_table
    from edgeshrink.host.latency.space import build_space, enumerate_keys

    space = build_space(models.create_model("resnet20"), (1, 3, 32, 32))
    keys = enumerate_keys(space, 8)
    cfg = BuildConfig("resnet20", (1, 3, 32, 32), granularity=8, jobs=2, warmup=3, iters=15, rounds=1)
    table = build_table(cfg, keys)
    path = tmp_path_factory.mktemp("table") / "resnet20_g8.json"
    table.save(str(path))
    return path


from tests.sshd import ssh_home, sshd, sshd_nosftp  # noqa: E402,F401 - the real-sshd fixtures of the SSH tests
