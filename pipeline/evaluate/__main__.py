"""``make eval`` / ``python -m pipeline.evaluate``: see :mod:`pipeline.evaluate.cli`."""

import sys

from pipeline.evaluate.cli import main

sys.exit(main())
