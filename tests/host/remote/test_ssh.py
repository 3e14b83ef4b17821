"""ssh:// devices against a real OpenSSH server on 127.0.0.1 (see conftest.py): host-key checking, keys and
~/.ssh/config, pushing device/ only when it changed, quoting, timeouts, a dropped connection, secrets."""

import json
import logging
import os
import threading
import time

import pytest

from edgeshrink.host.errors import DeviceError
from edgeshrink.host.remote import open_device
from edgeshrink.host.remote.ssh import SshConnection, SshDevice, device_tree_hash, parse_ssh_spec
from tests.conftest import one_line_error
from tests.device.test_cli import tiny_onnx
from tests.sshd import needs_sshd, trust


def test_spec_parsing():
    s = parse_ssh_spec("ssh://pi@board.local:2222?python=/opt/venv/bin/python3&root=/data/es")
    assert (s.user, s.host, s.port, s.python, s.root) == ("pi", "board.local", 2222, "/opt/venv/bin/python3", "/data/es")
    assert parse_ssh_spec("ssh://jetson").port is None
    for bad, msg in (("ssh://", "malformed"), ("ssh://a:b@h", "passwords"), ("ssh://h:99999", "bad port"),
                     ("ssh://h?py=x", "unknown option"), ("ssh://h/tmp", "no path")):
        with pytest.raises(DeviceError, match=msg):
            parse_ssh_spec(bad)


def test_a_tilde_python_path_expands_on_the_board_and_everything_else_is_quoted():
    d = SshDevice("ssh://pi@board?python=~/venv/bin/python3")
    d.root = "/home/pi/edgeshrink"
    line = d.command(["bench", "a b.onnx", "$(reboot)"])
    assert '"$HOME"/venv/bin/python3 -m device bench' in line
    assert "'a b.onnx' '$(reboot)'" in line and line.startswith("cd /home/pi/edgeshrink/s-")


@needs_sshd
def test_unknown_host_is_refused_then_trusted_and_recorded(sshd, ssh_home):
    with pytest.raises(DeviceError, match="unknown host 127.0.0.1.*--trust-new-host"):
        SshConnection("127.0.0.1", port=sshd.port).connect()
    with SshConnection("127.0.0.1", port=sshd.port, trust_new_host=True) as c:
        assert c.run(["echo", "hello"]).stdout == "hello\n"
    known = (ssh_home / ".ssh" / "known_hosts").read_text()
    assert sshd.host_pub.split()[1] in known
    with SshConnection("127.0.0.1", port=sshd.port) as c:  # now known: no opt-in needed
        assert c.run(["true"]).exit_code == 0


@needs_sshd
def test_a_changed_host_key_is_refused_even_when_trusting_new_hosts(sshd, ssh_home, tmp_path):
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    (ssh_home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {other}\n")
    with pytest.raises(DeviceError, match="does not match"):
        SshConnection("127.0.0.1", port=sshd.port, trust_new_host=True).connect()


@needs_sshd
def test_ssh_config_alias_user_port_and_identity_file(sshd, ssh_home):
    key = ssh_home / ".ssh" / "id_ed25519"
    os.rename(key, ssh_home / ".ssh" / "board_key")  # not a default name: only IdentityFile finds it
    (ssh_home / ".ssh" / "config").write_text(
        f"Host board\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n  IdentityFile ~/.ssh/board_key\n")
    trust(ssh_home, sshd)
    with SshConnection("board") as c:
        assert c.run(["whoami"]).stdout.strip() == sshd.user


@needs_sshd
def test_device_folder_is_pushed_only_when_its_files_change(sshd, ssh_home, tmp_path):
    trust(ssh_home, sshd)
    root = tmp_path / "board"
    spec = sshd.spec(root=str(root))
    with SshDevice(spec) as d:
        assert d.pushed_device is True
        assert (root / "device" / ".edgeshrink-device.sha256").read_text() == device_tree_hash()
        sess = root / d.session
        assert sess.is_dir()
    assert not sess.exists()  # a default session folder is removed on exit
    with SshDevice(spec) as d:
        assert d.pushed_device is False
    (root / "device" / ".edgeshrink-device.sha256").write_text("stale")
    with SshDevice(spec) as d:
        assert d.pushed_device is True
    # a file changed on the board while the marker still says all is well: its own hash gives it away
    bench = root / "device" / "bench.py"
    good = bench.read_text()
    bench.write_text(good + "\nimport os  # changed on the board\n")
    with SshDevice(spec) as d:
        assert d.pushed_device is True
    assert bench.read_text() == good


@needs_sshd
def test_remote_bench_through_the_device_interface_with_hostile_file_names(sshd, ssh_home, tmp_path):
    trust(ssh_home, sshd)
    model = tiny_onnx(tmp_path / "m.onnx")
    root = tmp_path / "board dir"  # spaces in the remote path
    evil = "x; touch PWNED $(touch PWNED2).onnx"
    lines = []
    with open_device(sshd.spec(root=str(root))) as dev:
        dev.put(str(model), f"artifacts/{evil}")
        res = dev.run_device(["bench", f"artifacts/{evil}", "--iters", "30", "--warmup", "2", "--json"],
                             on_stderr_line=lines.append)
        assert dev.exists(f"artifacts/{evil}") and not dev.exists("artifacts/nothing")
        dev.get(f"artifacts/{evil}", str(tmp_path / "back.onnx"))
    rec = json.loads(res.stdout)["results"][0]
    assert rec["model"] == evil and rec["latency_ms"]["n"] == 30
    assert any(ln.startswith("[1/1]") for ln in lines)  # progress streamed from the board
    assert (tmp_path / "back.onnx").read_bytes() == model.read_bytes()
    assert not list(tmp_path.rglob("PWNED*")) and not list(ssh_home.rglob("PWNED*"))


@needs_sshd
def test_a_failing_device_command_and_a_timeout_are_one_line_errors(sshd, ssh_home, tmp_path):
    trust(ssh_home, sshd)
    with open_device(sshd.spec(root=str(tmp_path / "b"))) as dev:
        with pytest.raises(DeviceError, match="model file not found"):
            dev.run_device(["bench", "missing.onnx"])
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match="timed out after 0.5 s"):
            dev.conn.run(["sleep", "5"], timeout_s=0.5)
        assert time.monotonic() - t0 < 3


@needs_sshd
def test_a_missing_local_file_is_not_mistaken_for_a_dropped_connection(sshd, ssh_home, tmp_path):
    trust(ssh_home, sshd)
    with open_device(sshd.spec(root=str(tmp_path / "b"))) as dev:
        t0 = time.monotonic()
        with pytest.raises(FileNotFoundError):
            dev.put(str(tmp_path / "nope.onnx"), "a/nope.onnx")
        assert time.monotonic() - t0 < 1.0  # no reconnect-and-retry with back-off


@needs_sshd
def test_a_dropped_connection_reconnects_and_resumes_without_remeasuring(sshd, ssh_home, tmp_path):
    """The per-connection sshd process is killed while a 12-model bench runs; the device reconnects, stops the
    orphan, and runs the command again, which resumes from its --jsonl file."""
    trust(ssh_home, sshd)
    model = tiny_onnx(tmp_path / "m.onnx", channels=16)
    names = [f"m{i}.onnx" for i in range(12)]
    with open_device(sshd.spec(root=str(tmp_path / "b")), workdir="drop") as dev:
        for n in names:
            dev.put(str(model), f"a/{n}")
        seen = []
        killed = threading.Event()

        def on_line(line):
            seen.append(line)
            if line.startswith("[3/") and not killed.is_set():
                killed.set()
                for pid in sshd.session_pids():
                    os.kill(pid, 9)

        res = dev.run_device(["bench", *[f"a/{n}" for n in names], "--iters", "3000", "--warmup", "5",
                              "--jsonl", "r.jsonl", "--json"], on_stderr_line=on_line)
        assert killed.is_set()
        dev.get("r.jsonl", str(tmp_path / "r.jsonl"))
    assert [r["model"] for r in json.loads(res.stdout)["results"]] == names
    lines = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines() if x.strip()]
    assert sorted(r["model"] for r in lines) == sorted(names)  # each model measured once


@needs_sshd
def test_a_key_passphrase_never_reaches_a_log_or_an_error(sshd, ssh_home, monkeypatch, caplog):
    os.remove(ssh_home / ".ssh" / "id_ed25519")
    locked = ssh_home / ".ssh" / "id_ed25519"
    locked.write_bytes(sshd.passphrase_key.read_bytes())
    os.chmod(locked, 0o600)
    trust(ssh_home, sshd)
    caplog.set_level(logging.DEBUG)  # paramiko's transport and our own loggers
    monkeypatch.setenv("EDGESHRINK_SSH_PASSPHRASE", sshd.passphrase)
    with SshConnection("127.0.0.1", port=sshd.port) as c:
        assert c.run(["echo", "ok"]).stdout == "ok\n"
    monkeypatch.setenv("EDGESHRINK_SSH_PASSPHRASE", "wrong-" + sshd.passphrase)
    with pytest.raises(DeviceError) as e:
        SshConnection("127.0.0.1", port=sshd.port).connect()
    assert "EDGESHRINK_SSH_PASSPHRASE" in str(e.value)
    assert sshd.passphrase not in str(e.value)
    assert caplog.records and sshd.passphrase not in caplog.text


@needs_sshd
def test_host_bench_over_ssh_from_the_command_line(sshd, ssh_home, tmp_path, host_cli):
    a, b = tiny_onnx(tmp_path / "a.onnx", 4), tiny_onnx(tmp_path / "b.onnx", 32)
    spec = sshd.spec(root=str(tmp_path / "board"))
    one_line_error(host_cli("bench", str(a), str(b), "--device", spec, "--iters", "50", "--rounds", "2", "--json"),
                   "unknown host")
    r = host_cli("bench", str(a), str(b), "--device", spec, "--iters", "50", "--rounds", "2", "--trust-new-host",
                 "--out", str(tmp_path / "res"), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["device"]["spec"] == spec and len(doc["models"][str(a)]["round_medians_ms"]) == 2
    for m in doc["models"].values():  # each model's latency is the median of its round medians
        assert m["median_ms"] in m["round_medians_ms"] and m["latency_ms"]["n"] == 50
        assert 0 < m["min_ms"] <= min(m["latency_ms"]["min"], *m["round_medians_ms"])  # the fastest of both rounds
    assert json.loads((tmp_path / "res" / "results.json").read_text())["models"].keys() == doc["models"].keys()
