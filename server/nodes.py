"""Which parties a run starts with."""

from __future__ import annotations

import logging
import time

from flwr.serverapp import Grid

from server.metered_grid import is_simulation

__all__ = ["SIMULATION_SETTLE", "is_simulation", "wait_for_nodes"]

SIMULATION_SETTLE = 0.5
"""Seconds the node count must stay unchanged in simulation: the runtime registers every
simulated node in one loop at start (milliseconds), so the deployment's 2 s are not needed."""

log = logging.getLogger("flwr.mixupfl.server")  # child of flwr: shown in run logs


def wait_for_nodes(grid: Grid, *, expected: int, quorum: int, timeout: float, settle: float | None = None,
                   poll: float = 0.05) -> list[int]:
    """Node ids to run with.

    ``expected = 0`` (simulation): once at least ``quorum`` nodes are connected and the count
    has not changed for ``settle`` seconds (simulated nodes all register at start; default
    :data:`SIMULATION_SETTLE` on the simulation grid, 2 s otherwise).
    In simulation, fewer than ``quorum`` nodes fail at once, after ``settle`` seconds without
    change: every simulated node registers at start, so waiting cannot bring more.
    ``expected > 0`` (deployment): as soon as ``expected`` nodes are connected; after
    ``timeout`` seconds, with those connected if they reach ``quorum``, else the run fails.
    """
    simulation = is_simulation(grid)
    if settle is None:
        settle = SIMULATION_SETTLE if simulation else 2.0
    deadline = time.monotonic() + timeout
    last, stable_since = -1, time.monotonic()
    while True:
        ids = sorted(grid.get_node_ids())
        if len(ids) != last:
            last, stable_since = len(ids), time.monotonic()
            if expected:
                log.info("%d of %d expected parties connected", len(ids), expected)
        if expected and len(ids) >= expected:
            return ids
        if not expected and len(ids) >= quorum and time.monotonic() - stable_since >= settle:
            return ids
        if simulation and 0 < len(ids) < quorum and time.monotonic() - stable_since >= settle:
            raise RuntimeError(f"the simulation has {len(ids)} node(s) and quorum is {quorum}: "
                               f"run with --federation-config \"num-supernodes={quorum}\" or more")
        if time.monotonic() > deadline:
            if len(ids) >= quorum:
                log.warning("%d of %d expected parties connected after %.0f s: proceeding under quorum = %d",
                            len(ids), expected, timeout, quorum)
                return ids
            raise RuntimeError(f"only {len(ids)} node(s) connected after {timeout:.0f} s; quorum is {quorum}")
        time.sleep(poll)
