"""Runs on several processes and machines through PyTorch's own engine: ``torch.distributed``, started by ``torchrun``.

``torchrun --nproc-per-node N -m edgeshrink.host.cli train ...`` (or ``host ... --distributed N``, which starts that
command) gives every process ``RANK``, ``WORLD_SIZE`` and the rendezvous (``MASTER_ADDR`` / ``MASTER_PORT``, or
torchrun's ``--rdzv-endpoint`` across nodes); :func:`init_from_env` joins the process group with NCCL where CUDA is
there and gloo on CPUs. What each command does with it:

- ``host train`` and recovery training: DistributedDataParallel. Every rank draws the same shuffled global batch from
  the same seed and trains on its contiguous share of it; DDP averages the gradients, so a step is the
  single-process step on the whole batch, except that BatchNorm normalises each rank's share (SyncBatchNorm
  only runs on GPUs, where it is used). Evaluation splits the data by rank and sums the counts (a segmentation
  network's confusion matrix) before the metrics. Rank 0 logs and writes the checkpoint.
- NetAdapt (:mod:`edgeshrink.host.prune.netadapt`): every rank proposes the same candidates, fine-tunes its share
  (candidate k on rank k mod N) outside DDP, and the scores are gathered, so every rank commits the same choice;
  the owner of the winner broadcasts its weights.
- ``host compare``: the (method, budget) runs are shared out by rank; rank 0 measures all of them in one session.

Everything here is a no-op in a single process.
"""

from __future__ import annotations

import datetime
import os
import pickle
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional

import torch
import torch.distributed as dist

from edgeshrink.host.errors import UserError


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when absent)."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        raise UserError(f"WORLD_SIZE must be an integer, got {os.environ.get('WORLD_SIZE')!r}") from None


def init_from_env(timeout_s: float = 1800.0) -> bool:
    """Join the process group torchrun describes in the environment (NCCL with CUDA, gloo otherwise); returns
    whether this is a distributed run. Idempotent.

    Raises:
        UserError: ``WORLD_SIZE`` > 1 without ``RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT`` (not started by torchrun).
    """
    if env_world_size() <= 1:
        return False
    if dist.is_initialized():
        return True
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise UserError(f"WORLD_SIZE is {env_world_size()} but {', '.join(missing)} is not set: start distributed "
                        "runs with torchrun (torchrun --nproc-per-node N -m edgeshrink.host.cli ...)")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


_local_depth = 0


@contextmanager
def local() -> Iterator[None]:
    """Within it this process works alone (:func:`active` is False): a share of the work that is this rank's only,
    such as one of ``host compare``'s runs."""
    global _local_depth
    _local_depth += 1
    try:
        yield
    finally:
        _local_depth -= 1


def active() -> bool:
    """A process group of more than one rank is up (and this process is not inside :func:`local`)."""
    return _local_depth == 0 and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks (a copy; ``t`` itself in a single process)."""
    if not active():
        return t
    out = t.to("cuda" if dist.get_backend() == "nccl" else "cpu").clone()  # NCCL reduces GPU tensors only
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.to(t.device)


def gather(obj: Any) -> List[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in a single process)."""
    if not active():
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, src: int) -> Any:
    """``obj`` of rank ``src`` on every rank."""
    if not active():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def agree(value: Any, what: str) -> None:
    """Refuse a run whose ranks hold different ``value`` (a table's digest, a checkpoint's, the settings).

    Raises:
        UserError: naming ``what`` and which ranks differ from rank 0.
    """
    if not active():
        return
    values = gather(pickle.dumps(value))
    odd = [r for r, v in enumerate(values) if v != values[0]]
    if odd:
        raise UserError(f"torchrun ranks disagree on {what}: rank(s) {', '.join(map(str, odd))} differ from rank 0 "
                        "(every rank must read the same file)")


def shard(n: int, r: Optional[int] = None, world: Optional[int] = None) -> slice:
    """The contiguous share ``[start, stop)`` of ``n`` items that rank ``r`` of ``world`` takes (the first
    ``n mod world`` ranks take one more)."""
    r = rank() if r is None else r
    world = world_size() if world is None else world
    base, extra = divmod(n, world)
    start = r * base + min(r, extra)
    return slice(start, start + base + (1 if r < extra else 0))
