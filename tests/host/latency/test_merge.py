"""``host table merge``: repeated runs by median with MAD outliers (an injected throttled run), shards, smoothing,
and refusals."""

import json

import numpy as np
import pytest

from edgeshrink.host.errors import TableError
from edgeshrink.host.latency.merge import merge_tables
from edgeshrink.host.latency.table import load_table
from tests.conftest import one_line_error


def variant(formula_table, path, factor=1.0, noise=0.01, seed=0, **changes):
    d = json.loads(formula_table.read_text())
    rng = np.random.default_rng(seed)
    for e in d["entries"]:
        e["latency_ms"][d["statistic"]] *= factor * (1 + noise * rng.standard_normal())
    d.update(changes)
    path.write_text(json.dumps(d))
    return str(path)


def test_a_throttled_run_and_a_stray_entry_are_dropped_and_recorded(tmp_path, host_cli, formula_table):
    runs = [variant(formula_table, tmp_path / f"r{i}.json", seed=i) for i in range(3)]
    runs.append(variant(formula_table, tmp_path / "hot.json", factor=1.3, seed=9))  # a throttled run
    d = json.loads(open(runs[1]).read())
    d["entries"][5]["latency_ms"][d["statistic"]] *= 5  # one disturbed measurement
    open(runs[1], "w").write(json.dumps(d))
    out = tmp_path / "m.json"
    r = host_cli("table", "merge", *runs, "--out-table", str(out))
    assert r.returncode == 0, r.stderr
    m = load_table(str(out))
    merge = m.build["merge"]
    assert [x["table"] for x in merge["runs_dropped"]] == [runs[3]]
    assert merge["runs_dropped"][0]["typical_deviation"] == pytest.approx(0.3, abs=0.03)
    assert any(x["table"] == runs[1] for x in merge["entries_dropped_detail"])
    base = {e.key: e.ms("min") for e in load_table(str(formula_table)).entries}
    ratios = np.array([e.ms(m.statistic) / base[e.key] for e in m.entries])
    assert m.statistic == "min" and "median" not in m.entries[0].latency_ms
    assert np.all(np.abs(ratios - 1) < 0.05)  # the median of the good runs, not pulled by the hot one
    assert [x["file"] for x in m.derived_from] == runs and m.smoothing is None


def test_shards_combine_and_smoothing_is_recorded(tmp_path, formula_table):
    d = json.loads(formula_table.read_text())
    a, b = dict(d), dict(d)
    a["entries"], b["entries"] = d["entries"][::2], d["entries"][1::2]
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    m = merge_tables([str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert len(m.entries) == len(d["entries"])
    noisy = [variant(formula_table, tmp_path / f"n{i}.json", noise=0.08, seed=i) for i in range(3)]
    g = merge_tables(noisy, smooth="gaussian", sigma=1.0)
    mono = merge_tables(noisy, smooth="monotone")
    assert g.smoothing == {"method": "gaussian", "sigma_grid_steps": 1.0} and mono.smoothing["method"] == "monotone"
    # monotone: within a family, latency never decreases as output channels grow
    fam = {}
    for e in mono.entries:
        k = e.key
        fam.setdefault((k.op, k.in_hw, k.kernel, k.stride, k.fused, k.in_channels), []).append(
            (k.out_channels, e.ms(mono.statistic)))
    for rows in fam.values():
        ys = [y for _, y in sorted(rows)]
        assert all(b >= a - 1e-12 for a, b in zip(ys, ys[1:]))


def test_incompatible_tables_are_refused(tmp_path, host_cli, formula_table):
    a = variant(formula_table, tmp_path / "a.json")
    b = variant(formula_table, tmp_path / "b.json", backend="litert")
    with pytest.raises(TableError, match="backend differs"):
        merge_tables([a, b])
    c = variant(formula_table, tmp_path / "c.json", input_shape=[1, 3, 64, 64])
    one_line_error(host_cli("table", "merge", a, c, "--out-table", str(tmp_path / "m.json")), "input shape differs")
    s = variant(formula_table, tmp_path / "s.json", statistic="median")
    with pytest.raises(TableError, match="latency statistic differs \\('median' vs 'min'\\)"):
        merge_tables([a, s])
    with pytest.raises(TableError, match="two or more"):
        merge_tables([a])


def _with_fit(path, model_name="resnet20", speed=1.0, archs=None, truth=None, seed=0):
    """Give the table at ``path`` a calibration fit on networks measured at ``speed`` times ``truth``."""
    from edgeshrink import models
    from edgeshrink.host.latency.fit import calibrate
    from edgeshrink.host.latency.predict import TablePredictor

    t = load_table(path)
    space = TablePredictor.for_model(t, models.create_model("resnet20"), corrected=False).space
    rng = np.random.default_rng(seed)
    nets = [{"widths": w, "measured_ms": truth(w) * speed * (1 + 0.003 * rng.standard_normal())} for w in archs]
    t.calibration["fit"] = {**calibrate(t, space, nets), "model": model_name}
    t.calibration["method"] = "overhead-once+fitted"
    t.calibration["recalibrated"] = {"speed_ratio": speed}
    t.save(path)
    return path


def test_merging_runs_refits_their_calibration_on_the_merged_entries(tmp_path, host_cli, formula_table):
    from edgeshrink import models
    from edgeshrink.host.latency.networks import calibration_archs
    from edgeshrink.host.latency.predict import TablePredictor

    base = load_table(str(formula_table))
    raw = TablePredictor.for_model(base, models.create_model("resnet20"), corrected=False)
    archs = calibration_archs(raw.space, 8, 12, seed=1)

    def truth(w):  # a device on which whole networks run 8% slower than their layers' sum
        return 1.08 * raw.predict_ms(w)

    speeds = [1.0, 1.04, 0.97, 1.3]  # the last run is throttled
    runs = [_with_fit(variant(formula_table, tmp_path / f"r{i}.json", factor=s, noise=0.005, seed=i),
                      speed=s, archs=archs, truth=truth, seed=i) for i, s in enumerate(speeds)]
    out = tmp_path / "m.json"
    r = host_cli("table", "merge", *runs, "--out-table", str(out))
    assert r.returncode == 0, r.stderr
    assert "calibration refitted on 12 resnet20 networks of 3 runs" in r.stderr + r.stdout
    m = load_table(str(out))
    cal = m.build["merge"]["calibration"]
    assert cal["refit"] and cal["tables"] == runs[:3] and cal["networks"] == 12
    assert cal["speed_ratios"] == pytest.approx([1.0, 1.04, 0.97], abs=0.01)
    assert m.calibration["method"] == "overhead-once+fitted" and "recalibrated" not in m.calibration
    # the pooled networks are each run's measurements brought to the merged entries' speed
    pooled = {json.dumps(sorted(n["widths"].items())): n["measured_ms"] for n in m.calibration["fit"]["networks"]}
    for w in archs:
        assert pooled[json.dumps(sorted(w.items()))] == pytest.approx(truth(w), rel=0.01)
    pred = TablePredictor.for_model(m, models.create_model("resnet20"))
    errs = [abs(pred.predict_ms(w) / truth(w) - 1) for w in archs]
    assert max(errs) < 0.01


def test_a_fit_that_cannot_be_refitted_is_dropped_and_entry_sources_are_kept(tmp_path, formula_table):
    from edgeshrink import models
    from edgeshrink.host.latency.networks import calibration_archs
    from edgeshrink.host.latency.predict import TablePredictor

    raw = TablePredictor.for_model(load_table(str(formula_table)), models.create_model("resnet20"), corrected=False)
    archs = calibration_archs(raw.space, 8, 6, seed=1)
    runs = []
    for i in range(2):
        p = _with_fit(variant(formula_table, tmp_path / f"r{i}.json", seed=i), model_name="wrn16_2", archs=archs,
                      truth=raw.predict_ms, seed=i)
        d = json.loads(open(p).read())
        for j, e in enumerate(d["entries"][:4]):  # entry 0 interpolated in both runs, 1-3 in one of them
            if j == 0 or j % 2 == i:
                e["source"], e["latency_ms"]["interpolation"] = "interpolated", "linear"
        open(p, "w").write(json.dumps(d))
        runs.append(p)
    m = merge_tables(runs)
    cal = m.build["merge"]["calibration"]
    assert cal["refit"] is False and "calibration of wrn16_2 not refitted" in cal["reason"]
    assert "fit" not in m.calibration and m.calibration["method"] == "overhead-once"
    src = [e.source for e in m.entries[:4]]
    assert src == ["interpolated", "measured", "measured", "measured"]
    assert m.entries[0].latency_ms["interpolation"] == "linear"
    assert m.build["interpolated"] == 1 and m.build["measured"] == len(m.entries) - 1
    assert merge_tables([variant(formula_table, tmp_path / f"p{i}.json", seed=i) for i in range(2)]).build[
        "merge"]["calibration"] is None
