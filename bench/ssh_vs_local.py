"""What driving the device over SSH adds, and that it does not change what is measured on the device.

Starts a real OpenSSH server on 127.0.0.1 (a board in the same machine: the same CPU measures both ways), then:

1. resnet20's ONNX export measured with ``host bench`` through ``local`` and through ``ssh://``, interleaved
   (local, ssh, local, ssh, ...), 5 rounds each: the ratio of the medians should be 1 within the machine's
   drift, because the timing loop runs on the device in both cases;
2. the wall time of a device session over SSH: the first connection (pushes device/), a second one (device/
   unchanged: not pushed);
3. a resnet20 latency table at granularity 16 built locally and over SSH (batches of 16): wall times and the
   entry-by-entry median ratio.

Writes bench/results/ssh_vs_local.json. Needs openssh-server (apt-get install openssh-server).

    python bench/ssh_vs_local.py
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgeshrink.device.provenance import utc_now

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    from edgeshrink import models
    from edgeshrink.host.bench import bench_on_device
    from edgeshrink.host.export.onnx import export_onnx
    from edgeshrink.host.io import write_json
    from edgeshrink.host.remote.ssh import SshDevice
    import importlib.util

    # the tests' real-sshd helper (tests/ is not installed): loaded from its file
    spec_ = importlib.util.spec_from_file_location("edgeshrink_tests_sshd", ROOT / "tests" / "sshd.py")
    sshd = importlib.util.module_from_spec(spec_)
    sys.modules[spec_.name] = sshd  # dataclasses look their module up there
    spec_.loader.exec_module(sshd)
    start_sshd, trust = sshd.start_sshd, sshd.trust

    tmp = Path(tempfile.mkdtemp(prefix="edgeshrink-sshbench-"))
    server = start_sshd(tmp)
    home = tmp / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(server.client_key, home / ".ssh" / "id_ed25519")
    os.chmod(home / ".ssh" / "id_ed25519", 0o600)
    trust(home, server)
    os.environ["HOME"] = str(home)
    os.environ.pop("SSH_AUTH_SOCK", None)
    spec = server.spec(root=str(tmp / "board"))
    try:
        onnx_path = str(tmp / "resnet20.onnx")
        export_onnx(models.create_model("resnet20").eval(), (1, 3, 32, 32), onnx_path)

        # 2. session set-up cost
        t0 = time.monotonic()
        with SshDevice(spec) as d:
            pushed_first = d.pushed_device
        first_s = time.monotonic() - t0
        t0 = time.monotonic()
        with SshDevice(spec) as d:
            pushed_second = d.pushed_device
        second_s = time.monotonic() - t0

        # 1. the same model measured locally and over SSH, interleaved
        local, ssh, walls = [], [], {"local": [], "ssh": []}
        for _ in range(5):
            for name, dev, sink in (("local", "local", local), ("ssh", spec, ssh)):
                t0 = time.monotonic()
                r = bench_on_device([onnx_path], device=dev, iters=1000, warmup=100, rounds=1)
                walls[name].append(time.monotonic() - t0)
                sink.append(r["models"][onnx_path]["median_ms"])
        med_local, med_ssh = statistics.median(local), statistics.median(ssh)

        # 3. a table both ways
        tables = {}
        for name, dev in (("local", "local"), ("ssh", spec)):
            out = tmp / f"t_{name}.json"
            t0 = time.monotonic()
            subprocess.run([sys.executable, "-m", "edgeshrink.host.cli", "table", "build", "--model", "resnet20", "--granularity",
                            "16", "--rounds", "1", "--batch", "16", "--device", dev, "--out-table", str(out)], check=True,
                           env=dict(os.environ), stdout=subprocess.DEVNULL)
            tables[name] = {"wall_s": round(time.monotonic() - t0, 2), "doc": json.loads(out.read_text())}
        by_key = {}
        for name in ("local", "ssh"):
            for e in tables[name]["doc"]["entries"]:
                key = json.dumps({k: v for k, v in e.items() if k not in ("latency_ms", "n", "source")}, sort_keys=True)
                by_key.setdefault(key, {})[name] = e["latency_ms"]["median"]
        ratios = [v["ssh"] / v["local"] for v in by_key.values() if len(v) == 2]
        res = {
            "created_utc": utc_now(),
            "device": {"ssh": "OpenSSH server on 127.0.0.1 (same machine)",
                       "cpu": tables["local"]["doc"]["device"]["cpu"], "runtime": tables["local"]["doc"]["device"]["runtime"]},
            "model": "resnet20 (1x3x32x32, ONNX Runtime CPU, 1 thread)",
            "bench": {"local_medians_ms": local, "ssh_medians_ms": ssh, "median_local_ms": med_local,
                      "median_ssh_ms": med_ssh, "ratio_ssh_over_local": med_ssh / med_local,
                      "wall_s_median": {k: round(statistics.median(v), 2) for k, v in walls.items()}},
            "session": {"first_connect_s": round(first_s, 2), "device_pushed_first": pushed_first,
                        "second_connect_s": round(second_s, 2), "device_pushed_second": pushed_second},
            "table_g16": {"entries": len(ratios), "local_wall_s": tables["local"]["wall_s"],
                          "ssh_wall_s": tables["ssh"]["wall_s"],
                          "median_entry_ratio_ssh_over_local": statistics.median(ratios),
                          "entry_ratio_p10_p90": [float(v) for v in
                                                  (sorted(ratios)[len(ratios) // 10], sorted(ratios)[9 * len(ratios) // 10])]},
            "target": "ratio of medians within +-5% (this VM drifts about +-3% between runs)",
        }
        res["met"] = abs(res["bench"]["ratio_ssh_over_local"] - 1) <= 0.05
        write_json(ROOT / "bench" / "results" / "ssh_vs_local.json", res)
        print(json.dumps({k: res[k] for k in ("bench", "session", "table_g16", "met")}, indent=1))
        return 0
    finally:
        server.proc.terminate()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
