"""Terminal output: rich progress bars and tables on stderr, switched off when stderr is not a terminal
(then one plain line per event is logged instead), so ``--json`` output on stdout stays clean."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


quiet = False  # the other ranks of a distributed run leave the logging to rank 0


def interactive() -> bool:
    return err.is_terminal and not quiet


def log(msg: str) -> None:
    """One line on stderr (nothing on ranks other than 0 of a distributed run)."""
    if not quiet:
        err.print(msg, soft_wrap=True)


@contextmanager
def progress(disable: Optional[bool] = None) -> Iterator[Progress]:
    """A rich Progress on stderr; disabled (a no-op) when stderr is not a terminal."""
    p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                 TimeRemainingColumn(), console=err, disable=not interactive() if disable is None else disable,
                 transient=False)
    with p:
        yield p
