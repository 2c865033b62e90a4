"""Set the size of the local simulation federation that ``flwr run .`` uses.

Flower 1.41 keeps the local simulation settings in its local SuperLink (under
``$FLWR_HOME``), set with ``flwr federation simulation-config``. This wraps that command
with the environment the platform needs (no per-run dependency installation, no
telemetry), so that afterwards ``flwr run . --stream`` simulates the default 10 parties.

    python -m simulations.federation                   # 10 parties, 1 CPU each
    python -m simulations.federation --num-supernodes 50
"""

from __future__ import annotations

import argparse
import sys

from simulations.local_flower import configure_simulation, flower_env, flwr_home, local_superlink_pids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-supernodes", type=int, default=10, help="simulated parties (default: 10)")
    parser.add_argument("--num-cpus", type=int, default=1, help="CPU cores per simulated party (default: 1)")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPU share per simulated party (default: 0)")
    args = parser.parse_args(argv)
    if args.num_supernodes < 2:
        parser.error("a collaboration needs at least 2 parties")
    env = flower_env()
    if local_superlink_pids(flwr_home(env)):
        print(
            "note: a local SuperLink is already running for this FLWR_HOME; it keeps the environment it "
            "was started with. If runs fail with 'uv sync failed', stop it (python -m simulations.stop) "
            "and run this again.",
            file=sys.stderr,
        )
    configure_simulation(num_supernodes=args.num_supernodes, num_cpus=args.num_cpus, num_gpus=args.num_gpus, env=env)
    print(f"local federation: {args.num_supernodes} simulated parties ({flwr_home(env)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
