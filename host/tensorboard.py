"""Training and pruning progress in TensorBoard (``--tensorboard DIR``), as the DNN-shrink-tool logged it; the
optional ``tensorboard`` package, through ``torch.utils.tensorboard.SummaryWriter``."""

from __future__ import annotations

from typing import Dict, Optional

from edgeshrink.host.errors import UserError


class _Off:
    """No ``--tensorboard``: every call does nothing."""

    def scalars(self, prefix: str, values: Dict[str, object], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class Writer(_Off):
    def __init__(self, folder: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        self._w = SummaryWriter(log_dir=folder)

    def scalars(self, prefix: str, values: Dict[str, object], step: int) -> None:
        """Log every finite number of ``values`` as ``prefix/name`` at ``step``; other values are skipped."""
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"):
                self._w.add_scalar(f"{prefix}/{k}", float(v), int(step))
        self._w.flush()

    def close(self) -> None:
        self._w.close()


def open_writer(folder: Optional[str]):
    """A writer logging to ``folder``, or one that does nothing when ``folder`` is None.

    Raises:
        UserError: ``folder`` given but the tensorboard package is missing.
    """
    return Writer(folder) if folder else _Off()
