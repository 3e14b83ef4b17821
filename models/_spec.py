"""Helpers shared by the architectures to read widths from a channel spec."""

from __future__ import annotations

from typing import Dict, Set

from models import ChannelSpecError


class WidthReader:
    """Reads ``spec[name]`` with a default and remembers which names were asked for.

    After the model is built, :meth:`check_consumed` rejects spec keys the architecture does not have,
    so a spec for another model fails loudly instead of being silently ignored.
    """

    def __init__(self, spec: Dict[str, int]):
        self.spec = dict(spec)
        self.asked: Set[str] = set()

    def __call__(self, name: str, default: int) -> int:
        self.asked.add(name)
        value = self.spec.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ChannelSpecError(f"channel spec: {name!r} must be a positive integer, got {value!r}")
        return value

    def check_consumed(self, model_name: str) -> None:
        unknown = sorted(set(self.spec) - self.asked)
        if unknown:
            raise ChannelSpecError(
                f"channel spec has layers that {model_name} does not have: {', '.join(unknown[:5])}"
                + (" ..." if len(unknown) > 5 else "")
            )
