"""NetAdapt on the real digits data with a table whose predictions are known (tests/tables.py; coarse grid, few
fine-tuning steps)."""

import pytest

from edgeshrink import models
from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint
from edgeshrink.host.errors import BudgetError
from edgeshrink.host.latency.predict import TablePredictor
from edgeshrink.host.latency.table import load_table
from edgeshrink.host.prune.netadapt import NetAdapt, NetAdaptConfig


@pytest.fixture(scope="module")
def setup(formula_table, untrained_ckpt):
    table = load_table(str(formula_table))
    model = model_from_checkpoint(load_checkpoint(str(untrained_ckpt)))
    pred = TablePredictor.for_model(table, models.create_model("resnet20"))
    return model, pred


def make(setup, digits, **kw):
    model, pred = setup
    base = pred.predict_ms(pred.space.full_widths)
    cfg = NetAdaptConfig(**{"budget_ms": 0.7 * base, "granularity": 8, "short_term_steps": 2, "long_term_epochs": 0,
                            "init_reduction": 0.1, "decay": 0.9, **kw})
    return NetAdapt(model, digits, pred.space, pred, cfg)


def test_targets_decay_geometrically_and_stop_at_the_budget(setup, digits):
    na = make(setup, digits)
    b = na.baseline_ms
    assert na.target_ms(0, b) == pytest.approx(0.9 * b)
    assert na.target_ms(2, b) == pytest.approx(b - 0.1 * 0.81 * b)
    assert na.target_ms(0, 0.72 * b) == pytest.approx(na.cfg.budget_ms)  # clipped to the budget


def test_propose_picks_the_largest_width_meeting_the_target(setup, digits):
    na = make(setup, digits)
    widths = na.widths()
    target = na.target_ms(0, na.baseline_ms)
    props = {p.group: p for p in na.propose(widths, target)}
    assert props
    for g, grid in na.grids.items():
        ok = [w for w in grid if w < widths[g] and na.latency.predict_ms({**widths, g: w}) <= target]
        if ok:
            assert props[g].width == max(ok) and props[g].predicted_ms <= target
        else:
            assert g not in props


@pytest.mark.slow
def test_run_meets_the_budget_and_records_history(setup, digits):
    model, pred = setup
    na = make(setup, digits, budget_ms=0.82 * pred.predict_ms(pred.space.full_widths))
    events = []
    na.on_event = lambda kind, info: events.append(kind)
    pruned = na.run()
    assert na.latency.predict_ms(na.widths(pruned)) <= na.cfg.budget_ms
    assert na.history and events.count("chosen") == len(na.history)
    assert events.count("candidate") == sum(len(h["candidates"]) for h in na.history)
    h = na.history[0]
    assert h["width_after"] < h["width_before"] and h["predicted_ms"] <= h["target_ms"]
    assert {"target_ms", "chosen_group", "val_top1", "predicted_ms"} <= set(h)
    # the pruned network is a valid architecture of the registry
    spec = models.channel_spec(pruned)
    models.create_model("resnet20", 10, spec).load_state_dict(pruned.state_dict())


@pytest.mark.parametrize("select", ["ratio", "accuracy"])
def test_selection_rules(setup, digits, select):
    na = make(setup, digits, select=select)
    rec = na.step(0)
    cands = rec["candidates"]
    if select == "accuracy":
        assert rec["val_top1"] == max(c["val_top1"] for c in cands)
    else:
        saved = {c["group"]: rec["current_ms"] - c["predicted_ms"] for c in cands}
        ratio = {c["group"]: (rec["val_top1_before"] - c["val_top1"]) / saved[c["group"]] for c in cands}
        assert ratio[rec["chosen_group"]] == pytest.approx(min(ratio.values()))


def test_unreachable_budget_is_refused(setup, digits):
    na = make(setup, digits, budget_ms=0.01)
    with pytest.raises(BudgetError, match="unreachable: the narrowest network"):
        na.run()


def test_expected_iterations_follow_the_schedule(setup, digits):
    na = make(setup, digits, init_reduction=0.1, decay=1.0, budget_ms=0.5 * 1.0)
    na.baseline_ms = 1.0
    assert na.expected_iterations() == 5


def test_an_already_pruned_model_starts_from_its_own_latency(setup, digits):
    model, pred = setup
    from edgeshrink.host.prune.surgery import prune_group_

    narrow = models.create_model("resnet20", 10, models.channel_spec(model))
    narrow.load_state_dict(model.state_dict())
    prune_group_(narrow, pred.space.groups[0].members, 8, (1, 3, 32, 32))
    na = NetAdapt(narrow, digits, pred.space, pred, NetAdaptConfig(budget_ms=0.1, granularity=8))
    assert na.baseline_ms == pytest.approx(pred.predict_ms(na.widths()))
    assert na.baseline_ms < pred.predict_ms(pred.space.full_widths)
