"""Finding and stopping the processes a local simulation starts (Linux ``/proc``).

Every stop in :mod:`simulations.runtime` is the same escalation, written once in
:func:`terminate`: SIGTERM, wait up to a grace period for the processes to go, then SIGKILL
and a short wait. What differs is only how the processes are addressed: a process group (a
``flwr run`` the sweep started, a Ray head, the local SuperLink), or every process whose
command line or environment names a folder (what a SuperLink started in sessions of its own).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["cmdlines", "pids_in_group", "processes_naming", "stop_group", "stop_processes_naming", "terminate"]

log = logging.getLogger(__name__)

KILL_GRACE = 2.0
"""Seconds to wait after SIGKILL (the kernel reaps quickly; only a zombie's parent lags)."""


def pids_in_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # a zombie has exited: only unreaped
            pids.append(int(proc.name))
    return pids


def cmdlines(pids: Sequence[int]) -> list[str]:
    """The command lines of ``pids`` that still exist, arguments joined by spaces."""
    out = []
    for pid in pids:
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
    return out


def processes_naming(fragment: str) -> list[int]:
    """Pids of this user's live processes whose command line or environment names ``fragment``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        pid = int(proc.name)
        if pid == os.getpid():
            continue
        try:
            text = (proc / "cmdline").read_bytes() + b"\0" + (proc / "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if fragment.encode() in text:
            found.append(pid)
    return found


def terminate(send: Callable[[int], None], alive: Callable[[], bool], *, grace: float,
              kill_grace: float = KILL_GRACE, poll: float = 0.1) -> bool:
    """``send(SIGTERM)``, wait up to ``grace`` seconds while ``alive()``, then ``send(SIGKILL)``
    and wait up to ``kill_grace``; returns True when nothing is left alive.

    ``send`` signals the processes (it may find them anew each time: a group, or a search);
    a process that is already gone, or not ours, is skipped silently (the callers only stop
    what they started)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_grace)):
        try:
            send(sig)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and alive():
            time.sleep(poll)
        if not alive():
            return True
    return False


def _signal_each(pids: Callable[[], Sequence[int]]) -> Callable[[int], None]:
    def send(sig: int) -> None:
        for pid in pids():
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
    return send


def stop_processes_naming(fragment: str, *, grace: float = 5.0) -> int:
    """Stop every process :func:`processes_naming` finds (SIGTERM, then SIGKILL); returns how
    many were still alive at the end (0 when all stopped)."""
    pids = processes_naming(fragment)
    if not pids:
        return 0
    log.info("stopping %d leftover process(es) of %s: %s", len(pids), fragment, "; ".join(cmdlines(pids)))
    terminate(_signal_each(lambda: processes_naming(fragment)), lambda: bool(processes_naming(fragment)), grace=grace)
    return len(processes_naming(fragment))


def stop_group(pgid: int, *, marker: str | None = None, grace: float = 10.0) -> int:
    """Stop process group ``pgid`` (SIGTERM, then SIGKILL); returns how many processes it had.

    With ``marker``, only when one of its processes names it on its command line, so that a
    group id reused by an unrelated process is never signalled (a group recorded by a session
    that died long ago)."""
    pids = pids_in_group(pgid)
    if not pids or (marker is not None and not any(marker in c for c in cmdlines(pids))):
        return 0
    terminate(lambda sig: os.killpg(pgid, sig), lambda: bool(pids_in_group(pgid)), grace=grace)
    return len(pids)
