"""``make bench`` / ``python -m bench``: see :mod:`bench.report`."""

import sys

from bench.report import main

sys.exit(main())
