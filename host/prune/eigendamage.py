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
- **The layer re-expressed**: ``W = Q_S W* Q_Aᵀ`` is three layers: a ``kh x kw`` convolution whose filters are the
  columns of ``Q_A`` (the input patch rotated into A's eigenbasis, ``C_in * kh * kw`` channels), the core ``W*``
  as a 1x1 convolution, and ``Q_S`` as a 1x1 convolution (with the layer's bias); equal to the layer before any
  eigen-direction is removed.
- **Saliency**: OBD in the eigenbasis, ``ΔL_ij = ½ (W*_ij)² λ_S,i λ_A,j`` (EigenDamage Eq. 9); an input
  eigen-direction ``j`` of the layer scores ``sum_i ΔL_ij``, an output one ``i`` scores ``sum_j ΔL_ij``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeshrink.host.errors import UserError


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
    if modules is None:
        modules = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    for m in modules.values():
        check_layer(m)
    loss_fn = loss_fn or (lambda out, y: F.cross_entropy(out, y, reduction="sum"))
    sums: Dict[str, list] = {n: [None, None] for n in modules}
    seen = 0
    hooks = []

    def add(name: str, k: int, v: torch.Tensor) -> None:
        sums[name][k] = v if sums[name][k] is None else sums[name][k] + v

    for name, m in modules.items():
        def fwd(mod, args, out, name=name):
            a = layer_inputs(mod, args[0].detach()).double()  # (N, T, d_in)
            add(name, 0, torch.einsum("nti,ntj->ij", a, a) / a.shape[1])  # sum over examples of mean_t a aᵀ

            def grad(g, n=a.shape[0]):
                g = g.detach().double()
                g = g.flatten(2).transpose(1, 2) if g.dim() == 4 else g.reshape(n, 1, -1)  # (N, T, C_out)
                add(name, 1, torch.einsum("nti,ntj->ij", g, g))  # sum over examples of sum_t g gᵀ

            # a hook on the output tensor, not a module backward hook: an in-place activation after the layer
            # (ReLU(inplace=True)) is refused by module backward hooks
            out.register_hook(grad)

        hooks.append(m.register_forward_hook(fwd))
    was_training = model.training
    model.eval()  # BN's running statistics, as the pruned network will run
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
    return {n: Factors(s[0] / seen, s[1] / seen, seen) for n, s in sums.items()}


@dataclass
class Eigenbasis:
    """A layer in its Kronecker-factored eigenbasis: ``W = Q_S @ W_star @ Q_A.T``; eigenvalues damped."""

    Q_A: torch.Tensor  # (d_in, d_in), columns the eigenvectors of A
    lam_A: torch.Tensor  # (d_in,)
    Q_S: torch.Tensor  # (C_out, C_out)
    lam_S: torch.Tensor  # (C_out,)
    W_star: torch.Tensor  # (C_out, d_in)


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
    dl = 0.5 * basis.W_star ** 2 * basis.lam_S[:, None] * basis.lam_A[None, :]
    return dl.sum(0), dl.sum(1)


class EigenConv(nn.Sequential):
    """A convolution re-expressed in its eigenbasis, keeping input eigen-directions ``keep_in`` and output ones
    ``keep_out``: ``rotate_in`` (``kh x kw``, ``C_in -> len(keep_in)``, filters the kept columns of ``Q_A``; with a
    biased layer its bias is those columns' entry for the patch's constant 1), ``core`` (1x1, ``W*`` restricted),
    ``rotate_out`` (1x1, ``len(keep_out) -> C_out``, the kept columns of ``Q_S``). All directions kept, it computes
    the layer itself (its bias included, through the constant input direction).

    Raises:
        UserError: a layer that is not an ungrouped Conv2d, or nothing kept.
    """

    def __init__(self, conv: nn.Conv2d, basis: Eigenbasis, keep_in: Optional[Sequence[int]] = None,
                 keep_out: Optional[Sequence[int]] = None):
        if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
            raise UserError(f"only an ungrouped Conv2d has an eigenbasis form here, not {conv}")
        d_in = basis.Q_A.shape[0]
        keep_in = list(range(d_in)) if keep_in is None else list(keep_in)
        keep_out = list(range(basis.Q_S.shape[0])) if keep_out is None else list(keep_out)
        if not keep_in or not keep_out:
            raise UserError("an eigenbasis layer must keep at least one input and one output direction")
        has_bias = conv.bias is not None
        q_a = basis.Q_A[:, keep_in]
        if has_bias:
            # the bias's row of Q_A: the trailing 1 of every patch, a constant per rotated channel
            q_a, bias_in = q_a[:-1], q_a[-1]
        c_in, (kh, kw) = conv.in_channels, conv.kernel_size
        rotate_in = nn.Conv2d(c_in, len(keep_in), conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                              bias=has_bias)
        rotate_in.weight.data = q_a.T.reshape(len(keep_in), c_in, kh, kw).to(conv.weight.dtype)
        if has_bias:
            rotate_in.bias.data = bias_in.to(conv.weight.dtype)
        core = nn.Conv2d(len(keep_in), len(keep_out), 1, bias=False)
        core.weight.data = basis.W_star[keep_out][:, keep_in].reshape(len(keep_out), len(keep_in), 1, 1).to(
            conv.weight.dtype)
        rotate_out = nn.Conv2d(len(keep_out), conv.out_channels, 1, bias=False)
        rotate_out.weight.data = basis.Q_S[:, keep_out].reshape(conv.out_channels, len(keep_out), 1, 1).to(
            conv.weight.dtype)
        super().__init__(rotate_in, core, rotate_out)
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
