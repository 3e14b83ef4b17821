"""Runs on several processes through torch.distributed (gloo on this machine's CPUs), started by torchrun: DDP
training against single-process training, a 2-rank NetAdapt iteration against one rank, ranks that disagree."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from edgeshrink.host.distributed import shard
from tests.conftest import ROOT, one_line_error

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch has no torch.distributed")


def torchrun(n: int, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node N ARGS``, one intra-op thread per process whatever N (torchrun sets it only for
    N > 1), so float sums run in the same order."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_the_shares_of_a_batch_cover_it_once():
    for n, world in ((64, 2), (7, 3), (2, 2)):
        parts = [list(range(n))[shard(n, r, world)] for r in range(world)]
        assert sum(parts, []) == list(range(n)) and max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.slow
def test_two_rank_ddp_training_equals_single_process_training(tmp_path):
    """Without BatchNorm (whose statistics DDP keeps per rank on CPUs) a step on 2 ranks x 32 images is the step on
    the 64: the checkpoints agree to float rounding (tolerance: 1e-4 of each tensor's largest value)."""
    common = ["--model", "tests/nobn_model.py:make", "--epochs", "2", "--batch-size", "64", "--lr", "0.05"]
    two = torchrun(2, "-m", "edgeshrink.host.cli", "train", *common, "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "edgeshrink.host.cli", "train", *common, "--out", str(tmp_path / "one")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr[-3000:]
    a = torch.load(tmp_path / "two" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "one" / "model.pt", weights_only=True)
    assert a["model"] == b["model"] and a["channels"] == b["channels"] and set(a) == set(b)  # the same format
    for k, v in b["state_dict"].items():
        assert float((a["state_dict"][k] - v).abs().max()) <= 1e-4 * float(v.abs().max()), k
    ma, mb = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("two", "one"))
    assert ma["world_size"] == 2 and mb["world_size"] == 1
    assert ma["test"]["top1"] == pytest.approx(mb["test"]["top1"], abs=0.3)  # at most one of 360 images flips
    assert "2 ranks" in two.stderr and two.stderr.count("test top-1") == 1  # rank 0 alone logs


@pytest.mark.slow
def test_a_two_rank_netadapt_iteration_chooses_what_one_rank_chooses(tmp_path, trained_ckpt, formula_table):
    got = {}
    for n in (1, 2):
        out = tmp_path / f"na{n}.json"
        r = torchrun(n, "tests/host/netadapt_ranks.py", str(trained_ckpt), str(formula_table), str(out))
        assert r.returncode == 0, r.stderr[-3000:]
        got[n] = json.loads(out.read_text())
    one, two = got[1], got[2]
    assert [h["ranks"] for h in two["history"]] == [2]
    for h1, h2 in zip(one["history"], two["history"]):
        assert (h2["chosen_group"], h2["width_after"]) == (h1["chosen_group"], h1["width_after"])
        assert len(h1["candidates"]) > 2
        # every candidate, whichever rank fine-tuned it, scored as the single process scored it
        assert [c["val_top1"] for c in h2["candidates"]] == pytest.approx([c["val_top1"] for c in h1["candidates"]])
    assert two["spec"] == one["spec"]
    assert two["weights"] == pytest.approx(one["weights"], abs=1e-5)
    assert two["weights_sum"] == pytest.approx(one["weights_sum"], rel=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ranks_that_disagree_on_the_table_are_refused(tmp_path, formula_table, untrained_ckpt):
    other = tmp_path / "other.json"
    d = json.loads(formula_table.read_text())
    d["entries"][0]["latency_ms"]["min"] *= 2  # another measurement of the same model: another file on rank 1
    other.write_text(json.dumps(d))
    port = _free_port()
    procs = []
    for rank, table in enumerate((formula_table, other)):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "edgeshrink.host.cli", "prune", "--table", str(table), "--checkpoint",
             str(untrained_ckpt), "--out", str(tmp_path / "out")],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for rank, p in enumerate(procs):
        _, err = p.communicate(timeout=300)
        lines = [ln for ln in err.strip().splitlines() if not ln.startswith("[W")]
        assert p.returncode == 2 and len(lines) == 1, err[-2000:]
        assert lines[0].startswith("host: error: torchrun ranks disagree on the table") and "rank(s) 1 differ" in lines[0]
        assert lines[0].endswith(f"[rank {rank} of 2]")
    assert not (tmp_path / "out").exists()


def test_distributed_flag_refuses_a_count_out_of_range(host_cli):
    one_line_error(host_cli("--distributed", "0", "train", "--out", "x"), "--distributed must be 1..256")


@pytest.mark.slow
def test_compare_shares_its_runs_between_ranks_and_rank_0_measures_them(tmp_path, formula_table, untrained_ckpt):
    out = tmp_path / "cmp"
    r = torchrun(2, "-m", "edgeshrink.host.cli", "compare", "--methods", "uniform,magnitude", "--budgets", "0.6",
                 "--table", str(formula_table), "--checkpoint", str(untrained_ckpt), "--long-term-epochs", "0",
                 "--bench-seconds", "1", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 ranks share the 2 runs" in r.stderr
    res = json.loads(r.stdout)  # rank 0 alone prints the result
    assert [(row["method"], row["budget"]) for row in res["rows"]] == [("uniform", 0.6), ("magnitude", 0.6)]
    for row in res["rows"]:  # both measured in rank 0's one session, beside the baseline
        assert 0 < row["latency_ms_measured"] < res["baseline"]["latency_ms_measured"]
        assert json.loads((out / "runs" / f"{row['method']}_b0.6" / "compare_key.json").read_text())["method"] == row["method"]
    assert "magnitude at budget 0.6" not in r.stderr  # rank 1 ran it, and rank 1 does not log
