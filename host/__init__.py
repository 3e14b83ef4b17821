"""edgeshrink host side: training, latency tables, NetAdapt pruning, export, devices. Needs torch."""

__version__ = "0.1.0"
