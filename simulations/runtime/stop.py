"""Stop the local SuperLink that ``flwr run`` started for ``$FLWR_HOME``."""

from __future__ import annotations

import sys

from simulations.runtime.local_flower import flwr_home, stop_local_superlink


def main() -> int:
    home = flwr_home()
    stopped = stop_local_superlink(home)
    print(f"stopped {stopped} local SuperLink(s) of {home}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
