"""EigenDamage's building blocks (Wang et al., ICML 2019): Kronecker-factored curvature per layer, its eigenbasis,
a layer re-expressed in that basis, and the Optimal Brain Damage saliency of each eigen-direction.

No maintained library implements the method (Torch-Pruning's ``OBDCImportance`` is the paper's C-OBD baseline),
so this follows the papers:

- **K-FAC factors** (Martens & Grosse 2015 for linear layers; Grosse & Martens 2016, "KFC", for convolutions).
  For a layer computing ``s_t = W a_t`` at positions ``t`` (``a_t``: the input patch, ``C_in * kh * kw`` values,
  with a trailing 1 when the layer has a bias; a linear layer has one position), the Fisher block of ``vec(W)``
  is approximated as ``A ⊗ S`` with ``A = E[mean_t a_t a_tᵀ]`` and ``S = E[sum_t g_t g_tᵀ]``, ``g_t = dL/ds_t``
  the per-example gradient at position t (KFC's spatially uncorrelated derivatives; the expectations over
  examples). Gradients come from the sum of the per-example losses, so each example's ``g`` is its own.
- **The eigenbasis** (EigenDamage Sec. 3): ``A = Q_A diag(λ_A) Q_Aᵀ``, ``S = Q_S diag(λ_S) Q_Sᵀ``; the weights in
  the Kronecker-factored eigenbasis are ``W* = Q_Sᵀ W Q_A`` and the Fisher there is diagonal with entries
  ``λ_S,i λ_A,j``. Damping adds ``damping`` to every eigenvalue of both factors.
- **The layer re-expressed** (:func:`eigen_conv`): ``W = Q_S W* Q_Aᵀ`` is three layers: a ``kh x kw`` convolution whose filters are the
  columns of ``Q_A`` (the input patch rotated into A's eigenbasis, ``C_in * kh * kw`` channels), the core ``W*``
  as a 1x1 convolution, and ``Q_S`` as a 1x1 convolution (with the layer's bias); equal to the layer before any
  eigen-direction is removed.
- **Saliency**: OBD in the eigenbasis, ``ΔL_ij = ½ (W*_ij)² λ_S,i λ_A,j`` (EigenDamage Eq. 9); an input
  eigen-direction ``j`` of the layer scores ``sum_i ΔL_ij``, an output one ``i`` scores ``sum_j ΔL_ij``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeshrink.host.errors import UserError
from edgeshrink.host.latency.build import measure_keys
from edgeshrink.models.eigen import EigenConv


def _patches(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``(N, T, C_in * kh * kw)`` input patches of ``conv`` (``F.unfold``'s order: channel, then kernel row, column,
    the order of ``conv.weight.flatten(1)``)."""
    cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride)
    return cols.transpose(1, 2)


def check_layer(module: nn.Module) -> None:
    """Raises UserError unless ``module`` is a Linear or an ungrouped Conv2d (a grouped convolution's factors
    are per group, which this does not compute)."""
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        raise UserError(f"K-FAC factors of a grouped convolution ({module}) are not supported")
    if not isinstance(module, (nn.Conv2d, nn.Linear)):
        raise UserError(f"K-FAC factors are for Conv2d and Linear layers, not {type(module).__name__}")


def layer_inputs(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The ``a`` vectors of a layer for input ``x``: ``(N, T, d_in)``, with a trailing 1 when it has a bias."""
    check_layer(module)
    if isinstance(module, nn.Conv2d):
        a = _patches(x, module)
    else:
        a = x.reshape(x.shape[0], 1, -1)
    if module.bias is not None:
        a = torch.cat([a, a.new_ones(*a.shape[:2], 1)], dim=2)
    return a


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The layer's ``W`` as ``(C_out, d_in)``: the weights flattened, the bias as the last column when present."""
    w = module.weight.detach().flatten(1)
    return torch.cat([w, module.bias.detach()[:, None]], dim=1) if module.bias is not None else w


@dataclass
class Factors:
    """One layer's K-FAC factors: ``A`` ``(d_in, d_in)``, ``S`` ``(C_out, C_out)``, from ``examples`` inputs."""

    A: torch.Tensor
    S: torch.Tensor
    examples: int


def _layer_pass(model: nn.Module, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]], modules: Dict[str, nn.Module],
                on_layer: Callable[[str, torch.Tensor, torch.Tensor], None], loss_fn=None) -> int:
    """Run ``batches`` forward and backward in eval mode, calling ``on_layer(name, a, g)`` for every layer of
    ``modules`` with its inputs ``a`` ``(N, T, d_in)`` and per-example output gradients ``g`` ``(N, T, C_out)``
    (float64; the loss summed over the batch, so each example's gradient is its own). Returns the examples seen."""
    for m in modules.values():
        check_layer(m)
    loss_fn = loss_fn or (lambda out, y: F.cross_entropy(out, y, reduction="sum"))
    hooks = []
    for name, m in modules.items():
        def fwd(mod, args, out, name=name):
            a = layer_inputs(mod, args[0].detach()).double()

            def grad(g, a=a):
                g = g.detach().double()
                g = g.flatten(2).transpose(1, 2) if g.dim() == 4 else g.reshape(a.shape[0], 1, -1)
                on_layer(name, a, g)

            # a hook on the output tensor, not a module backward hook: an in-place activation after the layer
            # (ReLU(inplace=True)) is refused by module backward hooks
            out.register_hook(grad)

        hooks.append(m.register_forward_hook(fwd))
    was_training = model.training
    model.eval()  # BN's running statistics, as the pruned network will run
    seen = 0
    try:
        for x, y in batches:
            model.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            seen += int(x.shape[0])
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if not seen:
        raise UserError("K-FAC factors need at least one batch")
    return seen


def conv_layers(model: nn.Module) -> Dict[str, nn.Module]:
    """Every Conv2d and Linear of ``model`` by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def kfac_factors(model: nn.Module, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
                 modules: Optional[Dict[str, nn.Module]] = None, loss_fn=None) -> Dict[str, Factors]:
    """K-FAC factors of each layer in ``modules`` (default: every Conv2d and Linear of ``model``) over ``batches``
    of ``(x, y)``, from forward and backward hooks on the true labels' loss (the empirical Fisher).

    Args:
        loss_fn: ``loss_fn(output, y)`` summed over the batch (default cross-entropy with ``reduction="sum"``).

    Returns:
        ``{module name: Factors}`` in float64.

    Raises:
        UserError: no batches, or a layer type or grouped convolution the factors do not cover.
    """
    modules = conv_layers(model) if modules is None else modules
    sums: Dict[str, list] = {n: [0.0, 0.0] for n in modules}

    def on_layer(name, a, g):
        sums[name][0] = sums[name][0] + torch.einsum("nti,ntj->ij", a, a) / a.shape[1]  # sum_n mean_t a aᵀ
        sums[name][1] = sums[name][1] + torch.einsum("nti,ntj->ij", g, g)  # sum_n sum_t g gᵀ

    seen = _layer_pass(model, batches, modules, on_layer, loss_fn)
    return {n: Factors(s[0] / seen, s[1] / seen, seen) for n, s in sums.items()}


def corrected_eigenvalues(model: nn.Module, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
                          bases: Dict[str, "Eigenbasis"], loss_fn=None) -> Dict[str, torch.Tensor]:
    """The eigenvalue-corrected curvature in each layer's Kronecker-factored eigenbasis (EKFAC, George et al.
    2018, Eq. 10; the variant EigenDamage Sec. 3.3 uses): ``Λ*_ij = E_n[(Q_Sᵀ G_n Q_A)_ij²]`` with ``G_n =
    sum_t g_t a_tᵀ`` example n's weight gradient. Returns ``{name: (C_out, d_in)}`` float64.

    Raises:
        UserError: no batches.
    """
    sums: Dict[str, torch.Tensor] = {}
    mods = {n: model.get_submodule(n) for n in bases}

    def on_layer(name, a, g):
        b = bases[name]
        grad = torch.einsum("nti,ntj->nij", g, a)  # (N, C_out, d_in), each example's gradient
        rot = torch.einsum("ia,nij,jb->nab", b.Q_S, grad, b.Q_A)
        sums[name] = sums.get(name, 0.0) + (rot ** 2).sum(0)

    seen = _layer_pass(model, batches, mods, on_layer, loss_fn)
    return {n: v / seen for n, v in sums.items()}


@dataclass
class Eigenbasis:
    """A layer in its Kronecker-factored eigenbasis: ``W = Q_S @ W_star @ Q_A.T``; eigenvalues damped."""

    Q_A: torch.Tensor  # (d_in, d_in), columns the eigenvectors of A
    lam_A: torch.Tensor  # (d_in,)
    Q_S: torch.Tensor  # (C_out, C_out)
    lam_S: torch.Tensor  # (C_out,)
    W_star: torch.Tensor  # (C_out, d_in)
    lam: Optional[torch.Tensor] = None  # (C_out, d_in) eigenvalue-corrected curvature; None: lam_S lam_Aᵀ

    def curvature(self) -> torch.Tensor:
        """The diagonal curvature in the eigenbasis ``(C_out, d_in)``: the corrected one, else ``λ_S,i λ_A,j``."""
        return self.lam if self.lam is not None else self.lam_S[:, None] * self.lam_A[None, :]


def eigenbasis(module: nn.Module, factors: Factors, damping: float = 1e-3) -> Eigenbasis:
    """Eigendecompose the layer's factors (``torch.linalg.eigh``) and rotate its weights into the basis.

    Raises:
        UserError: ``damping`` <= 0 or not finite.
    """
    if not (isinstance(damping, (int, float)) and damping > 0 and damping < float("inf")):
        raise UserError(f"--damping must be > 0, got {damping}")
    lam_A, Q_A = torch.linalg.eigh(factors.A)
    lam_S, Q_S = torch.linalg.eigh(factors.S)
    W = weight_matrix(module).double()
    return Eigenbasis(Q_A, lam_A.clamp_min(0) + damping, Q_S, lam_S.clamp_min(0) + damping, Q_S.T @ W @ Q_A)


def saliency(basis: Eigenbasis) -> Tuple[torch.Tensor, torch.Tensor]:
    """OBD saliency in the eigenbasis (EigenDamage Eq. 9): ``(input eigen-directions (d_in,), output ones
    (C_out,))``, each the sum of ``½ (W*_ij)² λ_S,i λ_A,j`` over the other index."""
    dl = 0.5 * basis.W_star ** 2 * basis.curvature()
    return dl.sum(0), dl.sum(1)


def out_channel_saliency(basis: Eigenbasis) -> torch.Tensor:
    """OBD saliency ``(C_out,)`` of removing each output channel of the layer (its row of ``W``), measured in the
    eigenbasis as Eq. 9 measures an eigen-direction: ``½ sum_ij Λ_ij (Q_Sᵀ δ Q_A)_ij²`` with ``δ`` the row alone.
    With the uncorrected ``Λ = λ_S λ_Aᵀ`` this is ``½ S_cc w_cᵀ A w_c`` (damped): the K-FAC OBD of the channel."""
    W = basis.Q_S @ basis.W_star @ basis.Q_A.T  # (C_out, d_in): the layer's weights back
    P = (W @ basis.Q_A) ** 2  # (C_out, d_in): the row rotated on the input side
    return 0.5 * ((basis.Q_S ** 2) * (P @ basis.curvature().T)).sum(1)


def in_channel_saliency(basis: Eigenbasis, c_in: int, kk: int) -> torch.Tensor:
    """OBD saliency ``(c_in,)`` of removing each input channel of the layer (its ``kk`` columns of ``W``, the
    kernel's area; a bias column excluded), measured in the eigenbasis as :func:`out_channel_saliency`."""
    W = basis.Q_S @ basis.W_star @ basis.Q_A.T
    Wc = W[:, :c_in * kk].reshape(W.shape[0], c_in, kk)  # (C_out, c_in, kk)
    QA = basis.Q_A[:c_in * kk].reshape(c_in, kk, -1)  # (c_in, kk, d_in)
    M = torch.einsum("ock,ckj->coj", Wc, QA)  # (c_in, C_out, d_in): δ Q_A per removed channel
    D = torch.einsum("oi,coj->cij", basis.Q_S, M)  # Q_Sᵀ δ Q_A
    return 0.5 * (basis.curvature()[None] * D ** 2).sum((1, 2))


def eigen_conv(conv: nn.Conv2d, basis: Eigenbasis, keep_in: Optional[Sequence[int]] = None,
               keep_out: Optional[Sequence[int]] = None) -> EigenConv:
    """A convolution re-expressed in its eigenbasis (:class:`edgeshrink.models.eigen.EigenConv`), keeping input
    eigen-directions ``keep_in`` and output ones ``keep_out`` (default all): the rotation's filters are the kept
    columns of ``Q_A`` (with a biased layer its bias is those columns' entry for the patch's constant 1), the core
    ``W*`` restricted, the rotation back the kept columns of ``Q_S``. All directions kept, it computes the layer
    itself (its bias included, through the constant input direction).

    Raises:
        UserError: a layer that is not an ungrouped Conv2d, or nothing kept.
    """
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise UserError(f"only an ungrouped Conv2d has an eigenbasis form here, not {conv}")
    keep_in = list(range(basis.Q_A.shape[0])) if keep_in is None else list(keep_in)
    keep_out = list(range(basis.Q_S.shape[0])) if keep_out is None else list(keep_out)
    if not keep_in or not keep_out:
        raise UserError("an eigenbasis layer must keep at least one input and one output direction")
    has_bias = conv.bias is not None
    m = EigenConv(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                  has_bias, len(keep_in), len(keep_out))
    rotate_in, core, rotate_out = m
    q_a = basis.Q_A[:, keep_in]
    if has_bias:
        # the bias's row of Q_A: the trailing 1 of every patch, a constant per rotated channel
        q_a, bias_in = q_a[:-1], q_a[-1]
        rotate_in.bias.data = bias_in.to(conv.weight.dtype)
    dt = conv.weight.dtype
    rotate_in.weight.data = q_a.T.reshape(len(keep_in), conv.in_channels, *conv.kernel_size).to(dt)
    core.weight.data = basis.W_star[keep_out][:, keep_in].reshape(len(keep_out), len(keep_in), 1, 1).to(dt)
    rotate_out.weight.data = basis.Q_S[:, keep_out].reshape(conv.out_channels, len(keep_out), 1, 1).to(dt)
    return m


def layer_bases(model: nn.Module, batches, damping: float, correct: bool = False,
                modules: Optional[Dict[str, nn.Module]] = None,
                factors: Optional[Dict[str, Factors]] = None) -> Dict[str, Eigenbasis]:
    """Every layer's eigenbasis from K-FAC factors over ``batches`` (a list: with ``correct`` it is passed twice,
    for the factors and then for the corrected eigenvalues), or from ``factors`` already computed on them.

    Raises:
        UserError: ``damping`` <= 0, no batches.
    """
    modules = conv_layers(model) if modules is None else modules
    factors = factors if factors is not None else kfac_factors(model, batches, modules)
    bases = {n: eigenbasis(modules[n], f, damping) for n, f in factors.items()}
    if correct:
        for n, lam in corrected_eigenvalues(model, batches, bases).items():
            bases[n].lam = lam + damping
    return bases


def group_saliency(model: nn.Module, space, bases: Dict[str, Eigenbasis]) -> Dict[str, torch.Tensor]:
    """Each channel group's per-channel OBD saliency (criteria's ``Scores``: larger = keep): removing a channel
    removes its row from every member convolution and its columns from every layer that reads the group, and the
    saliencies of those removals add (:func:`out_channel_saliency`, :func:`in_channel_saliency`)."""
    out = {}
    for g in space.groups:
        total = sum(out_channel_saliency(bases[m]) for m in g.members)
        for site in space.sites:
            if site.in_group != g.name or site.in_parts or site.name not in bases:
                continue
            mod = model.get_submodule(site.name)
            if isinstance(mod, nn.Conv2d):
                total = total + in_channel_saliency(bases[site.name], mod.in_channels,
                                                    mod.kernel_size[0] * mod.kernel_size[1])
            else:
                total = total + in_channel_saliency(bases[site.name], mod.in_features, 1)
        out[g.name] = total
    return out


def eigen_ranks(basis: Eigenbasis, budget: float) -> Tuple[list, list]:
    """The input and output eigen-directions kept when the least salient are removed (Eq. 9) for as long as the
    removed saliency stays within ``budget / 2`` on each side (at least one direction kept each), most salient
    first."""
    keep = []
    for s in saliency(basis):
        order = torch.argsort(s).tolist()  # least salient first
        cum = torch.cumsum(s[order], 0)
        drop = min(int((cum <= budget / 2).sum()), len(order) - 1)
        keep.append(order[drop:][::-1])
    return keep[0], keep[1]


def _out_hw(conv: nn.Conv2d, in_hw) -> Tuple[int, int]:
    return tuple((in_hw[d] + 2 * conv.padding[d] - conv.dilation[d] * (conv.kernel_size[d] - 1) - 1)
                 // conv.stride[d] + 1 for d in range(2))


def eigen_form_keys(site, conv: nn.Conv2d, plain, r_in: int, r_out: int) -> list:
    """The latency-table keys of a layer's eigenbasis form: the ``kh x kw`` rotation (``C_in -> r_in``, the layer's
    stride and padding), the 1x1 core (``r_in -> r_out``) and the 1x1 rotation back (``r_out -> C_out``, with the
    ops the plain layer fuses: BN, the residual add, the activation)."""
    from edgeshrink.host.latency.key import LayerKey

    hw = _out_hw(conv, site.in_hw)
    one = ((1, 1), (1, 1), (0, 0), 1)
    return [LayerKey(plain.op, plain.in_channels, r_in, plain.in_hw, plain.kernel, plain.stride, plain.padding, 1, ()),
            LayerKey(plain.op, r_in, r_out, hw, *one, ()),
            LayerKey(plain.op, r_out, plain.out_channels, hw, *one, plain.fused)]


def restrict(factors: Factors, module: nn.Module, keep_in: Optional[Sequence[int]],
             keep_out: Optional[Sequence[int]]) -> Factors:
    """K-FAC factors of a layer before its channels were pruned, restricted to the kept input channels (their
    patch entries; the bias entry kept) and output channels (None: all kept): the curvature of the trained network
    at the pruned layer's weights."""
    kk = module.kernel_size[0] * module.kernel_size[1] if isinstance(module, nn.Conv2d) else 1
    d = factors.A.shape[0]
    idx = list(range(d)) if keep_in is None else [c * kk + j for c in keep_in for j in range(kk)]
    if keep_in is not None and module.bias is not None:
        idx.append(d - 1)
    out = list(range(factors.S.shape[0])) if keep_out is None else list(keep_out)
    return Factors(factors.A[idx][:, idx], factors.S[out][:, out], factors.examples)


def eigen_form_decision(ctx, model: nn.Module, factors: Dict[str, Factors], kept: Dict[str, Sequence[int]], cfg,
                        threshold: float, measure=None) -> Dict[str, object]:
    """EigenDamage's layer form, latency-aware: each convolution of the pruned ``model`` gets its eigenbasis form
    (:class:`EigenConv`; the least salient eigen-directions removed while they cost no more than ``threshold``,
    the saliency of the most salient channel the global ranking removed: the same loss budget as one more channel)
    only where its three convolutions are measured faster than the plain layer on the table's device, side by side;
    elsewhere it stays plain. A form whose rotation alone is as wide as the plain layer (``r_in >= C_out``) cannot
    be faster and is not measured. Replaces the layers in place.

    Args:
        factors: each layer's K-FAC factors before the last pruning; ``kept``: each group's kept channels then
            (:func:`restrict` gives the pruned layers' curvature from them).
        measure: ``measure(keys) -> {key: ms}`` (default :func:`edgeshrink.host.latency.build.measure_keys` on the table's device).

    Returns:
        ``{"threshold", "layers": [{"layer", "r_in", "r_out", "plain_ms", "eigen_ms", "form"}], "eigen_layers",
        "saving_ms"}`` (``*_ms`` None where not measured).
    """
    widths = ctx.widths(model)
    sites = [s for s in ctx.space.sites if s.op == "conv2d" and s.groups == 1]
    mods = {s.name: model.get_submodule(s.name) for s in sites}
    bases = {s.name: eigenbasis(mods[s.name], restrict(factors[s.name], mods[s.name], kept.get(s.in_group),
                                                       kept.get(s.out_group)), cfg.damping) for s in sites}
    rows, todo = [], []
    for s in sites:
        keep_in, keep_out = eigen_ranks(bases[s.name], threshold)
        plain = s.key(widths)
        row = {"layer": s.name, "r_in": len(keep_in), "r_out": len(keep_out), "plain_ms": None, "eigen_ms": None,
               "form": "plain"}
        rows.append(row)
        if len(keep_in) < plain.out_channels:
            todo.append((row, s, plain, eigen_form_keys(s, mods[s.name], plain, len(keep_in), len(keep_out)),
                         keep_in, keep_out))
    saving = 0.0
    if todo:
        keys = sorted({k for _, _, plain, ks, _, _ in todo for k in [plain, *ks]}, key=str)
        ms = (measure or (lambda k: measure_keys(ctx.predictor.table, k, ctx.name, ctx.log)))(keys)
        for row, s, plain, ks, keep_in, keep_out in todo:
            row["plain_ms"], row["eigen_ms"] = ms[plain], sum(ms[k] for k in ks)
            if row["eigen_ms"] < row["plain_ms"]:
                row["form"] = "eigen"
                saving += row["plain_ms"] - row["eigen_ms"]
                parent, _, child = s.name.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, child,
                        eigen_conv(mods[s.name], bases[s.name], keep_in, keep_out))
    eig = [r["layer"] for r in rows if r["form"] == "eigen"]
    ctx.log(f"eigenbasis form: {len(eig)} of {len(rows)} convolutions measured faster in it"
            + (f" ({', '.join(eig)}; {saving:.4f} ms saved)" if eig else f" ({len(todo)} measured)"))
    return {"threshold": threshold, "layers": rows, "eigen_layers": eig, "saving_ms": saving}
