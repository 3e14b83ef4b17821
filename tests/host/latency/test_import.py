"""Importing the earlier NetAdapt work's Raspberry Pi perf table and its pruned architecture (real files)."""

import json
import pickle

import numpy as np
import pytest

from edgeshrink.host.errors import TableError
from edgeshrink.host.latency.importers import import_netadapt_table, read_netadapt_channels, read_netadapt_table
from tests.conftest import SHARED_DATA, run_cli

NA = SHARED_DATA / "netadapt"
TABLE = NA / "res-40-2-tf-lite-rasberry-pi.pickle"
ARCH = NA / "res-40-2-pruned.nbr_channels.pickle"


def test_imported_table_reproduces_the_original_sums(tmp_path):
    """That work predicted 0.35299 s for the unpruned WRN-40-2 and 0.28192 s for its pruned one (sum of layers)."""
    ref = json.loads((NA / "res-40-2-pruned.nbr_channels.structure.json").read_text())
    out = tmp_path / "t.json"
    r = run_cli("-m", "edgeshrink.host.cli", "table", "import", str(TABLE), "--format", "netadapt-pickle", "--model", "wrn40_2",
                "-o", str(out))
    assert r.returncode == 0, r.stderr
    t = json.loads(out.read_text())
    assert t["device"]["board"] == "Raspberry Pi 3B" and t["calibration"]["overhead_ms"] == 0.0
    assert t["derived_from"][0]["format"] == "netadapt-pickle" and t["smoothing"]["sigma"] == 3
    assert {e["source"] for e in t["entries"]} == {"imported"}
    r = run_cli("-m", "edgeshrink.host.cli", "table", "predict", str(out), "--model", "wrn40_2", "--json")
    assert json.loads(r.stdout)["latency_ms_predicted"] == pytest.approx(ref["predicted_unpruned_s"] * 1000, rel=1e-9)
    r = run_cli("-m", "edgeshrink.host.cli", "table", "predict", str(out), "--model", "wrn40_2", "--channels", str(ARCH),
                "--channels-format", "netadapt-pickle", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["latency_ms_predicted"] == pytest.approx(ref["predicted_latency_s_from_rpi_table"] * 1000,
                                                                 rel=1e-9)


def test_the_pruned_architecture_maps_to_our_channel_spec():
    spec = read_netadapt_channels(str(ARCH))
    assert spec["conv1"] == 16 and spec["layer1.0.shortcut"] == 25 and spec["layer3.5.conv2"] == 97
    assert spec["layer2.3.conv1"] == 64 and len(spec) == 1 + 3 + 36


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return str(path)


def test_bad_pickles_are_refused_with_one_line(tmp_path):
    good = read_netadapt_table(str(TABLE))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(TableError, match="not allowed"):
        read_netadapt_table(_dump(tmp_path / "evil.pickle", {"Conv_0": Evil()}))
    with pytest.raises(TableError, match="unexpected keys"):
        read_netadapt_table(_dump(tmp_path / "k.pickle", {**good, "Extra": np.zeros((2, 2))}))
    with pytest.raises(TableError, match="No_Stride_3 must be a 128x128 array"):
        read_netadapt_table(_dump(tmp_path / "s.pickle", {**good, "No_Stride_3": np.zeros((64, 64))}))
    with pytest.raises(TableError, match="negative or non-finite"):
        read_netadapt_table(_dump(tmp_path / "n.pickle", {**good, "FC": -good["FC"]}))
    (tmp_path / "cut.pickle").write_bytes(TABLE.read_bytes()[:1000])
    r = run_cli("-m", "edgeshrink.host.cli", "table", "import", str(tmp_path / "cut.pickle"), "-o", str(tmp_path / "o.json"))
    assert r.returncode == 2 and "cut.pickle" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    with pytest.raises(TableError, match="unknown layer name"):
        read_netadapt_channels(_dump(tmp_path / "a.pickle", {"Conv_0": 16, "Block_9": 3}))
    with pytest.raises(TableError, match="describe WRN-40-2"):
        import_netadapt_table(str(TABLE), "resnet20")


def test_prune_with_the_imported_table_predicts_without_a_device(tmp_path):
    """`host prune --perf-table T.json --model wrn40_2` with the imported Raspberry Pi table: NetAdapt runs on its
    predictions, and the report says nothing was measured (the Pi is not here)."""
    from edgeshrink import models
    from edgeshrink.host.checkpoint import save_checkpoint

    table = tmp_path / "pi.json"
    assert run_cli("-m", "edgeshrink.host.cli", "table", "import", str(TABLE), "--model", "wrn40_2", "-o", str(table)).returncode == 0
    ckpt = tmp_path / "wrn.pt"
    save_checkpoint(str(ckpt), models.create_model("wrn40_2", 10), 10, dataset="digits", input_shape=[1, 3, 32, 32])
    out = tmp_path / "pruned"
    r = run_cli("-m", "edgeshrink.host.cli", "prune", "--perf-table", str(table), "--model", "wrn40_2", "--checkpoint", str(ckpt),
                "--dataset", "digits", "--budget", "0.97", "--short-term-steps", "1", "--long-term-epochs", "0",
                "--init-reduction", "0.03", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["confirmed_on_device"] is False and rep["pruned"]["latency_ms_measured"] is None
    assert rep["ratios"]["latency_measured"] is None
    assert rep["pruned"]["latency_ms_predicted"] <= rep["budget_ms"] + 1e-9 < rep["baseline"]["latency_ms_predicted"]
    assert rep["baseline"]["latency_ms_predicted"] == pytest.approx(352.986, abs=0.01)  # the Pi table's own sum
    assert rep["table_device"]["board"] == "Raspberry Pi 3B"
    assert (out / "model.onnx").exists() and (out / "model.pt").exists()
    assert "nothing was measured" in r.stderr
