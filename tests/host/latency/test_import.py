"""Importing the earlier NetAdapt work's Raspberry Pi perf table and its pruned architecture (real files)."""

import json
import pickle

import numpy as np
import pytest

from edgeshrink.host.errors import TableError
from edgeshrink.host.latency.importers import import_netadapt_table, read_netadapt_channels, read_netadapt_table
from tests.conftest import SHARED_DATA, one_line_error

NA = SHARED_DATA / "netadapt"
TABLE = NA / "res-40-2-tf-lite-rasberry-pi.pickle"
ARCH = NA / "res-40-2-pruned.nbr_channels.pickle"


@pytest.mark.slow
def test_imported_table_reproduces_the_original_sums(tmp_path, host_cli):
    """That work predicted 0.35299 s for the unpruned WRN-40-2 and 0.28192 s for its pruned one (sum of layers)."""
    ref = json.loads((NA / "res-40-2-pruned.nbr_channels.structure.json").read_text())
    out = tmp_path / "t.json"
    r = host_cli("table", "import", str(TABLE), "--input-format", "netadapt-pickle", "--model", "wrn40_2", "--out-table", str(out))
    assert r.returncode == 0, r.stderr
    t = json.loads(out.read_text())
    assert t["device"]["board"] == "Raspberry Pi 3B" and t["calibration"]["overhead_ms"] == 0.0
    assert t["derived_from"][0]["format"] == "netadapt-pickle" and t["smoothing"]["sigma"] == 3
    assert {e["source"] for e in t["entries"]} == {"imported"}
    r = host_cli("table", "predict", str(out), "--model", "wrn40_2", "--json")
    assert json.loads(r.stdout)["latency_ms_predicted"] == pytest.approx(ref["predicted_unpruned_s"] * 1000, rel=1e-9)
    r = host_cli("table", "predict", str(out), "--model", "wrn40_2", "--channels", str(ARCH), "--channels-format",
                 "netadapt-pickle", "--json")
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


def test_bad_pickles_are_refused_with_one_line(tmp_path, host_cli):
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
    one_line_error(host_cli("table", "import", str(tmp_path / "cut.pickle"), "--out-table", str(tmp_path / "o.json")), "cut.pickle")
    with pytest.raises(TableError, match="unknown layer name"):
        read_netadapt_channels(_dump(tmp_path / "a.pickle", {"Conv_0": 16, "Block_9": 3}))
    with pytest.raises(TableError, match="describe WRN-40-2"):
        import_netadapt_table(str(TABLE), "resnet20")


@pytest.mark.slow
def test_prune_with_an_imported_table_predicts_without_a_device(tmp_path, host_cli, untrained_ckpt):
    """`host prune --table T.json` with a table imported from a board that is not here (a per-channel table of
    the kind `host table import` writes, with entries from a formula for resnet20): NetAdapt runs on its predictions,
    and the report says nothing was measured."""
    from edgeshrink.host.latency.table import load_table
    from tests.tables import predicted_by_formula, synthetic_table

    t = synthetic_table("resnet20", granularity=1, spec="imported", scale={"median": 1.0})
    for e in t.entries:
        e.source = "imported"
    t.device.update(board="Raspberry Pi 3B", runtime="TensorFlow Lite 1.13.1 benchmark_model")
    t.statistic = "median"
    t.calibration["overhead_ms"] = t.calibration["overhead_latency_ms"]["median"]
    table = tmp_path / "pi.json"
    t.save(str(table))
    assert len(load_table(str(table)).entries) == 15936  # every resnet20 configuration on the per-channel grid
    out = tmp_path / "pruned"
    r = host_cli("prune", "--table", str(table), "--model", "resnet20", "--checkpoint", str(untrained_ckpt),
                 "--dataset", "digits", "--budget", "0.95", "--short-term-steps", "1", "--long-term-epochs", "0",
                 "--init-reduction", "0.06", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["confirmed_on_device"] is False and rep["pruned"]["latency_ms_measured"] is None
    assert rep["ratios"]["latency_measured"] is None and rep["device"]["spec"] is None
    assert rep["pruned"]["latency_ms_predicted"] <= rep["budget_ms"] + 1e-9 < rep["baseline"]["latency_ms_predicted"]
    from edgeshrink import models
    from edgeshrink.host.latency.space import build_space

    space = build_space(models.create_model("resnet20"), (1, 3, 32, 32))
    assert rep["baseline"]["latency_ms_predicted"] == pytest.approx(
        predicted_by_formula("resnet20", space.full_widths), rel=1e-12)  # the table's own sum
    assert rep["table_device"]["board"] == "Raspberry Pi 3B"
    assert (out / "model.onnx").exists() and (out / "model.pt").exists()
    assert "nothing was measured" in r.stderr
    # the commands that exist to measure refuse the same table at once, one line, nothing left behind
    r = host_cli("compare", "--table", str(table), "--checkpoint", str(untrained_ckpt), "--methods", "uniform",
                 "--budgets", "0.9", "--out", str(tmp_path / "cmp"))
    one_line_error(r, "pi.json was imported (Raspberry Pi 3B is not here): give --device")
    assert not (tmp_path / "cmp").exists()
