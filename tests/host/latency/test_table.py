"""Latency tables: a build on this machine (ONNX Runtime via the local device), prediction from tables with a known
answer (tests/tables.py), and the refusals of malformed files."""

import json

import pytest

from edgeshrink import models
from edgeshrink.host.errors import TableError
from edgeshrink.host.latency.build import BuildConfig, build_table, combine_rounds, parse_shard
from edgeshrink.host.latency.space import build_space, enumerate_keys
from edgeshrink.host.latency.predict import TablePredictor
from edgeshrink.host.latency.table import load_table, parse_shape
from tests.tables import OVERHEAD_MS, formula_ms, predicted_by_formula, synthetic_table


@pytest.fixture(scope="module")
def measured_g16(tmp_path_factory):
    """A resnet20 table on the grid of 16 measured briefly on this machine (1 round of 3 runs per entry)."""
    space = build_space(models.create_model("resnet20"), (1, 3, 32, 32))
    cfg = BuildConfig("resnet20", (1, 3, 32, 32), granularity=16, warmup=1, iters=3, rounds=1)
    path = tmp_path_factory.mktemp("table") / "g16.json"
    build_table(cfg, enumerate_keys(space, 16)).save(str(path))
    return path


def test_built_table_follows_the_schema(measured_g16):
    d = json.loads(measured_g16.read_text())
    assert d["schema"] == "edgeshrink.latency_table" and d["schema_version"] == 1
    for k in ("device", "backend", "precision", "threads", "batch_size", "input_shape", "created_utc",
              "tool_version", "calibration", "entries", "derived_from", "smoothing"):
        assert k in d
    assert d["backend"] == "ort" and d["threads"] == 1 and d["input_shape"] == [1, 3, 32, 32]
    assert d["device"]["spec"] == "local" and d["device"]["runtime"].startswith("onnxruntime")
    assert d["calibration"]["method"] == "overhead-once" and d["calibration"]["overhead_ms"] > 0
    e = d["entries"][0]
    for k in ("op", "in_channels", "out_channels", "kernel", "stride", "groups", "in_hw", "fused", "latency_ms", "n"):
        assert k in e
    assert e["source"] == "measured" and 0 < e["latency_ms"]["min"] <= e["latency_ms"]["median"]
    assert d["statistic"] == "min"  # the default: what the entries are taken by, and the table predicts
    space = build_space(models.create_model("resnet20"), (1, 3, 32, 32))
    assert len(d["entries"]) == len(enumerate_keys(space, 16)) == d["build"]["measured"] == 67


def test_overhead_is_counted_once(formula_table):
    table = load_table(str(formula_table))
    pred = TablePredictor.for_model(table, models.create_model("resnet20"))
    widths = pred.space.full_widths
    naive = sum(formula_ms(k) for k in pred.space.keys(widths))
    total = pred.predict_ms(widths)
    assert total == pytest.approx(naive - (len(pred.space.sites) - 1) * OVERHEAD_MS, rel=1e-12)
    assert total == pytest.approx(predicted_by_formula("resnet20", widths), rel=1e-12)
    assert sum(pred.layer_ms(widths)) + table.overhead_ms == pytest.approx(total)


def test_prediction_shrinks_with_channels(formula_table):
    table = load_table(str(formula_table))
    pred = TablePredictor.for_model(table, models.create_model("resnet20"))
    half = {g.name: max(8, g.width // 2) for g in pred.space.groups}
    assert pred.predict_ms(half) == pytest.approx(predicted_by_formula("resnet20", half), rel=1e-12)
    assert pred.predict_ms(half) < 0.8 * pred.predict_ms(pred.space.full_widths)


def test_table_for_another_model_is_refused(formula_table):
    table = load_table(str(formula_table))
    with pytest.raises(TableError, match=r"built for resnet20.*no entry for wrn16_2"):
        TablePredictor.for_model(table, models.create_model("wrn16_2"))


def test_table_for_another_input_shape_is_refused(formula_table):
    table = load_table(str(formula_table))
    space = build_space(models.create_model("resnet20"), (1, 3, 64, 64))
    with pytest.raises(TableError, match="measured at input 1x3x32x32, not 1x3x64x64"):
        TablePredictor(table, space)


def _edit(src, dst, fn):
    d = json.loads(src.read_text())
    fn(d)
    dst.write_text(json.dumps(d))
    return str(dst)


def _median_table_without_medians(d):
    """A table that says it predicts medians, whose entries hold only minima."""
    for e in d["entries"]:
        e["latency_ms"].pop("median")
    d["statistic"] = "median"


@pytest.mark.parametrize("edit,msg", [
    (lambda d: d.update(schema_version=2), "schema version 2 is not supported"),
    (lambda d: d.update(schema="something.else"), "not an edgeshrink latency table"),
    (lambda d: d["entries"][3]["latency_ms"].update(min=-0.01), "entry 3 .* has no positive min latency"),
    (lambda d: d["entries"][0].pop("latency_ms"), "entry 0 .* has no positive min latency"),
    (lambda d: d.update(statistic="mean"), "unknown latency statistic 'mean'"),
    (_median_table_without_medians, "entry 0 .* has no positive median latency"),
    (lambda d: d["entries"][1].pop("in_hw"), "entry 1 in_hw must be a list"),
    (lambda d: d.pop("calibration"), "malformed latency table"),
])
def test_hand_edited_tables_are_refused_naming_the_file(formula_table, tmp_path, edit, msg):
    path = _edit(formula_table, tmp_path / "bad.json", edit)
    with pytest.raises(TableError, match=msg) as e:
        load_table(path)
    assert str(e.value).startswith(path)


def test_truncated_table_is_refused(formula_table, tmp_path):
    bad = tmp_path / "trunc.json"
    bad.write_text(formula_table.read_text()[:500])
    with pytest.raises(TableError, match="not a readable JSON latency table"):
        load_table(str(bad))
    with pytest.raises(TableError, match="no such latency table"):
        load_table(str(tmp_path / "missing.json"))


def test_shards_split_the_work_without_overlap():
    space = build_space(models.create_model("resnet20"), (1, 3, 32, 32))
    keys = enumerate_keys(space, 16)
    tables = [build_table(BuildConfig("resnet20", (1, 3, 32, 32), granularity=16, shard=(i, 2), warmup=1, iters=3,
                                      rounds=1), keys) for i in (1, 2)]
    a, b = ({e.key for e in t.entries} for t in tables)
    assert not a & b and a | b == set(keys)
    assert tables[0].build["shard"] == "1/2"


def test_parsers():
    assert parse_shape("1x3x32x32") == [1, 3, 32, 32]
    assert parse_shard("2/4") == (2, 4)
    for bad in ("3x32x32", "1x3xax32", "0x3x32x32"):
        with pytest.raises(ValueError, match="NxCxHxW|N x C x H x W"):
            parse_shape(bad)
    for bad in ("0/2", "3/2", "1-2"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_rounds_combine_by_median():
    s = combine_rounds([{"median": 1.0, "mean": 1.0, "p90": 1.2, "std": 0.1},
                        {"median": 5.0, "mean": 5.0, "p90": 6.0, "std": 0.9},  # a disturbed round
                        {"median": 1.2, "mean": 1.3, "p90": 1.4, "std": 0.2}])
    assert s["median"] == 1.2 and s["p90"] == 1.4 and s["rounds_median"] == [1.0, 5.0, 1.2]
    assert "min" not in s  # the rounds reported none
    s = combine_rounds([{"median": 1.0, "mean": 1.0, "p90": 1.2, "std": 0.1, "min": 0.9},
                        {"median": 1.2, "mean": 1.3, "p90": 1.4, "std": 0.2, "min": 0.8}])
    assert s["min"] == 0.8 and s["median"] == 1.1


def test_the_table_predicts_by_its_statistic(tmp_path):
    """A table taken by the median predicts from the entries' medians, one taken by the minimum from their minima
    (the overhead is the overhead graph's statistic of the same kind): with every median 1.25 times its minimum,
    the median table predicts exactly 1.25 times as much."""
    fast, med = synthetic_table(statistic="min"), synthetic_table(statistic="median")
    fast.save(str(tmp_path / "min.json"))
    med.save(str(tmp_path / "median.json"))
    fast, med = load_table(str(tmp_path / "min.json")), load_table(str(tmp_path / "median.json"))
    assert med.overhead_ms == pytest.approx(1.25 * fast.overhead_ms) and fast.overhead_ms == OVERHEAD_MS
    a = TablePredictor.for_model(fast, models.create_model("resnet20"))
    b = TablePredictor.for_model(med, models.create_model("resnet20"))
    for w in (a.space.full_widths, {g.name: 8 for g in a.space.groups}):
        assert a.predict_ms(w) == pytest.approx(predicted_by_formula("resnet20", w), rel=1e-12)
        assert b.predict_ms(w) == pytest.approx(1.25 * a.predict_ms(w), rel=1e-12)


def test_every_table_in_the_repository_loads_and_predicts_its_model():
    from tests.conftest import ROOT

    paths = sorted((ROOT / "latency_tables").rglob("*.json"))
    assert len(paths) >= 10
    for p in paths:
        t = load_table(str(p))
        pred = TablePredictor.for_model(t, models.create_model(t.models[0]))
        assert 0.1 < pred.predict_ms(pred.space.full_widths) < 100, p
