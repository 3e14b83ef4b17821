"""edgeshrink device side: runs benchmarks on the edge device.

Standard library + numpy + one runtime. Never imports torch, ``host`` or paramiko, so the folder can be
copied to a board and run as ``python3 -m device``. Python >= 3.8 (JetPack 5).
"""

__version__ = "0.1.0"

BENCH_SCHEMA = "edgeshrink.bench"
BENCH_SCHEMA_VERSION = 1
