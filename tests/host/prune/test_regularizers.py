"""The regularisers' gradients against known answers: central differences of the penalty each paper writes, and
torch's own smooth-L1; MorphNet's per-channel weights against the latency formula of a known-answer table."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeshrink import models
from edgeshrink.host.latency.predict import TablePredictor
from edgeshrink.host.latency.space import channel_grid
from edgeshrink.host.prune.criteria import group_batchnorms, marginal_ms
from edgeshrink.host.prune.regularizers import MorphNetRegularizer, SlimmingRegularizer, SWDRegularizer
from tests.tables import predicted_by_formula, synthetic_table


def central_difference(f, p: torch.Tensor, i: int, h: float = 1e-3) -> float:
    """d f / d p.flatten()[i] by central differences (float64)."""
    flat = p.data.view(-1)
    old = flat[i].item()
    flat[i] = old + h
    up = f()
    flat[i] = old - h
    down = f()
    flat[i] = old
    return (up - down) / (2 * h)


def test_swd_adds_a_mu_w_on_the_target_set_and_nothing_elsewhere():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 6, 3).double(), nn.BatchNorm2d(6).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    mu, a_min, a_max = 5e-4, 2.0, 200.0
    reg = SWDRegularizer({"g": [conv]}, {"g": [bn]}, mu, a_min, a_max, total_steps=10)
    targets = [1, 4]
    reg.set_targets({"g": targets})
    params = [conv.weight, conv.bias, bn.weight, bn.bias]
    for p in params:
        p.grad = torch.zeros_like(p)
    reg.regularize()  # step 0: a = a_min

    def penalty():  # Tessier et al. 2022, Eq. 3: a * mu / 2 * ||w_T||^2 over the targets' weights
        return float(sum(a_min * mu / 2 * (p.detach()[targets] ** 2).sum() for p in params))

    for p in params:
        for i in range(p.numel()):
            assert p.grad.view(-1)[i].item() == pytest.approx(central_difference(penalty, p, i), abs=1e-10)
        rows = torch.zeros(p.shape[0], dtype=torch.bool)
        rows[targets] = True
        assert torch.all(p.grad[~rows] == 0) and torch.all(p.grad[rows] != 0)
    # a(t) grows exponentially from a_min to a_max: the geometric mean halfway
    assert reg.a(0) == a_min and reg.a(5) == pytest.approx((a_min * a_max) ** 0.5) and reg.a(10) == pytest.approx(a_max)
    assert reg.a(99) == pytest.approx(a_max)  # clipped past the end
    reg.regularize()  # the second call is step 1: a(1) * mu * w more
    expect = (a_min + reg.a(1)) * mu * bn.weight.detach()[targets]
    assert torch.allclose(bn.weight.grad[targets], expect)


@pytest.mark.parametrize("penalty", ["l1", "smooth-l1"])
def test_slimming_adds_the_l1_or_smooth_l1_subgradient_on_every_bn_scale(penalty):
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.Conv2d(5, 4, 1), nn.BatchNorm2d(4))
    gammas = [torch.tensor([-2.0, -0.5, 0.0, 0.25, 3.0]), torch.tensor([1.0, -1.0, 0.9, -0.1])]
    bns = [model[1], model[4]]
    with torch.no_grad():
        for bn, g in zip(bns, gammas):
            bn.weight.copy_(g)
    s = 1e-5 if penalty == "l1" else 1e-6
    SlimmingRegularizer(model, s, penalty).regularize(model)
    for bn, g in zip(bns, gammas):
        if penalty == "l1":
            want = s * torch.sign(g)  # Liu et al. 2017: the subgradient of |gamma|, 0 at 0
        else:  # torch's own smooth-L1 (Huber, beta 1) as the penalty, differentiated by autograd
            x = g.clone().requires_grad_()
            (s * F.smooth_l1_loss(x, torch.zeros_like(x), beta=1.0, reduction="sum")).backward()
            want = x.grad
        assert torch.allclose(bn.weight.grad, want, atol=1e-15)
    for m in (model[0], model[3]):
        assert m.weight.grad is None  # only BN scales are penalised


def test_slimming_and_swd_refuse_bad_strengths():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(ValueError):
        SlimmingRegularizer(m, -1e-5)
    with pytest.raises(ValueError):
        SlimmingRegularizer(m, 1e-5, "l2")
    with pytest.raises(ValueError):
        SWDRegularizer({}, {}, 5e-4, 10.0, 1.0, 100)


def test_morphnet_weights_are_the_tables_marginal_latencies():
    """Each group's weight is the latency the table saves by its next grid step down, per channel: here the
    table's entries come from a formula, so the answer is that formula summed over the network's layers."""
    model = models.create_model("resnet20")
    pred = TablePredictor.for_model(synthetic_table("resnet20", 8), model)
    space = pred.space
    grids = {g.name: channel_grid(g.width, 8) for g in space.groups}
    widths = dict(space.full_widths)
    widths["layer2.0.conv2"] = 8  # the bottom of its grid: its weight is the step up from there
    costs = marginal_ms(pred, widths, grids)
    full = predicted_by_formula("resnet20", widths)
    for g, grid in grids.items():
        w = widths[g]
        if w > grid[0]:
            lower = max(v for v in grid if v < w)
            want = (full - predicted_by_formula("resnet20", {**widths, g: lower})) / (w - lower)
        else:
            upper = min(v for v in grid if v > w)
            want = (predicted_by_formula("resnet20", {**widths, g: upper}) - full) / (upper - w)
        assert costs[g] == pytest.approx(want, rel=1e-9) and costs[g] > 0
    # the penalty's gradient on each BN scale of a group: lambda * its weight * sign(gamma)
    bns = group_batchnorms(model, space, (1, 3, 32, 32))
    reg = MorphNetRegularizer(bns, strength=0.05)
    reg.set_costs(costs)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(torch.linspace(-1, 1, m.num_features))
    reg.regularize(model)
    for g, ms in bns.items():
        assert ms, g
        for bn in ms:
            shared = sum(reg.strength * costs[h] for h, others in bns.items() if any(o is bn for o in others))
            assert torch.allclose(bn.weight.grad, shared * torch.sign(bn.weight.detach()))
