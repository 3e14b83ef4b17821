"""Atomic writes: a run killed while writing never leaves a half-written result in place of the old one."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from edgeshrink.host.io import OutputError, atomic_path, prepare_dir, prepare_file, write_json

WRITER = """
import sys
from edgeshrink.host.io import write_json
write_json(sys.argv[1], {"v": 2, "pad": "x" * 300_000_000})  # ~300 MB: seconds of writing to be killed in
"""


def test_a_writer_killed_with_sigkill_mid_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "report.json"
    write_json(target, {"v": 1})
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
    deadline = time.monotonic() + 60
    tmp = []
    while time.monotonic() < deadline and p.poll() is None:
        tmp = [f for f in tmp_path.iterdir() if f.name.startswith(".report.json.") and f.stat().st_size > 1 << 20]
        if tmp:
            break
        time.sleep(0.005)
    assert tmp, "the writer finished before it could be killed"
    os.kill(p.pid, signal.SIGKILL)  # what a power cut, the OOM killer or `kill -9` does: no cleanup runs
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    assert json.loads(target.read_text()) == {"v": 1}  # the old result, whole


def test_an_exception_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "trunc')
            raise RuntimeError("failed mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_outputs_that_cannot_be_written_are_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=f"{tmp_path / 'file'}.*a file is in the way|Not a directory"):
        prepare_dir(tmp_path / "file" / "sub", "--out")
    with pytest.raises(OutputError, match="is a folder; give a file name"):
        prepare_file(tmp_path, "-o")
    with pytest.raises(OutputError, match="cannot write"):
        write_json(tmp_path / "file" / "t.json", {})
    assert prepare_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()
