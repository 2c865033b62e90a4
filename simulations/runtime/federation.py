"""Set the size of the local simulation federation that ``flwr run .`` uses.

Flower 1.42 keeps the local simulation settings in its local SuperLink (under
``$FLWR_HOME``), set with ``flwr federation simulation-config``. This wraps that command
with the environment the platform needs (no per-run dependency installation, no
telemetry), so that afterwards ``flwr run . --stream`` simulates the default 10 parties.

    python -m simulations.runtime.federation                    # 10 parties, 1 CPU each
    python -m simulations.runtime.federation --num-supernodes 50
    python -m simulations.runtime.federation --num-supernodes 100 --gpu    # share one GPU

With ``--gpu`` every simulated party gets 1 CPU and a fraction ``1 / min(P, cores)`` of
the GPU, so that as many parties run at once as there are cores and all of them share the
one GPU (Ray schedules by these fractions; it does not cap memory). On a 16-core machine
with one H100: P = 10 -> 0.1 GPU each (all 10 at once); P = 50 or 100 -> 0.0625 (16 at
once). Each party's peak GPU memory at P = 10 on CIFAR-10 with ResNet-18 features is a few
GiB (its features, release, and float64 SNR copies), well inside 1/10 of 80 GiB.
"""

from __future__ import annotations

import argparse
import os
import sys

from simulations.runtime.local_flower import configure_simulation, flower_env, flwr_home, local_superlink_pids


def gpu_share(num_supernodes: int, cores: int) -> float:
    """GPU fraction per party so that ``min(P, cores)`` parties share one GPU at once."""
    if num_supernodes < 1 or cores < 1:
        raise ValueError("need at least one party and one core")
    return 1.0 / min(num_supernodes, cores)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-supernodes", type=int, default=10, help="simulated parties (default: 10)")
    parser.add_argument("--num-cpus", type=int, default=1, help="CPU cores per simulated party (default: 1)")
    parser.add_argument("--num-gpus", type=float, default=0.0, help="GPU share per simulated party (default: 0)")
    parser.add_argument("--gpu", action="store_true", help="1 CPU and 1/min(P, cores) GPU per party")
    args = parser.parse_args(argv)
    if args.num_supernodes < 2:
        parser.error("a collaboration needs at least 2 parties")
    if args.gpu:
        args.num_cpus, args.num_gpus = 1, gpu_share(args.num_supernodes, os.cpu_count() or 1)
    env = flower_env()
    if local_superlink_pids(flwr_home(env)):
        print(
            "note: a local SuperLink is already running for this FLWR_HOME; it keeps the environment it "
            "was started with. If runs fail with 'uv sync failed', stop it "
            "(python -m simulations.runtime.stop) and run this again.",
            file=sys.stderr,
        )
    configure_simulation(num_supernodes=args.num_supernodes, num_cpus=args.num_cpus, num_gpus=args.num_gpus, env=env)
    print(
        f"local federation: {args.num_supernodes} simulated parties, {args.num_cpus} CPU and "
        f"{args.num_gpus:g} GPU each ({flwr_home(env)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
