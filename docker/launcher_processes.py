"""The processes of one deployment folder, for ``docker/deploy.py``: PID files keyed by
name, finding what runs from the folder (Linux ``/proc``), and stopping it in order.

A process belongs to the folder ``<dir>`` when its PID file ``<dir>/pids/...`` names it
(PID and start time, so a reused PID is never mistaken for it) or when its command line
names a path inside ``<dir>`` (every command the launcher builds does: certificates, keys,
the database, the proxy's configuration). Roles:

* ``superlink``  ``flower-superlink``              PID file ``pids/superlink.pid``
* ``supernode``  ``flower-supernode``              PID file ``pids/supernodes/<name>.pid``
                 (name: ``--name``, default the key file's name, e.g. ``supernode-0``)
* ``proxy``      the nginx master process         PID file ``pids/proxy.pid``

Their children (SuperExec, ServerApp/ClientApp processes, nginx workers) are followed as
descendants: they outlive their parent by a few seconds.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROLES = ("supernode", "superlink", "proxy")  # also the order `stop` uses
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int  # start time in clock ticks since boot (/proc/<pid>/stat field 22)
    role: str
    name: str
    argv: tuple[str, ...]

    def alive(self) -> bool:
        return alive(self.pid, self.start)

    def option(self, flag: str) -> str | None:
        """The value after ``flag`` in the command line (``--flag value``)."""
        args = list(self.argv)
        for i, arg in enumerate(args[:-1]):
            if arg == flag:
                return args[i + 1]
        return None


# --------------------------------------------------------------------------- /proc

def stat(pid: int) -> tuple[int, str, int] | None:
    """(parent PID, state, start time) from /proc; None when the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], int(fields[19])


def alive(pid: int, start: int) -> bool:
    """Running (not a zombie) and still the same process (same start time)."""
    found = stat(pid)
    return found is not None and found[1] != "Z" and found[2] == start


def cmdline(pid: int) -> tuple[str, ...] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def descendants(root: int) -> dict[int, int]:
    """{PID: start time} of the living descendants of ``root``."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        if (found := stat(pid)) is not None and found[1] != "Z":
            children.setdefault(found[0], []).append(pid)
    result: dict[int, int] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in result and (found := stat(child)) is not None:
                result[child] = found[2]
                stack.append(child)
    return result


def role_of(argv: Sequence[str]) -> str | None:
    """``superlink`` / ``supernode`` / ``proxy`` from a command line, else None. Flower's
    console scripts run as ``python .../flower-supernode ...``; nginx rewrites its master's
    command line to ``nginx: master process /usr/sbin/nginx -p ...``."""
    if not argv:
        return None
    if argv[0].startswith("nginx: master process"):
        return "proxy"
    for arg in argv[:2]:
        base = os.path.basename(arg)
        if base == "flower-superlink":
            return "superlink"
        if base == "flower-supernode":
            return "supernode"
    return None


def node_name(argv: Sequence[str]) -> str:
    """A SuperNode's name: its ``--auth-supernode-private-key`` file's name."""
    args = list(argv)
    for i, arg in enumerate(args[:-1]):
        if arg == "--auth-supernode-private-key":
            return Path(args[i + 1]).name
    return "supernode"


# --------------------------------------------------------------------------- PID files

def pid_file(dirpath: Path, role: str, name: str | None = None) -> Path:
    if role == "supernode":
        if not name or not NAME_PATTERN.match(name):
            raise ValueError(f"invalid SuperNode name {name!r} (letters, digits, '.', '_', '-')")
        return dirpath / "pids" / "supernodes" / f"{name}.pid"
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    return dirpath / "pids" / f"{role}.pid"


def write_pid_file(path: Path, pid: int | None = None, key: Path | None = None) -> None:
    """``<pid> <start time>`` (and, for a SuperNode, its key file on the next line); written
    by the launcher just before it execs the process (exec keeps PID and start time)."""
    pid = os.getpid() if pid is None else pid
    found = stat(pid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid} {found[2] if found else 0}\n" + (f"{Path(key).resolve()}\n" if key else ""))


def read_pid_file(path: Path) -> tuple[int, int] | None:
    try:
        parts = path.read_text().splitlines()[0].split()
        pid = int(parts[0])
    except (OSError, ValueError, IndexError):
        return None
    start = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    if start is None:  # an old one-field PID file: take the process's current start time
        found = stat(pid)
        start = found[2] if found else 0
    return pid, start


def pid_file_key(path: Path) -> Path | None:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    return Path(lines[1]) if len(lines) > 1 and lines[1].strip() else None


def _pid_files(dirpath: Path) -> list[tuple[str, Path]]:
    pids = dirpath / "pids"
    found = [("superlink", pids / "superlink.pid"), ("proxy", pids / "proxy.pid")]
    found += [("supernode", path) for path in sorted((pids / "supernodes").glob("*.pid"))]
    return [(role, path) for role, path in found if path.exists()]


# --------------------------------------------------------------------------- discovery

def _names_folder(argv: Sequence[str], dirpath: Path) -> bool:
    prefix = str(dirpath).rstrip("/") + "/"
    return any(prefix in arg for arg in argv)


def deployment_processes(dirpath: Path, roles: Iterable[str] = ROLES) -> list[Proc]:
    """The living SuperLink / SuperNode / proxy processes of ``dirpath``: those its PID
    files name (same PID and start time, and still of that role) and those whose command
    line names a path inside ``dirpath``."""
    wanted = set(roles)
    found: dict[int, Proc] = {}
    for role, path in _pid_files(dirpath):
        if role not in wanted or (entry := read_pid_file(path)) is None:
            continue
        pid, start = entry
        argv = cmdline(pid)
        if argv is not None and alive(pid, start) and role_of(argv) == role:
            name = path.stem if role == "supernode" else role
            found[pid] = Proc(pid, start, role, name, argv)
    for pid in _pids():
        if pid in found or pid == os.getpid():
            continue
        argv = cmdline(pid)
        if not argv or (role := role_of(argv)) not in wanted or not _names_folder(argv, dirpath):
            continue
        if (entry := stat(pid)) is None or entry[1] == "Z":
            continue
        name = node_name(argv) if role == "supernode" else role
        found[pid] = Proc(pid, entry[2], role, name, argv)
    return sorted(found.values(), key=lambda p: (ROLES.index(p.role), p.name, p.pid))


def supernode_processes() -> list[Proc]:
    """Every living ``flower-supernode`` on this machine (any folder), for liveness checks."""
    procs = []
    for pid in _pids():
        argv = cmdline(pid)
        if argv and role_of(argv) == "supernode" and (entry := stat(pid)) and entry[1] != "Z":
            procs.append(Proc(pid, entry[2], "supernode", node_name(argv), argv))
    return procs


def key_path(proc: Proc) -> Path | None:
    """The private key file a SuperNode process uses (relative paths resolved against its
    working directory)."""
    value = proc.option("--auth-supernode-private-key")
    if value is None:
        return None
    path = Path(value)
    if not path.is_absolute():
        try:
            path = Path(os.readlink(f"/proc/{proc.pid}/cwd")) / path
        except OSError:
            return None
    return path


# --------------------------------------------------------------------------- stopping

def _terminate(group: Sequence[Proc], timeout: float, log: Callable[[str], None]) -> None:
    """SIGTERM ``group``, wait for it and its descendants, SIGKILL (by PID and start time)
    what is left after ``timeout``."""
    tracked: dict[int, int] = {}
    for proc in group:
        tracked[proc.pid] = proc.start
        tracked.update(descendants(proc.pid))
    for proc in group:
        if proc.alive():
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def living() -> list[int]:
        for proc in group:  # pick up children started since (e.g. a ClientApp)
            if proc.alive():
                tracked.update(descendants(proc.pid))
        return [pid for pid, start in tracked.items() if alive(pid, start)]

    deadline = time.monotonic() + timeout
    while living() and time.monotonic() < deadline:
        time.sleep(0.2)
    left = living()
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if left:
        log(f"killed {len(left)} process(es) still running after {timeout:.0f} s: {' '.join(map(str, left))}")
        deadline = time.monotonic() + 5
        while living() and time.monotonic() < deadline:
            time.sleep(0.1)


def stop(dirpath: Path, *, timeout: float = 30,
         after_supernodes: Callable[[list[tuple[str, Path]]], None] | None = None,
         log: Callable[[str], None] = print) -> list[Proc]:
    """Stop the folder's processes in order, waiting for each group (and its descendants)
    before the next: SuperNodes first (each deactivates itself at the SuperLink on SIGTERM,
    which it can only do while the SuperLink and the proxy still run), then
    ``after_supernodes([(name, key file), ...])`` for the SuperNodes just stopped and those
    whose PID file outlived them (killed), then the SuperLink, then the proxy. Returns the
    processes signalled."""
    dead = []
    for role, path in _pid_files(dirpath):
        entry = read_pid_file(path)
        if role == "supernode" and (entry is None or not alive(*entry)) and (key := pid_file_key(path)):
            dead.append((path.stem, key))
    stopped: list[Proc] = []
    for role in ROLES:
        group = deployment_processes(dirpath, roles=[role])
        if group:
            began = time.monotonic()
            _terminate(group, timeout, log)
            log(f"stopped {role} " + ", ".join(f"{p.name} (PID {p.pid})" for p in group)
                + f" in {time.monotonic() - began:.1f} s")
            stopped += group
        if role == "supernode" and after_supernodes is not None:
            keys = [(p.name, k) for p in group if (k := key_path(p)) is not None]
            after_supernodes(keys + [entry for entry in dead if entry[0] not in {p.name for p in group}])
    for _, path in _pid_files(dirpath):
        entry = read_pid_file(path)
        if entry is None or not alive(*entry):
            path.unlink(missing_ok=True)
    return stopped
