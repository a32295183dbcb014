"""``python -m syncnet``: see :mod:`syncnet.cli`."""

import sys

from .cli import main

sys.exit(main())
