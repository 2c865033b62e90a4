"""Which SuperNodes are really alive, for ``docker/deploy.py`` (``nodes --wait``, and the
stale-entry check before a SuperNode starts).

Flower 1.42 reports a node ``online`` until ``online_until`` = its last activation or
heartbeat + 2 x 30 s. A node that died without ``DeactivateNode`` (killed, or its SuperLink
went away first) stays ``online`` up to 60 s, also across a SuperLink restart (the state
is in the database), and a new SuperNode with the same key is refused meanwhile
(``[code: 2004]``). So ``online`` alone is not liveness. A node counts as live when the
SuperLink reports it online AND

* a ``flower-supernode`` process on this machine holds its key and started before that
  activation (``last_activated_at``), or
* the SuperLink saw it activate or heartbeat (``online_until`` moved) while we watched;
  heartbeats come every ~20-27 s, so a node on another machine is confirmed within that.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import launcher_control as control
import launcher_processes as processes

STALE_PATIENCE = 75.0  # > Flower's 2 x 30 s heartbeat window


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def local_holders() -> dict[bytes, tuple[processes.Proc, float]]:
    """{public key: (SuperNode process on this machine holding it, its start as a Unix time)}."""
    holders: dict[bytes, tuple[processes.Proc, float]] = {}
    boot, ticks = _boot_time(), os.sysconf("SC_CLK_TCK")
    for proc in processes.supernode_processes():
        path = processes.key_path(proc)
        if path is None:
            continue
        try:
            pub = path.with_name(path.name + ".pub")
            pem = control.public_key_pem(pub if pub.is_file() else path)
        except (OSError, ValueError):
            continue
        holders[pem] = (proc, boot + proc.start / ticks)
    return holders


def _iso_time(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value).timestamp() if value else None
    except ValueError:
        return None


def liveness(node: control.Node, baseline: Mapping[int, tuple], holders: Mapping[bytes, tuple]) -> str:
    """Why ``node`` counts as live ("" when it does not; see the module docstring)."""
    if node.status != "online":
        return ""
    if node.public_key in holders:
        proc, started = holders[node.public_key]
        activated = _iso_time(node.last_activated_at)
        if activated is not None and activated >= started - 2.0:
            return f"PID {proc.pid} here"
    if node.node_id in baseline and baseline[node.node_id] != (node.last_activated_at, node.online_until):
        return "heartbeat seen"
    if baseline and node.node_id not in baseline:
        return "activated while watching"
    return ""


def wait_for_online(count: int, *, federation: str, env: Mapping[str, str], timeout: float = 120,
                    poll: float = 1.0) -> list[dict]:
    """Block until at least ``count`` nodes are live (not merely reported online); returns
    the node records with a ``live`` field."""
    deadline = time.monotonic() + timeout
    baseline: dict[int, tuple] = {}
    nodes: list[control.Node] = []
    while True:
        try:
            with control.control_client(federation, env) as client:
                nodes = control.list_nodes(client)
        except control.ControlError:
            nodes = []
        holders = local_holders()
        records = [{**n.as_dict(), "live": liveness(n, baseline, holders)} for n in nodes]
        if not baseline and nodes:
            baseline = {n.node_id: (n.last_activated_at, n.online_until) for n in nodes}
        if sum(bool(r["live"]) for r in records) >= count:
            return records
        if time.monotonic() > deadline:
            shown = [(r["node-id"], r["name"], r["status"], r["live"] or "not confirmed") for r in records]
            raise TimeoutError(f"{count} SuperNodes not live after {timeout:.0f} s: {shown}")
        time.sleep(poll)


def wait_out_stale(public_key: bytes, name: str, *, federation: str, env: Mapping[str, str],
                   patience: float = STALE_PATIENCE) -> None:
    """Before starting a SuperNode: when the SuperLink (reachable through ``federation``)
    reports this key's node online although no process here holds the key, wait until the
    entry expires; refuse when it keeps heartbeating (a process elsewhere holds the key)."""
    try:
        with control.control_client(federation, env) as client:
            first = None
            deadline = time.monotonic() + patience
            while True:
                current, _ = control.find(control.list_nodes(client), public_key)
                if current is None or current.status != "online":
                    return
                if first is None:
                    first = current.online_until
                    print(f"deploy: node {current.node_id} ({name}) is still reported online with no process "
                          f"here; waiting up to {patience:.0f} s for the stale entry to expire", file=sys.stderr)
                elif current.online_until > first:
                    raise SystemExit(f"deploy: node {current.node_id} ({name}) is online and heartbeating: a "
                                     "SuperNode elsewhere holds this key; not starting a second one")
                if time.monotonic() > deadline:
                    raise SystemExit(f"deploy: node {current.node_id} ({name}) still online after {patience:.0f} s")
                time.sleep(2.0)
    except control.ControlError:
        return  # no Control API from here (e.g. a party's machine): Flower decides
