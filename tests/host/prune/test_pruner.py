"""The Torch-Pruning-shaped API for users' own training loops: LatencyPruner.step() and regularize(model)."""

import pytest
import torch
import torch.nn as nn

import edgeshrink as es
from edgeshrink.host.errors import BudgetError
from tests.tables import predicted_by_formula, synthetic_table


def widths_of(model, space):
    return {g.name: model.get_submodule(g.name).out_channels for g in space.groups}


@pytest.mark.slow
def test_latency_pruner_steps_down_a_geometric_schedule_to_the_budget(digits):
    torch.manual_seed(0)
    model = es.create_model("resnet20", 10)
    table = synthetic_table("resnet20", 8)
    full = predicted_by_formula("resnet20", es.TablePredictor.for_model(table, model).space.full_widths)
    pruner = es.LatencyPruner(model, table, budget_ms=0.49 * full, importance="taylor", iterative_steps=2)
    reg = es.SlimmingRegularizer(model, 1e-5)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = next(digits.batches("train", 32))
    targets = []
    for _ in range(pruner.iterative_steps):
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        reg.regularize(model)  # a regulariser's gradient goes in between backward() and the optimiser's step
        rec = pruner.step()
        targets.append(rec["target_ms"])
        assert predicted_by_formula("resnet20", widths_of(model, pruner.space)) == pytest.approx(rec["predicted_ms"])
        assert rec["predicted_ms"] <= rec["target_ms"]
        opt = torch.optim.SGD(model.parameters(), lr=0.01)  # the parameters changed shape
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert targets == pytest.approx([full * 0.49 ** 0.5, 0.49 * full])
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(RuntimeError, match="steps are done"):
        pruner.step()
    with pytest.raises(BudgetError, match="unreachable"):
        es.LatencyPruner(es.create_model("resnet20"), table, budget_ms=1e-4)
    with pytest.raises(ValueError, match="importance"):
        es.LatencyPruner(es.create_model("resnet20"), table, budget_ms=full, importance="hessian")
