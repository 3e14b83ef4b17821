"""Table builds that are interrupted and resumed, and builds spread over a farm of boards over SSH."""

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, one_line_error
from tests.sshd import needs_sshd

ARGS = ["--model", "resnet20", "--granularity", "16", "--warmup", "1", "--iters", "5", "--rounds", "2", "--calibrate", "0"]
TOTAL = 2 * (67 + 1)  # 2 rounds x (67 configurations on the grid of 16 + the overhead graph)


def lines(folder):
    return sum(len([x for x in p.read_text().splitlines() if x.strip()]) for p in folder.glob("results_r*.jsonl"))


def device_records(work):
    """Every measurement the device itself wrote (its --jsonl files, one line per model measured), by round."""
    out = {}
    for f in (work / "device_local").glob("results_r*_b*.jsonl"):
        r = int(f.name.split("_")[1][1:])
        out.setdefault(r, []).extend(json.loads(x)["model"] for x in f.read_text().splitlines() if x.strip())
    return out


@pytest.mark.slow
def test_an_interrupted_build_resumes_without_measuring_anything_twice(tmp_path, host_cli):
    """Ctrl-C in the middle of a batch, then --resume: the device's own records show every configuration measured
    exactly once per round (the cut batch continues where it stopped), and the counts say what was measured now and
    what was reused."""
    out, work = tmp_path / "t.json", tmp_path / "work"
    p = subprocess.Popen([sys.executable, "-m", "edgeshrink", "table", "build", *ARGS, "--batch", "4", "--workdir",
                          str(work), "--out-table", str(out)],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "err.txt", "w"),
                         # a shell that runs the tests in the background ignores SIGINT in its children, and Python
                         # keeps an ignored SIGINT ignored: give the build the default, as a terminal would
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while lines(work) < 14 and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)  # Ctrl-C in the middle of the measurements
    p.wait(timeout=60)
    assert p.returncode == 130 and "interrupted" in (tmp_path / "err.txt").read_text()
    assert not out.exists() and work.is_dir()
    before = lines(work)
    at_cut = sum(len(v) for v in device_records(work).values())  # what the device had measured, pulled back or not
    assert 14 <= before <= at_cut < TOTAL
    one_line_error(host_cli("table", "build", *ARGS, "--batch", "4", "--workdir", str(work), "--out-table", str(out)), "--resume")
    changed = [a if a != "5" else "6" for a in ARGS]  # --iters 6: measurements of another kind
    one_line_error(host_cli("table", "build", *changed, "--batch", "4", "--workdir", str(work), "--resume", "--out-table",
                            str(out)), "other settings", "iters 5 -> 6")
    r = host_cli("table", "build", *ARGS, "--batch", "4", "--workdir", str(work), "--resume", "--out-table", str(out))
    assert r.returncode == 0, r.stderr
    t = json.loads(out.read_text())
    assert len(t["entries"]) == 67 and t["build"]["resumed"]
    done = device_records(work)
    assert sorted(done) == [0, 1]
    for r_, models in done.items():
        assert len(models) == len(set(models)) == 67 + 1, r_  # each configuration once per round, none twice
    b = t["build"]
    assert (b["measurements"], b["reused_measurements"]) == (TOTAL - at_cut, at_cut)


def test_resume_without_an_interrupted_build_is_refused(tmp_path, host_cli):
    one_line_error(host_cli("table", "build", *ARGS, "--resume", "--out-table", str(tmp_path / "t.json")), "no interrupted build")


@pytest.mark.slow
@needs_sshd
def test_a_farm_of_two_boards_over_ssh_shares_the_batches(sshd, ssh_home, tmp_path, host_cli):
    a, b = sshd.spec(root=str(tmp_path / "board_a")), sshd.spec(root=str(tmp_path / "board_b"))
    work = tmp_path / "work"
    r = host_cli("table", "build", *ARGS, "--batch", "6", "--device", a, "--device", b, "--trust-new-host",
                 "--workdir", str(work), "--out-table", str(tmp_path / "t.json"))
    assert r.returncode == 0, r.stderr
    t = json.loads((tmp_path / "t.json").read_text())
    assert len(t["entries"]) == 67 and t["device"]["spec"] == a and t["device"]["farm"] == [a, b]
    assert t["calibration"]["fusion"]["source"].endswith(f" on {a}")  # the board's runtime said what it fuses
    assert t["build"]["measurements"] == TOTAL
    used = [json.loads(x)["device"] for p in work.glob("results_r*.jsonl") for x in p.read_text().splitlines()]
    assert len(used) == TOTAL and set(used) == {a, b}
    # each board got only the micro-models of the batches it measured
    shipped_a = {p.name for p in (tmp_path / "board_a").rglob("micro/*.onnx")}
    shipped_b = {p.name for p in (tmp_path / "board_b").rglob("micro/*.onnx")}
    assert shipped_a and shipped_b and len(shipped_a | shipped_b) == 68
