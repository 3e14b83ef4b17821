"""Coarse-grid latency tables: interpolant chosen by check measurements, adaptive refinement, CLI."""

import json
import math

import pytest

from edgeshrink import models
from edgeshrink.host.latency.interpolate import build_interpolated, coarse_axis, group_families
from edgeshrink.host.latency.space import build_space, enumerate_keys
from tests.conftest import one_line_error


@pytest.fixture(scope="module")
def wrn_keys():
    return enumerate_keys(build_space(models.create_model("wrn16_2"), (1, 3, 32, 32)), 4)


def _ceil16(c):
    return 16 * math.ceil(c / 16)


def _padded_cost(k):
    """ONNX Runtime NCHWc-like: cost of the channels padded to blocks of 16."""
    return 0.01 + 1e-7 * k.in_hw[0] * k.in_hw[1] * _ceil16(k.in_channels) * _ceil16(k.out_channels) * k.kernel[0] ** 2


def _smooth_cost(k):
    return 0.01 + 1e-7 * k.in_hw[0] * k.in_hw[1] * k.in_channels * k.out_channels * k.kernel[0] ** 2 + 1e-5 * k.out_channels


def _blocked(c):
    """Channel cost of a blocked kernel (block 16): below a block it grows with the channels; above, a partial
    block costs a whole one and 5% more than an aligned count (the pad and copy)."""
    return c if c <= 16 else _ceil16(c) * (1.05 if c % 16 else 1.0)


def _blocked_cost(k):
    return 0.01 + 1e-7 * k.in_hw[0] * k.in_hw[1] * _blocked(k.in_channels) * _blocked(k.out_channels) * k.kernel[0] ** 2


def _measurer(fn, log):
    def measure(ks):
        log.extend(ks)
        return {k: fn(k) for k in ks}
    return measure


def test_coarse_axis_keeps_multiples_and_both_ends():
    assert coarse_axis([4, 8, 12, 16, 20, 24, 28, 32, 36], 16) == [4, 16, 32, 36]


def test_padded_costs_pick_ceil_and_interpolate_exactly(wrn_keys):
    log = []
    values, report = build_interpolated(wrn_keys, _measurer(_padded_cost, log), coarse=16, tol=0.02)
    assert len(set(log)) == len(log)  # nothing measured twice
    assert report["measured"] == len(log) and report["measured"] + report["interpolated"] == len(wrn_keys)
    assert report["measured"] * 3 < len(wrn_keys)
    assert report["methods"]["ceil"] > report["methods"]["linear"]
    errs = []
    for k, (v, source) in values.items():
        if source == "measured":
            assert v == _padded_cost(k)
        else:
            errs.append(abs(v / _padded_cost(k) - 1))
            if source == "interpolated-ceil" and k.in_channels >= 16:
                assert v == pytest.approx(_padded_cost(k), rel=1e-9), k  # exact within a padded block
    assert sum(errs) / len(errs) < 0.02


def test_blocked_costs_pick_block_when_the_channel_block_is_known(wrn_keys):
    log = []
    values, report = build_interpolated(wrn_keys, _measurer(_blocked_cost, log), coarse=8, tol=0.02, align=16)
    assert report["align"] == 16 and report["interpolated"] > report["measured"] / 2
    assert report["methods"]["block"] > report["methods"]["ceil"] + report["methods"]["linear"], report["methods"]
    blocked = [(k, v) for k, (v, source) in values.items() if source == "interpolated-block"]
    assert len(blocked) > len(wrn_keys) / 3
    for k, v in blocked:
        if k.in_channels > 16 and k.out_channels > 16:  # exact: a partial block read at a partial block
            assert v == pytest.approx(_blocked_cost(k), rel=1e-9), k
    # without the block the same measurements interpolate worse
    plain, _ = build_interpolated(wrn_keys, _measurer(_blocked_cost, []), coarse=8, tol=0.02)

    def mean_err(vals):
        errs = [abs(v / _blocked_cost(k) - 1) for k, (v, s) in vals.items() if s != "measured"]
        return sum(errs) / len(errs)

    assert mean_err(values) < 0.005 and mean_err(values) * 3 < mean_err(plain)


def test_smooth_costs_pick_linear_and_stay_within_tolerance(wrn_keys):
    sampled, _ = build_interpolated(wrn_keys, _measurer(_smooth_cost, []), coarse=16, tol=0.02)
    errs = [abs(v / _smooth_cost(k) - 1) for k, (v, s) in sampled.items() if s != "measured"]
    assert sum(errs) / len(errs) < 0.01
    # with a check in every cell, refinement holds every interpolated entry to the tolerance
    log = []
    values, report = build_interpolated(wrn_keys, _measurer(_smooth_cost, log), coarse=16, tol=0.02, check_fraction=1.0)
    assert report["methods"]["linear"] >= report["methods"]["ceil"]
    errs = [abs(v / _smooth_cost(k) - 1) for k, (v, s) in values.items() if s != "measured"]
    assert max(errs) < 0.02 and len(log) < len(wrn_keys)


def test_failed_checks_refine_their_cells(wrn_keys):
    def kinked(k):  # a jump inside the coarse cells that neither interpolant sees from the corners
        return _smooth_cost(k) * (1.5 if 40 < k.out_channels < 48 else 1.0)

    log_off, log_on = [], []
    build_interpolated(wrn_keys, _measurer(kinked, log_off), coarse=16, tol=0.02, rounds=0)
    _, report = build_interpolated(wrn_keys, _measurer(kinked, log_on), coarse=16, tol=0.02, rounds=2,
                                   check_fraction=1.0)
    assert len(log_on) > len(log_off)
    assert any(c["round"] >= 1 for c in report["check_detail"])


def test_families_split_by_layer_type(wrn_keys):
    fams = group_families(wrn_keys)
    assert sum(len(f.keys) for f in fams) == len(wrn_keys)
    assert any(f.tied for f in fams)  # bn / add: in == out


def test_bad_interpolation_settings_are_refused(wrn_keys):
    with pytest.raises(ValueError):
        build_interpolated(wrn_keys, _measurer(_smooth_cost, []), coarse=0)


def test_cli_builds_an_interpolated_table_that_says_which_entries_are_measured(tmp_path, host_cli):
    out = tmp_path / "t.json"
    r = host_cli("table", "build", "--model", "resnet20", "--granularity", "8", "--coarse", "16", "--align", "16",
                 "--warmup", "2", "--iters", "5", "--rounds", "1", "--interleave", "2", "--batch", "400", "--calibrate", "0",
                 "--out-table", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    sources = [e["source"] for e in doc["entries"]]
    b = doc["build"]
    assert sources.count("measured") == b["measured"] and sources.count("interpolated") == b["interpolated"] > 0
    assert b["target_grid_entries"] == len(doc["entries"]) == 258
    assert b["exhaustive_per_channel_entries"] == 15936
    assert b["measurements"] >= b["measured"]  # + the overhead graph
    for e in doc["entries"]:
        if e["source"] == "interpolated":
            assert e["latency_ms"]["interpolation"] in ("linear", "ceil", "block") and e["latency_ms"][doc["statistic"]] > 0
    assert "interpolation: coarse grid 16" in r.stderr + r.stdout and b["interpolation"]["align"] == 16


def test_cli_refuses_a_coarse_step_off_the_grid(tmp_path, host_cli):
    one_line_error(host_cli("table", "build", "--granularity", "8", "--coarse", "12", "--out-table", str(tmp_path / "t.json")),
                   "--coarse must be a multiple of --granularity")
