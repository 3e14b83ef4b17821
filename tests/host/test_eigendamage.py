"""EigenDamage's building blocks against explicit computations: K-FAC factors, the eigenbasis, the layer
re-expressed in it, and the OBD saliency."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeshrink.host.errors import UserError
from edgeshrink.host.prune.eigendamage import EigenConv, Factors, eigenbasis, kfac_factors, saliency


def _explicit_patch(x, n, c_in, k, pad, stride, i, j, bias):
    """The input patch at output position (i, j) of example n, by loops over channel and kernel offsets."""
    h, w = x.shape[2:]
    out = []
    for c in range(c_in):
        for di in range(k):
            for dj in range(k):
                r, s = i * stride + di - pad, j * stride + dj - pad
                out.append(float(x[n, c, r, s]) if 0 <= r < h and 0 <= s < w else 0.0)
    return torch.tensor(out + ([1.0] if bias else []), dtype=torch.float64)


@pytest.mark.parametrize("bias,stride", [(True, 1), (False, 2)])
def test_kfac_factors_equal_an_explicit_per_example_computation(bias, stride):
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=stride, padding=1, bias=bias)
    hw = 5 if stride == 1 else 3  # output side for a 5x5 input
    net = nn.Sequential(conv, nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(3 * hw * hw, 4))
    x, y = torch.randn(6, 2, 5, 5), torch.tensor([0, 1, 2, 3, 0, 1])
    got = kfac_factors(net, [(x[:4], y[:4]), (x[4:], y[4:])], modules={"conv": conv, "fc": net[3]})
    # explicit: each example alone, its own loss's gradient at the conv's output, patches by loops
    A = torch.zeros(2 * 9 + bias, 2 * 9 + bias, dtype=torch.float64)
    S = torch.zeros(3, 3, dtype=torch.float64)
    A_fc = torch.zeros(3 * hw * hw + 1, 3 * hw * hw + 1, dtype=torch.float64)
    S_fc = torch.zeros(4, 4, dtype=torch.float64)
    for n in range(6):
        s = conv(x[n:n + 1])
        s.retain_grad()
        hid = torch.relu(s).flatten(1)
        hid.retain_grad()
        logits = net[3](hid)
        logits.retain_grad()
        F.cross_entropy(logits, y[n:n + 1]).backward()
        for i in range(hw):
            for j in range(hw):
                a = _explicit_patch(x, n, 2, 3, 1, stride, i, j, bias)
                A += torch.outer(a, a) / (hw * hw)
                g = s.grad[0, :, i, j].double()
                S += torch.outer(g, g)
        a_fc = torch.cat([hid[0].detach().double(), torch.ones(1, dtype=torch.float64)])
        A_fc += torch.outer(a_fc, a_fc)
        S_fc += torch.outer(logits.grad[0].double(), logits.grad[0].double())
        net.zero_grad()
    assert got["conv"].examples == 6
    # the per-example runs differ from the batched ones by float32 rounding (about 1e-7), not more
    assert torch.allclose(got["conv"].A, A / 6, atol=1e-6) and torch.allclose(got["conv"].S, S / 6, atol=1e-6)
    assert torch.allclose(got["fc"].A, A_fc / 6, atol=1e-6) and torch.allclose(got["fc"].S, S_fc / 6, atol=1e-6)


@pytest.mark.parametrize("bias,stride,pad", [(False, 1, 1), (True, 2, 1), (True, 1, 0)])
def test_the_eigenbasis_form_computes_the_layer_itself(bias, stride, pad):
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 5, 3, stride=stride, padding=pad, bias=bias)
    x = torch.randn(4, 3, 8, 8)
    factors = kfac_factors(_with_head(conv, x), [(x, torch.tensor([0, 1, 0, 1]))], modules={"conv": conv})["conv"]
    basis = eigenbasis(conv, factors, damping=1e-3)
    W = torch.cat([conv.weight.flatten(1), conv.bias[:, None]], 1) if bias else conv.weight.flatten(1)
    assert torch.allclose(basis.Q_S @ basis.W_star @ basis.Q_A.T, W.double(), atol=1e-10)
    eig = EigenConv(conv, basis)
    assert [type(m).__name__ for m in eig] == ["Conv2d"] * 3
    assert eig[0].kernel_size == (3, 3) and eig[1].kernel_size == eig[2].kernel_size == (1, 1)
    with torch.no_grad():
        assert (eig(x) - conv(x)).abs().max() < 1e-5


def _with_head(conv, x):
    with torch.no_grad():
        n_out = conv(x[:1]).numel()
    return nn.Sequential(conv, nn.Flatten(), nn.Linear(n_out, 2))


def test_saliency_is_obd_in_the_eigenbasis():
    lin = nn.Linear(2, 1, bias=False)
    lin.weight.data = torch.tensor([[1.0, 2.0]])
    f = Factors(A=torch.diag(torch.tensor([1.0, 2.0], dtype=torch.float64)),
                S=torch.tensor([[3.0]], dtype=torch.float64), examples=1)
    b = eigenbasis(lin, f, damping=1e-12)
    s_in, s_out = saliency(b)
    # dL_ij = 1/2 W*_ij^2 lam_S,i lam_A,j: 1/2 * 1 * 3 * 1 and 1/2 * 4 * 3 * 2
    assert s_in.tolist() == pytest.approx([1.5, 12.0]) and s_out.tolist() == pytest.approx([13.5])


def test_refusals():
    lin = nn.Linear(2, 1)
    f = Factors(A=torch.eye(3, dtype=torch.float64), S=torch.eye(1, dtype=torch.float64), examples=1)
    for bad in (0.0, -1e-3, float("inf")):
        with pytest.raises(UserError, match="--damping must be > 0"):
            eigenbasis(lin, f, damping=bad)
    grouped = nn.Conv2d(4, 4, 3, groups=2)
    with pytest.raises(UserError, match="grouped convolution"):
        kfac_factors(nn.Sequential(grouped), [], modules={"g": grouped})
    with pytest.raises(UserError, match="at least one batch"):
        kfac_factors(nn.Sequential(nn.Linear(2, 2)), [])


def test_factors_of_a_registry_resnet_with_in_place_activations():
    from edgeshrink import models

    torch.manual_seed(0)
    net = models.create_model("resnet20", 10)
    got = kfac_factors(net, [(torch.randn(8, 3, 32, 32), torch.arange(8) % 10)])
    convs = {n: m for n, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    assert set(got) == set(convs) | {"fc"}
    for n, m in convs.items():
        d = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
        assert got[n].A.shape == (d, d) and got[n].S.shape == (m.out_channels, m.out_channels)
        assert torch.allclose(got[n].A, got[n].A.T) and torch.linalg.eigvalsh(got[n].S).min() > -1e-9
    assert got["fc"].A.shape == (65, 65)  # 64 features and the bias's constant
