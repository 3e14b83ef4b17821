"""The device program: torch-free, runs from a copied folder, real ONNX Runtime benchmarks."""

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import ROOT, run_cli


def tiny_onnx(path, channels=4):
    """A 3x3 conv + ReLU on (1, 3, 8, 8): a real model for ONNX Runtime."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((channels, 3, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 8, 8])], initializer=[w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_importing_device_and_its_help_load_no_torch_host_or_paramiko():
    mods = ["", ".__main__", ".bench", ".runners.ort", ".sysinfo", ".thermal", ".runners.litert", ".runners.tensorrt",
            ".runners.trtexec", ".runners.benchmark_model", ".power.tegrastats", ".power.rpi", ".power.hwmon",
            ".power.meters", ".power.energy", ".provenance"]
    code = ("import sys, importlib\n"
            f"for m in {mods!r}:\n    importlib.import_module('edgeshrink.device' + m)\n"
            "import edgeshrink.device.runners as r, edgeshrink.device.__main__ as dm\n"
            "r.backends()\n"
            "try:\n    dm.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'paramiko', 'host', 'models')"
            " or m.startswith(('edgeshrink.host', 'edgeshrink.models'))]\n"
            "print('LOADED', bad)")
    r = run_cli("-c", code)
    assert r.returncode == 0, r.stderr
    assert "LOADED []" in r.stdout


def test_bench_json_has_statistics_and_device_metadata(tmp_path):
    model = tiny_onnx(tmp_path / "tiny.onnx")
    r = run_cli("-m", "edgeshrink.device", "bench", str(model), "--backend", "ort", "--threads", "1", "--warmup", "5",
                "--iters", "40", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "edgeshrink.bench" and doc["schema_version"] == 1
    rec = doc["results"][0]
    lat = rec["latency_ms"]
    assert set(lat) == {"n", "mean", "median", "p90", "p95", "p99", "min", "max", "std", "cv"}
    assert lat["n"] == 40
    assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert rec["warmup"] == 5 and rec["threads"] == 1 and rec["init_ms"] > 0 and rec["first_inference_ms"] > 0
    dev = doc["device"]
    for k in ("hostname", "cpu", "os", "governor", "runtime", "threads"):
        assert k in dev
    assert dev["runtime"].startswith("onnxruntime ") and dev["threads"] == 1


def test_device_runs_from_a_copied_folder(tmp_path):
    """What a board gets: the device/ folder alone, run as python3 -m device."""
    shutil.copytree(ROOT / "device", tmp_path / "device", ignore=shutil.ignore_patterns("__pycache__"))
    tiny_onnx(tmp_path / "m.onnx")
    r = run_cli("-m", "device", "bench", "m.onnx", "--iters", "10", "--warmup", "1", "--json", cwd=tmp_path,
                env={"PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["results"][0]["model"] == "m.onnx"
    assert "[1/1] m.onnx" in r.stderr


def test_jsonl_results_resume_without_remeasuring(tmp_path):
    from edgeshrink.device.bench import bench_many

    a, b = tiny_onnx(tmp_path / "a.onnx"), tiny_onnx(tmp_path / "b.onnx", channels=8)
    jsonl = tmp_path / "r.jsonl"
    first = bench_many([str(a)], jsonl=str(jsonl), iters=5, warmup=1)
    with open(jsonl, "a") as f:
        f.write('{"model": "b.onnx", "latency_')  # a line torn by a crash
    both = bench_many([str(a), str(b)], jsonl=str(jsonl), iters=5, warmup=1)
    assert both[0].pop("reused") is True and both[0] == first[0]  # a.onnx was not measured again, and it says so
    assert "reused" not in both[1]
    assert both[1]["model"] == "b.onnx" and both[1]["latency_ms"]["n"] == 5
    from edgeshrink.device.bench import done_in_jsonl

    assert set(done_in_jsonl(str(jsonl))) == {"a.onnx", "b.onnx"}  # b's record starts on its own line


@pytest.mark.parametrize("args,msg", [
    (["bench", "missing.onnx"], "model file not found: missing.onnx"),
    (["bench", "x.onnx", "--backend", "nope"], "unknown backend 'nope'"),
    (["bench", "x.onnx", "--iters", "0"], "--iters must be from 1 to"),
    (["bench"], "no model files given"),
    (["optimize", "missing.onnx", "--out", "o.onnx"], "model not found: missing.onnx"),
])
def test_bad_input_is_one_line_and_exit_2(args, msg):
    r = run_cli("-m", "edgeshrink.device", *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("device: error: ") and msg in lines[0]


def test_optimize_writes_the_runtimes_fused_graph_and_refuses_what_it_cannot_load(tmp_path):
    model = tiny_onnx(tmp_path / "m.onnx")
    out = tmp_path / "opt.onnx"
    r = run_cli("-m", "edgeshrink.device", "optimize", str(model), "--out", str(out))
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["runtime"].startswith("onnxruntime ") and rec["optimized"] == str(out)
    nodes = [n for n in onnx.load(str(out)).graph.node if n.op_type in ("Conv", "FusedConv")]
    # the ReLU is gone into the conv: the optimised graph is the runtime's, not the input
    assert len(nodes) == 1 and [a.s for a in nodes[0].attribute if a.name == "activation"] == [b"Relu"]
    assert not any(n.op_type == "Relu" for n in onnx.load(str(out)).graph.node)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    bad = run_cli("-m", "edgeshrink.device", "optimize", str(junk), "--out", str(tmp_path / "j.onnx"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "junk.onnx" in bad.stderr
    assert not list(tmp_path.glob("j.onnx*"))  # nothing half-written is left
    gone = run_cli("-m", "edgeshrink.device", "optimize", str(model), "--out", str(tmp_path / "no" / "o.onnx"))
    assert gone.returncode == 2 and "does not exist" in gone.stderr


def test_backends_lists_ort_with_its_version():
    r = run_cli("-m", "edgeshrink.device", "backends", "--json")
    assert r.returncode == 0
    info = json.loads(r.stdout)
    assert info["ort"]["available"] is True and info["ort"]["version"].startswith("onnxruntime")


def test_interleaved_bench_times_every_model_in_round_robin_bursts(tmp_path):
    a, b = tiny_onnx(tmp_path / "a.onnx", 4), tiny_onnx(tmp_path / "b.onnx", 16)
    jl = tmp_path / "r.jsonl"
    r = run_cli("-m", "edgeshrink.device", "bench", str(a), str(b), "--interleave", "4", "--iters", "10", "--warmup", "2",
                "--jsonl", str(jl), "--json")
    assert r.returncode == 0, r.stderr
    recs = json.loads(r.stdout)["results"]
    assert [x["model"] for x in recs] == ["a.onnx", "b.onnx"]
    for x in recs:
        assert x["interleaved"] and x["rounds"] == 4 and len(x["round_medians_ms"]) == 4
        assert x["latency_ms"]["n"] == 40
        assert x["latency_ms"]["min"] <= x["latency_ms"]["median"] <= x["latency_ms"]["max"]
    assert "[4/4] round 4 of 2 models" in r.stderr
    # the list is the unit of resume: a rerun reads the records back instead of measuring
    again = run_cli("-m", "edgeshrink.device", "bench", str(a), str(b), "--interleave", "4", "--iters", "10", "--jsonl", str(jl),
                    "--json")
    back = json.loads(again.stdout)["results"]
    assert all(r.pop("reused") is True for r in back) and back == recs and "round" not in again.stderr


def test_interleaved_rounds_are_shared_out_over_loadings(tmp_path):
    a, b = tiny_onnx(tmp_path / "a.onnx", 4), tiny_onnx(tmp_path / "b.onnx", 16)
    r = run_cli("-m", "edgeshrink.device", "bench", str(a), str(b), "--interleave", "5", "--loads", "2", "--iters", "6",
                "--warmup", "1", "--json")
    assert r.returncode == 0, r.stderr
    recs = json.loads(r.stdout)["results"]
    assert [x["model"] for x in recs] == ["a.onnx", "b.onnx"]
    for x in recs:
        assert x["loads"] == 2 and x["rounds"] == 5 and len(x["round_medians_ms"]) == 5
        assert len(x["load_medians_ms"]) == 2 and x["latency_ms"]["n"] == 30
        lo, hi = min(x["round_medians_ms"]), max(x["round_medians_ms"])
        assert all(lo <= m <= hi for m in x["load_medians_ms"])  # a loading's median lies within its rounds'
    assert "[5/5] round 5 of 2 models" in r.stderr


@pytest.mark.parametrize("extra,msg", [(["--power", "auto"], "cannot be combined with --power"),
                                       (["--interleave", "-1"], "--interleave must be from 0 to"),
                                       (["--loads", "3"], "--loads needs --interleave ROUNDS and 1 <= L <= ROUNDS"),
                                       (["--interleave", "0", "--loads", "2"], "--loads needs --interleave")])
def test_interleave_refusals(tmp_path, extra, msg):
    a = tiny_onnx(tmp_path / "a.onnx")
    args = ["--interleave", "2"] if "--interleave" not in extra else []
    r = run_cli("-m", "edgeshrink.device", "bench", str(a), *args, *extra)
    assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_interleaved_bench_can_keep_every_timed_run(tmp_path):
    """``keep_samples``: every timed run, burst after burst, from which the record's statistics were taken."""
    import numpy as np

    from edgeshrink.device.bench import bench_interleaved

    a, b = tiny_onnx(tmp_path / "a.onnx", 4), tiny_onnx(tmp_path / "b.onnx", 16)
    recs = bench_interleaved([str(a), str(b)], rounds=4, warmup=1, iters=5, loads=2, keep_samples=True)
    for x in recs:
        s = np.array(x["samples_ms"])
        assert s.size == 20 and x["latency_ms"]["min"] == s.min() and x["latency_ms"]["median"] == np.median(s)
        assert x["round_medians_ms"] == [float(np.median(c)) for c in s.reshape(4, 5)]
        assert x["round_mins_ms"] == [float(c.min()) for c in s.reshape(4, 5)]
    assert "samples_ms" not in bench_interleaved([str(a)], rounds=1, warmup=0, iters=2)[0]
