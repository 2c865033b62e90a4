"""Stop the local SuperLink that ``flwr run`` started for ``$FLWR_HOME`` (``mixupfl stop``).

The local SuperLink outlives the command that started it and keeps that command's
environment; stop it after a Flower upgrade, when switching checkouts, or to free its ports.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from simulations.runtime.local_flower import flwr_home, stop_local_superlink


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(prog="mixupfl stop", description=__doc__).parse_args(list(argv or []))
    home = flwr_home()
    stopped = stop_local_superlink(home)
    print(f"stopped {stopped} local SuperLink(s) of {home}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
