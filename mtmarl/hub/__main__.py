"""``python -m mtmarl.hub``: see :mod:`mtmarl.hub.cli`."""

import sys

from mtmarl.hub.cli import main

sys.exit(main())
