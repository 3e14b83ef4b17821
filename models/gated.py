"""SkipNet gates (Wang et al., ECCV 2018, "SkipNet: Learning Dynamic Routing in Convolutional Networks") on the
registry's CIFAR ResNets: a gate before each residual block decides, per input, whether the block runs or the input
passes unchanged.

- **Feed-forward gate** (SkipNet Sec. 3.1, FFGate): global average pooling, a 1x1 convolution to ``hidden``
  channels, ReLU, a linear layer to one logit, sigmoid; one per gated block.
- **Recurrent gate** (RNNGate): per block a projection (pooling, 1x1 convolution to ``hidden``), then one LSTM cell
  and one linear layer shared by every gate; its state carries over from gate to gate.
- **Hard decisions**: a block runs when its gate's probability is >= 0.5. In supervised training the hard decision
  is used forward and the probability's gradient backward (the straight-through estimator, Bengio et al. 2013,
  :func:`straight_through`); in the reinforcement stage (``policy = "sample"``) decisions are drawn from
  Bernoulli(p) and their log-probabilities kept for REINFORCE (:mod:`edgeshrink.host.dynamic.skipnet`).

Gated blocks are those with an identity shortcut: a block that changes the width or the stride runs always (skipping
it would still need its projection, and the projection block carries the stage's downsampling). A gated network
holds its base network's modules under their own names (``conv1``, ``layer1.0.conv1``, ... and ``fc``) beside the
gates (``gate.*``): its channel spec is the base network's (the gates are left out of it), Torch-Pruning's
dependency graph prunes a gate's input channels with the stream it reads, and checkpoints rebuild it as
``create_model(name, channels=..., gates={"kind", "hidden"})``. ``base`` is the plain network on the same modules.

Shapes: input ``(N, 3, H, W)``, output logits ``(N, num_classes)``; after a forward, ``last_probs`` and
``last_decisions`` are ``(N, gated blocks)``.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from ._spec import ModelError, channel_spec

GATE_KINDS = ("ff", "rnn")


def straight_through(p: torch.Tensor) -> torch.Tensor:
    """``1[p >= 0.5]`` forward, the identity's gradient backward (d out / d p = 1): the straight-through estimator."""
    hard = (p >= 0.5).to(p.dtype)
    return hard + (p - p.detach())  # exactly ``hard``: the difference is 0, its gradient 1


class FFGate(nn.Module):
    """``(N, C, H, W) -> (N, 1)`` probability: pool, 1x1 conv to ``hidden``, ReLU, linear, sigmoid."""

    def __init__(self, channels: int, hidden: int = 10):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(channels, hidden, 1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(torch.flatten(self.relu(self.conv(self.pool(x))), 1)))


class RNNGate(nn.Module):
    """The recurrent gate: per-block projections (pool, 1x1 conv to ``hidden``) into one shared LSTM cell and linear
    layer. The state is ``(N, 2 * hidden)``: the LSTM's ``h`` then ``c``."""

    def __init__(self, channels: List[int], hidden: int = 10):
        super().__init__()
        self.hidden = hidden
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.proj = nn.ModuleList(nn.Conv2d(c, hidden, 1) for c in channels)
        self.lstm = nn.LSTMCell(hidden, hidden)
        self.fc = nn.Linear(hidden, 1)

    def zero_state(self, n: int, like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros(n, 2 * self.hidden)

    def step(self, i: int, x: torch.Tensor, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Gate ``i`` on features ``x``: ``(probability (N, 1), new state (N, 2 * hidden))``."""
        e = torch.flatten(self.proj[i](self.pool(x)), 1)
        h, c = self.lstm(e, (state[:, :self.hidden], state[:, self.hidden:]))
        return torch.sigmoid(self.fc(h)), torch.cat([h, c], dim=1)


def residual_blocks(base: nn.Module) -> List[Tuple[str, nn.Module]]:
    """``(name, block)`` of every residual block of a CIFAR ResNet, in order (``layer{s}.{b}``)."""
    out = []
    for s in range(1, 10):
        stage = getattr(base, f"layer{s}", None)
        if stage is None:
            break
        out.extend((f"layer{s}.{b}", blk) for b, blk in enumerate(stage))
    return out


class GatedResNet(nn.Module):
    """A CIFAR ResNet with a SkipNet gate before each identity-shortcut block.

    Args:
        base: a registry CIFAR ResNet (``resnet20`` ... ``resnet110``), pruned or not; its modules are used, not copied.
        kind: ``"ff"`` or ``"rnn"``.
        hidden: the gates' hidden width.

    Raises:
        ModelError: another architecture (no stem / residual stages / classifier in the CIFAR ResNet layout), a
            network without identity-shortcut residual blocks, an unknown kind or a hidden width < 1.
    """

    def __init__(self, base: nn.Module, kind: str = "ff", hidden: int = 10):
        super().__init__()
        name = getattr(base, "model_name", type(base).__name__)
        if kind not in GATE_KINDS:
            raise ModelError(f"--gates must be one of {', '.join(GATE_KINDS)}, got {kind!r}")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ModelError(f"gate hidden width must be a positive integer, got {hidden!r}")
        if not all(hasattr(base, a) for a in ("conv1", "bn1", "relu", "layer1", "pool", "fc")) or \
                getattr(base, "residual", None):
            raise ModelError(f"{name} has no residual blocks in the CIFAR ResNet layout to gate (gates are for "
                             "resnet20 ... resnet110)")
        self.blocks = residual_blocks(base)
        self.gated = [n for n, b in self.blocks if getattr(b, "shortcut", "none") is None]
        if not self.gated:
            raise ModelError(f"{name} has no residual blocks with an identity shortcut to gate")
        # the base network's modules at their own names (the state_dict and channel spec of the base network); the
        # base itself is kept unregistered, as a view over the same modules
        for child, mod in base.named_children():
            self.add_module(child, mod)
        object.__setattr__(self, "_base", base)
        self.kind, self.hidden = kind, hidden
        channels = [b.conv1.in_channels for n, b in self.blocks if n in self.gated]
        if kind == "ff":
            self.gate = nn.ModuleList(FFGate(c, hidden) for c in channels)
        else:
            self.gate = RNNGate(channels, hidden)
        self.gate.channel_spec_skip = True  # not layers of the network: channel specs and widths leave them out
        self.model_name = getattr(base, "model_name", None)
        self.model_source = getattr(base, "model_source", None)
        self.gates = {"kind": kind, "hidden": hidden}
        self.policy = "hard"
        self.last_probs: Optional[torch.Tensor] = None
        self.last_decisions: Optional[torch.Tensor] = None
        self.last_log_probs: Optional[torch.Tensor] = None

    @property
    def base(self) -> nn.Module:
        """The plain network on the same modules (every block run, no gates)."""
        return self._base

    @property
    def dense_channels(self) -> Dict[str, int]:
        """The base network's channel spec (what a checkpoint records)."""
        return channel_spec(self._base)

    def gate_probs(self, i: int, h: torch.Tensor, state: Optional[torch.Tensor]):
        if self.kind == "ff":
            return self.gate[i](h), None
        if state is None:
            state = self.gate.zero_state(h.shape[0], h)
        return self.gate.step(i, h, state)

    def dependency_forward(self, x: torch.Tensor):
        """``(logits of every block run, the gates' outputs)``: each gate reading its block's input, no
        decision multiplying a block (what Torch-Pruning's dependency graph is traced through, so that a gate's input
        channels are pruned with the stream and its decision is not taken for a channel of it)."""
        b = self._base
        h = b.relu(b.bn1(b.conv1(x)))
        outs, i = [], 0
        for name, blk in self.blocks:
            if name in self.gated:
                if self.kind == "ff":
                    outs.append(self.gate[i](h))
                else:  # the projections read the stream; the shared LSTM reads only them (and is never pruned)
                    outs.append(torch.flatten(self.gate.proj[i](self.gate.pool(h)), 1))
                i += 1
            h = blk(h)
        return b.fc(torch.flatten(b.pool(h), 1)), torch.cat(outs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self._base
        h = b.relu(b.bn1(b.conv1(x)))
        probs, decisions, logps = [], [], []
        state, i = None, 0
        for name, blk in self.blocks:
            if name not in self.gated:
                h = blk(h)
                continue
            p, state = self.gate_probs(i, h, state)
            i += 1
            if self.policy == "sample" and self.training:
                g = torch.bernoulli(p.detach())
                logps.append(g * torch.log(p.clamp_min(1e-8)) + (1 - g) * torch.log((1 - p).clamp_min(1e-8)))
            else:
                # the hard decision, in eval mode too: its gradient path through the gate is what lets Torch-Pruning's
                # dependency graph (traced in eval mode) see the gate read the stream, and prune its input with it
                g = straight_through(p)
            probs.append(p)
            decisions.append(g.detach())
            g4 = g.view(-1, 1, 1, 1)
            h = g4 * blk(h) + (1 - g4) * h
        self.last_probs = torch.cat(probs, 1)
        self.last_decisions = torch.cat(decisions, 1)
        self.last_log_probs = torch.cat(logps, 1) if logps else None
        return b.fc(torch.flatten(b.pool(h), 1))


def add_gates(base: nn.Module, gates: Dict[str, object]) -> GatedResNet:
    """``GatedResNet(base, gates["kind"], gates.get("hidden", 10))`` from a checkpoint's ``gates`` field.

    Raises:
        ModelError: a malformed field or a base network that cannot be gated.
    """
    if not isinstance(gates, dict) or "kind" not in gates:
        raise ModelError(f"gates must be {{'kind': 'ff' | 'rnn', 'hidden': N}}, got {gates!r}")
    return GatedResNet(base, gates["kind"], gates.get("hidden", 10))
