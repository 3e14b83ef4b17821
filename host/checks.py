"""Checks of what enters from outside (files, boards, the command line), one helper per kind of value, each
raising the caller's error class with a message that names where the value came from and what is wrong.

``where`` is a prefix such as ``"T.json: entry 3"`` or ``"--threads"``; a bool is never a number here
(``True`` would otherwise count as 1).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Type

from edgeshrink.host.errors import UserError


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def number(v: Any, where: str, err: Type[Exception] = UserError, *, positive: bool = False,
           non_negative: bool = False, allow_none: bool = False) -> Optional[float]:
    """``v`` as a finite float (``positive``: > 0; ``non_negative``: >= 0); None passes with ``allow_none``.

    Raises:
        err: not a number (bools are not), not finite, or out of range.
    """
    if v is None and allow_none:
        return None
    if not _is_number(v) or not math.isfinite(v):
        raise err(f"{where} must be a finite number, got {v!r}")
    if positive and not v > 0:
        raise err(f"{where} must be > 0, got {v!r}")
    if non_negative and not v >= 0:
        raise err(f"{where} must be >= 0, got {v!r}")
    return float(v)


def integer(v: Any, where: str, err: Type[Exception] = UserError, *, lo: Optional[int] = None,
            hi: Optional[int] = None) -> int:
    """``v`` as an int within ``[lo, hi]`` (bools and floats are refused).

    Raises:
        err: not an integer, or out of range.
    """
    if not isinstance(v, int) or isinstance(v, bool):
        raise err(f"{where} must be an integer, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
        raise err(f"{where} must be in {rng}, got {v}")
    return v


def mapping(v: Any, where: str, err: Type[Exception] = UserError) -> Dict[str, Any]:
    """``v`` when it is a JSON object (a dict with string keys).

    Raises:
        err: anything else.
    """
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise err(f"{where} must be a JSON object, got {type(v).__name__}")
    return v


def sequence(v: Any, where: str, err: Type[Exception] = UserError, *, length: Optional[int] = None) -> List[Any]:
    """``v`` when it is a list (of ``length`` items when given).

    Raises:
        err: not a list, or of another length.
    """
    if not isinstance(v, list):
        raise err(f"{where} must be a list, got {type(v).__name__}")
    if length is not None and len(v) != length:
        raise err(f"{where} must have {length} items, got {len(v)}")
    return v


def text(v: Any, where: str, err: Type[Exception] = UserError, *, choices: Optional[Sequence[str]] = None) -> str:
    """``v`` when it is a string (one of ``choices`` when given).

    Raises:
        err: not a string, or not one of the choices.
    """
    if not isinstance(v, str):
        raise err(f"{where} must be a string, got {v!r}")
    if choices is not None and v not in choices:
        raise err(f"{where} must be one of {', '.join(choices)}, got {v!r}")
    return v
