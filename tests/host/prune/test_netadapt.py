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


class ChannelSum:
    """A latency model whose answer is known by hand: 1 ms per channel of every group's width."""

    def predict_ms(self, widths):
        return float(sum(widths.values()))


def test_propose_picks_the_largest_width_meeting_the_target(setup, digits):
    """resnet20's groups are 16, 32 or 64 channels wide, on a grid of 8; asked to save 20 ms of a channel sum, a
    16-wide group cannot (16 -> 8 saves 8), a 32-wide one must go to 8 (32 - 12 = 20: the grid has 8, not 12) and a
    64-wide one to 40 (the largest of 8, 16, ..., 64 that is at most 44)."""
    model, pred = setup
    na = NetAdapt(model, digits, pred.space, ChannelSum(), NetAdaptConfig(budget_ms=1.0, granularity=8))
    full = pred.space.full_widths
    props = {p.group: p for p in na.propose(full, sum(full.values()) - 20)}
    want = {g: {16: None, 32: 8, 64: 40}[w] for g, w in full.items()}
    assert {g: p.width for g, p in props.items()} == {g: w for g, w in want.items() if w is not None}
    for g, p in props.items():
        assert p.predicted_ms == sum(full.values()) - full[g] + p.width


def test_selection_by_accuracy_loss_per_ms_or_by_accuracy(setup, digits):
    """Hand-made proposals from a 1.0 ms network at 90% val top-1: A loses 1 point for 0.2 ms (5 points/ms), B 0.5
    for 0.05 ms (10/ms), C 2 for 0.5 ms (4/ms). The ratio rule takes C, the accuracy rule B."""
    from edgeshrink.host.prune.netadapt import Proposal

    model, pred = setup

    def pick(select):
        na = NetAdapt(model, digits, pred.space, pred, NetAdaptConfig(budget_ms=0.1, granularity=8, select=select))
        ps = [Proposal("A", 8, 0.8, val_top1=89.0), Proposal("B", 8, 0.95, val_top1=89.5),
              Proposal("C", 8, 0.5, val_top1=88.0)]
        for p in ps:
            p.score = na.score(p, 1.0, 90.0)
        return na.choose(ps), ps

    best, ps = pick("ratio")
    assert [p.score for p in ps] == pytest.approx([5.0, 10.0, 4.0]) and best.group == "C"
    best, ps = pick("accuracy")
    assert best.group == "B"


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


@pytest.mark.parametrize("select", [pytest.param("ratio", marks=pytest.mark.slow), "accuracy"])
def test_a_step_commits_the_chosen_proposal(setup, digits, select):
    na = make(setup, digits, select=select)
    before = na.widths()
    rec = na.step(0)
    chosen = [c for c in rec["candidates"] if c["group"] == rec["chosen_group"]]
    assert len(chosen) == 1 and chosen[0]["score"] == min(c["score"] for c in rec["candidates"])
    assert na.widths()[rec["chosen_group"]] == rec["width_after"] < before[rec["chosen_group"]]
    assert all(w == before[g] for g, w in na.widths().items() if g != rec["chosen_group"])


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
