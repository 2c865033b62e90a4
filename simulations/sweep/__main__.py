"""``python -m simulations.sweep``: see :mod:`simulations.sweep`."""

import sys

from simulations.sweep.cli import main

sys.exit(main())
