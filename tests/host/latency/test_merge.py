"""``host table merge``: repeated runs by median with MAD outliers (an injected throttled run), shards, smoothing,
and refusals."""

import json

import numpy as np
import pytest

from host.errors import TableError
from host.latency.merge import merge_tables
from host.latency.table import load_table
from tests.conftest import run_cli


def variant(small_table, path, factor=1.0, noise=0.01, seed=0, **changes):
    d = json.loads(small_table.read_text())
    rng = np.random.default_rng(seed)
    for e in d["entries"]:
        e["latency_ms"]["median"] *= factor * (1 + noise * rng.standard_normal())
    d.update(changes)
    path.write_text(json.dumps(d))
    return str(path)


def test_a_throttled_run_and_a_stray_entry_are_dropped_and_recorded(tmp_path, small_table):
    runs = [variant(small_table, tmp_path / f"r{i}.json", seed=i) for i in range(3)]
    runs.append(variant(small_table, tmp_path / "hot.json", factor=1.3, seed=9))  # a throttled run
    d = json.loads(open(runs[1]).read())
    d["entries"][5]["latency_ms"]["median"] *= 5  # one disturbed measurement
    open(runs[1], "w").write(json.dumps(d))
    out = tmp_path / "m.json"
    r = run_cli("-m", "host.cli", "table", "merge", *runs, "-o", str(out))
    assert r.returncode == 0, r.stderr
    m = load_table(str(out))
    merge = m.build["merge"]
    assert [x["table"] for x in merge["runs_dropped"]] == [runs[3]]
    assert merge["runs_dropped"][0]["typical_deviation"] == pytest.approx(0.3, abs=0.03)
    assert any(x["table"] == runs[1] for x in merge["entries_dropped_detail"])
    base = {e.key: e.latency_ms["median"] for e in load_table(str(small_table)).entries}
    ratios = np.array([e.latency_ms["median"] / base[e.key] for e in m.entries])
    assert np.all(np.abs(ratios - 1) < 0.05)  # the median of the good runs, not pulled by the hot one
    assert [x["file"] for x in m.derived_from] == runs and m.smoothing is None


def test_shards_combine_and_smoothing_is_recorded(tmp_path, small_table):
    d = json.loads(small_table.read_text())
    a, b = dict(d), dict(d)
    a["entries"], b["entries"] = d["entries"][::2], d["entries"][1::2]
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    m = merge_tables([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert len(m.entries) == len(d["entries"])
    noisy = [variant(small_table, tmp_path / f"n{i}.json", noise=0.08, seed=i) for i in range(3)]
    g = merge_tables(noisy, smooth="gaussian", sigma=1.0)
    mono = merge_tables(noisy, smooth="monotone")
    assert g.smoothing == {"method": "gaussian", "sigma_grid_steps": 1.0} and mono.smoothing["method"] == "monotone"
    # monotone: within a family, latency never decreases as output channels grow
    fam = {}
    for e in mono.entries:
        k = e.key
        fam.setdefault((k.op, k.in_hw, k.kernel, k.stride, k.fused, k.in_channels), []).append(
            (k.out_channels, e.latency_ms["median"]))
    for rows in fam.values():
        ys = [y for _, y in sorted(rows)]
        assert all(b >= a - 1e-12 for a, b in zip(ys, ys[1:]))


def test_incompatible_tables_are_refused(tmp_path, small_table):
    a = variant(small_table, tmp_path / "a.json")
    b = variant(small_table, tmp_path / "b.json", backend="litert")
    with pytest.raises(TableError, match="backend differs"):
        merge_tables([a, b])
    c = variant(small_table, tmp_path / "c.json", input_shape=[1, 3, 64, 64])
    r = run_cli("-m", "host.cli", "table", "merge", a, c, "-o", str(tmp_path / "m.json"))
    assert r.returncode == 2 and "input shape differs" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    with pytest.raises(TableError, match="two or more"):
        merge_tables([a])
