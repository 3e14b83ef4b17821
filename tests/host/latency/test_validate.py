"""``host table validate``: random pruned architectures measured on the device against the table."""

import json

import pytest

from tests.conftest import one_line_error
from tests.tables import formula_device, predicted_by_formula, synthetic_table


def _scaled_copy(src, dst, factor):
    """The table with every latency (entries and overhead) times ``factor``: it predicts ``factor`` times as much."""
    d = json.loads(src.read_text())
    for e in d["entries"]:
        e["latency_ms"] = {k: v * factor if isinstance(v, float) else v for k, v in e["latency_ms"].items()}
    d["calibration"]["overhead_ms"] *= factor
    dst.write_text(json.dumps(d))
    return dst


@pytest.mark.slow
def test_validate_measures_random_architectures_against_the_table(tmp_path, host_cli, formula_table):
    out = tmp_path / "val"
    slow = _scaled_copy(formula_table, tmp_path / "slow.json", 1.1)
    r = host_cli("table", "validate", str(formula_table), "--model", "resnet20", "--samples", "3", "--rounds", "1",
                 "--iters", "30", "--seed", "3", "--out", str(out), "--compare", str(slow))
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "validate.json").read_text())
    assert doc["rounds"] == 1 and doc["loads"] == 1  # default loadings: min(5, rounds)
    assert doc["samples"] == 3 and len({json.dumps(a["widths"], sort_keys=True) for a in doc["architectures"]}) == 3
    for a in doc["architectures"]:
        # the prediction is the table's formula (a known answer, tests/tables.py), the error relative to a measurement
        assert a["measured_ms"] > 0 and a["predicted_ms"] == pytest.approx(predicted_by_formula("resnet20", a["widths"]))
        assert (a["rel_error"] > 0) == (a["predicted_ms"] > a["measured_ms"])
        assert all(w % 8 == 0 or w in (16, 32, 64) for w in a["widths"].values())  # on the table's grid
    errs = [abs(a["rel_error"]) for a in doc["architectures"]]
    assert doc["max_abs_rel_error"] == max(errs) and abs(doc["mean_abs_rel_error"] - sum(errs) / 3) < 1e-12
    assert -1 <= doc["pearson_r"] <= 1
    assert (out / "validate.png").read_bytes()[:4] == b"\x89PNG"
    assert "mean |error|" in r.stdout
    assert doc["measurement_noise"] is None and "measurement noise" not in r.stdout  # one round: no halves
    # the compared table is judged on the same measured networks
    (c,) = doc["compared"]
    assert c["table"] == str(slow) and c["drift"] is None and c["recalibrated"] is None
    for a, p in zip(doc["architectures"], c["predicted_ms"]):
        assert abs(p - 1.1 * a["predicted_ms"]) < 1e-9
    # the same measured networks: a table predicting 1.1 times as much is off by 1.1 x (1 + error) - 1 on each
    errs = [abs(1.1 * (1 + a["rel_error"]) - 1) for a in doc["architectures"]]
    assert c["max_abs_rel_error"] == pytest.approx(max(errs)) and "compared: " + str(slow) in r.stdout


@pytest.mark.slow
def test_validate_reports_the_measurement_noise_from_split_rounds(tmp_path, host_cli, small_table):
    """Each network's fastest run over its even vs its odd rounds, as measured: the floor no table can beat."""
    import math

    out = tmp_path / "val"
    r = host_cli("table", "validate", str(small_table), "--model", "resnet20", "--samples", "4", "--rounds", "6",
                 "--iters", "3", "--loads", "2", "--seed", "5", "--out", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "validate.json").read_text())
    d = []
    for a in doc["architectures"]:
        mins = a["round_mins_ms"]
        assert len(mins) == 6 and min(mins) == a["measured_ms"]  # a min table: the fastest run of all rounds
        assert all(m <= med for m, med in zip(mins, a["round_medians_ms"]))
        d.append(math.log(min(mins[0::2]) / min(mins[1::2])))
    n = doc["measurement_noise"]
    s = math.sqrt(sum(x * x for x in d) / len(d))
    assert n["networks"] == 4 and n["rounds"] == 6 and abs(n["split_half_rms_rel_diff"] - s) < 1e-12
    assert n["noise_std"] == [s / 2, s / math.sqrt(2)]
    assert "measurement noise: each network's even vs odd rounds differ by" in r.stdout


def test_split_half_noise_by_the_tables_statistic():
    import math

    from edgeshrink.host.latency.validate import split_half_noise

    # even rounds 2% slower than odd ones in every network: ln(1.02) apart, whatever the statistic
    rows = [{"round_mins_ms": [1.02 * k, 1.0 * k, 1.03 * k, 1.01 * k], "round_medians_ms": [1.2 * k, 1.1 * k] * 2}
            for k in (1.0, 2.0, 3.0)]
    lo = split_half_noise(rows, "min")
    assert lo["networks"] == 3 and abs(lo["split_half_rms_rel_diff"] - math.log(1.02)) < 1e-12
    assert abs(lo["mean_abs_rel_error_floor"][1] - math.log(1.02) / math.sqrt(2) * math.sqrt(2 / math.pi)) < 1e-12
    med = split_half_noise(rows, "median")
    assert abs(med["split_half_rms_rel_diff"] - math.log(1.2 / 1.1)) < 1e-12
    # a tool without per-round minima, or a single round: nothing to split
    assert split_half_noise([{"round_mins_ms": [None, None]}] * 3, "min") is None
    assert split_half_noise([{"round_mins_ms": [1.0]}] * 3, "min") is None


def test_validate_refuses_to_compare_a_table_of_another_statistic(tmp_path, host_cli, formula_table):
    other = tmp_path / "median.json"
    other.write_text(formula_table.read_text().replace('"statistic": "min"', '"statistic": "median"'))
    one_line_error(host_cli("table", "validate", str(formula_table), "--samples", "3", "--compare", str(other)),
                   "cannot be compared with", "statistic")


def test_validate_refuses_too_few_samples(host_cli, formula_table):
    one_line_error(host_cli("table", "validate", str(formula_table), "--samples", "2"), "--samples must be in 3..")


def test_validate_refuses_more_loadings_than_rounds(host_cli, formula_table):
    one_line_error(host_cli("table", "validate", str(formula_table), "--rounds", "2", "--loads", "3"),
                   "--loads must be from 1 to --rounds (2), got 3")


def test_a_table_predicts_networks_built_from_its_own_formula_exactly(tmp_path, formula_table):
    """A known answer: the device's networks cost what the table's formula says, so every error is 0; a table 10%
    slower is off by exactly +10% on every network; identical rounds have no noise."""
    from edgeshrink.host.latency.validate import validate_table

    slow = _scaled_copy(formula_table, tmp_path / "slow.json", 1.1)
    doc = validate_table(str(formula_table), "resnet20", samples=12, seed=4, measure=formula_device(),
                         compare=[str(slow)], out_dir=str(tmp_path / "v"))
    assert doc["samples"] == 12 and doc["device"]["hostname"] == "formula device"
    assert doc["mean_abs_rel_error"] < 1e-12 and doc["max_abs_rel_error"] < 1e-12
    assert doc["pearson_r"] == pytest.approx(1.0, abs=1e-12)
    assert doc["measurement_noise"]["split_half_rms_rel_diff"] == 0.0
    (c,) = doc["compared"]
    assert c["mean_rel_error"] == pytest.approx(0.1, abs=1e-12) and c["max_abs_rel_error"] == pytest.approx(0.1)
    assert (tmp_path / "v" / "validate.png").read_bytes()[:4] == b"\x89PNG"


def test_a_device_that_became_faster_is_measured_as_drift_and_removed_by_recalibrating(tmp_path):
    """The table was calibrated on networks measured by the formula; the device is now 5% slower: the anchors say
    x1.05, with the drift removed or the table refitted the errors are 0 again (within the fit's ridge prior)."""
    from edgeshrink.host.latency.fit import calibrate
    from edgeshrink.host.latency.networks import calibration_archs
    from edgeshrink.host.latency.predict import TablePredictor
    from edgeshrink.host.latency.validate import validate_table
    from edgeshrink import models

    t = synthetic_table()
    space = TablePredictor.for_model(t, models.create_model("resnet20"), corrected=False).space
    then = formula_device()
    archs = calibration_archs(space, 8, 12, seed=1)
    t.calibration["fit"] = calibrate(t, space, [{"widths": w, "measured_ms": then.network_ms(w)} for w in archs])
    t.calibration["method"] = "overhead-once+fitted"
    path = tmp_path / "cal.json"
    t.save(str(path))
    doc = validate_table(str(path), "resnet20", samples=8, anchors=6, recalibrate=True, measure=formula_device(1.05))
    assert doc["mean_rel_error"] == pytest.approx(1 / 1.05 - 1, abs=2e-3)  # the prediction is 4.8% low
    assert doc["drift"]["speed_ratio"] == pytest.approx(1.05, rel=1e-9) and doc["drift"]["anchors"] == 12
    assert doc["drift"]["max_abs_rel_error"] < 2e-3
    assert doc["recalibrated"]["networks"] == 12 and doc["recalibrated"]["max_abs_rel_error"] < 2e-3
