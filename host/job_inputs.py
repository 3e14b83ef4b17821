"""A job's inputs, resolved and checked once: the checkpoint and the network it rebuilds, the latency table, where to
measure, and the data. ``host prune``, ``host compare``, ``host dynamic`` and ``host exits`` start here (outside the
pipeline package, which the dynamic-network commands do not need)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import torch.nn as nn

from edgeshrink.device.provenance import sha256_file
from edgeshrink.host.checkpoint import load_checkpoint, model_from_checkpoint
from edgeshrink.host.data import Dataset, load_dataset
from edgeshrink.host.errors import CheckpointError
from edgeshrink.host.latency.table import LatencyTable, check_backend, load_table, measuring_device, require_device


@dataclass
class JobInputs:
    """What a job works on. ``device`` is where it measures (None: nowhere, an imported table without ``--device``);
    the files' sha256 are taken once, on first use."""

    checkpoint_path: str
    checkpoint: Dict[str, object]  # load_checkpoint's, checked
    model: nn.Module  # the network the checkpoint rebuilds (eval mode)
    table_path: str
    table: LatencyTable
    device: Optional[str]
    _sha: Dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def checkpoint_sha256(self) -> str:
        return self._sha.setdefault("checkpoint", sha256_file(self.checkpoint_path))

    @property
    def table_sha256(self) -> str:
        return self._sha.setdefault("table", sha256_file(self.table_path))

    def load_data(self, dataset: str, data_dir: Optional[str] = None, seed: int = 0, **kw) -> Dataset:
        """The dataset (``load_dataset``'s ``kw``: ``image_size``, ``train_subset``...) checked against the
        checkpoint's classes."""
        return self.check_data(load_dataset(dataset, data_dir, seed=seed, **kw))

    def check_data(self, data: Dataset) -> Dataset:
        """``data`` if it has the checkpoint's classes.

        Raises:
            CheckpointError: another number of classes (naming both).
        """
        if data.num_classes != self.checkpoint["num_classes"]:
            raise CheckpointError(f"{self.checkpoint_path} has {self.checkpoint['num_classes']} classes, dataset "
                                  f"{data.name} has {data.num_classes}")
        return data


def resolve_inputs(checkpoint: str, table: str, device: Optional[str] = None, backend: Optional[str] = None,
                   model: Optional[str] = None, measure: bool = True) -> JobInputs:
    """Load and check a job's table and checkpoint, and resolve where it measures.

    Args:
        device: ``--device`` (default: the table's device).
        backend: the backend the user expects the table to be for (refused when it is another).
        model: the architecture the user expects the checkpoint to hold (refused when it is another).
        measure: the job cannot work without measuring: an imported table without ``device`` is refused. False: the
            job goes on with ``device`` None (``host prune`` then reports the table's predictions).

    Raises:
        TableError, CheckpointError, UserError: one line naming the file and the problem.
    """
    tab = load_table(table)
    check_backend(tab, table, backend)
    dev = require_device(tab, table, device) if measure else measuring_device(tab, device)
    ckpt = load_checkpoint(checkpoint)
    net = model_from_checkpoint(ckpt, model, checkpoint)
    return JobInputs(str(checkpoint), ckpt, net, str(table), tab, dev)


__all__ = ["JobInputs", "resolve_inputs"]
