"""EigenDamage's building blocks against explicit computations: K-FAC factors, the eigenbasis, the layer
re-expressed in it, and the OBD saliency."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeshrink.host.errors import UserError
from edgeshrink.host.prune.eigendamage import Factors, eigen_conv, eigenbasis, kfac_factors, saliency


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
    eig = eigen_conv(conv, basis)
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


def _explicit_damped_obd(W, delta, A, S, damping):
    """½ vec(δ)ᵀ ((S + dI) ⊗ (A + dI)) vec(δ) with the Kronecker product written out (row-major vec of δ)."""
    F_ = torch.kron(S + damping * torch.eye(S.shape[0], dtype=S.dtype), A + damping * torch.eye(A.shape[0], dtype=A.dtype))
    v = delta.reshape(-1)
    return 0.5 * float(v @ F_ @ v)


def test_channel_saliencies_equal_obd_under_the_explicit_kronecker_fisher():
    from edgeshrink.host.prune.eigendamage import in_channel_saliency, out_channel_saliency

    torch.manual_seed(2)
    conv = nn.Conv2d(2, 3, 2, bias=False)
    W = conv.weight.detach().flatten(1).double()  # (3, 8)
    ra, rs = torch.randn(8, 8, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    f = Factors(A=ra @ ra.T / 8, S=rs @ rs.T / 3, examples=1)
    basis = eigenbasis(conv, f, damping=0.1)
    out = out_channel_saliency(basis)
    for c in range(3):
        delta = torch.zeros_like(W)
        delta[c] = W[c]
        assert float(out[c]) == pytest.approx(_explicit_damped_obd(W, delta, f.A, f.S, 0.1), rel=1e-9)
    inn = in_channel_saliency(basis, 2, 4)
    for c in range(2):
        delta = torch.zeros_like(W)
        delta[:, c * 4:(c + 1) * 4] = W[:, c * 4:(c + 1) * 4]
        assert float(inn[c]) == pytest.approx(_explicit_damped_obd(W, delta, f.A, f.S, 0.1), rel=1e-9)


def test_corrected_eigenvalues_are_the_per_example_gradients_second_moments_in_the_eigenbasis():
    from edgeshrink.host.prune.eigendamage import corrected_eigenvalues

    torch.manual_seed(4)
    lin = nn.Linear(3, 2, bias=False)
    net = nn.Sequential(lin)
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
    basis = eigenbasis(lin, kfac_factors(net, [(x, y)])["0"], damping=1e-3)
    got = corrected_eigenvalues(net, [(x[:2], y[:2]), (x[2:], y[2:])], {"0": basis})["0"]
    want = torch.zeros(2, 3, dtype=torch.float64)
    for n in range(5):
        net.zero_grad()
        F.cross_entropy(net(x[n:n + 1]), y[n:n + 1]).backward()
        want += (basis.Q_S.T @ lin.weight.grad.double() @ basis.Q_A) ** 2 / 5
    assert torch.allclose(got, want, atol=1e-9)


def test_eigen_ranks_remove_the_least_salient_directions_within_the_budget():
    from edgeshrink.host.prune.eigendamage import Eigenbasis, eigen_ranks

    eye = torch.eye(3, dtype=torch.float64)
    # W* diagonal (2, 1, 3) with unit curvature: direction saliencies ½ W*²: 2, 0.5, 4.5 on both sides
    b = Eigenbasis(eye, torch.ones(3, dtype=torch.float64), eye, torch.ones(3, dtype=torch.float64),
                   torch.diag(torch.tensor([2.0, 1.0, 3.0], dtype=torch.float64)))
    assert eigen_ranks(b, 0.0) == ([2, 0, 1], [2, 0, 1])
    assert eigen_ranks(b, 1.0) == ([2, 0], [2, 0])  # 0.5 fits in half the budget, 0.5 + 2 does not
    assert eigen_ranks(b, 100.0) == ([2], [2])  # one direction is always kept


def _decision_setup(formula_table):
    from edgeshrink import models
    from edgeshrink.host.data import load_digits
    from edgeshrink.host.latency.predict import TablePredictor
    from edgeshrink.host.latency.table import load_table
    from edgeshrink.host.prune.methods import EigenDamageConfig, MethodContext

    torch.manual_seed(0)
    m = models.create_model("resnet20", 10, {"layer1.0.conv1": 8}).eval()
    pred = TablePredictor.for_model(load_table(str(formula_table)), models.create_model("resnet20", 10))
    ctx = MethodContext(m, load_digits(), pred.space, pred, "resnet20", 10, 8, None, log=lambda _m: None)
    x = torch.randn(16, 3, 32, 32)
    factors = kfac_factors(m, [(x, torch.arange(16) % 10)])
    return m, ctx, factors, EigenDamageConfig()


def test_the_eigenbasis_form_is_taken_only_where_it_is_measured_faster(tmp_path, formula_table):
    import copy

    from edgeshrink import models
    from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from edgeshrink.host.prune.eigendamage import eigen_form_decision

    m, ctx, factors, cfg = _decision_setup(formula_table)
    ref = copy.deepcopy(m)

    # a device on which every plain layer costs 1, a 1x1 convolution nothing, and the rotation 0.5 at 8x8 (stage 3
    # after its first convolution), 2 elsewhere
    def measure(keys):
        plain = {k for k in keys if k.fused and k.kernel != (1, 1)}
        return {k: 1.0 if k in plain else 0.0 if k.kernel == (1, 1) else 0.5 if k.in_hw == (8, 8) else 2.0
                for k in keys}

    got = eigen_form_decision(ctx, m, factors, {}, cfg, threshold=1e9, measure=measure)  # one direction each
    stage3 = ["layer3.0.conv2", "layer3.1.conv1", "layer3.1.conv2", "layer3.2.conv1", "layer3.2.conv2"]
    assert got["eigen_layers"] == stage3 and got["saving_ms"] == pytest.approx(0.5 * 5)
    assert {r["layer"]: (r["r_in"], r["r_out"], r["form"]) for r in got["layers"]}["layer3.1.conv1"] == (1, 1, "eigen")
    assert [type(mod).__name__ for mod in m.layer3[1].conv1] == ["Conv2d"] * 3 and m.layer3[1].conv1[0].out_channels == 1
    assert models.channel_spec(m) == models.channel_spec(ref)  # the interface of every layer is kept
    x = torch.randn(2, 3, 32, 32)
    save_checkpoint(str(tmp_path / "e.pt"), m, 10)
    ck = load_checkpoint(str(tmp_path / "e.pt"))
    assert ck["eigen"] == {n: [1, 1] for n in stage3}
    with torch.no_grad():
        assert torch.equal(model_from_checkpoint(ck)(x), m(x))


def test_no_eigenbasis_form_where_it_is_slower(formula_table):
    from edgeshrink.host.prune.eigendamage import eigen_form_decision

    m, ctx, factors, cfg = _decision_setup(formula_table)
    got = eigen_form_decision(ctx, m, factors, {}, cfg, threshold=1e9, measure=lambda keys: {k: 1.0 for k in keys})
    assert got["eigen_layers"] == [] and not any(hasattr(mod, "eigen_ranks") for mod in m.modules())
    assert all(r["r_in"] == 1 for r in got["layers"])  # an unbounded budget leaves one direction
