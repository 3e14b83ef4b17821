"""Shared fixtures: real small inputs (the digits data, a briefly trained resnet20, a coarse latency table
measured on this machine with ONNX Runtime through the ``local`` device)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Real captures (tegrastats, trtexec, benchmark_model, Raspberry Pi) copied verbatim from the project's
# ../shared/data, so a clone alone runs the tests; tests/test_captures.py checks the copy is still identical.
SHARED_DATA = ROOT / "tests" / "data" / "captures"
UPSTREAM_DATA = ROOT.parent / "shared" / "data"


def run_cli(*args: str, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run ``python -m host ...`` / ``python -m device ...`` style commands in a subprocess."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, *args], cwd=cwd or ROOT, env=e, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def digits():
    from edgeshrink.host.data import load_digits

    return load_digits(seed=0)


@pytest.fixture(scope="session")
def trained_ckpt(tmp_path_factory, digits):
    """resnet20 trained for 3 epochs on digits: a real checkpoint, well above chance."""
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
    """A real resnet20 table on a coarse grid (granularity 8), measured briefly on this machine."""
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


from tests.sshd import ssh_home, sshd  # noqa: E402,F401 - the real-sshd fixtures, shared by the SSH tests


@pytest.fixture(scope="session")
def netadapt_ckpt(tmp_path_factory, small_table, trained_ckpt):
    """A NetAdapt-pruned resnet20 (``host prune`` with a short schedule on the small table)."""
    out = tmp_path_factory.mktemp("netadapt") / "pruned"
    r = run_cli("-m", "edgeshrink.host.cli", "prune", "--perf-table", str(small_table), "--model", "resnet20", "--checkpoint",
                str(trained_ckpt), "--dataset", "digits", "--budget", "0.7", "--out", str(out), "--short-term-steps",
                "2", "--long-term-epochs", "1", "--init-reduction", "0.15", "--decay", "0.9", "--bench-seconds",
                "1")
    assert r.returncode == 0, r.stderr
    return out / "model.pt"
