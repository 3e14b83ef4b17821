"""The resume state of a prune's method: the model after each completed NetAdapt iteration and its history, in
``OUT/netadapt_state.pt`` (``torch.save`` of tensors and plain data, read back with ``weights_only``), so an
interrupted ``host prune`` continues with ``--resume`` where it stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from edgeshrink import models
from edgeshrink.host.checks import integer, mapping, sequence
from edgeshrink.host.errors import UserError
from edgeshrink.host.io import atomic_path

STATE_FILE = "netadapt_state.pt"


class ResumeState:
    """``OUT/netadapt_state.pt`` of one prune: tied to the input checkpoint (by sha256), the budget and the settings
    the iterations depend on (the table's sha256, the grid, the schedule, short-term fine-tuning, the rule).

    Args:
        out: the prune's output folder.
        checkpoint_sha: sha256 of the input checkpoint.
        budget_ms: the prune's budget.
        settings: what else the iterations depend on (JSON-able values); a resume with others is refused.
    """

    def __init__(self, out: str, checkpoint_sha: str, budget_ms: float, settings: Optional[Dict[str, object]] = None):
        self.path = Path(out) / STATE_FILE
        self.checkpoint_sha, self.budget_ms = checkpoint_sha, budget_ms
        self.settings = dict(settings or {})

    def load(self, name: str, num_classes: int,
             input_shape=None) -> Optional[Tuple[nn.Module, List[Dict[str, object]]]]:
        """The saved model and history, or None when there is no state.

        Raises:
            UserError: the state belongs to another checkpoint or budget, or cannot be read.
        """
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a corrupt file
            raise UserError(f"{self.path}: not a readable resume state ({type(e).__name__}); remove it or drop "
                            "--resume") from None
        where = f"{self.path}"
        fix = "; remove it or drop --resume"
        if not isinstance(state, dict) or not {"checkpoint_sha", "budget_ms", "channels", "state_dict",
                                                "history"} <= set(state):
            raise UserError(f"{where}: not a NetAdapt resume state (fields missing){fix}")
        if state["checkpoint_sha"] != self.checkpoint_sha or not isinstance(state["budget_ms"], float) or \
                abs(state["budget_ms"] - self.budget_ms) > 1e-9:
            raise UserError(f"{where} belongs to another checkpoint or budget{fix}")
        saved = state.get("settings") if isinstance(state.get("settings"), dict) else {}
        changed = [f"{k} {saved[k]!r} -> {v!r}" for k, v in self.settings.items() if k in saved and saved[k] != v]
        if changed:
            raise UserError(f"{where} was made with other settings: {'; '.join(changed)}{fix}")
        try:
            for g, c in mapping(state["channels"], f"{where}: channels").items():
                integer(c, f"{where}: channels of {g}", lo=1)
            history = sequence(state["history"], f"{where}: history")
            if not all(isinstance(h, dict) for h in history):
                raise UserError(f"{where}: history must be a list of iteration records")
            model = models.create_model(name, num_classes, state["channels"], input_shape=input_shape)
            model.load_state_dict(mapping(state["state_dict"], f"{where}: state_dict"))
        except (UserError, models.ModelError, RuntimeError, TypeError) as e:
            raise UserError(f"{where}: a corrupt resume state ({str(e).splitlines()[0]}){fix}") from None
        return model, list(history)

    def save(self, model: nn.Module, history: List[Dict[str, object]]) -> None:
        """Write the state after a completed iteration, atomically."""
        with atomic_path(self.path) as tmp:
            torch.save({"checkpoint_sha": self.checkpoint_sha, "budget_ms": self.budget_ms,
                        "settings": self.settings, "channels": models.channel_spec(model),
                        "state_dict": model.state_dict(), "history": history}, tmp)

    def clear(self) -> None:
        """Remove the state once the run is complete (model.pt holds the result)."""
        if self.path.exists():
            self.path.unlink()
