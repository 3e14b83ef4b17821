"""The dynamic runner (device bench MODEL --inputs X.npz): early exits and gated blocks run input by input in
ONNX Runtime, on hand-made staged models whose decisions are known for each input."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeshrink.device.dynamic import DynamicError, bench_dynamic, load_manifest
from tests.conftest import run_cli
from tests.device.test_cli import tiny_onnx


def _model(path, nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
                          initializer=[numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path.name


def _manifest(folder, steps):
    p = folder / "net.json"
    p.write_text(json.dumps({"schema": "edgeshrink.staged_model", "schema_version": 1, "steps": steps}))
    return str(p)


def _early_exit(folder, q):
    """Stage 0 passes x on and exits with logits x itself (confidence max softmax(x)); stage 1's logits are
    x * (-1, 1, 1), so an input that goes on is classified otherwise than at the exit."""
    s0 = _model(folder / "s0.onnx", [helper.make_node("Identity", ["x"], ["feat"]),
                                     helper.make_node("Identity", ["x"], ["logits"])],
                [("x", [1, 3])], [("feat", [1, 3]), ("logits", [1, 3])])
    s1 = _model(folder / "s1.onnx", [helper.make_node("Mul", ["h", "w"], ["logits"])], [("h", [1, 3])],
                [("logits", [1, 3])], [("w", [[-1, 1, 1]])])
    return _manifest(folder, [
        {"kind": "stage", "name": "exit1", "onnx": s0, "features": "feat", "exit": {"logits": "logits", "threshold": q}},
        {"kind": "stage", "name": "final", "onnx": s1, "exit": {"logits": "logits"}}])


def _inputs(folder, x, y=None):
    p = folder / "inputs.npz"
    np.savez(p, x=np.asarray(x, np.float32), **({} if y is None else {"y": np.asarray(y, np.int64)}))
    return str(p)


def test_early_exit_leaves_at_the_first_confident_classifier(tmp_path):
    # max softmax: [5, 0, 0] 0.987, [0, 4, 0] 0.964, [1, 0, 0] 0.576, [0, 0, 0] 0.333
    x = [[5, 0, 0], [0, 4, 0], [1, 0, 0], [0, 0, 0]]
    inp = _inputs(tmp_path, x, y=[0, 1, 1, 2])
    r = bench_dynamic(_early_exit(tmp_path, 0.9), inp, iters=2, warmup=1)
    assert r["per_input"]["exit"] == ["exit1", "exit1", "final", "final"]
    # at the exit argmax(x); at the end argmax(x * (-1, 1, 1)): [-1, 0, 0] -> 1, [0, 0, 0] -> 0 (the first)
    assert r["per_input"]["pred"] == [0, 1, 1, 0]
    assert r["exit_histogram"] == {"exit1": 2, "final": 2}
    assert r["top1"] == 0.75 and r["exit_top1"] == {"exit1": 1.0, "final": 0.5}
    assert r["latency_ms"]["n"] == r["worst_case_ms"]["n"] == 4 and r["block_rates"] == {}
    assert r["latency_ms"]["mean"] > 0 and r["worst_case_ms"]["max"] >= r["worst_case_ms"]["median"]
    # q = 1 lets nobody out early; q = 0 everybody
    assert bench_dynamic(_early_exit(tmp_path, 1.0), inp, iters=1, warmup=0)["exit_histogram"] == {"exit1": 0,
                                                                                                  "final": 4}
    assert bench_dynamic(_early_exit(tmp_path, 0.0), inp, iters=1, warmup=0)["exit_histogram"] == {"exit1": 4,
                                                                                                  "final": 0}


def _gated(folder, recurrent=False):
    """Two gated blocks, each h -> h * (-1, 1, 1) when it runs, then logits = h. The feed-forward gate runs a
    block when x[0] > 0 (sigmoid(x[0]) >= 0.5); the recurrent gate ignores h and counts calls in its state:
    sigmoid(state - 0.5) is off at its first call (state 0) and on at its second (state 1)."""
    block = _model(folder / "block.onnx", [helper.make_node("Mul", ["h", "w"], ["out"])], [("h", [1, 3])],
                   [("out", [1, 3])], [("w", [[-1, 1, 1]])])
    if recurrent:
        gate = _model(folder / "gate.onnx", [
            helper.make_node("Sub", ["state", "half"], ["z"]), helper.make_node("Sigmoid", ["z"], ["p"]),
            helper.make_node("Add", ["state", "one"], ["state_out"])],
            [("h", [1, 3]), ("state", [1, 1])], [("p", [1, 1]), ("state_out", [1, 1])],
            [("half", [[0.5]]), ("one", [[1.0]])])
    else:
        gate = _model(folder / "gate.onnx", [helper.make_node("MatMul", ["h", "w"], ["z"]),
                                             helper.make_node("Sigmoid", ["z"], ["p"])],
                      [("h", [1, 3])], [("p", [1, 1])], [("w", [[1], [0], [0]])])
    head = _model(folder / "head.onnx", [helper.make_node("Identity", ["h"], ["logits"])], [("h", [1, 3])],
                  [("logits", [1, 3])])
    step = {"kind": "gated", "gate": gate, "block": block, "features": "out", "decision": "p"}
    return _manifest(folder, [{**step, "name": "block0"}, {**step, "name": "block1"},
                              {"kind": "stage", "name": "head", "onnx": head, "exit": {"logits": "logits"}}])


def test_gated_blocks_run_where_their_gate_says_and_the_worst_case_runs_them_all(tmp_path):
    # [2, 1, 0]: gate 0 on (x0 = 2 > 0) -> [-2, 1, 0]; gate 1 off (x0 < 0) -> pred 1
    # [-1, 0, 3]: gate 0 off, gate 1 off -> pred 2;  [1, 5, 0]: on -> [-1, 5, 0], off -> pred 1
    x = [[2, 1, 0], [-1, 0, 3], [1, 5, 0]]
    r = bench_dynamic(_gated(tmp_path), _inputs(tmp_path, x, y=[1, 2, 0]), iters=2, warmup=1)
    assert r["per_input"]["executed"] == ["10", "00", "10"]
    assert r["per_input"]["pred"] == [1, 2, 1]
    assert r["block_rates"] == {"block0": pytest.approx(2 / 3), "block1": 0.0}
    assert r["exit_histogram"] == {"head": 3} and r["top1"] == pytest.approx(2 / 3)


def test_a_recurrent_gate_carries_its_state_from_gate_to_gate(tmp_path):
    # whatever the input: the first gate call sees state 0 (off), the second state 1 (on)
    x = [[2, 1, 0], [-1, 0, 3]]
    r = bench_dynamic(_gated(tmp_path, recurrent=True), _inputs(tmp_path, x), iters=1, warmup=1)
    assert r["per_input"]["executed"] == ["01", "01"]  # the state starts again at zeros for every input
    assert r["per_input"]["pred"] == [1, 2] and r["block_rates"] == {"block0": 0.0, "block1": 1.0}


def test_load_manifest_refuses_what_it_cannot_run(tmp_path):
    good = json.loads(open(_early_exit(tmp_path, 0.5)).read())

    def bad(edit, needle):
        doc = json.loads(json.dumps(good))
        edit(doc)
        p = tmp_path / "bad.json"
        p.write_text(json.dumps(doc))
        with pytest.raises(DynamicError, match=needle):
            load_manifest(str(p))

    bad(lambda d: d.update(schema="other"), "not a staged model")
    bad(lambda d: d["steps"][0].update(onnx="../s0.onnx"), "inside the manifest's folder")
    bad(lambda d: d["steps"][0].update(onnx="missing.onnx"), "missing.onnx not found")
    bad(lambda d: d["steps"][0]["exit"].update(threshold=1.5), r"threshold must be a number in \[0, 1\]")
    bad(lambda d: d["steps"][1].pop("exit"), "the last step must have an exit")
    bad(lambda d: d["steps"][0].update(kind="loop"), "kind must be 'stage' or 'gated'")
    bad(lambda d: d.update(steps=[]), "steps must be a list of 1")


def test_a_plain_model_runs_input_by_input_from_the_command_line(tmp_path):
    model = tiny_onnx(tmp_path / "m.onnx")
    inp = _inputs(tmp_path, np.random.default_rng(0).standard_normal((5, 3, 8, 8)))
    r = run_cli("-m", "edgeshrink.device", "bench", str(model), "--inputs", inp, "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)["results"][0]
    assert rec["inputs"] == 5 and rec["iters"] == 3 and rec["latency_ms"]["n"] == 5
    assert rec["exit_histogram"] == {"output": 5} and rec["top1"] is None
    text = run_cli("-m", "edgeshrink.device", "bench", str(model), "--inputs", inp, "--limit", "2")
    assert text.returncode == 0 and "2 inputs one at a time" in text.stdout


@pytest.mark.parametrize("make,needle", [
    (lambda p: np.savez(p, x=np.zeros((4, 3, 9, 9), np.float32)), "the model takes (1, 3, 8, 8)"),
    (lambda p: np.savez(p, y=np.zeros(4, np.int64)), "no array 'x'"),
    (lambda p: np.savez(p, x=np.array([{"a": 1}], dtype=object)), "cannot read input set"),
    (lambda p: np.savez(p, x=np.zeros((2, 3, 8, 8), np.float32), y=np.zeros(3, np.int64)), "y must be 2 integer"),
    (lambda p: p.write_bytes(b"not a zip"), "cannot read input set"),
])
def test_bad_input_sets_are_one_line_and_exit_2(tmp_path, make, needle):
    model = tiny_onnx(tmp_path / "m.onnx")
    p = tmp_path / "in.npz"
    make(p)
    r = run_cli("-m", "edgeshrink.device", "bench", str(model), "--inputs", str(p))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("device: error: ") and needle in lines[0]
