"""Channel selection to a budget on a table with a known answer (:mod:`tests.tables`): every prediction checked
against the formula summed over the network, and the choices against scores built so the answer is known."""

import pytest
import torch

from edgeshrink import models
from edgeshrink.host.errors import BudgetError
from edgeshrink.host.latency.predict import TablePredictor
from edgeshrink.host.latency.space import channel_grid
from edgeshrink.host.prune import criteria
from tests.tables import predicted_by_formula, synthetic_table


@pytest.fixture(scope="module")
def setup():
    model = models.create_model("resnet20")
    pred = TablePredictor.for_model(synthetic_table("resnet20", 8), model)
    grids = {g.name: channel_grid(g.width, 8) for g in pred.space.groups}
    return model, pred, grids


def flat_scores(pred, value=1.0):
    return {g.name: torch.full((g.width,), value, dtype=torch.float64) for g in pred.space.groups}


def test_uniform_is_the_largest_multiplier_on_the_grid_that_meets_the_budget(setup):
    _, pred, grids = setup
    full = pred.space.full_widths
    budget = 0.5 * predicted_by_formula("resnet20", full)
    r = criteria.uniform_widths(pred, full, grids, budget)
    m = r["multiplier"]
    assert predicted_by_formula("resnet20", r["widths"]) == pytest.approx(r["predicted_ms"]) and r["predicted_ms"] <= budget
    assert r["widths"] == {g: criteria.grid_floor(grids[g], m * full[g]) for g in full}
    # the next multiplier at which some width grows misses the budget
    nxt = min(v / full[g] for g, grid in grids.items() for v in grid if v / full[g] > m + 1e-12)
    up = {g: criteria.grid_floor(grids[g], nxt * full[g]) for g in full}
    assert predicted_by_formula("resnet20", up) > budget
    with pytest.raises(BudgetError, match="unreachable"):
        criteria.uniform_widths(pred, full, grids, 1e-4)


def test_global_ranking_removes_the_lowest_scored_group_first(setup):
    _, pred, grids = setup
    full = pred.space.full_widths
    scores = flat_scores(pred)
    scores["layer3.1.conv1"] = torch.zeros(64, dtype=torch.float64)  # worthless channels
    narrow = {**full, "layer3.1.conv1": 8}
    budget = predicted_by_formula("resnet20", narrow)  # exactly what removing them all saves
    steps = []
    r = criteria.widths_to_budget(scores, pred, full, grids, budget, on_step=steps.append)
    assert r["widths"] == narrow and {s["group"] for s in steps} == {"layer3.1.conv1"} and len(steps) == 7
    assert r["predicted_ms"] == pytest.approx(budget)


def test_per_ms_ranking_takes_the_step_that_saves_the_most_latency_first(setup):
    _, pred, grids = setup
    full = pred.space.full_widths
    here = predicted_by_formula("resnet20", full)
    saving = {g: here - predicted_by_formula("resnet20", {**full, g: max(v for v in grid if v < full[g])})
              for g, grid in grids.items()}
    steps = []
    criteria.widths_to_budget(flat_scores(pred), pred, full, grids, here - 1e-9, rank="per-ms", on_step=steps.append)
    assert steps[0]["group"] == max(saving, key=saving.get)


def test_safe_scope_keeps_every_group_above_its_floor_and_local_keeps_one_ratio(setup):
    _, pred, grids = setup
    full = pred.space.full_widths
    budget = 0.45 * predicted_by_formula("resnet20", full)
    scores = flat_scores(pred)
    scores["layer3.2.conv1"] = torch.zeros(64, dtype=torch.float64)
    safe = criteria.widths_to_budget(scores, pred, full, grids, budget, scope="safe", min_keep=0.25)
    assert all(w >= 0.25 * full[g] for g, w in safe["widths"].items()) and safe["predicted_ms"] <= budget
    glob = criteria.widths_to_budget(scores, pred, full, grids, budget)
    assert glob["widths"]["layer3.2.conv1"] == 8 < safe["widths"]["layer3.2.conv1"] == 16
    local = criteria.widths_to_budget(scores, pred, full, grids, budget, scope="local")
    assert local["widths"] == criteria.uniform_widths(pred, full, grids, budget)["widths"]
    with pytest.raises(BudgetError, match="safe floor"):
        criteria.widths_to_budget(scores, pred, full, grids, 0.2 * budget, scope="safe", min_keep=0.9)


def test_pruning_rate_is_reached_by_the_fewest_channels(setup):
    _, pred, _ = setup
    full = pred.space.full_widths

    def params(w):
        m = models.create_model("resnet20", 10, pred.space.spec_from_widths(w))
        return sum(p.numel() for p in m.parameters())

    torch.manual_seed(0)
    scores = {g: torch.rand(w, dtype=torch.float64) for g, w in full.items()}
    r = criteria.widths_at_rate(scores, params, full, 0.4)
    total = params(full)
    assert r["params_removed_fraction"] == pytest.approx(1 - params(r["widths"]) / total) and r["params_removed_fraction"] >= 0.4
    # the channel removed last is the one at the threshold; keeping it misses the rate
    gone = {g: full[g] - r["widths"][g] for g in full}
    last = next(g for g in full if gone[g] and float(torch.sort(scores[g]).values[gone[g] - 1]) == r["threshold"])
    back = {**r["widths"], last: r["widths"][last] + 1}
    assert 1 - params(back) / total < 0.4
    # every channel that went scores at most the threshold, every one kept at least it
    for g, w in full.items():
        s = torch.sort(scores[g]).values
        gone = full[g] - r["widths"][g]
        assert gone == 0 or float(s[gone - 1]) <= r["threshold"]
        assert gone == w or float(s[gone]) >= r["threshold"] or gone == w - 1
    with pytest.raises(BudgetError, match="unreachable"):
        criteria.widths_at_rate(scores, params, full, 0.9999)


def test_prune_to_widths_keeps_the_highest_scored_filters(setup):
    model, pred, _ = setup
    import copy

    m = copy.deepcopy(model)
    w_before = m.layer2[1].conv1.weight.detach().clone()
    scores = flat_scores(pred)
    keep = [3, 7, 11, 30]
    s = torch.zeros(32, dtype=torch.float64)
    s[keep] = 1.0
    scores["layer2.1.conv1"] = s
    target = {**pred.space.full_widths, "layer2.1.conv1": 4}
    kept = criteria.prune_to_widths_(m, pred.space, scores, target, (1, 3, 32, 32))
    assert kept["layer2.1.conv1"] == keep
    assert torch.equal(m.layer2[1].conv1.weight, w_before[keep])
    assert m.layer2[1].conv2.in_channels == 4 and m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
