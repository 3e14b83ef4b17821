"""A misbehaving or hostile board over a real sshd on 127.0.0.1: what it names is not a path on the host,
known_hosts is read as OpenSSH reads it and written only to record a trusted key, a board's folders are removed
only when edgeshrink made them, the pushed device program is checked by its files' hash, and a server without SFTP
still works."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading

import pytest

from edgeshrink.host.errors import DeviceError
from edgeshrink.host.remote import open_device
from edgeshrink.host.remote.ssh import SshConnection, SshDevice
from tests.conftest import error_line, one_line_error
from tests.device.test_cli import tiny_onnx
from tests.sshd import needs_sshd, trust

pytestmark = needs_sshd

EVIL_BOARD = '''#!{python}
"""A FAKE board's python: runs everything as the real one does, except `-m device bench`, whose reply names log
files outside the host's output folder."""
import json, os, sys
args = sys.argv[1:]
if args[:3] != ["-m", "device", "bench"]:
    os.execv({python!r}, [{python!r}, *args])
models = [os.path.basename(a) for a in args[3:] if a.startswith("artifacts/")]
lat = {{"n": 10, "mean": 1.0, "median": 1.0, "p90": 1.0, "p95": 1.0, "p99": 1.0, "min": 0.9, "max": 1.2, "std": 0.1,
        "cv": 0.1}}
res = [{{"model": m, "sha256": "0" * 64, "latency_ms": lat, "init_ms": 1.0, "first_inference_ms": 1.0,
         "throttled": False, "throttle_evidence": [], "round_medians_ms": [1.0],
         "power": {{"log_csv": {csv!r}, "log_raw": {raw!r}}}}} for m in models]
os.makedirs("logs", exist_ok=True)
for name in ({csv!r}, {raw!r}):
    if os.path.isabs(name):
        continue  # the board's own /tmp is not the host's; here they are one machine
    try:
        with open(os.path.join("logs", name), "w") as f:
            f.write("t_ms,total_mw\\n0,666\\n")
    except OSError:
        pass
print(json.dumps({{"schema": "edgeshrink.bench", "device": {{"hostname": "evil"}}, "results": res}}))
'''


@pytest.mark.parametrize("names", [("../outside.csv", "ok.log"), ("m0_a.onnx.power.csv", "/ABS/outside.log")])
def test_a_board_naming_files_outside_the_output_folder_writes_nothing_there(sshd, ssh_home, tmp_path, host_cli,
                                                                            names):
    """The acceptance of the hardening issue: a board reply naming ../x or /tmp/x as a log file makes
    `host bench --out DIR` refuse with one line and write nothing outside DIR."""
    trust(ssh_home, sshd)
    csv, raw = (n.replace("/ABS", str(tmp_path)) for n in names)
    fake = tmp_path / "evil_python"
    fake.write_text(EVIL_BOARD.format(python=sys.executable, csv=csv, raw=raw))
    os.chmod(fake, 0o755)
    out = tmp_path / "res"
    spec = sshd.spec(root=str(tmp_path / "board"), python=str(fake))
    a = tiny_onnx(tmp_path / "a.onnx")
    r = host_cli("bench", str(a), "--device", spec, "--power", "auto", "--out", str(out), "--json")
    line = error_line(r, "refusing to write it", "was not asked for")
    assert repr(csv if not csv.startswith("m0_") else raw) in line
    assert not (tmp_path / "outside.csv").exists() and not (tmp_path / "outside.log").exists()
    assert sorted(p.name for p in out.iterdir()) == []  # nothing written at all, results.json included


def test_revoked_and_cert_authority_lines_are_read_as_openssh_reads_them(sshd, ssh_home):
    key = sshd.host_pub
    kh = ssh_home / ".ssh" / "known_hosts"
    kh.write_text(f"# my boards\n@cert-authority *.example.com {key}\n[127.0.0.1]:{sshd.port} {key}\n")
    with SshConnection("127.0.0.1", port=sshd.port) as c:  # the CA line is left alone, the listed key is used
        assert c.run(["echo", "ok"]).stdout == "ok\n"
    kh.write_text(kh.read_text() + f"@revoked * {key}\n")
    for trust_new in (False, True):
        with pytest.raises(DeviceError, match="marked @revoked"):
            SshConnection("127.0.0.1", port=sshd.port, trust_new_host=trust_new).connect()
    assert kh.read_text().count(key) == 3  # nothing was added or removed


def test_trusting_a_new_host_appends_one_line_and_keeps_the_rest(sshd, ssh_home):
    kh = ssh_home / ".ssh" / "known_hosts"
    kh.write_text("# keep this comment\n@cert-authority *.corp ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN2ZF/k6NGJzYa5BXH\n")
    before, mode = kh.read_text(), kh.stat().st_mode & 0o777
    conns = [SshConnection("127.0.0.1", port=sshd.port, trust_new_host=True) for _ in range(3)]
    threads = [threading.Thread(target=c.connect) for c in conns]  # a farm's threads, at once
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    text = kh.read_text()
    assert text.startswith(before) and text.count(sshd.host_pub.split()[1]) == 1
    assert kh.stat().st_mode & 0o777 == mode  # the file keeps its permissions
    stat = kh.stat()
    with SshConnection("127.0.0.1", port=sshd.port, trust_new_host=True) as c:  # known now: nothing is written
        c.run(["true"])
    assert (kh.stat().st_ino, kh.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    for c in conns:
        c.close()


def test_someone_elses_device_folder_on_the_board_is_never_removed(sshd, ssh_home, tmp_path):
    trust(ssh_home, sshd)
    root = tmp_path / "board"
    (root / "device").mkdir(parents=True)
    (root / "device" / "precious.txt").write_text("not edgeshrink's")
    with pytest.raises(DeviceError, match="was not put there by edgeshrink"):
        with SshDevice(sshd.spec(root=str(root))):
            pass
    assert (root / "device" / "precious.txt").read_text() == "not edgeshrink's"


def test_a_session_folder_is_removed_only_when_this_session_made_it(sshd, ssh_home, tmp_path):
    trust(ssh_home, sshd)
    root = tmp_path / "board"
    with SshDevice(sshd.spec(root=str(root))) as d:
        made = root / d.session
        assert (made / ".edgeshrink-session").exists()
    assert not made.exists()
    (root / "mine").mkdir()
    (root / "mine" / "data.txt").write_text("keep")
    with SshDevice(sshd.spec(root=str(root)), workdir="mine"):
        pass
    assert (root / "mine" / "data.txt").read_text() == "keep"  # a given work folder stays


@pytest.mark.slow
def test_a_server_without_sftp_copies_over_the_exec_channel(sshd_nosftp, ssh_home, tmp_path, caplog, host_cli):
    trust(ssh_home, sshd_nosftp)
    caplog.set_level(logging.WARNING, logger="edgeshrink.remote.ssh")
    a, b = tiny_onnx(tmp_path / "a.onnx", 4), tiny_onnx(tmp_path / "b.onnx", 8)
    spec = sshd_nosftp.spec(root=str(tmp_path / "board"))
    r = host_cli("bench", str(a), str(b), "--device", spec, "--iters", "20", "--rounds", "2", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert all(m["latency_ms"]["n"] == 20 for m in doc["models"].values())
    assert "has no SFTP subsystem" in caplog.text and "exec channel" in caplog.text
    with open_device(spec) as dev:  # files both ways, and a folder
        dev.put(str(a), "x/y/a.onnx")
        assert dev.exists("x/y/a.onnx") and not dev.exists("x/y/none")
        dev.get("x/y/a.onnx", str(tmp_path / "back.onnx"))
    assert (tmp_path / "back.onnx").read_bytes() == a.read_bytes()


def test_an_unknown_host_over_a_server_without_sftp_is_still_one_line(sshd_nosftp, ssh_home, tmp_path, host_cli):
    a = tiny_onnx(tmp_path / "a.onnx")
    one_line_error(host_cli("bench", str(a), "--device", sshd_nosftp.spec(root=str(tmp_path / "b"))), "unknown host")


GARBAGE_BOARD = '''#!{python}
"""A FAKE board's python whose `-m device bench` prints {what} instead of the bench JSON."""
import os, sys
args = sys.argv[1:]
if args[:3] != ["-m", "device", "bench"]:
    os.execv({python!r}, [{python!r}, *args])
print({reply!r})
'''


@pytest.mark.parametrize("reply,needle", [
    ("Segmentation fault (core dumped)\nmore", "something that is not JSON: 'Segmentation fault"),
    ('{"device": {}, "results": [{"model": "m0_a.onnx", "latency_ms": {"median": -1}}]}', "median must be >= 0"),
    ('{"device": {}, "results": []}', "without results for m0_a.onnx"),
])
def test_a_board_replying_garbage_is_one_line(sshd, ssh_home, tmp_path, host_cli, reply, needle):
    trust(ssh_home, sshd)
    fake = tmp_path / "garbage_python"
    fake.write_text(GARBAGE_BOARD.format(python=sys.executable, what="garbage", reply=reply))
    os.chmod(fake, 0o755)
    a = tiny_onnx(tmp_path / "a.onnx")
    r = host_cli("bench", str(a), "--device", sshd.spec(root=str(tmp_path / "board"), python=str(fake)), "--json")
    error_line(r, needle)
