"""Write the local simulation federation into ``$FLWR_HOME/config.toml``.

Flower 1.41 keeps federations (SuperLink connections) in the user's Flower home, not in
``pyproject.toml``. This script adds or updates one connection and, by default, makes it
the default, so that ``flwr run .`` with no argument simulates the platform's parties.
Other connections in the file are kept.

    python -m simulations.federation                      # 10 parties, 1 CPU each
    python -m simulations.federation --num-supernodes 50 --name sim50 --no-default
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import tomli_w

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


def flwr_home() -> Path:
    return Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr")).expanduser()


def write_federation(
    *,
    name: str = "local",
    num_supernodes: int = 10,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    make_default: bool = True,
    home: Path | None = None,
) -> Path:
    """Add/replace ``[superlink.<name>]`` as a local simulation with ``num_supernodes`` nodes."""
    if num_supernodes < 2:
        raise ValueError("a collaboration needs at least 2 supernodes")
    path = (home or flwr_home()) / "config.toml"
    config = tomllib.loads(path.read_text()) if path.exists() else {}
    superlink = config.setdefault("superlink", {})
    superlink[name] = {
        "address": ":local:",
        "options": {
            "num-supernodes": num_supernodes,
            "backend": {"client-resources": {"num-cpus": num_cpus, "num-gpus": num_gpus}},
        },
    }
    if make_default or "default" not in superlink:
        superlink["default"] = name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(config))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="local", help="connection name (default: local)")
    parser.add_argument("--num-supernodes", type=int, default=10, help="simulated parties (default: 10)")
    parser.add_argument("--num-cpus", type=float, default=1.0, help="CPU cores per simulated party")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPU share per simulated party")
    parser.add_argument("--no-default", action="store_true", help="do not make it the default connection")
    args = parser.parse_args(argv)
    path = write_federation(
        name=args.name,
        num_supernodes=args.num_supernodes,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        make_default=not args.no_default,
    )
    print(f"federation '{args.name}' ({args.num_supernodes} simulated parties) written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
