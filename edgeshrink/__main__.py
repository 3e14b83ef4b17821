"""``python -m edgeshrink``: the host command line (the same as ``host``)."""

import sys

from edgeshrink.host.cli import main

sys.exit(main())
