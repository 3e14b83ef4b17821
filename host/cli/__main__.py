"""``python -m edgeshrink.host.cli``."""

import sys

from edgeshrink.host.cli import main

sys.exit(main())
