"""Artifacts and manifests: artifact.json, the TensorRT int8 calibration cache, parallel manifest builds that
skip what is built and report what failed."""

import json
import struct

import numpy as np
import pytest

from edgeshrink.host.export.artifact import export_artifact, load_manifest
from edgeshrink.host.export.tensorrt import CACHE_HEADER, calibration_cache, read_calibration_cache
from edgeshrink.host.errors import UserError
import importlib.util

from tests.conftest import one_line_error, run_cli
from tests.device.test_cli import tiny_onnx


@pytest.mark.slow
def test_onnx_artifact_json_and_dynamic_batch(tmp_path, untrained_ckpt):
    doc = export_artifact({"checkpoint": str(untrained_ckpt), "format": "onnx", "precision": "fp32",
                           "input": "1x3x32x32", "out": str(tmp_path / "a"), "dynamic_batch": True})
    meta = json.loads((tmp_path / "a" / "artifact.json").read_text())
    for k in ("format", "precision", "input_shape", "sha256", "source_checkpoint", "tool_versions", "check"):
        assert k in meta
    assert meta["check"]["max_abs_diff"] <= 1e-4 and meta["export"]["opset"] >= 17 and meta["export"]["slim"]
    import onnxruntime as ort

    s = ort.InferenceSession(str(tmp_path / "a" / "model.onnx"))
    assert not isinstance(s.get_inputs()[0].shape[0], int)  # a free batch axis
    assert s.run(None, {"input": np.zeros((5, 3, 32, 32), np.float32)})[0].shape == (5, 10)
    assert doc["status"] == "built"


def test_trt_int8_ships_onnx_and_a_calibration_cache(tmp_path, untrained_ckpt):
    doc = export_artifact({"checkpoint": str(untrained_ckpt), "format": "trt", "precision": "int8",
                           "input": "1x3x32x32", "out": str(tmp_path / "t"), "calib_samples": 16})
    assert set(doc["files"]) == {"model.onnx", "calib.cache"}
    assert "--backend tensorrt --precision int8 --calib-cache calib.cache" in doc["export"]["device_build"]
    lines = (tmp_path / "t" / "calib.cache").read_text().splitlines()
    assert lines[0] == CACHE_HEADER and len(lines) > 20


def test_calibration_cache_scales_are_max_abs_over_127(tmp_path):
    model = tiny_onnx(tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((1, 3, 8, 8)).astype(np.float32) * 3 for _ in range(5)]
    info = calibration_cache(str(model), batches, str(tmp_path / "c.cache"))
    scales = read_calibration_cache(str(tmp_path / "c.cache"))
    assert info["samples"] == 5 and set(scales) >= {"x", "c", "y"}
    assert scales["x"] == pytest.approx(max(float(np.abs(b).max()) for b in batches) / 127, rel=1e-6)
    line = [ln for ln in (tmp_path / "c.cache").read_text().splitlines() if ln.startswith("x: ")][0]
    assert struct.unpack(">f", bytes.fromhex(line[3:]))[0] == pytest.approx(scales["x"])


def test_bad_combinations_and_inputs_are_user_errors(tmp_path, host_cli, untrained_ckpt):
    with pytest.raises(UserError, match="ONNX artifacts are fp32"):
        export_artifact({"checkpoint": str(untrained_ckpt), "format": "onnx", "precision": "int8", "input": "1x3x32x32",
                         "out": str(tmp_path / "x")})
    with pytest.raises(UserError, match="checkpoint not found"):
        export_artifact({"checkpoint": str(tmp_path / "nope.pt"), "format": "onnx", "precision": "fp32",
                         "input": "1x3x32x32", "out": str(tmp_path / "x")})
    (tmp_path / "bad.yaml").write_text("artifacts: [{checkpoint: a.pt, formats: [coreml]}]\n")
    with pytest.raises(UserError, match="unknown format 'coreml'"):
        load_manifest(str(tmp_path / "bad.yaml"))
    one_line_error(host_cli("export", "--checkpoint", str(untrained_ckpt), "--format", "onnx", "--precision", "fp16", "-o",
                            str(tmp_path / "y")), "ONNX artifacts are fp32")


def test_a_missing_tflite_extra_names_it(tmp_path, untrained_ckpt):
    code = ("import sys; sys.modules['litert_torch'] = None\n"
            "from edgeshrink.host.cli import main\n"
            f"sys.exit(main(['export', '--checkpoint', {str(untrained_ckpt)!r}, '--format', 'tflite', '-o', {str(tmp_path / 'z')!r}]))")
    r = run_cli("-c", code)
    assert r.returncode == 2 and "[tflite] extra" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("litert_torch") is None, reason="the [tflite] extra is not installed")
def test_a_manifest_of_5_builds_with_2_jobs_and_a_second_run_builds_nothing(tmp_path, host_cli, untrained_ckpt,
                                                                           pruned_ckpt):
    """Every format in one plan (each precision's conversion has its own test in test_tflite.py and above: TFLite int8,
    the slowest conversion, is left to test_tflite.py); ONNX int8 does not exist and is left out of the plan's
    combinations."""
    plan = tmp_path / "plan.yaml"
    items = (f"  - {{checkpoint: {untrained_ckpt}, name: base, formats: [onnx, tflite], precisions: [fp32]}}\n"
             f"  - {{checkpoint: {pruned_ckpt}, name: pruned, formats: [onnx, trt], precisions: [fp32, int8]}}\n")
    plan.write_text(f"out: arts\ninput: 1x3x32x32\ndataset: digits\ncalib_samples: 32\nartifacts:\n{items}"
                    f"  - {{checkpoint: {tmp_path / 'missing.pt'}, name: broken, formats: [onnx]}}\n")
    r = host_cli("export", "--manifest", str(plan), "--jobs", "2", "--json")
    assert r.returncode == 1, r.stderr  # one artifact failed; the other 5 were built
    doc = json.loads(r.stdout)
    assert doc["counts"] == {"built": 5, "skipped": 0, "failed": 1}
    failed = [a for a in doc["artifacts"] if a["status"] == "failed"]
    assert failed[0]["id"] == "broken_onnx_fp32" and "checkpoint not found" in failed[0]["error"]
    assert json.loads((tmp_path / "arts" / "manifest.json").read_text())["counts"]["built"] == 5
    assert {a["id"] for a in doc["artifacts"]} == {"base_onnx_fp32", "base_tflite_fp32",
                                                   "pruned_onnx_fp32", "pruned_trt_fp32", "pruned_trt_int8",
                                                   "broken_onnx_fp32"}
    for a in doc["artifacts"]:
        if a["status"] == "built":
            assert (tmp_path / "arts" / a["id"] / "artifact.json").exists()
    r = host_cli("export", "--manifest", str(plan), "--jobs", "2", "--json")
    assert json.loads(r.stdout)["counts"] == {"built": 0, "skipped": 5, "failed": 1}
    # sharding splits the plan without overlap
    r1 = json.loads(host_cli("export", "--manifest", str(plan), "--shard", "1/2", "--json").stdout)
    r2 = json.loads(host_cli("export", "--manifest", str(plan), "--shard", "2/2", "--json").stdout)
    ids1, ids2 = {a["id"] for a in r1["artifacts"]}, {a["id"] for a in r2["artifacts"]}
    assert not ids1 & ids2 and len(ids1 | ids2) == 6
