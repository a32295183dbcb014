"""``python -m syncnet``: see :mod:`syncnet.score`."""

import sys

from .score import main

sys.exit(main())
