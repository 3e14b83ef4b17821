"""Whole-network calibration of a latency table: the fit, the corrected predictor, and a build that measures
calibration networks."""

import json

import numpy as np
import pytest

from edgeshrink import models
from edgeshrink.host.latency.fit import FEATURES, features, fit
from edgeshrink.host.latency.key import family
from edgeshrink.host.latency.predict import TablePredictor, weight_gate
from edgeshrink.host.latency.table import load_table
from tests.conftest import one_line_error
from tests.tables import OVERHEAD_MS, predicted_by_formula


def test_fit_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(30), rng.uniform(0.3, 0.6, 30), rng.uniform(0.001, 0.01, 30), rng.uniform(0.05, 0.3, 30)])
    truth = np.array([0.03, 0.85, 2.0, 0.04])
    out = fit(X, X @ truth, overhead_ms=0.02)
    got = np.array(list(out["coefficients"].values()))
    assert np.allclose(got[[0, 1, 3]], truth[[0, 1, 3]], rtol=0.05)
    assert out["fit_mean_abs_rel_error"] < 0.005
    assert out["uncorrected_mean_abs_rel_error"] > 0.01  # the uncorrected model was off


def test_per_configuration_corrections_are_learnt_from_networks_and_help_held_out_ones():
    # 8 configurations whose in-network cost is not the entry's: deltas of -10%..+12% on top of a 0.9 scale
    rng = np.random.default_rng(1)
    n, m = 80, 8
    K = rng.uniform(0.0, 0.1, (n, m)) * (rng.uniform(size=(n, m)) < 0.6)
    X = np.column_stack([np.ones(n), K.sum(1) + 0.2, rng.uniform(0.001, 0.01, n), rng.uniform(0.05, 0.3, n)])
    true_delta = np.array([-0.1, 0.12, 0.0, 0.05, -0.06, 0.08, 0.0, -0.03])
    y = X @ np.array([0.03, 0.9, 1.0, 0.0]) + K @ true_delta
    train, test = slice(0, 60), slice(60, None)
    with_keys = fit(X[train], y[train], 0.02, K[train])
    without = fit(X[train], y[train], 0.02)
    assert with_keys["key_ridge"] is not None and without["key_ridge"] is None and without["deltas"] is None
    assert [r["key_ridge"] for r in with_keys["cv"]][0] is None  # "no corrections" was one of the candidates
    assert with_keys["cv_mean_abs_rel_error"] < with_keys["cv"][0]["cv_mean_abs_rel_error"]
    assert with_keys["weight_cache"] is None and without["weight_cache"] is None  # nothing gated in these networks
    c = np.array(list(with_keys["coefficients"].values()))[:4]
    held_with = np.abs((X[test] @ c + K[test] @ with_keys["deltas"]) / y[test] - 1).mean()
    held_without = np.abs(X[test] @ np.array(list(without["coefficients"].values()))[:4] / y[test] - 1).mean()
    assert held_with < held_without / 3
    assert np.corrcoef(with_keys["deltas"], true_delta)[0, 1] > 0.9


def test_corrected_predictor_adds_family_and_configuration_deltas(formula_table):
    table = load_table(str(formula_table))
    raw = TablePredictor.for_model(table, models.create_model("resnet20"), corrected=False)
    w = raw.space.full_widths
    sites = raw.raw_sites(w)
    k0 = sites[1][0]  # a 3x3 conv of the first stage: its family has several sites
    coef = {"intercept_ms": 0.0, "conv": 1.0, "other": 1.0, "weights_ms_per_mparam": 0.0}
    table.calibration["fit"] = {"model": "resnet20", "coefficients": coef, "corrections": [
        {"kind": "key", "key": k0.to_dict(), "delta": 0.2},
        {"kind": "family", "key": family(k0).to_dict(), "delta": -0.05}]}
    pred = TablePredictor.for_model(table, models.create_model("resnet20"))
    want = [ms * (1 + (0.2 if k == k0 else 0) - (0.05 if family(k) == family(k0) else 0)) for k, ms in sites]
    assert pred.layer_ms(w) == pytest.approx(want, rel=1e-12)
    assert sum(1 for k, _ in sites if family(k) == family(k0)) > sum(1 for k, _ in sites if k == k0) >= 1


def _gated_networks(n, seed, cache_mparams=None):
    """Networks whose weights (column 3) span 0.5..8 million; past ``cache_mparams`` each inference also pays
    0.2 ms per million weights streamed from memory (a sharp switch, as a cache's capacity is)."""
    rng = np.random.default_rng(seed)
    w = np.exp(rng.uniform(np.log(0.5), np.log(8.0), n))
    X = np.column_stack([np.ones(n), rng.uniform(1.0, 4.0, n), rng.uniform(0.01, 0.05, n), w])
    y = X @ np.array([0.05, 1.1, 1.0, 0.01])
    if cache_mparams:
        y = y + 0.2 * w * (w > cache_mparams)
    return X, y


def test_fit_finds_the_cache_threshold_of_streamed_weights():
    X, y = _gated_networks(120, 2, cache_mparams=3.0)
    out = fit(X, y, overhead_ms=0.02)
    gate = out["weight_cache"]
    assert gate is not None and 2.4 < gate["mparams"] < 3.75  # within a grid step of the true threshold
    assert out["coefficients"]["streamed_ms_per_mparam"] == pytest.approx(0.2, rel=0.25)
    plain = next(r for r in out["cv"] if r["weight_cache"] is None)
    assert out["cv_mean_abs_rel_error"] < plain["cv_mean_abs_rel_error"] / 3
    # held-out networks: the gated fit predicts them, the linear one cannot
    Xt, yt = _gated_networks(40, 3, cache_mparams=3.0)
    c = np.array(list(out["coefficients"].values()))
    pred = Xt @ c[:4] + c[4] * weight_gate(Xt[:, 3], gate) * Xt[:, 3]
    gated_err = np.abs(pred / yt - 1).mean()
    without = fit(X, y, overhead_ms=0.02, gates=[None])
    cw = np.array(list(without["coefficients"].values()))
    assert without["weight_cache"] is None
    assert gated_err < 0.02 and np.abs(Xt @ cw[:4] / yt - 1).mean() > 3 * gated_err


def test_fit_keeps_no_gate_when_the_weights_always_fit():
    X, y = _gated_networks(60, 4)
    y = y * np.random.default_rng(5).normal(1.0, 0.003, len(y))  # measurement noise only
    out = fit(X, y, overhead_ms=0.02)
    assert out["weight_cache"] is None and out["coefficients"]["streamed_ms_per_mparam"] == 0.0
    assert len(out["cv"]) > 10  # the gates were tried


def test_predictor_gates_the_streamed_weights_by_the_whole_network(formula_table):
    table = load_table(str(formula_table))
    raw = TablePredictor.for_model(table, models.create_model("resnet20"), corrected=False)
    full = raw.space.full_widths
    f = features(raw, full)
    coef = {"intercept_ms": 0.05, "conv": 1.0, "other": 1.0, "weights_ms_per_mparam": 0.0,
            "streamed_ms_per_mparam": 0.4}
    # the threshold at the unpruned network's weights: its gate is exactly 1/2
    table.calibration["fit"] = {"model": "resnet20", "coefficients": coef,
                                "weight_cache": {"mparams": float(f[3]), "log_width": 0.01}}
    pred = TablePredictor.for_model(table, models.create_model("resnet20"))
    assert pred.predict_ms(full) == pytest.approx(0.05 + f[1] + f[2] + 0.2 * f[3], rel=1e-9)
    half = {g: max(1, c // 2) for g, c in full.items()}
    assert pred.predict_ms(half) == pytest.approx(raw.predict_ms(half) - table.overhead_ms + 0.05, rel=1e-6)


def test_fit_refuses_too_few_networks():
    with pytest.raises(ValueError, match="3 or more networks"):
        fit(np.ones((2, 4)), np.ones(2), 0.0)


def test_corrected_predictor_applies_the_fit_per_site(formula_table, tmp_path):
    table = load_table(str(formula_table))
    raw = TablePredictor.for_model(table, models.create_model("resnet20"), corrected=False)
    w = raw.space.full_widths
    # one scale for every site and no weights term: the known answer is the formula's sum, scaled, with the intercept
    # in place of the table's overhead
    coef = {"intercept_ms": 0.05, "conv": 0.9, "other": 0.9, "weights_ms_per_mparam": 0.0}
    table.calibration["fit"] = {"model": "resnet20", "coefficients": coef}
    pred = TablePredictor.for_model(table, models.create_model("resnet20"))
    by_hand = predicted_by_formula("resnet20", w)
    assert raw.predict_ms(w) == pytest.approx(by_hand, rel=1e-12)
    assert pred.predict_ms(w) == pytest.approx(0.05 + 0.9 * (by_hand - OVERHEAD_MS), rel=1e-12)
    assert pred.predict_ms(w) == pytest.approx(0.05 + sum(pred.layer_ms(w)), rel=1e-12)
    assert pred.fit_scope() == "fitted"
    # a fit from another model's networks applies by default with its intercept moved per site, and says so
    table.calibration["fit"]["model"] = "resnet56"
    table.calibration["fit"]["networks"] = [{"widths": {"conv1": 8}, "measured_ms": 1.0}]
    table.calibration["fit"]["sites"] = 2 * len(raw.space.sites)  # the fit's model had twice resnet20's sites
    moved = TablePredictor.for_model(table, models.create_model("resnet20"))
    assert moved.fit_scope() == "transferred" and moved.calibration_networks == []
    ovh = table.overhead_ms
    assert moved.intercept_ms == pytest.approx(ovh + (0.05 - ovh) / 2, rel=1e-12)
    assert moved.predict_ms(w) == pytest.approx(pred.predict_ms(w) - 0.05 + moved.intercept_ms, rel=1e-12)
    assert moved.fit_record() == {"scope": "transferred", "model": "resnet56",
                                  "intercept_rule": f"per site ({len(raw.space.sites)} sites here, "
                                                    f"{2 * len(raw.space.sites)} in resnet56)"}
    # without a recorded count the fit's model is traced to count its sites
    del table.calibration["fit"]["sites"]
    n56 = len(TablePredictor.for_model(table, models.create_model("resnet56"), corrected=False).space.sites)
    counted = TablePredictor.for_model(table, models.create_model("resnet20"))
    assert counted.intercept_ms == pytest.approx(ovh + (0.05 - ovh) * len(raw.space.sites) / n56, rel=1e-12)
    kept = TablePredictor.for_model(table, models.create_model("resnet20"), transfer=False)
    assert kept.fit_scope() == "not transferred" and kept.predict_ms(w) == pytest.approx(raw.predict_ms(w))
    assert "resnet56's, applied to resnet20" in counted.transfer_note() and kept.transfer_note() is None


@pytest.mark.slow
def test_build_with_calibration_networks_fits_and_validate_uses_them_as_anchors(tmp_path, host_cli):
    out = tmp_path / "t.json"
    r = host_cli("table", "build", "--model", "resnet20", "--granularity", "16", "--warmup", "2", "--iters", "5",
                 "--rounds", "1", "--calibrate", "4", "--jobs", "2", "--out-table", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    fit_ = doc["calibration"]["fit"]
    assert doc["calibration"]["method"] == "overhead-once+fitted" and len(fit_["networks"]) == 4
    from edgeshrink.host.latency.space import build_space

    space = build_space(models.create_model("resnet20"), (1, 3, 32, 32))
    full = space.full_widths
    assert fit_["sites"] == len(space.sites) and fit_["model"] == "resnet20"  # what a transfer scales by
    assert fit_["networks"][0]["widths"] == full  # the unpruned model first, then random pruned ones
    assert all(n["widths"] != full for n in fit_["networks"][1:])
    assert all(n["measured_ms"] > 0 for n in fit_["networks"])
    assert set(fit_["coefficients"]) == set(FEATURES)
    assert doc["build"]["calibration_networks"] == 4 and doc["build"]["measurements"] == 67 + 1 + 4
    assert "calibration: 4 networks" in r.stderr + r.stdout
    val = tmp_path / "val"
    v = host_cli("table", "validate", str(out), "--model", "resnet20", "--samples", "3", "--rounds", "2", "--iters", "5",
                 "--anchors", "2", "--out", str(val))
    assert v.returncode == 0, v.stderr
    vd = json.loads((val / "validate.json").read_text())
    assert vd["drift"]["anchors"] == 2 and len(vd["drift"]["anchor_ratios"]) == 2
    k = vd["drift"]["speed_ratio"]
    assert k == pytest.approx(float(np.median(vd["drift"]["anchor_ratios"])))
    errs = [abs(a["predicted_ms"] * k / a["measured_ms"] - 1) for a in vd["architectures"]]
    assert vd["drift"]["max_abs_rel_error"] == pytest.approx(max(errs))
    calib = {json.dumps(n["widths"], sort_keys=True) for n in fit_["networks"]}
    assert not calib & {json.dumps(a["widths"], sort_keys=True) for a in vd["architectures"]}
    assert "device speed now vs at the build" in v.stdout
    # validate --recalibrate: every calibration network measured again, and the refitted table's errors
    val2 = tmp_path / "val2"
    v2 = host_cli("table", "validate", str(out), "--model", "resnet20", "--samples", "3", "--rounds", "2", "--iters", "5",
                  "--recalibrate", "--out", str(val2))
    assert v2.returncode == 0, v2.stderr
    vd2 = json.loads((val2 / "validate.json").read_text())
    rc = vd2["recalibrated"]
    assert vd2["drift"]["anchors"] == 4 and rc["networks"] == 4 and rc["fit"]["model"] == "resnet20"
    assert set(rc["fit"]["coefficients"]) == set(FEATURES)
    rerrs = [a["recalibrated_predicted_ms"] / a["measured_ms"] - 1 for a in vd2["architectures"]]
    assert rc["max_abs_rel_error"] == pytest.approx(max(map(abs, rerrs)))
    assert rc["mean_rel_error"] == pytest.approx(float(np.mean(rerrs)))
    assert "refitted on its 4 calibration networks measured now" in v2.stdout
    # table recalibrate: the same refit written as a table; the entries stay
    new = tmp_path / "t2.json"
    r2 = host_cli("table", "recalibrate", str(out), "--model", "resnet20", "--rounds", "2", "--iters", "5",
                  "--out-table", str(new))
    assert r2.returncode == 0, r2.stderr
    d2 = json.loads(new.read_text())
    assert d2["entries"] == doc["entries"]
    nets2 = d2["calibration"]["fit"]["networks"]
    assert [n["widths"] for n in nets2] == [n["widths"] for n in fit_["networks"]]
    ratios = [b["measured_ms"] / a["measured_ms"] for a, b in zip(fit_["networks"], nets2)]
    info = d2["calibration"]["recalibrated"]
    assert info["networks"] == 4 and info["speed_ratio"] == pytest.approx(float(np.median(ratios)))
    assert info["ratio_min"] == pytest.approx(min(ratios)) and info["ratio_max"] == pytest.approx(max(ratios))
    assert "4 calibration networks measured again" in r2.stdout


def test_recalibrate_refuses_a_table_without_calibration_networks(formula_table, tmp_path, host_cli):
    one_line_error(host_cli("table", "recalibrate", str(formula_table), "--model", "resnet20", "--out-table",
                            str(tmp_path / "t.json")), "no calibration networks")
    assert not (tmp_path / "t.json").exists()
    one_line_error(host_cli("table", "validate", str(formula_table), "--model", "resnet20", "--recalibrate"),
                   "--recalibrate needs a table built with --calibrate")


def test_calibrate_needs_three_networks(tmp_path, host_cli):
    one_line_error(host_cli("table", "build", "--calibrate", "2", "--out-table", str(tmp_path / "t.json")),
                   "--calibrate must be 0")


def test_the_fit_learns_what_micro_models_do_not_see_from_networks_with_a_known_answer():
    """Networks on a device where every 3x3 conv at 32x32 costs 12% more and every classifier 30% less than its
    micro-model: the table's plain sum misses them by several percent; fitted on 40 such networks it predicts 30
    others within 0.5% (mean) and 1.5% (max)."""
    from edgeshrink.host.latency.fit import calibrate
    from edgeshrink.host.latency.networks import calibration_archs, sample_widths
    from tests.tables import formula_device, synthetic_table

    def in_network(k):
        if k.op == "gap_linear":
            return 0.7
        return 1.12 if (k.op == "conv2d" and k.in_hw == (32, 32) and k.kernel == (3, 3)) else 1.0

    t = synthetic_table()
    raw = TablePredictor.for_model(t, models.create_model("resnet20"), corrected=False)
    device = formula_device(per_site=in_network)
    fit_on = calibration_archs(raw.space, 8, 40, seed=1)
    held = [w for w in sample_widths(raw.space, 8, 60, seed=9) if w not in fit_on][:30]
    t.calibration["fit"] = calibrate(t, raw.space, [{"widths": w, "measured_ms": device.network_ms(w)} for w in fit_on])
    pred = TablePredictor.for_model(t, models.create_model("resnet20"))
    err = np.array([pred.predict_ms(w) / device.network_ms(w) - 1 for w in held])
    plain = np.array([raw.predict_ms(w) / device.network_ms(w) - 1 for w in held])
    assert np.abs(plain).mean() > 0.03  # what the sum of micro-models gets wrong
    assert np.abs(err).mean() < 0.005 and np.abs(err).max() < 0.015
