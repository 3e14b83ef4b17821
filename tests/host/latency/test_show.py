"""``host table show``: the table's provenance and coverage, and one heatmap per layer type."""

import json

from tests.conftest import one_line_error


def test_show_summarises_and_draws_heatmaps(tmp_path, host_cli, formula_table):
    r = host_cli("table", "show", str(formula_table), "--out", str(tmp_path / "h"), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["backend"] == "ort" and doc["by_source"] == {"measured": doc["entries"]}
    assert sum(doc["layer_types"].values()) == doc["entries"]
    pngs = sorted((tmp_path / "h").glob("*.png"))
    assert len(pngs) == len(doc["heatmaps"]) >= 5 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert any("conv2d_k3_s1_8x8" in p.name for p in pngs)
    assert doc["statistic"] == "min"
    r = host_cli("table", "show", str(formula_table), "--out", str(tmp_path / "h"))
    assert r.returncode == 0 and "| min latencies |" in r.stdout
    one_line_error(host_cli("table", "show", str(tmp_path / "missing.json")), "no such latency table")
