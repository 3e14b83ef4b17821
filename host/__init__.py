"""edgeshrink host side: training, latency tables, pruning, export, devices. Needs torch (the ``[host]`` extra)."""

from edgeshrink.device import __version__  # noqa: F401  (one version for both sides)
